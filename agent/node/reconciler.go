package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// Store is the part of the replicated state a node reads and writes.
type Store interface {
	Changed() <-chan struct{}
	// PodsChanged returns the raft index at which a pod placed on node last
	// changed, so writes about other nodes' pods and other objects do not
	// wake a pass here.
	PodsChanged(node string) uint64
	Pods(f state.PodFilter) []api.Pod
	SetPodStatus(ctx context.Context, id string, st api.PodStatus) error
	RemovePods(ctx context.Context, ids []string) error
}

// Config configures a Reconciler.
type Config struct {
	NodeName string
	Store    Store
	Runtime  runtime.Runtime
	Network  podnet.Network
	// LogDir holds <namespace>_<pod>/<container>.log.
	LogDir string
	Logger *slog.Logger

	Backoff     Backoff
	StopTimeout time.Duration // SIGTERM to SIGKILL
	// Workers bounds pods set up at once: measured here, 8 concurrent
	// container starts beat both 1 and unbounded on 2 cores.
	Workers int
	Resync  time.Duration
	// MinInterval is the least time between two passes.
	MinInterval time.Duration
	// Probe reports whether addr accepts TCP connections (readiness).
	Probe func(ctx context.Context, addr string) bool
	Now   func() time.Time
}

// DefaultConfig returns working values; NodeName, Store, Runtime, Network
// and LogDir must still be set.
func DefaultConfig() Config {
	return Config{
		Backoff:     DefaultBackoff(),
		StopTimeout: 10 * time.Second,
		Workers:     8,
		Resync:      time.Second,
		MinInterval: 20 * time.Millisecond,
		Probe:       tcpProbe,
		Now:         time.Now,
		Logger:      slog.Default(),
	}
}

func tcpProbe(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: 500 * time.Millisecond}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Reconciler keeps this node's containers equal to its pods in the state.
type Reconciler struct {
	cfg Config
	log *slog.Logger
	sem chan struct{}

	mu       sync.Mutex
	inflight map[string]bool            // pod IDs being synced
	tracks   map[string]*containerTrack // container ID → restart bookkeeping
	kick     chan struct{}
	wg       sync.WaitGroup
}

// containerTrack is what the reconciler remembers about a container between
// passes: the runtime reports only its present state.
type containerTrack struct {
	restarts     int
	backoffN     int       // exits since the container last ran for Backoff.Reset
	lastExit     time.Time // ExitedAt of the last exit already counted
	lastExitCode int
	lastLog      []string
	nextStart    time.Time
	startedAt    time.Time
	failures     int // consecutive pull/create failures
	retryAt      time.Time
	errReason    string
	errMessage   string
}

// New checks cfg and returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.NodeName == "" || cfg.Store == nil || cfg.Runtime == nil || cfg.Network == nil || cfg.LogDir == "" {
		return nil, errors.New("node: NodeName, Store, Runtime, Network and LogDir are required")
	}
	def := DefaultConfig()
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = def.Backoff
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = def.StopTimeout
	}
	if cfg.Workers <= 0 {
		cfg.Workers = def.Workers
	}
	if cfg.Resync == 0 {
		cfg.Resync = def.Resync
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = def.MinInterval
	}
	if cfg.Probe == nil {
		cfg.Probe = def.Probe
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	return &Reconciler{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "node"),
		sem:      make(chan struct{}, cfg.Workers),
		inflight: map[string]bool{},
		tracks:   map[string]*containerTrack{},
		kick:     make(chan struct{}, 1),
	}, nil
}

// Run reconciles until ctx ends, then waits for in-flight pod syncs.
func (r *Reconciler) Run(ctx context.Context) {
	defer r.wg.Wait()
	t := time.NewTicker(r.cfg.Resync)
	defer t.Stop()
	for {
		changed := r.cfg.Store.Changed()
		seen := r.cfg.Store.PodsChanged(r.cfg.NodeName)
		if err := r.pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass failed; retrying", "err", err)
		}
	wait:
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// Most entries are about other nodes or other objects: a
			// pass lists containers, so it is not made for those.
			changed = r.cfg.Store.Changed()
			if r.cfg.Store.PodsChanged(r.cfg.NodeName) == seen {
				goto wait
			}
		case <-r.kick:
		case <-t.C:
		}
		// Coalesce bursts of state changes (every status report of every
		// node is one) into one runtime.List per MinInterval.
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.MinInterval):
		}
	}
}

