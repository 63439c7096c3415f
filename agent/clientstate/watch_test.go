package clientstate

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/rpc"
)

// logRecorder is a slog.Handler that keeps the level and message of every
// record.
type logRecorder struct {
	mu      sync.Mutex
	records []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Level.String()+" "+r.Message)
	return nil
}

// count returns how many records of level there are.
func (l *logRecorder) count(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if len(r) > len(level.String()) && r[:len(level.String())+1] == level.String()+" " {
			n++
		}
	}
	return n
}

// runStore returns an in-memory store with fast timings whose Run starts on
// the first server, and a log of what it logged.
func runStore(t *testing.T) (*Store, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	s, err := Open("", slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	s.backoffMin, s.backoffMax, s.minEmptyGap = time.Millisecond, 4*time.Millisecond, 0
	s.startAt = func(int) int { return 0 }
	return s, rec
}

// startRun runs s.Run until the test ends.
func startRun(t *testing.T, s *Store, w Watcher, servers func() []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, w, servers)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func fixed(addrs ...string) func() []string { return func() []string { return addrs } }

// waitCalls waits until w has seen n calls and returns them.
func waitCalls(t *testing.T, w *FakeWatcher, n int) []WatchCall {
	t.Helper()
	waitFor(t, "watch calls", func() bool { return len(w.Calls()) >= n })
	return w.Calls()
}

func TestRunFailoverResumesFromLastIndex(t *testing.T) {
	s, _ := runStore(t)
	w := &FakeWatcher{}
	down := errors.New("connection refused")
	w.Script("a:4648",
		WatchStep{Resp: fullView()},
		WatchStep{Resp: rpc.WatchResponse{Index: 7, Leader: "s1", Events: []rpc.WatchEvent{podDel(6, "default/web-b")}}},
		WatchStep{Err: down},
	)
	w.Script("b:4648",
		WatchStep{Resp: rpc.WatchResponse{Index: 9, Leader: "s2", Events: []rpc.WatchEvent{podEv(9, testPod("web-c", "n1"))}}},
		WatchStep{Err: down},
	)
	w.Script("c:4648", WatchStep{Err: down})
	startRun(t, s, w, fixed("a:4648", "b:4648", "c:4648"))

	// a: 0 → 5 → 7, then down; b: 7 → 9, then down; c down; a again from 9.
	calls := waitCalls(t, w, 7)
	want := []WatchCall{
		{"a:4648", 0, DefaultWatchWait}, {"a:4648", 5, DefaultWatchWait}, {"a:4648", 7, DefaultWatchWait},
		{"b:4648", 7, DefaultWatchWait}, {"b:4648", 9, DefaultWatchWait},
		{"c:4648", 9, DefaultWatchWait}, {"a:4648", 9, DefaultWatchWait},
	}
	if !reflect.DeepEqual(calls[:7], want) {
		t.Fatalf("calls =\n%v\nwant\n%v", calls[:7], want)
	}
	v := viewOf(s)
	if v.Index != 9 || v.Leader != "s2" || !reflect.DeepEqual(slices.Sorted(maps.Keys(v.Pods)), []string{"default/web-a", "default/web-c"}) {
		t.Fatalf("view = %+v", v)
	}

	// A server that answers Reset replaces the view.
	w.Script("a:4648", WatchStep{Resp: rpc.WatchResponse{Index: 12, Reset: true, Leader: "s1", Events: []rpc.WatchEvent{podEv(12, testPod("web-z", "n1"))}}})
	waitFor(t, "the reset", func() bool { return s.Index() == 12 })
	if v := viewOf(s); len(v.Pods) != 1 || len(v.Nodes) != 0 || v.Cluster {
		t.Fatalf("view after the reset = %+v, want web-z alone", v)
	}
	waitFor(t, "connected", s.Connected)
	if st := s.Status(); !st.Connected || st.Server != "a:4648" || st.LastContact.IsZero() || st.Index != 12 || st.Leader != "s1" {
		t.Fatalf("status = %+v", st)
	}
}

func TestRunDoesNotApplyALaggingServer(t *testing.T) {
	s, _ := runStore(t)
	w := &FakeWatcher{}
	w.Script("a:4648", WatchStep{Resp: func() rpc.WatchResponse { r := fullView(); r.Index = 10; return r }()}, WatchStep{Err: errors.New("reset by peer")})
	// b lags: it is at 8 and would answer a reset at 8 without web-a.
	w.Script("b:4648", WatchStep{Resp: rpc.WatchResponse{Index: 8, Reset: true, Leader: "s2", Events: []rpc.WatchEvent{podEv(8, testPod("web-lag", "n1"))}}})
	startRun(t, s, w, fixed("a:4648", "b:4648"))

	calls := waitCalls(t, w, 4)
	want := []WatchCall{{"a:4648", 0, DefaultWatchWait}, {"a:4648", 10, DefaultWatchWait}, {"b:4648", 10, DefaultWatchWait}, {"a:4648", 10, DefaultWatchWait}}
	if !reflect.DeepEqual(calls[:4], want) {
		t.Fatalf("calls =\n%v\nwant\n%v", calls[:4], want)
	}
	if v := viewOf(s); v.Index != 10 || v.Leader != "s1" || len(v.Pods) != 2 {
		t.Fatalf("view = %+v; the lagging answer was applied", v)
	}
	if _, ok := s.Pod("default/web-lag"); ok {
		t.Fatal("the lagging server's pod is in the view")
	}
	if s.Connected() {
		t.Fatal("Connected after the lagging answer, want false until an answer is applied")
	}
}

// TestRunLogsStateChangesOnly: many failed calls make one warning; an
// answer after them one info line; losing the watch again one more warning.
func TestRunLogsStateChangesOnly(t *testing.T) {
	s, rec := runStore(t)
	w := &FakeWatcher{}
	down := WatchStep{Err: errors.New("connection refused")}
	w.Script("a:4648", down, down, down, down)
	w.Script("b:4648", down, down, down, down)
	startRun(t, s, w, fixed("a:4648", "b:4648"))

	waitCalls(t, w, 9) // 8 failures, then a waits
	if n := rec.count(slog.LevelWarn); n != 1 {
		t.Fatalf("%d warnings for 8 failed calls, want 1: %v", n, rec.records)
	}
	if s.Connected() {
		t.Fatal("Connected with every server down")
	}
	// The 9th call waits on a's script.
	w.Script("a:4648", WatchStep{Resp: fullView()}, down)
	waitCalls(t, w, 11)
	waitFor(t, "the warning about losing the watch again", func() bool { return rec.count(slog.LevelWarn) == 2 })
	if n := rec.count(slog.LevelInfo); n != 1 {
		t.Fatalf("%d info lines, want 1 (watching again): %v", n, rec.records)
	}
	if s.Index() != 5 {
		t.Fatalf("index = %d, want 5", s.Index())
	}
}

// TestRunFollowsMembership: no server at first, then one; Run asks
// servers() again before each call.
func TestRunFollowsMembership(t *testing.T) {
	s, _ := runStore(t)
	w := &FakeWatcher{}
	w.Script("a:4648", WatchStep{Resp: fullView()})
	var known atomic.Bool
	startRun(t, s, w, func() []string {
		if known.Load() {
			return []string{"a:4648"}
		}
		return nil
	})
	if len(w.Calls()) != 0 {
		t.Fatal("watched with no server known")
	}
	known.Store(true)
	waitFor(t, "the first view", func() bool { return s.Index() == 5 })
}

func TestNextAddr(t *testing.T) {
	addrs := []string{"a", "b", "c"}
	for cur, want := range map[string]string{"a": "b", "b": "c", "c": "a", "gone": "a"} {
		if got := nextAddr(addrs, cur); got != want {
			t.Errorf("nextAddr(%q) = %q, want %q", cur, got, want)
		}
	}
}

// TestRunRewindsWhenEveryServerIsBehind: when the servers' state went back
// (a restore from an older backup), answer after answer is behind the
// view; after rewindAfter of them the client asks for the whole view and
// takes it, older as it is, rather than watching nothing forever.
func TestRunRewindsWhenEveryServerIsBehind(t *testing.T) {
	s, _ := runStore(t)
	w := &FakeWatcher{}
	ahead := fullView()
	ahead.Index = 100
	w.Script("a:4648", WatchStep{Resp: ahead})
	older := rpc.WatchResponse{Index: 40, Reset: true, Leader: "s1", Events: []rpc.WatchEvent{podEv(40, testPod("web-restored", "n1"))}}
	// Both servers answer from the older state, again and again.
	for range rewindAfter + 1 {
		w.Script("a:4648", WatchStep{Resp: older})
		w.Script("b:4648", WatchStep{Resp: older})
	}
	startRun(t, s, w, fixed("a:4648", "b:4648"))
	waitFor(t, "the rewound view", func() bool { _, ok := s.Pod("default/web-restored"); return ok })
	if got := s.Index(); got != 40 {
		t.Errorf("index after the rewind = %d, want 40", got)
	}
	var zero int
	for _, c := range w.Calls() {
		if c.Since == 0 {
			zero++
		}
	}
	if zero != 2 { // the first watch and the rewind
		t.Errorf("%d watches from 0, want 2", zero)
	}
}

// hangingWatcher blocks every call until its context ends, counting calls
// per address.
type hangingWatcher struct {
	mu    sync.Mutex
	calls map[string]int
}

func (h *hangingWatcher) Watch(ctx context.Context, addr string, since uint64, wait time.Duration) (rpc.WatchResponse, error) {
	h.mu.Lock()
	h.calls[addr]++
	h.mu.Unlock()
	<-ctx.Done()
	return rpc.WatchResponse{}, ctx.Err()
}

func (h *hangingWatcher) count(addr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[addr]
}

// TestRetryCutsAHangingCallShort: a call waiting on a server that comes
// back alive (a connection that may be dead) is made again at once; a
// server other than the one watched leaves the call alone.
func TestRetryCutsAHangingCallShort(t *testing.T) {
	s, _ := runStore(t)
	w := &hangingWatcher{calls: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, w, func() []string { return []string{"a:1", "b:1"} }); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("the first call", func() bool { return w.count("a:1") == 1 })
	s.Retry("b:1")
	time.Sleep(50 * time.Millisecond)
	if n := w.count("a:1"); n != 1 {
		t.Fatalf("a retry for another server cut the call short: %d calls", n)
	}
	s.Retry("a:1")
	waitFor("the call made again", func() bool { return w.count("a:1") == 2 })
}
