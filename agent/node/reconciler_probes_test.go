package node

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// A container whose liveness probe fails FailureThreshold times in a row
// is stopped and restarted with the crash-loop backoff; each time counts as
// a restart, with the exit code of the kill and the probe's failure in the
// container's status while it waits.
func TestReconcilerRestartsContainerFailingLiveness(t *testing.T) {
	tests := []struct {
		name    string
		probe   api.Probe
		wantMsg string
	}{
		{"HTTP", api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}, PeriodSeconds: 1, FailureThreshold: 3},
			"liveness probe failed: HTTP GET /healthz: status 500"},
		{"exec", api.Probe{Exec: &api.ExecProbe{Command: []string{"/bin/check"}}, PeriodSeconds: 1, FailureThreshold: 3},
			"liveness probe failed: exec /bin/check: exit code 1: unhealthy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := demoPod("web-a")
				p.Containers[0].LivenessProbe = &tt.probe
				f := newFixtureWith(t, realTime, p)
				var healthy atomic.Bool
				healthy.Store(true)
				f.podNet.handle(8080, func(w http.ResponseWriter, r *http.Request) {
					if !healthy.Load() {
						w.WriteHeader(http.StatusInternalServerError)
					}
				})
				f.rt.SetExecFunc(func(context.Context, string, []string) (int, []byte, error) {
					if healthy.Load() {
						return 0, nil, nil
					}
					return 1, []byte("unhealthy\n"), nil
				})

				f.step(t)
				time.Sleep(10 * time.Second)
				synctest.Wait()
				f.step(t)
				if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning || !st.Ready || f.rt.Starts != 1 {
					t.Fatalf("healthy: status %+v after %d starts; want running and ready after 1", st, f.rt.Starts)
				}

				healthy.Store(false)
				b := f.r.cfg.Backoff
				for i := 1; i <= 3; i++ {
					// Probes every second: three failures in a row.
					time.Sleep(3 * time.Second)
					synctest.Wait()
					f.step(t)
					st := f.store.pod(p.ID()).Status
					cs := st.Containers[0]
					if st.Phase != api.PodPending || st.Ready || cs.State != api.ContainerWaiting || cs.Reason != api.ReasonCrashLoopBackOff ||
						cs.RestartCount != i || cs.LastExitCode != 137 || !strings.Contains(cs.Message, tt.wantMsg) {
						t.Fatalf("failure %d: status %+v, container %+v; want waiting in back-off, %d restarts, exit code 137, message with %q",
							i, st, cs, i, tt.wantMsg)
					}
					if f.rt.Starts != i {
						t.Fatalf("failure %d: %d starts before the backoff", i, f.rt.Starts)
					}
					time.Sleep(b.Delay(i) - time.Millisecond)
					f.step(t)
					if f.rt.Starts != i {
						t.Fatalf("failure %d: restarted before the backoff of %s", i, b.Delay(i))
					}
					time.Sleep(time.Millisecond)
					f.step(t)
					if st := f.store.pod(p.ID()).Status; f.rt.Starts != i+1 || st.Phase != api.PodRunning {
						t.Fatalf("failure %d: %d starts, phase %s after the backoff; want %d, running", i, f.rt.Starts, st.Phase, i+1)
					}
				}

				// Healthy again: it stays up and keeps its count.
				healthy.Store(true)
				time.Sleep(time.Minute)
				synctest.Wait()
				f.step(t)
				st := f.store.pod(p.ID()).Status
				if cs := st.Containers[0]; st.Phase != api.PodRunning || !st.Ready || cs.RestartCount != 3 || cs.Message != "" || f.rt.Starts != 4 {
					t.Errorf("healthy again: status %+v after %d starts; want running, ready, 3 restarts, 4 starts", st, f.rt.Starts)
				}
				// Each kill is an Unhealthy and a Killing event, counted.
				events := eventLines(st.Events)
				for _, want := range []string{
					"Warning Unhealthy ×3: Liveness probe of app failed: " + strings.TrimPrefix(tt.wantMsg, "liveness probe failed: "),
					"Normal Killing ×3: Stopped container app (exit code 137): it failed its liveness probe and is restarted after back-off",
					"Normal Started ×4: Started container app",
				} {
					if !slices.Contains(events, want) {
						t.Errorf("events %q\nhave no %q", events, want)
					}
				}
			})
		})
	}
}

