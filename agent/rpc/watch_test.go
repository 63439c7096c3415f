package rpc

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// fakeBackend's state is empty and at index 0: a watch on it waits its
// wait out. Watch tests serve a real state with viewBackend.
func (b *fakeBackend) NodeView(string, uint64) ([]state.ViewChange, bool, uint64) {
	return nil, true, 0
}

func (b *fakeBackend) WatchNodeView(string, uint64) (uint64, bool, <-chan struct{}) {
	return 0, false, nil
}

// viewBackend serves watches from a real state; the rest (certificates,
// revocations, the leader) from fakeBackend.
type viewBackend struct {
	*fakeBackend
	fsm *state.FSM
	// waits counts WatchNodeView calls: one per wake-up of a watch.
	waits atomic.Int64
}

func newViewBackend(t *testing.T, cmds ...state.Command) *viewBackend {
	b := &viewBackend{fakeBackend: newFakeBackend(), fsm: state.NewFSM(nil)}
	applyTo(t, b.fsm, cmds...)
	return b
}

func (b *viewBackend) NodeView(node string, since uint64) ([]state.ViewChange, bool, uint64) {
	return b.fsm.NodeView(node, since)
}

func (b *viewBackend) PodsChanged(node string) uint64 { return b.fsm.PodsChanged(node) }
func (b *viewBackend) ServicesChanged() uint64        { return b.fsm.ServicesChanged() }

func (b *viewBackend) WatchNodeView(node string, since uint64) (uint64, bool, <-chan struct{}) {
	b.waits.Add(1)
	return b.fsm.WatchNodeView(node, since)
}

