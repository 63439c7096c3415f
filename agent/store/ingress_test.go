package store

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/testcert"
)

// TestClusterIngresses writes ingresses through real raft, forwarded from
// a follower: answers are redacted on every path, every server's state
// holds the key for its own proxy, and conflicts and bad keys come back as
// their kinds, with no key in any error or log line.
func TestClusterIngresses(t *testing.T) {
	ctx := testCtx(t)
	logs := &lockedBuffer{}
	c := newTestCluster(t)
	c.mods = append(c.mods, func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	servers := c.startServers(3)
	leader := waitLeader(t, servers...)
	f := followersOf(leader, servers)[0]
	cert, key, err := testcert.Pair("shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := testcert.Pair("other.example.com")
	if err != nil {
		t.Fatal(err)
	}
	shop := api.Ingress{Namespace: "default", Name: "shop",
		Rules: []api.IngressRule{{Host: "shop.example.com", Paths: []api.IngressPath{{Path: "/api", Backend: api.IngressBackend{Service: "web", Port: 80}}}}},
		TLS:   []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert, Key: key}}}
	got, err := f.CreateIngress(ctx, shop)
	if err != nil {
		t.Fatal(err)
	}
	if got.TLS[0].Key != "" || got.TLS[0].KeySHA256 != api.KeyDigest(key) {
		t.Errorf("forwarded create answered %+v; want it redacted with the digest", got.TLS[0])
	}
	waitReplicated(t, leader, servers...)
	for _, s := range servers {
		if l := s.Ingresses(); len(l) != 1 || l[0].TLS[0].Key != key {
			t.Errorf("%s: the proxy's read lost the key", s.LocalID())
		}
		if r, _ := s.Ingress("default", "shop"); r.TLS[0].Key != "" {
			t.Errorf("%s: the API's read holds the key", s.LocalID())
		}
		if s.IngressesChanged() == 0 {
			t.Errorf("%s: IngressesChanged is 0", s.LocalID())
		}
	}

	clash := shop
	clash.Name = "b"
	clash.TLS = nil
	bad := shop
	bad.Name = "c"
	bad.Rules = []api.IngressRule{{Host: "c.example.com", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}}}
	bad.TLS = []api.IngressTLS{{Hosts: []string{"c.example.com"}, Certificate: cert, Key: otherKey}}
	_, errConflict := f.CreateIngress(ctx, clash)
	_, errBadKey := f.CreateIngress(ctx, bad)
	errMissing := f.DeleteIngress(ctx, "default", "missing")
	for name, tt := range map[string]struct {
		err  error
		want error
		msg  string
	}{
		"conflict": {errConflict, state.ErrConflict, "ingress default/b: both route shop.example.com prefix /api as ingress default/shop does"},
		"bad key":  {errBadKey, state.ErrInvalid, "tls[0]: the certificate and key are not a PEM pair that fits"},
		"missing":  {errMissing, state.ErrNotFound, "ingress default/missing"},
	} {
		if !errors.Is(tt.err, tt.want) || !strings.Contains(tt.err.Error(), tt.msg) {
			t.Errorf("%s: %v; want %v with %q", name, tt.err, tt.want, tt.msg)
		}
		for _, l := range append(strings.Split(key, "\n"), strings.Split(otherKey, "\n")...) {
			if len(l) > 20 && strings.Contains(tt.err.Error(), l) {
				t.Errorf("%s: the error holds a key: %v", name, tt.err)
			}
		}
	}
	if err := f.DeleteIngress(ctx, "default", "shop"); err != nil {
		t.Fatal(err)
	}
	if logs.String() == "" {
		t.Fatal("the servers logged nothing: the check below would prove nothing")
	}
	for _, l := range append(strings.Split(key, "\n"), strings.Split(otherKey, "\n")...) {
		if len(l) > 20 && strings.Contains(logs.String(), l) {
			t.Errorf("a log line holds a key")
		}
	}
}

// lockedBuffer is a bytes.Buffer the servers' loggers write to at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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
