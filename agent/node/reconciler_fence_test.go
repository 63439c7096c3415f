package node

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// stopRecorder records the timeouts Stop is called with.
type stopRecorder struct {
	*runtime.Fake
	mu       sync.Mutex
	timeouts map[string][]time.Duration
}

func (s *stopRecorder) Stop(ctx context.Context, id string, timeout time.Duration) (int, error) {
	s.mu.Lock()
	if s.timeouts == nil {
		s.timeouts = map[string][]time.Duration{}
	}
	s.timeouts[id] = append(s.timeouts[id], timeout)
	s.mu.Unlock()
	return s.Fake.Stop(ctx, id, timeout)
}

func (s *stopRecorder) stops(id string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.timeouts[id]...)
}

func running(t *testing.T, rt *runtime.Fake, id string) bool {
	t.Helper()
	cs, err := rt.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.ID == id {
			return c.Running
		}
	}
	return false
}

// While Fenced says so, the containers of self-fencing pods are stopped
// quickly and not started again, and nothing is reported about those pods,
// which stay in the state; other pods are untouched. Once it says no more,
// the pods are synced as usual.
func TestReconcilerFencesSelfFencingPods(t *testing.T) {
	var fenced atomic.Bool
	guarded, plain, leaving := demoPod("guarded"), demoPod("plain"), demoPod("leaving")
	guarded.SelfFencing, leaving.SelfFencing = true, true
	f := newFixtureWith(t, func(_ *fixture, cfg *Config) { cfg.Fenced = fenced.Load }, guarded, plain, leaving)
	rec := &stopRecorder{Fake: f.rt}
	f.r.cfg.Runtime = rec
	gid, pid, lid := containerID(&guarded, "app"), containerID(&plain, "app"), containerID(&leaving, "app")

	f.step(t)
	for _, id := range []string{gid, pid, lid} {
		if !running(t, f.rt, id) {
			t.Fatalf("%s not running before fencing", id)
		}
	}
	reported := len(f.store.reported(guarded.ID()))

	fenced.Store(true)
	// The servers asked for one pod to go just before contact was lost:
	// it is stopped, but cannot leave the state while fenced.
	f.store.update(leaving.ID(), func(p *api.Pod) { p.Stop = true })
	f.step(t)
	if running(t, f.rt, gid) || running(t, f.rt, lid) {
		t.Fatal("self-fencing pods still run while fenced")
	}
	if !running(t, f.rt, pid) {
		t.Fatal("a pod without self-fencing was stopped")
	}
	if got := rec.stops(gid); len(got) != 1 || got[0] > 2*time.Second {
		t.Errorf("Stop timeouts %v, want one of at most 2s", got)
	}
	starts := f.rt.Starts
	f.clock.Advance(time.Hour)
	f.step(t)
	f.step(t)
	if f.rt.Starts != starts || running(t, f.rt, gid) {
		t.Errorf("a fenced pod was started again (%d starts, then %d)", starts, f.rt.Starts)
	}
	if n := len(f.store.reported(guarded.ID())); n != reported {
		t.Errorf("%d status reports for a fenced pod", n-reported)
	}
	if _, ok := f.store.pods[leaving.ID()]; !ok {
		t.Error("a fenced pod was removed from the state")
	}
	if cs, _ := f.rt.List(context.Background()); len(cs) != 3 {
		t.Errorf("containers of fenced pods were removed: %v", cs)
	}

	fenced.Store(false)
	f.step(t)
	if !running(t, f.rt, gid) {
		t.Fatal("not started again when no longer fenced")
	}
	if st := f.store.pod(guarded.ID()).Status; st.Phase != api.PodRunning || !st.Ready || st.Containers[0].RestartCount != 0 {
		t.Errorf("after fencing: %+v; want running, ready, no restarts counted", st)
	}
	if _, ok := f.store.pods[leaving.ID()]; ok {
		t.Error("the stopped pod was not removed once no longer fenced")
	}
}

// Run stops fenced pods within a resync of Fenced turning true, at once
// when woken.
func TestRunFencesWithinAResync(t *testing.T) {
	for _, wake := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			var fenced atomic.Bool
			p := demoPod("guarded")
			p.SelfFencing = true
			f := newFixtureWith(t, func(f *fixture, cfg *Config) {
				realTime(f, cfg)
				cfg.Fenced = fenced.Load
			}, p)
			id := containerID(&p, "app")
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				f.r.Run(ctx)
			}()
			time.Sleep(5 * time.Second)
			synctest.Wait()
			if !running(t, f.rt, id) {
				t.Fatal("not started")
			}
			fenced.Store(true)
			start := time.Now()
			if wake {
				f.r.Wake()
			}
			for running(t, f.rt, id) {
				time.Sleep(time.Millisecond)
			}
			limit := f.r.cfg.Resync + f.r.cfg.MinInterval + 5*time.Millisecond
			if wake {
				limit = f.r.cfg.MinInterval + 5*time.Millisecond
			}
			if d := time.Since(start); d > limit {
				t.Errorf("wake %v: stopped %s after fencing; want within %s", wake, d, limit)
			}
			cancel()
			<-done
		})
	}
}
