package membership

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
)

// Three nodes find each other through RetryJoin, one of them started before
// the peer it joins exists, and each sees the others' meta.
func TestRetryJoinAndMeta(t *testing.T) {
	t.Parallel()
	sink := newLogSink(t)
	portB := freePort(t)
	joinB := []string{fmt.Sprintf("127.0.0.1:%d", portB)}

	a := testNode(t, sink, "a", func(c *Config) { c.RetryJoin = joinB })
	waitFor(t, 5*time.Second, "a logs a failed join attempt with its reason", func() bool {
		return sink.has("node=a", "retry join failed", "connection refused")
	})
	b := testNode(t, sink, "b", func(c *Config) {
		c.BindPort = portB
		c.Meta.Role = RoleClient
		c.Meta.Labels = map[string]string{"zone": "z1", "disk": "ssd"}
	})
	c := testNode(t, sink, "c", func(c *Config) { c.RetryJoin = joinB })

	nodes := []*Membership{a, b, c}
	waitFor(t, 5*time.Second, "every node sees three alive members", func() bool {
		for _, n := range nodes {
			if alive(n) != 3 {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		ms := n.Members()
		if got := []string{ms[0].Name, ms[1].Name, ms[2].Name}; strings.Join(got, ",") != "a,b,c" {
			t.Fatalf("%s: members %v, want sorted a,b,c", n.LocalName(), got)
		}
		for _, m := range ms {
			want := Meta{Role: RoleServer, APIAddr: "127.0.0.1:7400", RPCAddr: "127.0.0.1:7403", RaftAddr: "127.0.0.1:7401",
				CPUMillis: 2000, MemoryMiB: 4096, Labels: map[string]string{"node": m.Name}, Version: "test"}
			if m.Name == "b" {
				want.Role, want.Labels = RoleClient, map[string]string{"zone": "z1", "disk": "ssd"}
			}
			if !metaEqual(m.Meta, want) {
				t.Errorf("%s sees %s with meta %+v, want %+v", n.LocalName(), m.Name, m.Meta, want)
			}
			if m.Addr.String() != "127.0.0.1" || m.Port == 0 || m.Status != StatusAlive {
				t.Errorf("%s sees %s at %v:%d, %v", n.LocalName(), m.Name, m.Addr, m.Port, m.Status)
			}
		}
	}
	// Events: a saw itself, b and c join (b and c in either order).
	joined := map[string]bool{}
	for len(joined) < 3 {
		select {
		case e := <-a.Events():
			if e.Type != EventJoin {
				t.Fatalf("a: unexpected event %s for %s", e.Type, e.Member.Name)
			}
			joined[e.Member.Name] = true
		case <-time.After(time.Second):
			t.Fatalf("a saw joins of %v only", joined)
		}
	}
	if !sink.has("node=a", "joined the fleet") {
		t.Error("a did not log that it joined")
	}
}

func metaEqual(x, y Meta) bool {
	return maps.Equal(x.Labels, y.Labels) && x.Role == y.Role && x.APIAddr == y.APIAddr && x.RPCAddr == y.RPCAddr &&
		x.RaftAddr == y.RaftAddr && x.CPUMillis == y.CPUMillis && x.MemoryMiB == y.MemoryMiB && x.Version == y.Version
}

// A node without the fleet's gossip key cannot join it, and says why.
func TestGossipKeyMismatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		fleetKey     []byte
		joinerKey    []byte
		wantJoin     bool
		wantInErrMsg string
	}{
		{name: "same key", fleetKey: testKey, joinerKey: testKey, wantJoin: true},
		{name: "other key", fleetKey: testKey, joinerKey: []byte("fedcba9876543210fedcba9876543210"), wantInErrMsg: "same gossip key"},
		{name: "joiner has no key", fleetKey: testKey, joinerKey: nil, wantInErrMsg: "not encrypted"},
		{name: "fleet has no key", fleetKey: nil, joinerKey: testKey, wantInErrMsg: "same gossip key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sink := newLogSink(t)
			fleet := testNode(t, sink, "fleet", func(c *Config) { c.SecretKey = tt.fleetKey })
			joiner := testNode(t, sink, "joiner", func(c *Config) { c.SecretKey = tt.joinerKey })
			n, err := joiner.Join(fleet.LocalAddr().String())
			if tt.wantJoin {
				if err != nil || n != 1 {
					t.Fatalf("Join = %d, %v; want 1, nil", n, err)
				}
				waitFor(t, 2*time.Second, "both see two members", func() bool { return alive(fleet) == 2 && alive(joiner) == 2 })
				return
			}
			if err == nil || n != 0 {
				t.Fatalf("Join = %d, %v; want 0 and an error", n, err)
			}
			t.Logf("join error: %v", err)
			if !strings.Contains(err.Error(), tt.wantInErrMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantInErrMsg)
			}
			// The fleet may see the joiner's packets but must not admit it.
			if len(fleet.Members()) != 1 || len(joiner.Members()) != 1 {
				t.Fatalf("fleet knows %v, joiner knows %v; want only themselves", fleet.Members(), joiner.Members())
			}
		})
	}
}

