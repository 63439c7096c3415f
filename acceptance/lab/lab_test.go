package lab

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestLabNodesReachEachOtherButNothingElse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root: it creates network namespaces, veths and a bridge")
	}
	l := New(t, 2)
	a, b := l.Nodes()[0], l.Nodes()[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := a.Exec(ctx, "ping", "-c1", "-W2", b.IP.String()); err != nil {
		t.Fatalf("node1 cannot reach node2: %v\n%s", err, out)
	}
	out, err := a.Exec(ctx, "ip", "route")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "default") {
		t.Errorf("a lab node has a default route:\n%s", out)
	}
	// Cut: node2 no longer answers; heal: it does again.
	b.Cut()
	if _, err := a.Exec(ctx, "ping", "-c1", "-W1", b.IP.String()); err == nil {
		t.Error("a cut node still answers")
	}
	b.Heal()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := a.Exec(ctx, "ping", "-c1", "-W1", b.IP.String()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a healed node does not answer")
		}
	}
	// A process runs inside the node's namespace and can be frozen and killed.
	b.Start(nil, "sleep", "60")
	if !b.Running() {
		t.Fatal("process not running")
	}
	b.Freeze()
	b.Thaw()
	b.Kill()
	if b.Running() {
		t.Fatal("process survived Kill")
	}
}