// A container with a readiness probe is ready exactly while its probe
// says so, whatever MinReadySeconds says; a failing readiness probe never
// restarts it.
func TestReconcilerReadinessProbeGatesReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := demoPod("web-a")
		p.MinReadySeconds = 30 // not applied: the pod has a readiness probe
		p.Containers[0].ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/ready", Port: 8080}, PeriodSeconds: 2, FailureThreshold: 2}
		// A container without probes or ports is ready once it runs.
		p.Containers = append(p.Containers, api.Container{Name: "sidecar", Image: "demo:v1"})
		f := newFixtureWith(t, realTime, p)
		var code atomic.Int32
		code.Store(http.StatusServiceUnavailable)
		f.podNet.handle(8080, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(code.Load())) })
		check := func(what string, wantReady bool, wantMsg string) {
			t.Helper()
			f.step(t)
			st := f.store.pod(p.ID()).Status
			if st.Phase != api.PodRunning || st.Ready != wantReady || len(st.Containers) != 2 {
				t.Fatalf("%s: status %+v; want running, ready %v", what, st, wantReady)
			}
			app, sidecar := st.Containers[0], st.Containers[1]
			if app.Ready != wantReady || app.Message != wantMsg || app.RestartCount != 0 || !sidecar.Ready {
				t.Fatalf("%s: containers %+v; want app ready %v with message %q, sidecar ready", what, st.Containers, wantReady, wantMsg)
			}
		}

		check("started", false, "")
		time.Sleep(2 * time.Second) // failures at 0 s and 2 s
		synctest.Wait()
		check("failing", false, "readiness probe failed: HTTP GET /ready: status 503")

		code.Store(http.StatusOK)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		check("succeeding", true, "")

		code.Store(http.StatusInternalServerError)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		check("one failure", true, "")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		check("two failures", false, "readiness probe failed: HTTP GET /ready: status 500")
		if f.rt.Starts != 2 {
			t.Errorf("%d starts, want 2: readiness never restarts", f.rt.Starts)
		}
		// A readiness failure is an event when it starts (or its reason
		// changes), not at every probe.
		events := eventLines(f.store.pod(p.ID()).Status.Events)
		want := []string{
			"Normal Started: Started container app",
			"Normal Started: Started container sidecar",
			"Warning Unhealthy: Readiness probe of app failed: HTTP GET /ready: status 503",
			"Warning Unhealthy: Readiness probe of app failed: HTTP GET /ready: status 500",
		}
		if !slices.Equal(events, want) {
			t.Errorf("events:\n got %q\nwant %q", events, want)
		}
	})
}

// The goal of MinReadySeconds: a container that exits the moment it
// starts, however often a pass catches it running, is never reported
// ready. Without it (0), it is, which is what MinReadySeconds is for.
func TestReconcilerNeverReportsReadyContainerThatExitsAtOnce(t *testing.T) {
	for _, tt := range []struct {
		minReady  int
		everReady bool
	}{{minReady: 1, everReady: false}, {minReady: 0, everReady: true}} {
		p := demoPod("web-a")
		p.MinReadySeconds = tt.minReady
		f := newFixture(t, p)
		id := containerID(&p, "app")
		for i := 1; i <= 5; i++ {
			f.step(t) // started, or restarted after the backoff
			f.clock.Advance(10 * time.Millisecond)
			f.step(t) // seen running again
			if err := f.rt.Exit(id, 3); err != nil {
				t.Fatal(err)
			}
			f.step(t)
			if cs := f.store.pod(p.ID()).Status.Containers[0]; cs.Reason != api.ReasonCrashLoopBackOff || cs.RestartCount != i || cs.LastExitCode != 3 {
				t.Fatalf("min ready %d, exit %d: container %+v", tt.minReady, i, cs)
			}
			f.clock.Advance(f.r.cfg.Backoff.Delay(i))
		}
		everReady, everRunning := false, false
		for _, st := range f.store.reported(p.ID()) {
			everReady = everReady || st.Ready
			everRunning = everRunning || st.Phase == api.PodRunning
		}
		if everReady != tt.everReady || !everRunning {
			t.Errorf("min ready %d: reported ready %v, running %v; want ready %v, running", tt.minReady, everReady, everRunning, tt.everReady)
		}
	}
}

