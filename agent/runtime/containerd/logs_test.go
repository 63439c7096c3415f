package containerd_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/runtime"
)

// TestLogsRotateAndOutliveTheAgent runs a container that writes more than
// its log keeps, through the log driver the shim starts: the files rotate
// at the limit and only the newest are kept; the output keeps being
// written while no runtime client exists and while containerd itself is
// down (an agent restart, with its supervised containerd); a restart of the
// container starts a new run and keeps the last one as the previous.
func TestLogsRotateAndOutliveTheAgent(t *testing.T) {
	e := setupBare(t)
	importBusybox(t, e)
	const maxSize, maxFiles = 64 << 10, 3
	cfg := e.cfg
	cfg.LogMaxSize, cfg.LogMaxFiles = maxSize, maxFiles
	rt := newRuntime(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// ~400 KB at once (six times what is kept), on both streams, then a
	// line every 20 ms until killed.
	dir := filepath.Join(e.logDir, "default_logs", "app")
	spec := runtime.ContainerSpec{ID: "logs", Image: busyboxTag, LogDir: dir, Command: []string{"sh", "-c", `
		pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
		i=0; while [ $i -lt 4000 ]; do echo "burst $i $pad"; i=$((i+1)); done
		echo "to stderr" >&2
		echo "burst done"
		i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.02; done`}}
	if err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	waitLog(t, dir, "tick 5\n")

	// Rotated at the limit, only the newest files of the run kept.
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
		fi, _ := de.Info()
		if fi.Size() > maxSize {
			t.Errorf("%s is %d bytes, over the limit %d", de.Name(), fi.Size(), maxSize)
		}
	}
	if len(names) != maxFiles || names[0] == "1.1.log" {
		t.Fatalf("log files %v; want the newest %d of run 1", names, maxFiles)
	}
	// Each record has a time and a stream, so tail, since and stderr work.
	raw, _ := os.ReadFile(filepath.Join(dir, names[len(names)-1]))
	first := strings.SplitN(string(raw), "\n", 2)[0]
	if f := strings.Fields(first); len(f) < 4 || f[1] != "stdout" || f[2] != "F" {
		t.Fatalf("record %q is not CRI's format", first)
	}
	if _, err := time.Parse(time.RFC3339Nano, strings.Fields(first)[0]); err != nil {
		t.Fatalf("record %q: %v", first, err)
	}
	var all strings.Builder
	if err := containerlog.Read(ctx, dir, containerlog.ReadOptions{Tail: -1}, &all); err != nil {
		t.Fatal(err)
	}
	// stdout and stderr are two pipes: which of two lines written one
	// to each comes first is not kept.
	if !strings.Contains(all.String(), "burst 3999 ") || !strings.Contains(all.String(), "to stderr\n") || !strings.Contains(all.String(), "burst done\n") || strings.Contains(all.String(), "burst 0 ") {
		t.Fatalf("the kept log should end the burst and have lost its start:\n%.500s", all.String())
	}

	// The agent goes away: no runtime client, and containerd stopped.
	// The shim and its driver go on writing.
	rt.Close()
	e.daemon.Stop(t)
	n := ticks(dir)
	waitLog(t, dir, fmt.Sprintf("tick %d\n", n+20))
	e.daemon.Restart(t)
	rt = newRuntime(t, cfg)
	waitLog(t, dir, fmt.Sprintf("tick %d\n", n+40))
	if st := find(t, rt, spec.ID); !st.Running {
		t.Fatalf("after the restart: %+v", st)
	}

	// A crash and a restart: a new run; the old one is the previous. A
	// follower started before goes on into the new run.
	fctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	followed := &lockedBuffer{}
	followDone := make(chan error, 1)
	go func() {
		followDone <- containerlog.Read(fctx, dir, containerlog.ReadOptions{Tail: 1, Follow: true, Poll: 20 * time.Millisecond}, followed)
	}()
	killTask(t, rt, spec.ID, syscall.SIGKILL)
	waitFor(t, rt, spec.ID, "exited", func(s runtime.ContainerState) bool { return s.HasTask && !s.Running })
	last := ticks(dir)
	if err := rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	waitLog(t, dir, "burst done\n")
	var prev bytes.Buffer
	if err := containerlog.Read(ctx, dir, containerlog.ReadOptions{Previous: true, Tail: 1}, &prev); err != nil {
		t.Fatal(err)
	}
	if got := prev.String(); got != fmt.Sprintf("tick %d\n", last) {
		t.Fatalf("previous run ends %q, want tick %d", got, last)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(followed.String(), fmt.Sprintf("tick %d\n", last)) || !strings.Contains(followed.String(), "burst done\n") {
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not go from the old run into the new one; it read:\n%.2000s", followed.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if i, j := strings.Index(followed.String(), fmt.Sprintf("tick %d\n", last)), strings.Index(followed.String(), "burst done\n"); i > j {
		t.Fatalf("the follower read the new run before the end of the old one")
	}
	stopFollow()
	if err := <-followDone; err != nil {
		t.Fatalf("follow: %v", err)
	}
	if got := containerlog.LastLines(dir, 2, 100); len(got) != 2 {
		t.Fatalf("LastLines = %q", got)
	}
	ents, _ = os.ReadDir(dir)
	runs := map[string]bool{}
	for _, de := range ents {
		runs[strings.SplitN(de.Name(), ".", 2)[0]] = true
	}
	if len(runs) != 2 || !runs["1"] || !runs["2"] {
		t.Fatalf("files %v; want runs 1 and 2", ents)
	}
	if err := rt.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer is a strings.Builder a follower writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitLog waits until the current run of the log in dir contains want.
func waitLog(t *testing.T, dir, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var b strings.Builder
		_ = containerlog.Read(context.Background(), dir, containerlog.ReadOptions{Tail: 200}, &b)
		if strings.Contains(b.String(), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log in %s has no %q after 20s; it ends:\n%s", dir, want, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ticks is the number of the last "tick N" line of the log in dir.
func ticks(dir string) int {
	var b strings.Builder
	_ = containerlog.Read(context.Background(), dir, containerlog.ReadOptions{Tail: 1}, &b)
	n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(b.String(), "tick ")))
	return n
}
