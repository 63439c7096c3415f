package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// A create that fails with an error that may go away (containerd slow under
// load, a call cut off at its deadline) is reported as ContainerCreating,
// which no rollout fails on, until it has failed transientTries times in a
// row; an error that will not go away is reported at once under the reason
// that fails the rollout.
func TestReconcilerReportsOnlyLastingCreateFailures(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantAt     int // failures in a row before the reason is the failing one
		wantReason string
	}{
		{"deadline", fmt.Errorf("create x: %w", errors.Join(runtime.ErrTimeout, context.DeadlineExceeded)), transientTries, api.ReasonCreateError},
		{"unknown error", errors.New("create x: ttrpc: closed"), transientTries, api.ReasonCreateError},
		{"invalid spec", fmt.Errorf("create x: %w", runtime.ErrInvalidSpec), 1, api.ReasonCreateError},
		{"image not found", fmt.Errorf("pull: %w", runtime.ErrImageNotFound), 1, api.ReasonErrImagePull},
		{"image access denied", fmt.Errorf("pull: %w", runtime.ErrImageAccessDenied), 1, api.ReasonErrImagePull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := demoPod("web-a")
			f := newFixture(t, p)
			op := "create"
			if tt.wantReason == api.ReasonErrImagePull {
				op = "pull"
			}
			var fail sync.Map
			fail.Store("on", true)
			f.rt.Hook = func(_ context.Context, o, _ string) error {
				if on, _ := fail.Load("on"); on == true && o == op {
					return tt.err
				}
				return nil
			}
			for i := 1; i <= tt.wantAt; i++ {
				f.clock.Advance(time.Hour) // past the retry back-off
				f.step(t)
				cs := f.store.pod(p.ID()).Status.Containers[0]
				want := api.ReasonContainerCreating
				if i == tt.wantAt {
					want = tt.wantReason
				}
				if cs.Reason != want || !strings.Contains(cs.Message, tt.err.Error()) {
					t.Fatalf("after %d failures: status %s %q, want %s with the error", i, cs.Reason, cs.Message, want)
				}
			}
			fail.Store("on", false)
			f.clock.Advance(time.Hour)
			f.step(t)
			if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning {
				t.Fatalf("not running once the error went away: %+v", st)
			}
		})
	}
}

// A container the kernel killed for its memory limit shows OOMKilled with
// the limit while it waits to restart, and as its last exit reason after.
func TestReconcilerReportsOOMKilled(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	id := containerID(&p, "app")
	if err := f.rt.OOMKill(id); err != nil {
		t.Fatal(err)
	}
	f.step(t)
	cs := f.store.pod(p.ID()).Status.Containers[0]
	if cs.Reason != api.ReasonOOMKilled || !strings.Contains(cs.Message, "memory limit of 64 MiB") ||
		cs.LastExitCode != 137 || cs.LastExitReason != api.ReasonOOMKilled || cs.RestartCount != 1 {
		t.Fatalf("status = %+v, want OOMKilled naming the 64 MiB limit", cs)
	}
	f.clock.Advance(time.Hour)
	f.step(t)
	cs = f.store.pod(p.ID()).Status.Containers[0]
	if cs.State != api.ContainerRunning || cs.LastExitReason != api.ReasonOOMKilled {
		t.Fatalf("after the restart: %+v, want running with last exit reason OOMKilled", cs)
	}
	// A plain crash after it is not an OOM kill.
	if err := f.rt.Exit(id, 1); err != nil {
		t.Fatal(err)
	}
	f.step(t)
	if cs := f.store.pod(p.ID()).Status.Containers[0]; cs.Reason != api.ReasonCrashLoopBackOff || cs.LastExitReason != "" {
		t.Fatalf("after a crash: %+v, want CrashLoopBackOff without OOMKilled", cs)
	}
}

// A runtime call that hangs (and ignores its context, as a call into a
// stopped containerd may) blocks only its own pod: the Guard gives up on
// it at its deadline, the other pods are set up meanwhile, and the hung
// pod is set up once the runtime answers again.
func TestReconcilerHungCallBlocksOnlyItsPod(t *testing.T) {
	a, b := demoPod("web-a"), demoPod("web-b")
	f := newFixture(t, a, b)
	hung := containerID(&a, "app")
	release := make(chan struct{})
	f.rt.Hook = func(_ context.Context, op, id string) error {
		if op == "create" && id == hung {
			<-release // ignores ctx
		}
		return nil
	}
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	g := runtime.NewGuard(f.rt, "fake", runtime.Deadlines{Call: 200 * time.Millisecond, UnhealthyAfter: 50 * time.Millisecond}, nil)
	f.r.cfg.Runtime = g

	start := time.Now()
	f.step(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a pass waited %s for the hung call", d)
	}
	if st := f.store.pod(b.ID()).Status; st.Phase != api.PodRunning {
		t.Fatalf("the other pod: %+v, want running", st)
	}
	cs := f.store.pod(a.ID()).Status.Containers[0]
	if cs.Reason != api.ReasonContainerCreating || !strings.Contains(cs.Message, "did not answer within") {
		t.Fatalf("the hung pod: %+v, want ContainerCreating saying the runtime did not answer", cs)
	}
	if h := g.Health(); h.Healthy || !strings.Contains(h.Message, "create") {
		t.Fatalf("health = %+v, want unhealthy after a create timed out", h)
	}
	close(release)
	// The hung Create went through once released: the next try adopts it.
	for i := 0; i < 5 && f.store.pod(a.ID()).Status.Phase != api.PodRunning; i++ {
		f.clock.Advance(time.Hour)
		f.step(t)
	}
	if st := f.store.pod(a.ID()).Status; st.Phase != api.PodRunning {
		t.Fatalf("the hung pod once released: %+v, want running", st)
	}
	if h := g.Health(); !h.Healthy {
		t.Fatalf("health = %+v, want healthy once calls answer", h)
	}
}

// A pod that runs and is ready as reported is left alone by passes within
// Resync of its last sync (passes come with every status write of any pod),
// and synced again after; one whose container exited is synced at once.
func TestReconcilerLeavesQuietPodsAlone(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	f.step(t) // reports ready
	if st := f.store.pod(p.ID()).Status; !st.Ready {
		t.Fatalf("status = %+v", st)
	}
	synced := func() time.Time {
		f.r.mu.Lock()
		defer f.r.mu.Unlock()
		return f.r.lastSync[p.ID()]
	}
	first := synced()
	f.clock.Advance(f.r.cfg.Resync / 2)
	f.step(t)
	if synced() != first {
		t.Fatal("a quiet pod was synced again within Resync")
	}
	f.clock.Advance(f.r.cfg.Resync)
	f.step(t)
	if synced() == first {
		t.Fatal("a quiet pod was not synced after Resync")
	}
	second := synced()
	if err := f.rt.Exit(containerID(&p, "app"), 1); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Millisecond) // well within Resync
	f.step(t)
	if synced() == second {
		t.Fatal("a pod whose container exited was not synced at once")
	}
	if cs := f.store.pod(p.ID()).Status.Containers[0]; cs.Reason != api.ReasonCrashLoopBackOff {
		t.Fatalf("status = %+v, want CrashLoopBackOff", cs)
	}
}
