package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// eventLine renders an event for comparison: "Warning Exited ×2: message".
func eventLine(e api.Event) string {
	s := e.Type + " " + e.Reason
	if e.Count > 1 {
		s += fmt.Sprintf(" ×%d", e.Count)
	}
	return s + ": " + e.Message
}

func eventLines(es []api.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, eventLine(e))
	}
	return out
}

func TestReconcilerEvents(t *testing.T) {
	scheduled := api.Event{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Type: api.EventNormal, Reason: api.EventScheduled, Message: "Assigned default/web-a to n1"}
	tests := []struct {
		name string
		run  func(t *testing.T, f *fixture, p *api.Pod)
		want []string
	}{
		{"started", func(t *testing.T, f *fixture, p *api.Pod) { f.step(t) }, []string{
			"Normal Scheduled: Assigned default/web-a to n1",
			"Normal Started: Started container app",
		}},
		{"pulled", func(t *testing.T, f *fixture, p *api.Pod) {
			f.rt.RemoteImages["demo:v1"] = true
			f.step(t)
		}, []string{
			"Normal Scheduled: Assigned default/web-a to n1",
			`Normal Pulled: Pulled image "demo:v1" in 0s`,
			"Normal Started: Started container app",
		}},
		{"restarts count up", func(t *testing.T, f *fixture, p *api.Pod) {
			f.step(t)
			for range 3 {
				if err := f.rt.Exit(containerID(p, "app"), 2); err != nil {
					t.Fatal(err)
				}
				f.step(t)
				f.clock.Advance(10 * time.Minute) // past any back-off, within the events' hour
				f.step(t)
			}
		}, []string{
			"Normal Scheduled: Assigned default/web-a to n1",
			"Warning Exited ×3: Container app exited with code 2",
			"Normal Started ×4: Started container app",
		}},
		{"older than an hour dropped when written", func(t *testing.T, f *fixture, p *api.Pod) {
			f.step(t)
			f.clock.Advance(2 * time.Hour)
			if err := f.rt.Exit(containerID(p, "app"), 1); err != nil {
				t.Fatal(err)
			}
			f.step(t)
		}, []string{
			"Warning Exited: Container app exited with code 1",
		}},
		{"pull failure retried", func(t *testing.T, f *fixture, p *api.Pod) {
			f.rt.MissingImages["demo:v1"] = true
			f.step(t)
			f.step(t) // within the back-off: no new attempt, no new event
			f.clock.Advance(time.Minute)
			f.step(t)
			delete(f.rt.MissingImages, "demo:v1")
			f.clock.Advance(time.Minute)
			f.step(t)
		}, []string{
			"Normal Scheduled: Assigned default/web-a to n1",
			`Warning ErrImagePull ×2: Failed to pull image "demo:v1": image pull failed: pull "demo:v1": image not found`,
			"Normal Started: Started container app",
		}},
		{"network failure once", func(t *testing.T, f *fixture, p *api.Pod) {
			f.r.cfg.Network = failingNet{f.net}
			for range 5 {
				f.step(t)
			}
		}, []string{
			"Normal Scheduled: Assigned default/web-a to n1",
			"Warning NetworkSetupError: no addresses left",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := demoPod("web-a")
			p.Status.Events = []api.Event{scheduled}
			f := newFixture(t, p)
			tt.run(t, f, &p)
			got := eventLines(f.store.pod(p.ID()).Status.Events)
			if !slices.Equal(got, tt.want) {
				t.Errorf("events:\n got %q\nwant %q", got, tt.want)
			}
			if st := f.store.pod(p.ID()).Status; st.Validate() != nil {
				err := st.Validate()
				t.Errorf("reported status does not validate: %v", err)
			}
		})
	}
}

// An event is never a write of its own: a settled pod is not reported
// again, and a stale view of the pod does not lose the events written.
func TestReconcilerEventsRideStatusReports(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	n := len(f.store.reported(p.ID()))
	for range 5 {
		f.step(t)
	}
	if m := len(f.store.reported(p.ID())); m != n {
		t.Errorf("a settled pod was reported %d more times", m-n)
	}
	// The view lags behind the node's own write: the pod shows no events.
	f.store.update(p.ID(), func(p *api.Pod) { p.Status.Events = nil })
	if err := f.rt.Exit(containerID(&p, "app"), 1); err != nil {
		t.Fatal(err)
	}
	f.step(t)
	got := eventLines(f.store.pod(p.ID()).Status.Events)
	want := []string{"Normal Started: Started container app", "Warning Exited: Container app exited with code 1"}
	if !slices.Equal(got, want) {
		t.Errorf("events after a stale view:\n got %q\nwant %q", got, want)
	}
}

func TestReconcilerForgetsEventsOfRemovedPods(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	f.store.update(p.ID(), func(p *api.Pod) { p.Stop = true })
	f.step(t)
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	if _, ok := f.r.events[p.ID()]; ok {
		t.Error("a removed pod's events are still kept")
	}
}

// failingNet fails every pod network setup.
type failingNet struct{ podnet.Network }

func (failingNet) Setup(context.Context, string, ...podnet.SetupOption) (podnet.Attachment, error) {
	return podnet.Attachment{}, errors.New("no addresses left")
}

func TestExitEvent(t *testing.T) {
	c := api.Container{Name: "app", MemoryLimit: 64}
	for _, tt := range []struct {
		obs          runtime.ContainerState
		reason, want string
	}{
		{runtime.ContainerState{ExitCode: 3}, api.EventExited, "Container app exited with code 3"},
		{runtime.ContainerState{ExitCode: 137, OOMKilled: true}, api.EventOOMKilled, "Container app killed for going over its memory limit of 64 MiB (OOMKilled)"},
	} {
		if reason, msg := exitEvent(c, &tt.obs); reason != tt.reason || msg != tt.want {
			t.Errorf("exitEvent(%+v) = %q %q, want %q %q", tt.obs, reason, msg, tt.reason, tt.want)
		}
	}
}
