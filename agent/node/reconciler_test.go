package node

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// fakeStore holds pods in memory with the Store semantics the reconciler relies on.
type fakeStore struct {
	mu      sync.Mutex
	pods    map[string]api.Pod
	changed chan struct{}
}

func newFakeStore(pods ...api.Pod) *fakeStore {
	s := &fakeStore{pods: map[string]api.Pod{}, changed: make(chan struct{})}
	for _, p := range pods {
		s.pods[p.ID()] = p
	}
	return s
}

func (s *fakeStore) Changed() <-chan struct{} { s.mu.Lock(); defer s.mu.Unlock(); return s.changed }

func (s *fakeStore) Pods(f state.PodFilter) []api.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Pod
	for _, p := range s.pods {
		if f.Node == "" || p.Node == f.Node {
			out = append(out, p)
		}
	}
	return out
}

func (s *fakeStore) SetPodStatus(_ context.Context, id string, st api.PodStatus) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pods[id]; ok {
		p.Status = st
		s.pods[id] = p
	}
	return nil
}

func (s *fakeStore) RemovePods(_ context.Context, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.pods, id)
	}
	return nil
}

func (s *fakeStore) pod(id string) api.Pod { s.mu.Lock(); defer s.mu.Unlock(); return s.pods[id] }

func (s *fakeStore) update(id string, f func(*api.Pod)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[id]
	f(&p)
	s.pods[id] = p
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type fixture struct {
	store *fakeStore
	rt    *runtime.Fake
	net   *podnet.Fake
	clock *clock
	r     *Reconciler
}

func newFixture(t *testing.T, pods ...api.Pod) *fixture {
	t.Helper()
	f := &fixture{store: newFakeStore(pods...), rt: runtime.NewFake(), net: podnet.NewFake(),
		clock: &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	f.rt.Now = f.clock.Now
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Store, cfg.Runtime, cfg.Network, cfg.LogDir = "n1", f.store, f.rt, f.net, t.TempDir()
	cfg.Now = f.clock.Now
	cfg.Probe = func(context.Context, string) bool { return true }
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

// step runs one pass and waits for the pod syncs it started.
func (f *fixture) step(t *testing.T) {
	t.Helper()
	if err := f.r.pass(context.Background()); err != nil {
		t.Fatalf("pass: %v", err)
	}
	f.r.wg.Wait()
}

func demoPod(name string) api.Pod {
	return api.Pod{Namespace: "default", Name: name, Deployment: "web", Node: "n1", Generation: 1,
		Containers: []api.Container{{Name: "app", Image: "demo:v1", Ports: []api.Port{{ContainerPort: 8080}}, MemoryLimit: 64}},
		Status:     api.PodStatus{Phase: api.PodPending}}
}

func TestReconcilerStartsPodAndReportsReady(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	got := f.store.pod(p.ID())
	if got.Status.Phase != api.PodRunning || !got.Status.Ready || got.Status.IP == "" {
		t.Fatalf("status = %+v, want running, ready, with an IP", got.Status)
	}
	spec, ok := f.rt.Spec(containerID(&p, "app"))
	if !ok {
		t.Fatal("container not created")
	}
	if spec.MemoryLimitBytes != 64<<20 || spec.NetNSPath == "" || spec.Labels[runtime.LabelPod] != p.ID() || spec.Env["FLOTILLA_POD_IP"] != got.Status.IP {
		t.Errorf("spec = %+v", spec)
	}
	// A second pass changes nothing.
	f.step(t)
	if f.rt.Starts != 1 {
		t.Errorf("starts = %d, want 1", f.rt.Starts)
	}
}

func TestReconcilerRestartsWithBackoffAndReportsCrashLoop(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	id := containerID(&p, "app")
	b := f.r.cfg.Backoff
	for i := 1; i <= 4; i++ {
		if err := f.rt.Exit(id, 3); err != nil {
			t.Fatal(err)
		}
		f.step(t)
		cs := f.store.pod(p.ID()).Status.Containers[0]
		if cs.Reason != api.ReasonCrashLoopBackOff || cs.RestartCount != i || cs.LastExitCode != 3 {
			t.Fatalf("exit %d: container status = %+v", i, cs)
		}
		// Not restarted before the backoff passes...
		f.clock.Advance(b.Delay(i) - time.Millisecond)
		f.step(t)
		if f.rt.Starts != i {
			t.Fatalf("exit %d: restarted before backoff %s", i, b.Delay(i))
		}
		// ...and restarted once it has.
		f.clock.Advance(2 * time.Millisecond)
		f.step(t)
		if f.rt.Starts != i+1 {
			t.Fatalf("exit %d: not restarted after backoff", i)
		}
		if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning {
			t.Fatalf("exit %d: phase %s after restart", i, st.Phase)
		}
	}
}

func TestReconcilerReportsImagePullFailureAndRetries(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.rt.MissingImages["demo:v1"] = true
	f.step(t)
	cs := f.store.pod(p.ID()).Status.Containers[0]
	if cs.Reason != api.ReasonErrImagePull || cs.Message == "" {
		t.Fatalf("status = %+v, want ErrImagePull", cs)
	}
	delete(f.rt.MissingImages, "demo:v1")
	f.clock.Advance(time.Hour)
	f.step(t)
	if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning {
		t.Fatalf("not running once the image appeared: %+v", st)
	}
}

func TestReconcilerStopsPodAndRemovesIt(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	f.store.update(p.ID(), func(p *api.Pod) { p.Stop = true })
	f.step(t)
	if _, ok := f.store.pods[p.ID()]; ok {
		t.Error("pod still in state")
	}
	if cs, _ := f.rt.List(context.Background()); len(cs) != 0 {
		t.Errorf("containers left: %v", cs)
	}
	if atts, _ := f.net.List(context.Background()); len(atts) != 0 {
		t.Errorf("networks left: %v", atts)
	}
}

func TestReconcilerAdoptsRunningContainersAndRemovesOrphans(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	f.step(t)
	// An agent restart: a new reconciler over the same runtime, network and state.
	f2 := newFixture(t)
	f2.store, f2.rt, f2.net = f.store, f.rt, f.net
	f2.r.cfg.Store, f2.r.cfg.Runtime, f2.r.cfg.Network = f.store, f.rt, f.net
	// An orphan: a container of a pod the state no longer has.
	orphan := demoPod("gone")
	if err := f.rt.Create(context.Background(), runtime.ContainerSpec{ID: containerID(&orphan, "app"), Labels: map[string]string{runtime.LabelPod: orphan.ID()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.net.Setup(context.Background(), podKey(&orphan)); err != nil {
		t.Fatal(err)
	}
	before := f.rt.Starts
	f2.step(t)
	f2.step(t)
	if f.rt.Starts != before {
		t.Errorf("adoption restarted containers: starts %d → %d", before, f.rt.Starts)
	}
	cs, _ := f.rt.List(context.Background())
	if len(cs) != 1 || cs[0].ID != containerID(&p, "app") {
		t.Errorf("containers after adoption = %v, want only the pod's", cs)
	}
	atts, _ := f.net.List(context.Background())
	if len(atts) != 1 || atts[0].Key != podKey(&p) {
		t.Errorf("networks after adoption = %v", atts)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 50: 10 * time.Second} {
		if got := b.Delay(n); got != want {
			t.Errorf("Delay(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestTailLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	if got := tailLog(path, 3); got != nil {
		t.Errorf("missing file: %v", got)
	}
	if err := os.WriteFile(path, []byte("one\ntwo\n\nthree\r\nfour\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := tailLog(path, 3), []string{"two", "three", "four"}; !slices.Equal(got, want) {
		t.Errorf("tailLog = %q, want %q", got, want)
	}
}