// A pod without readiness probes turns ready MinReadySeconds after its
// last container started, not before; an exit starts the wait again; the
// reconciler asks to be woken when the wait ends.
func TestReconcilerMinReadySeconds(t *testing.T) {
	p := demoPod("web-a")
	p.MinReadySeconds = 2
	f := newFixture(t, p)
	id := containerID(&p, "app")
	wantReady := func(what string, want bool) {
		t.Helper()
		f.step(t)
		if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning || st.Ready != want || !st.Containers[0].Ready {
			t.Fatalf("%s: status %+v; want running, ready %v (the container itself ready)", what, st, want)
		}
	}
	nextWake := func() time.Time {
		f.r.mu.Lock()
		defer f.r.mu.Unlock()
		return f.r.nextWake
	}

	start := f.clock.Now()
	wantReady("started", false)
	if got := nextWake(); !got.Equal(start.Add(2 * time.Second)) {
		t.Errorf("wake-up asked for %v, want %v", got, start.Add(2*time.Second))
	}
	f.clock.Advance(2*time.Second - time.Millisecond)
	wantReady("just before", false)
	f.clock.Advance(time.Millisecond)
	wantReady("min ready passed", true)

	// An exit starts the wait again.
	if err := f.rt.Exit(id, 1); err != nil {
		t.Fatal(err)
	}
	f.step(t)
	f.clock.Advance(f.r.cfg.Backoff.Initial)
	restart := f.clock.Now()
	wantReady("restarted", false)
	if got := nextWake(); got.Before(restart.Add(2 * time.Second)) {
		t.Errorf("wake-up asked for %v, want %v", got, restart.Add(2*time.Second))
	}
	f.clock.Advance(2*time.Second - time.Millisecond)
	wantReady("just before, after the restart", false)
	f.clock.Advance(time.Millisecond)
	wantReady("min ready passed after the restart", true)
}

// Run turns a pod ready as soon as its min ready seconds pass, not at the
// next resync.
func TestRunReportsReadyWhenMinReadyPasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := demoPod("web-a")
		p.MinReadySeconds = 3
		f := newFixtureWith(t, func(f *fixture, cfg *Config) {
			realTime(f, cfg)
			cfg.Resync = time.Hour
		}, p)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.r.Run(ctx)
		}()
		time.Sleep(3*time.Second - time.Millisecond)
		synctest.Wait()
		if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning || st.Ready {
			t.Fatalf("before min ready: %+v", st)
		}
		time.Sleep(f.r.cfg.MinInterval + 2*time.Millisecond)
		synctest.Wait()
		if st := f.store.pod(p.ID()).Status; !st.Ready {
			t.Fatalf("a pass interval after min ready: %+v", st)
		}
		cancel()
		<-done
	})
}

// An agent restart adopts running containers as they were reported: a
// ready pod stays ready, without waiting again for its probes or its min
// ready seconds.
func TestReconcilerAdoptionKeepsReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := demoPod("web-a")
		p.MinReadySeconds = 5
		p.Containers = append(p.Containers, api.Container{Name: "probed", Image: "demo:v1",
			ReadinessProbe: &api.Probe{Exec: &api.ExecProbe{Command: []string{"/bin/check"}}, InitialDelaySeconds: 30}})
		f := newFixtureWith(t, realTime, p)
		f.step(t)
		time.Sleep(time.Minute)
		synctest.Wait()
		f.step(t)
		if st := f.store.pod(p.ID()).Status; !st.Ready {
			t.Fatalf("before the agent restart: %+v", st)
		}
		reports := len(f.store.reported(p.ID()))

		f2 := newFixtureWith(t, realTime)
		f2.store, f2.rt, f2.net = f.store, f.rt, f.net
		f2.r.cfg.Store, f2.r.cfg.Runtime, f2.r.cfg.Network = f.store, f.rt, f.net
		f2.step(t)
		f2.step(t)
		for _, st := range f.store.reported(p.ID())[reports:] {
			if !st.Ready {
				t.Errorf("after the agent restart, reported %+v", st)
			}
		}
		if st := f.store.pod(p.ID()).Status; !st.Ready || f.rt.Starts != 2 {
			t.Errorf("after the agent restart: %+v after %d starts", st, f.rt.Starts)
		}
	})
}