func (r *Reconciler) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// pass compares the state with the runtime once and starts a sync for every
// pod not already being synced; it also removes what no pod owns.
func (r *Reconciler) pass(ctx context.Context) error {
	// Order matters. The pods being synced are noted first, then the state
	// and the runtime are read: a pod synced here had no sync in flight
	// when they were read, so they show everything its last sync created
	// and reported. A pod whose sync ends after this point waits for the
	// next pass, which that end wakes. (Reading first and checking in-flight
	// syncs after let a sync that ended in between be followed by one that
	// worked from a List taken before its container was created, and
	// created it again: "already exists", reported as CreateContainerError.)
	r.mu.Lock()
	busy := maps.Clone(r.inflight)
	r.mu.Unlock()
	pods := r.cfg.Store.Pods(state.PodFilter{Node: r.cfg.NodeName})
	observed, err := r.cfg.Runtime.List(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	byPod := map[string][]runtime.ContainerState{}
	for _, c := range observed {
		byPod[c.Labels[runtime.LabelPod]] = append(byPod[c.Labels[runtime.LabelPod]], c)
	}
	want := map[string]bool{}
	wantKeys := map[string]bool{}
	r.mu.Lock()
	for i := range pods {
		p := pods[i]
		want[p.ID()] = true
		wantKeys[podKey(&p)] = true
		// Never two syncs of one pod at once: they would both create,
		// start or remove its containers.
		if busy[p.ID()] || r.inflight[p.ID()] {
			continue
		}
		r.inflight[p.ID()] = true
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			select {
			case r.sem <- struct{}{}:
			case <-ctx.Done():
				r.done(p.ID())
				return
			}
			r.syncPod(ctx, &p, byPod[p.ID()])
			<-r.sem
			r.done(p.ID())
			r.wake()
		}()
	}
	r.mu.Unlock()

	// Orphans: containers and networks of pods the state no longer has,
	// e.g. removed while this agent was down. This is safe while syncs run:
	// a sync only creates things for a pod in the state, and a pod leaves
	// the state only after its own teardown removed them.
	for podID, cs := range byPod {
		if want[podID] {
			continue
		}
		for _, c := range cs {
			r.log.Info("removing orphaned container", "container", c.ID, "pod", podID)
			if err := r.cfg.Runtime.Remove(ctx, c.ID); err != nil {
				r.log.Warn("remove orphaned container", "container", c.ID, "err", err)
			}
		}
	}
	atts, err := r.cfg.Network.List(ctx)
	if err != nil {
		return fmt.Errorf("list pod networks: %w", err)
	}
	for _, a := range atts {
		if !wantKeys[a.Key] {
			r.log.Info("removing orphaned pod network", "key", a.Key, "ip", a.IP)
			if err := r.cfg.Network.Teardown(ctx, a.Key); err != nil {
				r.log.Warn("remove orphaned pod network", "key", a.Key, "err", err)
			}
		}
	}
	return nil
}

func (r *Reconciler) done(id string) {
	r.mu.Lock()
	delete(r.inflight, id)
	r.mu.Unlock()
}

func (r *Reconciler) track(p *api.Pod, container string) *containerTrack {
	id := containerID(p, container)
	r.mu.Lock()
	defer r.mu.Unlock()
	tr := r.tracks[id]
	if tr == nil {
		tr = &containerTrack{}
		// Adopting after a restart: carry the counts the state remembers.
		for _, cs := range p.Status.Containers {
			if cs.Name == container {
				tr.restarts, tr.lastExitCode, tr.lastLog = cs.RestartCount, cs.LastExitCode, cs.LastLog
			}
		}
		r.tracks[id] = tr
	}
	return tr
}

func (r *Reconciler) logPath(p *api.Pod, container string) string {
	return filepath.Join(r.cfg.LogDir, podKey(p), container+".log")
}

