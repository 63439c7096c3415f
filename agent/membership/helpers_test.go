package membership

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// testKey is the fleet's gossip key in tests.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// logSink collects a test's log lines and passes them to t.Log until the
// test ends; memberlist's goroutines may still log after Shutdown returns.
type logSink struct {
	t *testing.T

	mu    sync.Mutex
	done  bool
	lines []string
}

func newLogSink(t testing.TB) *logSink {
	s := &logSink{}
	if tt, ok := t.(*testing.T); ok {
		s.t = tt
	}
	// Registered first, so it runs last: after every node is shut down.
	t.Cleanup(func() {
		s.mu.Lock()
		s.done = true
		s.mu.Unlock()
	})
	return s
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := strings.TrimRight(string(p), "\n")
	s.lines = append(s.lines, line)
	if !s.done && s.t != nil && testing.Verbose() {
		s.t.Log(line)
	}
	return len(p), nil
}

// has reports whether a logged line contains all of the substrings.
func (s *logSink) has(subs ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(l, sub)
		}
		if ok {
			return true
		}
	}
	return false
}

// fastTune shortens memberlist's timers so that tests that are not about
// the default timings run in well under a second.
func fastTune(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 2
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
}

// testNode starts a member on 127.0.0.1 with a free port unless edit sets
// one, and shuts it down at the end of the test.
func testNode(t testing.TB, sink *logSink, name string, edit func(*Config)) *Membership {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
	cfg.SecretKey = testKey
	cfg.RetryInterval = 50 * time.Millisecond
	cfg.Meta = Meta{
		Role: RoleServer, APIAddr: "127.0.0.1:7400", RPCAddr: "127.0.0.1:7403", RaftAddr: "127.0.0.1:7401",
		CPUMillis: 2000, MemoryMiB: 4096, Labels: map[string]string{"node": name}, Version: "test",
	}
	cfg.Logger = slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// freePort returns a port that is free for both TCP and UDP on 127.0.0.1
// (for a node that must be known before it starts).
func freePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEvent reads m's events until one matches, and returns when it came.
func waitEvent(t testing.TB, m *Membership, timeout time.Duration, typ EventType, name string) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-m.Events():
			if e.Type == typ && e.Member.Name == name {
				return time.Now()
			}
			if e.Member.Name == name && (e.Type == EventFail || e.Type == EventLeave) {
				t.Fatalf("%s: got %s for %s, want %s", m.LocalName(), e.Type, name, typ)
			}
		case <-deadline:
			t.Fatalf("%s: no %s event for %s within %v", m.LocalName(), typ, name, timeout)
		}
	}
}

// eventAt watches m's events in the background, while the test does what
// causes the event, and sends when the matching one came (the zero Time
// after timeout).
func eventAt(m *Membership, timeout time.Duration, typ EventType, name string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		deadline := time.After(timeout)
		for {
			select {
			case e := <-m.Events():
				if e.Type == typ && e.Member.Name == name {
					ch <- time.Now()
					return
				}
			case <-deadline:
				ch <- time.Time{}
				return
			}
		}
	}()
	return ch
}

// statusOf returns name's status in m's member list (0 if absent).
func statusOf(m *Membership, name string) Status {
	for _, mem := range m.Members() {
		if mem.Name == name {
			return mem.Status
		}
	}
	return 0
}

// alive counts the alive members m knows.
func alive(m *Membership) int {
	n := 0
	for _, mem := range m.Members() {
		if mem.Status == StatusAlive {
			n++
		}
	}
	return n
}

// joinAll joins every node to the first and waits until all see each other.
func joinAll(t testing.TB, nodes ...*Membership) {
	t.Helper()
	for _, n := range nodes[1:] {
		if _, err := n.Join(nodes[0].LocalAddr().String()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "every node sees every other", func() bool {
		for _, n := range nodes {
			if alive(n) != len(nodes) {
				return false
			}
		}
		return true
	})
}
