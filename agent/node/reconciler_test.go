package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
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
	version uint64 // bumped by every write: what PodsChanged answers
	history map[string][]api.PodStatus
}

func newFakeStore(pods ...api.Pod) *fakeStore {
	s := &fakeStore{pods: map[string]api.Pod{}, changed: make(chan struct{})}
	for _, p := range pods {
		s.pods[p.ID()] = p
	}
	return s
}

func (s *fakeStore) Changed() <-chan struct{} { s.mu.Lock(); defer s.mu.Unlock(); return s.changed }

func (s *fakeStore) PodsChanged(string) uint64 { s.mu.Lock(); defer s.mu.Unlock(); return s.version }

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
		s.version++
		if s.history == nil {
			s.history = map[string][]api.PodStatus{}
		}
		s.history[id] = append(s.history[id], st)
	}
	return nil
}

// reported returns every status set on a pod, oldest first.
func (s *fakeStore) reported(id string) []api.PodStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.history[id])
}

func (s *fakeStore) RemovePods(_ context.Context, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.pods, id)
	}
	s.version++
	return nil
}

func (s *fakeStore) pod(id string) api.Pod { s.mu.Lock(); defer s.mu.Unlock(); return s.pods[id] }

func (s *fakeStore) update(id string, f func(*api.Pod)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pods[id]
	f(&p)
	s.pods[id] = p
	s.version++
}

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type fixture struct {
	ctx    context.Context // ends with the test, stopping probe workers
	store  *fakeStore
	rt     *runtime.Fake
	net    *podnet.Fake
	podNet *fakePodNet // what HTTP and TCP probes reach
	clock  *clock
	r      *Reconciler
}

func newFixture(t *testing.T, pods ...api.Pod) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, pods...)
}