// syncPod moves one pod a step towards its spec and reports what it sees.
func (r *Reconciler) syncPod(ctx context.Context, p *api.Pod, observed []runtime.ContainerState) {
	log := r.log.With("pod", p.ID())
	// Names become host paths, netns names and CNI IDs below: one that
	// is not a DNS label never gets that far, whatever let it into the state.
	if err := checkPodNames(p); err != nil {
		log.Warn("refusing a pod whose names cannot be used on this node", "err", err)
		if p.Stop {
			// Nothing of it exists here; removing its directory could
			// follow a "../".
			if err := r.cfg.Store.RemovePods(ctx, []string{p.ID()}); err != nil && ctx.Err() == nil {
				log.Warn("remove pod from state; will retry", "err", err)
			}
			return
		}
		r.report(ctx, p, api.PodStatus{Phase: api.PodFailed, Reason: api.ReasonCreateError, Message: err.Error()})
		return
	}
	if p.Stop {
		r.teardown(ctx, p, observed)
		return
	}
	st := api.PodStatus{Phase: api.PodPending, StartedAt: p.Status.StartedAt}
	att, err := r.cfg.Network.Setup(ctx, podKey(p))
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		log.Warn("pod network setup failed", "err", err)
		st.Reason, st.Message = api.ReasonNetworkError, err.Error()
		r.report(ctx, p, st)
		return
	}
	st.IP = att.IP
	byID := map[string]*runtime.ContainerState{}
	for i := range observed {
		byID[observed[i].ID] = &observed[i]
	}
	running, ready := true, true
	for _, c := range p.Containers {
		cs := r.syncContainer(ctx, p, c, att, byID[containerID(p, c.Name)])
		if ctx.Err() != nil {
			return
		}
		st.Containers = append(st.Containers, cs)
		running = running && cs.State == api.ContainerRunning
		ready = ready && cs.Ready
		if cs.State != api.ContainerRunning && st.Reason == "" {
			st.Reason, st.Message = cs.Reason, cs.Message
		}
	}
	if running {
		st.Phase = api.PodRunning
		st.Ready = ready
		if st.StartedAt.IsZero() {
			st.StartedAt = r.cfg.Now().UTC().Truncate(time.Second)
		}
	}
	r.report(ctx, p, st)
}

func (r *Reconciler) report(ctx context.Context, p *api.Pod, st api.PodStatus) {
	st.Bound()
	if reflect.DeepEqual(normalize(p.Status), normalize(st)) {
		return
	}
	if err := r.cfg.Store.SetPodStatus(ctx, p.ID(), st); err != nil && ctx.Err() == nil {
		r.log.Warn("report pod status", "pod", p.ID(), "err", err)
	}
}

// normalize makes a status decoded from the state comparable with one built here.
func normalize(st api.PodStatus) api.PodStatus {
	st.StartedAt = st.StartedAt.UTC()
	if len(st.Containers) == 0 {
		st.Containers = nil
	}
	for i := range st.Containers {
		if len(st.Containers[i].LastLog) == 0 {
			st.Containers[i].LastLog = nil
		}
	}
	return st
}

// syncContainer creates, starts or restarts one container as needed. obs is
// the container as the pass's List saw it, nil if it did not.
func (r *Reconciler) syncContainer(ctx context.Context, p *api.Pod, c api.Container, att podnet.Attachment, obs *runtime.ContainerState) api.ContainerStatus {
	return r.syncContainerFrom(ctx, p, c, att, obs, true)
}