// waitForWaits polls until watches called WatchNodeView n times in all.
func (b *viewBackend) waitForWaits(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for b.waits.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("watches waited %d times, want %d", b.waits.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// applyTo applies cmds to f as its next raft entries.
func applyTo(t *testing.T, f *state.FSM, cmds ...state.Command) {
	t.Helper()
	for _, c := range cmds {
		data, err := state.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if err, ok := f.Apply(&raft.Log{Index: f.Index() + 1, Term: 1, Type: raft.LogCommand, Data: data}).(error); ok {
			t.Fatalf("apply %s: %v", c.Type(), err)
		}
	}
}

// The fleet the watch tests see: indexes 1 cluster config, 2 node c1,
// 3 node c2, 4 deployment web, 5 one pod on each client.
func watchState() []state.Command {
	node := func(name, addr string) state.Command {
		return &state.RegisterNode{Node: api.Node{Name: name, Address: addr, CPUMillis: 2000, MemoryMiB: 1024, Status: api.NodeReady}}
	}
	return []state.Command{
		&state.SetClusterConfig{Config: testConfig},
		node("c1", "10.0.0.11"), node("c2", "10.0.0.12"),
		&state.CreateDeployment{Deployment: testDeployment},
		&state.PutPods{Pods: []api.Pod{watchPod("web-c1", "c1"), watchPod("web-c2", "c2")}},
	}
}

func watchPod(name, node string) api.Pod {
	p := testPod
	p.Name, p.Node = name, node
	return p
}

func report(node, id, ip string) state.Command {
	return &state.SetPodStatuses{Node: node, Updates: []state.PodStatusUpdate{
		{ID: id, Status: api.PodStatus{Phase: api.PodRunning, Ready: true, IP: ip}}}}
}

// events renders a watch answer's events as "kind key", " deleted" added.
func events(wr WatchResponse) []string {
	out := []string{}
	for _, e := range wr.Events {
		s := e.Kind + " " + e.Key
		if e.Deleted {
			s += " deleted"
		}
		out = append(out, s)
	}
	return out
}

// watchURL is the watch path with its query.
func watchURL(addr string, since uint64, wait string) string {
	q := url.Values{"since": {strconv.FormatUint(since, 10)}}
	if wait != "" {
		q.Set("wait", wait)
	}
	return "https://" + addr + pathWatch + "?" + q.Encode()
}

func TestWatchKindsAreTheState(t *testing.T) {
	if WatchPod != state.ViewPod || WatchNode != state.ViewNode || WatchCluster != state.ViewCluster ||
		WatchService != state.ViewService || WatchEndpoints != state.ViewEndpoints || WatchIngress != state.ViewIngress {
		t.Error("the watch kinds on the wire differ from the state's")
	}
}

// TestWatchWhoReadsWhat: a certificate reads the view of the node it
// names, and only with a valid certificate.
func TestWatchWhoReadsWhat(t *testing.T) {
	ca := newTestCA(t)
	b := newViewBackend(t, watchState()...)
	b.revoked["c9"] = true
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	c1 := httpClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")).ClientTLS(nil))
	c2 := httpClient(t, ca.client(t, "c2", net.ParseIP("10.0.0.12")).ClientTLS(nil))
	s2 := httpClient(t, ca.server(t, "s2").ClientTLS(nil))
	revoked := httpClient(t, ca.client(t, "c9", net.ParseIP("10.0.0.19")).ClientTLS(nil))
	noCert := ca.anonymous(t)

	fleet := []string{"cluster cluster", "node c1", "node c2"}
	tests := []struct {
		name     string
		hc       *http.Client
		url      string
		wantCode int
		wantMsg  string
		want     []string // events, after a reset
	}{
		{"a client reads its own pods, every node and the config", c1, watchURL(addr, 0, "0s"), 200, "",
			append(slices.Clone(fleet), "pod default/web-c1")},
		{"the other client, its own", c2, watchURL(addr, 0, "0s"), 200, "",
			append(slices.Clone(fleet), "pod default/web-c2")},
		{"a server reads its own view too", s2, watchURL(addr, 0, "0s"), 200, "", fleet},
		{"since and wait default", c1, "https://" + addr + pathWatch, 200, "",
			append(slices.Clone(fleet), "pod default/web-c1")},
		{"no certificate", noCert, watchURL(addr, 0, "0s"), 401, "watch: a client certificate signed by the cluster CA is required", nil},
		{"a revoked certificate", revoked, watchURL(addr, 0, "0s"), 403, "the certificate of client/c9 was revoked", nil},
		{"since is not an index", c1, "https://" + addr + pathWatch + "?since=-1", 400, `watch: since "-1" is not a raft index`, nil},
		{"wait is not a duration", c1, "https://" + addr + pathWatch + "?wait=soon", 400, `watch: wait "soon" is not a duration`, nil},
		{"POST is not a watch", c1, "", 405, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, u := "GET", tt.url
			if u == "" {
				method, u = "POST", watchURL(addr, 0, "0s")
			}
			code, body := do(t, tt.hc, method, u, nil, "")
			if code != tt.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", code, tt.wantCode, body)
			}
			if code != 200 {
				var er errorResponse
				if tt.wantMsg != "" && (json.Unmarshal(body, &er) != nil || !strings.Contains(er.Error, tt.wantMsg)) {
					t.Errorf("answer %s, want an error saying %q", body, tt.wantMsg)
				}
				if strings.Contains(string(body), "events") {
					t.Errorf("a refusal leaked the view: %s", body)
				}
				return
			}
			var wr WatchResponse
			if err := json.Unmarshal(body, &wr); err != nil {
				t.Fatal(err)
			}
			got := events(wr)
			slices.Sort(got)
			if !wr.Reset || wr.Index != b.fsm.Index() || wr.Leader != "s1" || !slices.Equal(got, tt.want) {
				t.Errorf("answer: index %d reset %t leader %q events %q; want index %d, a reset, s1 and %q",
					wr.Index, wr.Reset, wr.Leader, got, b.fsm.Index(), tt.want)
			}
		})
	}
}

// TestWatchCarriesIngressKeys: every node's view holds every ingress with
// its TLS keys, which its proxy needs to terminate TLS.
func TestWatchCarriesIngressKeys(t *testing.T) {
	ca := newTestCA(t)
	const key = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"
	in := api.Ingress{Namespace: "default", Name: "shop",
		Rules: []api.IngressRule{{Host: "shop.example.com", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}}},
		TLS:   []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: "CERT", Key: key}}}
	b := newViewBackend(t, append(watchState(), &state.CreateIngress{Ingress: in})...)
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	for _, node := range []string{"c1", "c2"} {
		hc := httpClient(t, ca.client(t, node, net.ParseIP(map[string]string{"c1": "10.0.0.11", "c2": "10.0.0.12"}[node])).ClientTLS(nil))
		code, body := do(t, hc, "GET", watchURL(addr, 0, "0s"), nil, "")
		if code != 200 {
			t.Fatalf("%s: HTTP %d: %s", node, code, body)
		}
		var wr WatchResponse
		if err := json.Unmarshal(body, &wr); err != nil {
			t.Fatal(err)
		}
		var got *api.Ingress
		for _, e := range wr.Events {
			if e.Kind == WatchIngress && e.Key == "default/shop" {
				got = e.Ingress
			}
		}
		if got == nil || len(got.TLS) != 1 || got.TLS[0].Key != key || got.TLS[0].KeySHA256 != api.KeyDigest(key) {
			t.Errorf("%s: the view's ingress is %+v; want it with its key", node, got)
		}
	}
}