// newFixtureWith is newFixture with configure applied to the reconciler's
// Config before New.
func newFixtureWith(t *testing.T, configure func(*fixture, *Config), pods ...api.Pod) *fixture {
	t.Helper()
	f := &fixture{ctx: t.Context(), store: newFakeStore(pods...), rt: runtime.NewFake(), net: podnet.NewFake(),
		podNet: newFakePodNet(), clock: &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	f.rt.Now = f.clock.Now
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Store, cfg.Runtime, cfg.Network, cfg.LogDir = "n1", f.store, f.rt, f.net, t.TempDir()
	cfg.Now = f.clock.Now
	cfg.Probe = func(context.Context, string) bool { return true }
	cfg.Dial = f.podNet.Dial
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if configure != nil {
		configure(f, &cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	// Runs once the test's context has ended, which stops the workers.
	t.Cleanup(r.probes.wait)
	return f
}

// realTime makes a fixture use the time package's clock: inside a
// synctest bubble, the bubble's fake clock, which probe workers' timers
// follow too.
func realTime(f *fixture, cfg *Config) {
	f.rt.Now = time.Now
	cfg.Now = time.Now
}

// step runs one pass and waits for the pod syncs it started.
func (f *fixture) step(t *testing.T) {
	t.Helper()
	if err := f.r.pass(f.ctx); err != nil {
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

func TestLastLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c")
	if got := lastLog(dir); got != nil {
		t.Errorf("no logs: %v", got)
	}
	w, err := containerlog.NewWriter(containerlog.WriterConfig{Dir: dir, MaxSize: containerlog.DefaultMaxSize, MaxFiles: containerlog.DefaultMaxFiles})
	if err != nil {
		t.Fatal(err)
	}
	in := "one\ntwo\n\nthree\r\n"
	for i := 4; i <= 12; i++ {
		in += fmt.Sprintf("line %d\n", i)
	}
	if err := w.Copy(containerlog.Stdout, strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	want := []string{"three", "line 4", "line 5", "line 6", "line 7", "line 8", "line 9", "line 10", "line 11", "line 12"}
	if got := lastLog(dir); !slices.Equal(got, want) {
		t.Errorf("lastLog = %q, want %q", got, want)
	}
}

// hookRuntime wraps a Fake so a test can interleave a pass with a pod sync:
// afterList runs once List has read the containers and before it returns,
// beforeCreate before Create; hide leaves IDs out of List, as a List taken
// before their Create would. It counts Create calls by container ID.
type hookRuntime struct {
	*runtime.Fake
	mu           sync.Mutex
	afterList    func()
	beforeCreate func(id string)
	hide         map[string]int // ID → how many more Lists leave it out
	creates      map[string]int
}

func (h *hookRuntime) List(ctx context.Context) ([]runtime.ContainerState, error) {
	cs, err := h.Fake.List(ctx)
	h.mu.Lock()
	hook := h.afterList
	h.afterList = nil // runs for one List
	cs = slices.DeleteFunc(cs, func(c runtime.ContainerState) bool {
		if h.hide[c.ID] > 0 {
			h.hide[c.ID]--
			return true
		}
		return false
	})
	h.mu.Unlock()
	if hook != nil {
		hook()
	}
	return cs, err
}

func (h *hookRuntime) Create(ctx context.Context, spec runtime.ContainerSpec) error {
	h.mu.Lock()
	hook := h.beforeCreate
	if h.creates == nil {
		h.creates = map[string]int{}
	}
	h.creates[spec.ID]++
	h.mu.Unlock()
	if hook != nil {
		hook(spec.ID)
	}
	return h.Fake.Create(ctx, spec)
}

func (h *hookRuntime) createCalls(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.creates[id]
}

// hook puts a hookRuntime between the fixture's reconciler and its Fake.
func (f *fixture) hook() *hookRuntime {
	h := &hookRuntime{Fake: f.rt}
	f.r.cfg.Runtime = h
	return h
}

// A pass that lists the runtime while a sync of a pod is creating its
// container, and sees that sync end before it goes on, must not start a
// second sync of the pod from its List: that List predates the container,
// so the second sync would create it again ("already exists") and report
// CreateContainerError, which fails the rollout (make bench, replicas=50).
func TestReconcilerDoesNotRecreateContainerOfSyncEndingDuringList(t *testing.T) {
	p := demoPod("web-a")
	f := newFixture(t, p)
	h := f.hook()
	id := containerID(&p, "app")
	ctx := context.Background()

	inCreate, release := make(chan struct{}), make(chan struct{})
	h.beforeCreate = func(string) {
		h.mu.Lock()
		h.beforeCreate = nil
		h.mu.Unlock()
		close(inCreate)
		<-release
	}
	// Pass 1 starts the pod's sync, which stops at Create.
	if err := f.r.pass(ctx); err != nil {
		t.Fatal(err)
	}
	<-inCreate
	// Pass 2 lists the runtime while the sync is stopped there; the sync
	// then creates the container and ends before pass 2 goes on.
	h.mu.Lock()
	h.afterList = func() {
		close(release)
		f.r.wg.Wait()
	}
	h.mu.Unlock()
	if err := f.r.pass(ctx); err != nil {
		t.Fatal(err)
	}
	f.r.wg.Wait()
	f.step(t) // and once more, as the sync's end wakes a pass

	if n := h.createCalls(id); n != 1 {
		t.Errorf("Create called %d times for %s, want 1", n, id)
	}
	for _, st := range f.store.reported(p.ID()) {
		for _, cs := range st.Containers {
			if cs.Reason == api.ReasonCreateError {
				t.Errorf("reported %s: %s", cs.Reason, cs.Message)
			}
		}
	}
	if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning || !st.Ready {
		t.Errorf("status = %+v, want running and ready", st)
	}
}

// A create that finds the container already there (the List the sync began
// from did not show it) adopts the container as it is, as after an agent
// restart; it never reports CreateContainerError.
func TestReconcilerAdoptsContainerThatCreateFindsExisting(t *testing.T) {
	tests := []struct {
		name string
		// prepare makes the container that Create will find.
		prepare     func(t *testing.T, rt *runtime.Fake, spec runtime.ContainerSpec)
		hiddenLists int // Lists that do not show it: the pass's, then the sync's own
		wantCreates int
		wantStarts  int
		wantPhase   string
		wantReason  string // of the container; "" when running
		wantRestart int
	}{{
		name:        "running",
		prepare:     createStarted,
		hiddenLists: 1,
		wantCreates: 1, wantStarts: 0, wantPhase: api.PodRunning,
	}, {
		name: "created, never started",
		prepare: func(t *testing.T, rt *runtime.Fake, spec runtime.ContainerSpec) {
			must(t, rt.Create(context.Background(), spec))
		},
		hiddenLists: 1,
		wantCreates: 1, wantStarts: 1, wantPhase: api.PodRunning,
	}, {
		name: "exited",
		prepare: func(t *testing.T, rt *runtime.Fake, spec runtime.ContainerSpec) {
			createStarted(t, rt, spec)
			must(t, rt.Exit(spec.ID, 2))
		},
		hiddenLists: 1,
		// The exit counts, and the restart waits for the backoff.
		wantCreates: 1, wantStarts: 0, wantPhase: api.PodPending, wantReason: api.ReasonCrashLoopBackOff, wantRestart: 1,
	}, {
		name: "from another spec",
		prepare: func(t *testing.T, rt *runtime.Fake, spec runtime.ContainerSpec) {
			spec.Labels[runtime.LabelSpecHash] = "other"
			createStarted(t, rt, spec)
		},
		hiddenLists: 1,
		// Replaced: the failed Create, then the one after removing it.
		wantCreates: 2, wantStarts: 1, wantPhase: api.PodRunning,
	}, {
		name:        "not listed again",
		prepare:     createStarted,
		hiddenLists: 2,
		wantCreates: 1, wantStarts: 0, wantPhase: api.PodPending, wantReason: api.ReasonContainerCreating,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := demoPod("web-a")
			f := newFixture(t, p)
			h := f.hook()
			id := containerID(&p, "app")
			tt.prepare(t, f.rt, runtime.ContainerSpec{ID: id, Image: "demo:v1", Labels: map[string]string{
				runtime.LabelPod: p.ID(), runtime.LabelContainer: "app", runtime.LabelSpecHash: specHash(p.Containers[0])}})
			h.hide = map[string]int{id: tt.hiddenLists}
			starts := f.rt.Starts

			f.step(t)
			if n := h.createCalls(id); n != tt.wantCreates {
				t.Errorf("Create called %d times, want %d", n, tt.wantCreates)
			}
			if n := f.rt.Starts - starts; n != tt.wantStarts {
				t.Errorf("%d starts, want %d", n, tt.wantStarts)
			}
			st := f.store.pod(p.ID()).Status
			if st.Phase != tt.wantPhase || len(st.Containers) != 1 {
				t.Fatalf("status = %+v, want phase %s", st, tt.wantPhase)
			}
			if cs := st.Containers[0]; cs.Reason != tt.wantReason || cs.RestartCount != tt.wantRestart {
				t.Errorf("container status = %+v, want reason %q, %d restarts", cs, tt.wantReason, tt.wantRestart)
			}
			if spec, _ := f.rt.Spec(id); spec.Labels[runtime.LabelSpecHash] != specHash(p.Containers[0]) {
				t.Errorf("container left with spec hash %q", spec.Labels[runtime.LabelSpecHash])
			}

			// Whatever it found, the pod comes up without another Create,
			// once any backoff has passed, and never reports a create failure.
			f.clock.Advance(f.r.cfg.Backoff.Initial)
			f.step(t)
			if n := h.createCalls(id); n != tt.wantCreates {
				t.Errorf("Create called %d times after the next pass, want %d", n, tt.wantCreates)
			}
			if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning || !st.Ready {
				t.Errorf("after the next pass: status = %+v, want running and ready", st)
			}
			for _, st := range f.store.reported(p.ID()) {
				for _, cs := range st.Containers {
					if cs.Reason == api.ReasonCreateError || cs.Reason == api.ReasonErrImagePull {
						t.Errorf("reported %s: %s", cs.Reason, cs.Message)
					}
				}
			}
		})
	}
}

func createStarted(t *testing.T, rt *runtime.Fake, spec runtime.ContainerSpec) {
	t.Helper()
	must(t, rt.Create(context.Background(), spec))
	must(t, rt.Start(context.Background(), spec.ID))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReconcilerRefusesTheNodesOwnPortsAsHostPorts: a pod asking for the
// agent's API port as a host port would take the node's own traffic; it is
// refused with a message saying why, and nothing of it is created.
func TestReconcilerRefusesTheNodesOwnPortsAsHostPorts(t *testing.T) {
	p := demoPod("web-a")
	p.Containers[0].Ports[0].HostPort = 7400
	f := newFixtureWith(t, func(_ *fixture, cfg *Config) {
		cfg.ReservedHostPorts = map[int]string{7400: "flotilla-agent's API"}
	}, p)
	f.step(t)
	got := f.store.pod(p.ID())
	if got.Status.Phase != api.PodFailed || got.Status.Reason != api.ReasonCreateError ||
		!strings.Contains(got.Status.Message, "host port 7400 is this node's own (flotilla-agent's API)") {
		t.Errorf("status = %+v, want failed with the reserved port named", got.Status)
	}
	if cs, _ := f.rt.List(f.ctx); len(cs) != 0 {
		t.Errorf("%d containers created for a refused pod", len(cs))
	}
	if atts, _ := f.net.List(f.ctx); len(atts) != 0 {
		t.Errorf("a network was set up for a refused pod: %+v", atts)
	}
}