// syncContainerFrom is syncContainer; mayAdopt says whether a create that
// finds the container already there may list it and go on from what it is.
func (r *Reconciler) syncContainerFrom(ctx context.Context, p *api.Pod, c api.Container, att podnet.Attachment, obs *runtime.ContainerState, mayAdopt bool) api.ContainerStatus {
	id := containerID(p, c.Name)
	tr := r.track(p, c.Name)
	now := r.cfg.Now()
	log := r.log.With("pod", p.ID(), "container", c.Name)
	status := func(state, reason, msg string) api.ContainerStatus {
		return api.ContainerStatus{Name: c.Name, State: state, RestartCount: tr.restarts, Reason: reason, Message: msg,
			LastExitCode: tr.lastExitCode, LastLog: tr.lastLog}
	}
	if obs != nil && obs.Labels[runtime.LabelSpecHash] != specHash(c) {
		log.Info("replacing container created from another spec")
		if err := r.cfg.Runtime.Remove(ctx, id); err != nil {
			return status(api.ContainerWaiting, api.ReasonCreateError, err.Error())
		}
		obs = nil
	}
	if obs == nil {
		if now.Before(tr.retryAt) {
			return status(api.ContainerWaiting, tr.errReason, tr.errMessage)
		}
		if err := r.create(ctx, p, c, att, id); err != nil {
			if ctx.Err() != nil {
				return status(api.ContainerWaiting, api.ReasonContainerCreating, "")
			}
			if errors.Is(err, runtime.ErrAlreadyExists) {
				// The container exists, though obs said it did not: no
				// other sync of this pod runs, so obs is out of date (or
				// someone else made it). Go on from what it is now, as
				// when adopting it after an agent restart: it is not a
				// failure to create it.
				if mayAdopt {
					found, lerr := r.observe(ctx, id)
					if lerr == nil && found != nil {
						log.Info("container already exists; adopting it")
						tr.failures, tr.errReason, tr.errMessage = 0, "", ""
						return r.syncContainerFrom(ctx, p, c, att, found, false)
					}
					if lerr != nil {
						err = fmt.Errorf("%w; listing it failed: %w", err, lerr)
					}
				}
				// Not listed after all, or back after being replaced:
				// the next pass lists it again.
				log.Info("container already exists; will look again next pass", "err", err)
				return status(api.ContainerWaiting, api.ReasonContainerCreating, err.Error())
			}
			reason := api.ReasonCreateError
			if errors.Is(err, errPull) {
				reason = api.ReasonErrImagePull
			}
			tr.failures++
			tr.retryAt = now.Add(r.cfg.Backoff.Delay(tr.failures))
			tr.errReason, tr.errMessage = reason, err.Error()
			log.Warn("container not started", "reason", reason, "err", err, "retry_in", r.cfg.Backoff.Delay(tr.failures))
			return status(api.ContainerWaiting, reason, err.Error())
		}
		tr.failures, tr.errReason, tr.errMessage = 0, "", ""
		tr.startedAt = now
		log.Info("container started", "ip", att.IP)
		cs := status(api.ContainerRunning, "", "")
		cs.Ready = r.ready(ctx, att, c)
		return cs
	}
	if obs.Running {
		if tr.startedAt.IsZero() {
			tr.startedAt = now // adopted after an agent restart
		}
		if tr.backoffN > 0 && now.Sub(tr.startedAt) > r.cfg.Backoff.Reset {
			tr.backoffN = 0
		}
		cs := status(api.ContainerRunning, "", "")
		cs.Ready = r.ready(ctx, att, c)
		return cs
	}
	if obs.HasTask && !obs.ExitedAt.IsZero() && !obs.ExitedAt.Equal(tr.lastExit) {
		tr.lastExit = obs.ExitedAt
		tr.restarts++
		tr.backoffN++
		tr.lastExitCode = obs.ExitCode
		tr.lastLog = tailLog(r.logPath(p, c.Name), 10)
		tr.nextStart = obs.ExitedAt.Add(r.cfg.Backoff.Delay(tr.backoffN))
		log.Warn("container exited; restarting after backoff", "exit_code", obs.ExitCode, "restarts", tr.restarts, "backoff", r.cfg.Backoff.Delay(tr.backoffN))
	}
	if now.Before(tr.nextStart) {
		return status(api.ContainerWaiting, api.ReasonCrashLoopBackOff,
			fmt.Sprintf("back-off %s restarting container that exited with code %d", r.cfg.Backoff.Delay(tr.backoffN), tr.lastExitCode))
	}
	if err := r.cfg.Runtime.Start(ctx, id); err != nil {
		if ctx.Err() == nil {
			log.Warn("restart failed", "err", err)
		}
		return status(api.ContainerWaiting, api.ReasonCreateError, err.Error())
	}
	tr.startedAt = now
	cs := status(api.ContainerRunning, "", "")
	cs.Ready = r.ready(ctx, att, c)
	return cs
}