// With memberlist's default LAN timings, a node that stops without leaving
// is reported failed within seconds, and one that leaves at once.
func TestDetectionDefaultLAN(t *testing.T) {
	t.Parallel()
	t.Run("fail", func(t *testing.T) {
		t.Parallel()
		sink := newLogSink(t)
		a, b, c := testNode(t, sink, "a", nil), testNode(t, sink, "b", nil), testNode(t, sink, "c", nil)
		joinAll(t, a, b, c)
		start := time.Now()
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
		atA := waitEvent(t, a, 20*time.Second, EventFail, "c").Sub(start)
		atB := waitEvent(t, b, 20*time.Second, EventFail, "c").Sub(start)
		t.Logf("failure detected with DefaultLANConfig, 3 nodes: a after %v, b after %v", atA.Round(time.Millisecond), atB.Round(time.Millisecond))
		if s := statusOf(a, "c"); s != StatusFailed {
			t.Errorf("a lists c as %v, want failed", s)
		}
		// Typically ~6 s; the bound leaves room for a loaded CI machine,
		// where memberlist's awareness stretches its probe interval.
		if limit := 15 * time.Second; atA > limit || atB > limit {
			t.Errorf("failure detection took longer than %v", limit)
		}
	})
	t.Run("leave", func(t *testing.T) {
		t.Parallel()
		sink := newLogSink(t)
		a, b, c := testNode(t, sink, "a", nil), testNode(t, sink, "b", nil), testNode(t, sink, "c", nil)
		joinAll(t, a, b, c)
		seenA, seenB := eventAt(a, 5*time.Second, EventLeave, "c"), eventAt(b, 5*time.Second, EventLeave, "c")
		start := time.Now()
		if err := c.Leave(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		left := time.Since(start)
		atA, atB := (<-seenA).Sub(start), (<-seenB).Sub(start)
		if atA < 0 || atB < 0 {
			t.Fatal("no Leave event for c within 5s")
		}
		t.Logf("leave seen with DefaultLANConfig, 3 nodes: Leave returned after %v; a after %v, b after %v",
			left.Round(time.Millisecond), atA.Round(time.Millisecond), atB.Round(time.Millisecond))
		for _, n := range []*Membership{a, b} {
			if s := statusOf(n, "c"); s != StatusLeft {
				t.Errorf("%s lists c as %v, want left", n.LocalName(), s)
			}
		}
		if limit := 2 * time.Second; atA > limit || atB > limit {
			t.Errorf("leave took longer than %v to be seen", limit)
		}
		if err := c.Leave(time.Second); err != nil {
			t.Errorf("second Leave: %v", err)
		}
	})
}

// A failed node that comes back under its name is alive again.
func TestFailThenRejoin(t *testing.T) {
	t.Parallel()
	sink := newLogSink(t)
	tune := func(c *Config) { c.Tune = fastTune }
	a, b := testNode(t, sink, "a", tune), testNode(t, sink, "b", tune)
	joinAll(t, a, b)
	port := int(b.LocalAddr().Port())
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, a, 5*time.Second, EventFail, "b")
	b2 := testNode(t, sink, "b", func(c *Config) {
		c.Tune, c.BindPort = fastTune, port
		c.RetryJoin = []string{a.LocalAddr().String()}
	})
	waitEvent(t, a, 5*time.Second, EventJoin, "b")
	waitFor(t, 5*time.Second, "both alive again", func() bool { return alive(a) == 2 && alive(b2) == 2 })
}

// UpdateMeta reaches the other nodes as an Update event; meta over the size
// limit is refused.
func TestUpdateMeta(t *testing.T) {
	t.Parallel()
	sink := newLogSink(t)
	a, b := testNode(t, sink, "a", nil), testNode(t, sink, "b", nil)
	joinAll(t, a, b)

	meta := a.cfg.Meta.clone()
	meta.Labels["gpu"] = "yes"
	meta.CPUMillis = 8000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seen := eventAt(b, 5*time.Second, EventUpdate, "a")
	start := time.Now()
	if err := a.UpdateMeta(ctx, meta); err != nil {
		t.Fatal(err)
	}
	returned := time.Since(start)
	at := <-seen
	if at.IsZero() {
		t.Fatal("b saw no Update event for a within 5s")
	}
	t.Logf("meta update seen after %v (UpdateMeta returned after %v)", at.Sub(start).Round(time.Millisecond), returned.Round(time.Millisecond))
	for _, m := range b.Members() {
		if m.Name == "a" && (m.Meta.CPUMillis != 8000 || m.Meta.Labels["gpu"] != "yes") {
			t.Fatalf("b sees a's meta as %+v", m.Meta)
		}
	}

	big := meta.clone()
	big.Labels["notes"] = strings.Repeat("x", MetaMaxSize)
	err := a.UpdateMeta(ctx, big)
	if err == nil || !strings.Contains(err.Error(), "limit of 512") {
		t.Fatalf("UpdateMeta with %d-byte label = %v, want a size error", MetaMaxSize, err)
	}
}

// BenchmarkFailureDetection measures, with memberlist's default LAN
// timings on loopback, how long three-node fleets take to report a node
// that stopped without leaving as failed (s/detect), and a node that left
// as gone (s/leave). Each iteration takes several seconds.
func BenchmarkFailureDetection(b *testing.B) {
	var fail, leave time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		sink := newLogSink(b)
		x, y, z := testNode(b, sink, fmt.Sprintf("x%d", n), nil), testNode(b, sink, fmt.Sprintf("y%d", n), nil), testNode(b, sink, fmt.Sprintf("z%d", n), nil)
		joinAll(b, x, y, z)
		b.StartTimer()

		start := time.Now()
		if err := z.Shutdown(); err != nil {
			b.Fatal(err)
		}
		fail += waitEvent(b, x, 30*time.Second, EventFail, z.LocalName()).Sub(start)

		seen := eventAt(x, 5*time.Second, EventLeave, y.LocalName())
		start = time.Now()
		if err := y.Leave(5 * time.Second); err != nil {
			b.Fatal(err)
		}
		at := <-seen
		if at.IsZero() {
			b.Fatal("no Leave event within 5s")
		}
		leave += at.Sub(start)
		_ = x.Shutdown()
		n++
	}
	b.ReportMetric(fail.Seconds()/float64(n), "s/detect")
	b.ReportMetric(leave.Seconds()/float64(n), "s/leave")
}