// TestWatchBlocks: a watch answers at a change to its view, not before,
// and not for another node's pods.
func TestWatchBlocks(t *testing.T) {
	ca := newTestCA(t)
	b := newViewBackend(t, watchState()...)
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	ctx := context.Background()

	since := b.fsm.Index()
	type answer struct {
		wr  WatchResponse
		err error
		at  time.Time
	}
	done := make(chan answer, 1)
	go func() {
		wr, err := cl.Watch(ctx, addr, since, 10*time.Second)
		done <- answer{wr, err, time.Now()}
	}()
	b.waitForWaits(t, 1)
	// Another node's pod, and a deployment: no watch of c1 wakes.
	applyTo(t, b.fsm, report("c2", "default/web-c2", "10.244.1.2"), &state.UpdateDeployment{Deployment: func() api.Deployment {
		d := testDeployment
		d.Replicas = 3
		return d
	}()})
	// A watch woken would look at the state again: give it a moment to
	// (proving that something does not happen takes a window).
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if n := b.waits.Load(); n != 1 {
			t.Fatalf("another node's pod woke the watch of c1 (%d waits)", n)
		}
	}
	// Its own pod.
	applyTo(t, b.fsm, report("c1", "default/web-c1", "10.244.0.2"))
	changedAt := time.Now()
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	if wait := a.at.Sub(changedAt); wait > 2*time.Second {
		t.Errorf("the watch answered %s after the change", wait)
	}
	if a.wr.Reset || a.wr.Index != b.fsm.Index() || !slices.Equal(events(a.wr), []string{"pod default/web-c1"}) {
		t.Fatalf("answer %+v, want pod default/web-c1 at %d", a.wr, b.fsm.Index())
	}
	if e := a.wr.Events[0]; e.Index != b.fsm.Index() || e.Pod.Status.IP != "10.244.0.2" {
		t.Errorf("event %+v, want the pod as the report left it", e)
	}
	// Woken once: by its own pod, not by the others' changes.
	if n := b.waits.Load(); n != 2 {
		t.Errorf("the watch woke %d times, want once", n-1)
	}

	// What changed while no watch waited: a pod that changed three times
	// comes once, as it is now; removed pods and node changes come too.
	since = a.wr.Index
	applyTo(t, b.fsm, report("c1", "default/web-c1", "10.244.0.3"), report("c1", "default/web-c1", "10.244.0.4"))
	wr, err := cl.Watch(ctx, addr, since, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(events(wr), []string{"pod default/web-c1"}) || wr.Events[0].Pod.Status.IP != "10.244.0.4" {
		t.Errorf("answer %+v, want pod default/web-c1 once, with the last report", wr)
	}
	since = wr.Index
	applyTo(t, b.fsm, &state.StopPods{IDs: []string{"default/web-c1"}},
		&state.RemovePods{Node: "c1", IDs: []string{"default/web-c1"}},
		&state.SetNodeStatus{Name: "c2", Status: api.NodeDown})
	wr, err = cl.Watch(ctx, addr, since, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pod default/web-c1 deleted", "node c2"}; wr.Reset || !slices.Equal(events(wr), want) {
		t.Errorf("events %q, want %q", events(wr), want)
	}
	if e := wr.Events[1]; e.Node == nil || e.Node.Status != api.NodeDown || e.Node.PodCIDR == "" {
		t.Errorf("node event %+v, want c2 down with its pod range", e)
	}
}

// TestWatchWaits: with nothing changed, a watch answers when its wait has
// passed, at the index the state is at, with no events.
func TestWatchWaits(t *testing.T) {
	ca := newTestCA(t)
	b := newViewBackend(t, watchState()...)
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	since := b.fsm.Index()
	// Changes out of the view move the index the answer gives.
	applyTo(t, b.fsm, report("c2", "default/web-c2", "10.244.1.2"))
	const wait = 200 * time.Millisecond
	start := time.Now()
	wr, err := cl.Watch(context.Background(), addr, since, wait)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < wait {
		t.Errorf("answered after %s, before the wait of %s", took, wait)
	}
	if wr.Reset || len(wr.Events) != 0 || wr.Index != b.fsm.Index() || wr.Leader != "s1" {
		t.Errorf("answer %+v, want index %d, leader s1 and no events", wr, b.fsm.Index())
	}
	// wait 0 answers at once.
	start = time.Now()
	if wr, err := cl.Watch(context.Background(), addr, wr.Index, 0); err != nil || len(wr.Events) != 0 || time.Since(start) > time.Second {
		t.Errorf("wait 0: %+v, %v after %s", wr, err, time.Since(start))
	}
}