// observe lists the runtime and returns container id, or nil if it is not there.
func (r *Reconciler) observe(ctx context.Context, id string) (*runtime.ContainerState, error) {
	cs, err := r.cfg.Runtime.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	for i := range cs {
		if cs[i].ID == id {
			return &cs[i], nil
		}
	}
	return nil, nil
}

// errPull marks a create failure caused by the image.
var errPull = errors.New("image pull failed")

func (r *Reconciler) create(ctx context.Context, p *api.Pod, c api.Container, att podnet.Attachment, id string) error {
	if err := r.cfg.Runtime.EnsureImage(ctx, c.Image); err != nil {
		return fmt.Errorf("%w: %w", errPull, err)
	}
	logPath := r.logPath(p, c.Name)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o750); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	env := map[string]string{
		"FLOTILLA_POD_NAME":      p.Name,
		"FLOTILLA_POD_NAMESPACE": p.Namespace,
		"FLOTILLA_POD_IP":        att.IP,
		"FLOTILLA_NODE_NAME":     r.cfg.NodeName,
	}
	for k, v := range c.Env {
		env[k] = v
	}
	spec := runtime.ContainerSpec{
		ID: id, Image: c.Image, Command: c.Command, Args: c.Args, Env: env,
		Hostname: p.Name, NetNSPath: att.NetNSPath,
		CPULimitMillis: c.CPULimit, CPURequestMillis: c.CPURequest, MemoryLimitBytes: c.MemoryLimit << 20,
		LogPath: logPath,
		Labels: map[string]string{
			runtime.LabelPod:       p.ID(),
			runtime.LabelContainer: c.Name,
			runtime.LabelSpecHash:  specHash(c),
		},
	}
	if err := r.cfg.Runtime.Create(ctx, spec); err != nil {
		return fmt.Errorf("create container: %w", err)
	}
	if err := r.cfg.Runtime.Start(ctx, id); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	return nil
}

// ready is a TCP probe of the container's first TCP port; a container that
// declares no port is ready once it runs.
func (r *Reconciler) ready(ctx context.Context, att podnet.Attachment, c api.Container) bool {
	for _, port := range c.Ports {
		if port.Protocol == "" || port.Protocol == "tcp" {
			return r.cfg.Probe(ctx, net.JoinHostPort(att.IP, strconv.Itoa(port.ContainerPort)))
		}
	}
	return true
}

// teardown stops and removes a pod's containers and network, then removes
// the pod from the state: a pod leaves the state only once nothing of it is left.
func (r *Reconciler) teardown(ctx context.Context, p *api.Pod, observed []runtime.ContainerState) {
	log := r.log.With("pod", p.ID())
	var wg sync.WaitGroup
	errs := make([]error, len(observed))
	for i, c := range observed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.cfg.Runtime.Stop(ctx, c.ID, r.cfg.StopTimeout); err != nil {
				errs[i] = err
				return
			}
			errs[i] = r.cfg.Runtime.Remove(ctx, c.ID)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		log.Warn("stop pod containers; will retry", "err", err)
		return
	}
	if err := r.cfg.Network.Teardown(ctx, podKey(p)); err != nil {
		log.Warn("tear down pod network; will retry", "err", err)
		return
	}
	if err := os.RemoveAll(filepath.Join(r.cfg.LogDir, podKey(p))); err != nil {
		log.Warn("remove pod logs", "err", err)
	}
	if err := r.cfg.Store.RemovePods(ctx, []string{p.ID()}); err != nil {
		if ctx.Err() == nil {
			log.Warn("remove pod from state; will retry", "err", err)
		}
		return
	}
	r.mu.Lock()
	for _, c := range p.Containers {
		delete(r.tracks, containerID(p, c.Name))
	}
	r.mu.Unlock()
	log.Info("pod removed")
}

// tailLog returns the last n non-empty lines of a container's log.
func tailLog(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const window = 8 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		_, _ = f.Seek(-window, io.SeekEnd)
	}
	b, _ := io.ReadAll(io.LimitReader(f, window))
	var lines []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if s := strings.TrimRight(string(l), "\r"); strings.TrimSpace(s) != "" {
			lines = append(lines, s)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