// TestWatchLaggingServer: a server behind the index a watcher asks from
// (it read another server before a failover) waits to catch up and never
// answers with an older index.
func TestWatchLaggingServer(t *testing.T) {
	ca := newTestCA(t)
	all := append(watchState(), report("c2", "default/web-c2", "10.244.1.2"), report("c1", "default/web-c1", "10.244.0.2"))
	b := newViewBackend(t, all[:5]...) // behind by two entries
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	ctx := context.Background()
	since := uint64(6) // what the watcher read elsewhere

	wr, err := cl.Watch(ctx, addr, since, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if wr.Index != since || wr.Reset || len(wr.Events) != 0 {
		t.Errorf("still behind: %+v, want index %d and no events", wr, since)
	}

	done := make(chan WatchResponse, 1)
	go func() {
		wr, err := cl.Watch(ctx, addr, since, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- wr
	}()
	b.waitForWaits(t, 2) // the earlier watch waited once, this one once
	// Catching up to since is nothing new to the watcher; the entry after is.
	applyTo(t, b.fsm, all[5])
	applyTo(t, b.fsm, all[6])
	wr = <-done
	if wr.Index != 7 || wr.Reset || !slices.Equal(events(wr), []string{"pod default/web-c1"}) {
		t.Errorf("caught up: %+v, want pod default/web-c1 at 7", wr)
	}
}

// startWatchServer serves b as startServer does, with tweak applied to the
// http.Server, and returns the Server for the test to shut down.
func startWatchServer(t *testing.T, ca *testCA, b Backend, tweak func(*http.Server)) (string, *Server) {
	t.Helper()
	kp := ca.server(t, "s1")
	srv, err := NewServer(ServerConfig{
		TLS:     kp.ServerTLS(tls.VerifyClientCertIfGiven, nil),
		Backend: b, NodeName: "s1", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(srv.http)
	}
	return serve(t, srv), srv
}

// TestWatchOutlastsServerTimeouts: the RPC server's read and write
// timeouts suit writes; a watch waits longer and still answers.
func TestWatchOutlastsServerTimeouts(t *testing.T) {
	ca := newTestCA(t)
	b := newViewBackend(t, watchState()...)
	addr, _ := startWatchServer(t, ca, b, func(h *http.Server) {
		h.ReadTimeout, h.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond
	})
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	since := b.fsm.Index()
	const wait = 400 * time.Millisecond
	start := time.Now()
	wr, err := cl.Watch(context.Background(), addr, since, wait)
	if err != nil {
		t.Fatalf("a watch longer than the server's timeouts: %v", err)
	}
	if took := time.Since(start); took < wait || wr.Index != since {
		t.Errorf("answer %+v after %s; want index %d after the whole wait", wr, took, since)
	}
	// And the connection serves the next one.
	if _, err := cl.Watch(context.Background(), addr, since, 0); err != nil {
		t.Error(err)
	}
}

// TestWatchEndsAtShutdown: watches answer when the server shuts down, so
// it does not wait their wait out.
func TestWatchEndsAtShutdown(t *testing.T) {
	ca := newTestCA(t)
	b := newViewBackend(t, watchState()...)
	addr, srv := startWatchServer(t, ca, b, nil)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	since := b.fsm.Index()
	done := make(chan error, 1)
	go func() {
		wr, err := cl.Watch(context.Background(), addr, since, time.Minute)
		if err == nil && (wr.Index != since || len(wr.Events) != 0) {
			err = errors.New("unexpected answer")
		}
		done <- err
	}()
	b.waitForWaits(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a watch waiting: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("the watch at shutdown: %v", err)
	}
}

// liarBackend answers a watch with an index before the one asked from.
type liarBackend struct{ *fakeBackend }

func (liarBackend) WatchNodeView(string, uint64) (uint64, bool, <-chan struct{}) {
	return 9, true, nil
}

func (liarBackend) NodeView(string, uint64) ([]state.ViewChange, bool, uint64) {
	return nil, false, 3
}

func TestClientWatchErrors(t *testing.T) {
	ca := newTestCA(t)
	fb := newFakeBackend()
	fb.revoked["c9"] = true
	addr := startServer(t, ca, ca.server(t, "s1"), fb, nil)
	liar := startServer(t, ca, ca.server(t, "s1"), liarBackend{newFakeBackend()}, nil)
	ctx := context.Background()

	_, err := ca.rpcClient(t, ca.client(t, "c9", net.ParseIP("10.0.0.19"))).Watch(ctx, addr, 0, 0)
	if !errors.Is(err, state.ErrForbidden) || !strings.Contains(err.Error(), "HTTP 403") || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked: %v, want HTTP 403 wrapping ErrForbidden", err)
	}
	c1 := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	if _, err := c1.Watch(ctx, liar, 5, 0); err == nil || !strings.Contains(err.Error(), "before the 5 asked from") {
		t.Errorf("an answer going back in time: %v", err)
	}
	if _, err := c1.Watch(ctx, "", 5, 0); !errors.Is(err, state.ErrNotLeader) {
		t.Errorf("no address: %v", err)
	}
	// The caller's context bounds the watch.
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c1.Watch(cctx, addr, 1, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled watch: %v", err)
	}
}

func TestParseWatchQuery(t *testing.T) {
	tests := []struct {
		query     string
		wantSince uint64
		wantWait  time.Duration
		wantErr   string
	}{
		{"", 0, defaultWatchWait, ""},
		{"since=42&wait=10s", 42, 10 * time.Second, ""},
		{"wait=-5s", 0, 0, ""},
		{"wait=1h", 0, maxWatchWait, ""},
		{"since=18446744073709551615", 1<<64 - 1, defaultWatchWait, ""},
		{"since=18446744073709551616", 0, 0, "is not a raft index"},
		{"since=abc", 0, 0, "is not a raft index"},
		{"wait=30", 0, 0, "is not a duration"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			since, wait, err := parseWatchQuery(q)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || since != tt.wantSince || wait != tt.wantWait {
				t.Errorf("= %d, %s, %v; want %d, %s", since, wait, err, tt.wantSince, tt.wantWait)
			}
		})
	}
}

// A node's certificate holds at most maxWatchesPerNode watches waiting on
// a server; other nodes are not affected, and a slot is free again once
// its watch answered.
func TestWatchesPerNodeAreBounded(t *testing.T) {
	ca := newTestCA(t)
	b := newViewBackend(t, watchState()...)
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	c1 := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	c2 := ca.rpcClient(t, ca.client(t, "c2", net.ParseIP("10.0.0.12")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	since := b.fsm.Index()
	errs := make(chan error, maxWatchesPerNode)
	for range maxWatchesPerNode {
		go func() {
			_, err := c1.Watch(ctx, addr, since, 10*time.Second)
			errs <- err
		}()
	}
	b.waitForWaits(t, maxWatchesPerNode)
	if _, err := c1.Watch(ctx, addr, since, 10*time.Second); err == nil || !strings.Contains(err.Error(), "already has") {
		t.Fatalf("watch %d of c1: %v, want a refusal saying it already has %d", maxWatchesPerNode+1, err, maxWatchesPerNode)
	}
	go func() { _, _ = c2.Watch(ctx, addr, since, 10*time.Second) }()
	b.waitForWaits(t, maxWatchesPerNode+1)
	// c1's own pod answers its watches; then it may watch again.
	applyTo(t, b.fsm, report("c1", "default/web-c1", "10.244.0.2"))
	for range maxWatchesPerNode {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c1.Watch(ctx, addr, b.fsm.Index(), 10*time.Millisecond); err != nil {
		t.Fatalf("c1 watches again once its watches answered: %v", err)
	}
}

// Changes to other nodes wake every watch of the fleet: a watch answers
// them together after watchCoalesce, not one answer per change; its own
// pods answer at once (TestWatchBlocks).
func TestWatchCoalescesNodeChanges(t *testing.T) {
	ca := newTestCA(t)
	b := newViewBackend(t, watchState()...)
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	since := b.fsm.Index()
	type answer struct {
		wr  WatchResponse
		err error
	}
	done := make(chan answer, 1)
	go func() {
		wr, err := cl.Watch(context.Background(), addr, since, 10*time.Second)
		done <- answer{wr, err}
	}()
	b.waitForWaits(t, 1)
	start := time.Now()
	for i := range 3 {
		name := fmt.Sprintf("c%d", i+3)
		applyTo(t, b.fsm, &state.RegisterNode{Node: api.Node{Name: name, Address: fmt.Sprintf("10.0.0.%d", 13+i), CPUMillis: 2000, MemoryMiB: 1024, Status: api.NodeReady}})
		time.Sleep(100 * time.Millisecond)
	}
	a := <-done
	took := time.Since(start)
	if a.err != nil {
		t.Fatal(a.err)
	}
	if want := []string{"node c3", "node c4", "node c5"}; !slices.Equal(events(a.wr), want) {
		t.Errorf("answer %v, want the three joins in one: %v", events(a.wr), want)
	}
	if took < watchCoalesce || took > watchCoalesce+2*time.Second {
		t.Errorf("answered %s after the first join, want about %s", took, watchCoalesce)
	}
}
