package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
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
	// LogDir holds each container's log directory,
	// <namespace>_<pod>/<container>/ (package containerlog).
	LogDir string
	// PodDir holds <namespace>_<pod>/, the files the node makes for a pod's
	// containers (its resolv.conf), removed with the pod. Needed by
	// ResolvConf.
	PodDir string
	// ResolvConf, when set, returns the resolv.conf of a pod in namespace
	// (the cluster DNS, see clusterdns.PodResolvConf): it is written to
	// <PodDir>/<namespace>_<pod>/resolv.conf when a container is created
	// and bind-mounted read-only at /etc/resolv.conf. Its content must
	// depend only on its argument and the cluster's layout, so that
	// containers made before and after an agent restart agree.
	ResolvConf func(namespace string) ([]byte, error)
	Logger     *slog.Logger

	Backoff     Backoff
	StopTimeout time.Duration // SIGTERM to SIGKILL
	// Workers bounds pods set up at once: measured here, 8 concurrent
	// container starts beat both 1 and unbounded on 2 cores.
	Workers int
	Resync  time.Duration
	// MinInterval is the least time between two passes.
	MinInterval time.Duration
	// Probe reports whether addr accepts TCP connections: the readiness of
	// a container without a readiness probe that has a TCP port.
	Probe func(ctx context.Context, addr string) bool
	// Dial connects HTTP and TCP probes to pod IPs. Probes run in the
	// host's network namespace, which reaches pods on the bridge.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Fenced reports whether this node has been out of contact with the
	// servers for so long that its self-fencing pods must be down; nil
	// means never. While it returns true, the containers of every pod with
	// SelfFencing are stopped within a pass (Resync, or at once after
	// Wake) and not started again, and their status is not reported. It is
	// called from several goroutines on every pass and must be cheap; call
	// Wake when its answer changes.
	Fenced func() bool
	// ReservedHostPorts are the node's own ports (the agent's API, raft,
	// gossip and RPC, by number, any protocol): a pod's host port there
	// would take the node's traffic, so such a pod is refused.
	ReservedHostPorts map[int]string
	// DefaultPidsLimit bounds the processes and threads of each container
	// that sets no pids_limit, so one fork bomb cannot take every PID of
	// the node; 0 leaves them unbounded. It is not part of a container's
	// spec hash: a change applies to containers created after it.
	DefaultPidsLimit int64
	// AllowedCapabilities are the capabilities beyond
	// api.DefaultCapabilities that containers on this node may add
	// (flotilla-agent --allow-capability). A pod adding any other is
	// refused with why: SYS_ADMIN or SYS_MODULE, say, make a container as
	// good as privileged.
	AllowedCapabilities []string
	Now                 func() time.Time
}

// DefaultPidsLimit is Config.DefaultPidsLimit by default.
const DefaultPidsLimit = api.DefaultPidsLimit

// DefaultConfig returns working values; NodeName, Store, Runtime, Network
// and LogDir must still be set.
func DefaultConfig() Config {
	return Config{
		Backoff:          DefaultBackoff(),
		StopTimeout:      10 * time.Second,
		Workers:          8,
		Resync:           time.Second,
		MinInterval:      20 * time.Millisecond,
		DefaultPidsLimit: DefaultPidsLimit,
		Probe:            tcpProbe,
		Dial:             (&net.Dialer{}).DialContext,
		Now:              time.Now,
		Logger:           slog.Default(),
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

	probes *prober

	mu       sync.Mutex
	inflight map[string]bool            // pod IDs being synced
	rerun    map[string]bool            // pod IDs a pass skipped while they were synced
	removed  map[string]time.Time       // pod IDs this node removed from the state, and when
	tracks   map[string]*containerTrack // container ID → restart bookkeeping
	events   map[string][]api.Event     // pod ID → events to report (events.go)
	netFails map[string]int             // pod ID → network setups failed in a row
	lastSync map[string]time.Time       // pod ID → when its last sync started (see quiet)
	nextWake time.Time                  // a pass is due then (min ready); zero: none
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
	lastOOM      bool // the last exit was an OOM kill
	// exitReason is why the agent stopped the container last, e.g.
	// "liveness probe failed: ...": shown while it waits to restart.
	exitReason string
	nextStart  time.Time
	// startedAt is when this incarnation of the container was started (or
	// adopted) and run counts incarnations: probe workers and min ready
	// seconds count from it, and a restart gets fresh ones.
	startedAt  time.Time
	run        uint64
	failures   int // consecutive pull/create failures
	retryAt    time.Time
	errReason  string
	errMessage string
	// adoptedReady is set when the container was running and ready in the
	// status an earlier agent reported: adopting it keeps it ready instead
	// of making it wait for its first probes and min ready seconds again.
	adoptedReady bool
	// unready is the readiness failure last recorded as an event.
	unready string
}

// New checks cfg and returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.NodeName == "" || cfg.Store == nil || cfg.Runtime == nil || cfg.Network == nil || cfg.LogDir == "" {
		return nil, errors.New("node: NodeName, Store, Runtime, Network and LogDir are required")
	}
	if cfg.ResolvConf != nil && cfg.PodDir == "" {
		return nil, errors.New("node: ResolvConf needs PodDir, where the pods' resolv.conf files are written")
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
	if cfg.Dial == nil {
		cfg.Dial = def.Dial
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	r := &Reconciler{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "node"),
		sem:      make(chan struct{}, cfg.Workers),
		inflight: map[string]bool{},
		rerun:    map[string]bool{},
		removed:  map[string]time.Time{},
		tracks:   map[string]*containerTrack{},
		netFails: map[string]int{},
		lastSync: map[string]time.Time{},
		kick:     make(chan struct{}, 1),
	}
	exec := func(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error) {
		return r.cfg.Runtime.Exec(ctx, id, cmd, timeout)
	}
	r.probes = newProber(cfg.Now, cfg.Dial, exec, r.wake, r.log)
	return r, nil
}

// Run reconciles until ctx ends, then waits for in-flight pod syncs and
// probe workers.
func (r *Reconciler) Run(ctx context.Context) {
	defer r.probes.wait()
	defer r.wg.Wait()
	t := time.NewTicker(r.cfg.Resync)
	defer t.Stop()
	for {
		changed := r.cfg.Store.Changed()
		seen := r.cfg.Store.PodsChanged(r.cfg.NodeName)
		if err := r.pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass failed; retrying", "err", err)
		}
		// A pod waiting out its min ready seconds turns ready when they
		// pass, not at the next resync.
		var due <-chan time.Time
		var dueT *time.Timer
		r.mu.Lock()
		at := r.nextWake
		r.mu.Unlock()
		if !at.IsZero() {
			dueT = time.NewTimer(max(at.Sub(r.cfg.Now()), 0))
			due = dueT.C
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
		case <-due:
		}
		if dueT != nil {
			dueT.Stop()
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

// Wake makes Run pass again soon (after MinInterval), e.g. because the
// answer of Config.Fenced changed. It never blocks.
func (r *Reconciler) Wake() { r.wake() }

func (r *Reconciler) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// wakeAt asks for a pass at t.
func (r *Reconciler) wakeAt(t time.Time) {
	r.mu.Lock()
	if r.nextWake.IsZero() || t.Before(r.nextWake) {
		r.nextWake = t
	}
	r.mu.Unlock()
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
	// A wake-up that is due is this pass; the pods that still wait ask
	// again when they are synced (a busy one when its sync ends, which
	// wakes another pass).
	if !r.nextWake.IsZero() && !r.nextWake.After(r.cfg.Now()) {
		r.nextWake = time.Time{}
	}
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
	wantContainers := map[string]bool{}
	r.mu.Lock()
	for i := range pods {
		p := pods[i]
		want[p.ID()] = true
		wantKeys[podKey(&p)] = true
		for _, c := range p.Containers {
			wantContainers[containerID(&p, c.Name)] = true
		}
		// Never two syncs of one pod at once: they would both create,
		// start or remove its containers.
		if busy[p.ID()] || r.inflight[p.ID()] {
			r.rerun[p.ID()] = true // this pass wanted it: its sync's end wakes another
			continue
		}
		// A pod this node removed stays in its view until the removal
		// comes back (a client's watch): tearing it down again meanwhile
		// would run the CNI plugins for nothing, pass after pass.
		if at, ok := r.removed[p.ID()]; ok && p.Stop && r.cfg.Now().Sub(at) < removedGrace {
			continue
		}
		if r.quiet(&p, byPod[p.ID()], r.cfg.Now()) {
			continue
		}
		r.lastSync[p.ID()] = r.cfg.Now()
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
			settled := r.syncPod(ctx, &p, byPod[p.ID()])
			<-r.sem
			// A settled pod needs no pass of its own: waking one after
			// every sync made an idle node pass every MinInterval.
			if rerun := r.done(p.ID()); rerun || !settled {
				r.wake()
			}
		}()
	}
	r.mu.Unlock()

	r.mu.Lock()
	for id, at := range r.removed {
		if !want[id] || r.cfg.Now().Sub(at) >= removedGrace {
			delete(r.removed, id)
		}
	}
	for id := range r.lastSync {
		if !want[id] {
			delete(r.lastSync, id)
		}
	}
	r.mu.Unlock()

	// Orphans: containers and networks of pods the state no longer has,
	// e.g. removed while this agent was down. This is safe while syncs run:
	// a sync only creates things for a pod in the state, and a pod leaves
	// the state only after its own teardown removed them.
	r.probes.retain(func(id string) bool { return wantContainers[id] })
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
	// Keys, not List: reading every pod's IP at every pass cost 5% of the
	// agent's CPU while 200 pods started.
	keys, err := r.cfg.Network.Keys(ctx)
	if err != nil {
		return fmt.Errorf("list pod networks: %w", err)
	}
	for _, key := range keys {
		if !wantKeys[key] {
			r.log.Info("removing orphaned pod network", "key", key)
			if err := r.cfg.Network.Teardown(ctx, key); err != nil {
				r.log.Warn("remove orphaned pod network", "key", key, "err", err)
			}
		}
	}
	r.removeOrphanPodDirs(wantKeys)
	return nil
}

// removeOrphanPodDirs removes the pod directories of pods the state no
// longer has (removed while the agent was down). Safe while syncs run, as
// for containers: a sync writes only its own pod's directory.
func (r *Reconciler) removeOrphanPodDirs(wantKeys map[string]bool) {
	if r.cfg.PodDir == "" {
		return
	}
	ents, err := os.ReadDir(r.cfg.PodDir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("list pod directories", "dir", r.cfg.PodDir, "err", err)
		}
		return
	}
	for _, e := range ents {
		if wantKeys[e.Name()] {
			continue
		}
		r.log.Info("removing orphaned pod directory", "key", e.Name())
		if err := os.RemoveAll(filepath.Join(r.cfg.PodDir, e.Name())); err != nil {
			r.log.Warn("remove orphaned pod directory", "key", e.Name(), "err", err)
		}
	}
}

// resolvConfName is the pod's resolv.conf under its pod directory.
const resolvConfName = "resolv.conf"

// writeResolvConf writes the pod's resolv.conf unless it holds that
// already, and returns its path. A changed file is replaced by a rename:
// containers that have the old one mounted keep it, new ones get the new.
func (r *Reconciler) writeResolvConf(p *api.Pod) (string, error) {
	want, err := r.cfg.ResolvConf(p.Namespace)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(r.cfg.PodDir, podKey(p))
	path := filepath.Join(dir, resolvConfName)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, resolvConfName+".tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: already gone
	_, werr := tmp.Write(want)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// removedGrace is how long a pod this node removed may still show in its
// view before it is torn down again (the removal was lost, say).
const removedGrace = 5 * time.Second

// done ends a pod's sync and says whether a pass skipped the pod meanwhile.
func (r *Reconciler) done(id string) (rerun bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inflight, id)
	rerun = r.rerun[id]
	delete(r.rerun, id)
	return rerun
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
				tr.adoptedReady = p.Status.Ready && cs.State == api.ContainerRunning && cs.Ready
			}
		}
		r.tracks[id] = tr
	}
	return tr
}

func (r *Reconciler) logDir(p *api.Pod, container string) string {
	return containerLogDir(r.cfg.LogDir, p.Namespace, p.Name, container)
}

// syncPod moves one pod a step towards its spec and reports what it sees.
// It returns whether the pod is settled: nothing reported that the pass
// did not already see. Only a pod that is not asks for
// another pass at once; the others wait for a change, a probe, a timer or
// the resync.
func (r *Reconciler) syncPod(ctx context.Context, p *api.Pod, observed []runtime.ContainerState) (settled bool) {
	log := r.log.With("pod", p.ID())
	// First, whatever else is wrong with the pod: a fenced node stops it.
	if p.SelfFencing && r.cfg.Fenced != nil && r.cfg.Fenced() {
		r.fence(ctx, p, observed)
		return true // looked at again by every pass while fenced
	}
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
			return true
		}
		st := api.PodStatus{Phase: api.PodFailed, Reason: api.ReasonCreateError, Message: err.Error()}
		r.failedOnce(p, st)
		r.report(ctx, p, st)
		return true
	}
	if p.Stop {
		r.teardown(ctx, p, observed)
		return false
	}
	st := api.PodStatus{Phase: api.PodPending, StartedAt: p.Status.StartedAt}
	mappings := hostPortMappings(p)
	for _, m := range mappings {
		if what, ok := r.cfg.ReservedHostPorts[m.HostPort]; ok {
			st.Phase, st.Reason = api.PodFailed, api.ReasonCreateError
			st.Message = fmt.Sprintf("host port %d is this node's own (%s); choose another host_port", m.HostPort, what)
			r.failedOnce(p, st)
			r.report(ctx, p, st)
			return true
		}
	}
	if err := r.checkSandbox(p); err != nil {
		st.Phase, st.Reason, st.Message = api.PodFailed, api.ReasonCreateError, err.Error()
		r.failedOnce(p, st)
		r.report(ctx, p, st)
		return true
	}
	att, err := r.cfg.Network.Setup(ctx, podKey(p), podnet.WithPortMappings(mappings))
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		log.Warn("pod network setup failed", "err", err)
		r.mu.Lock()
		r.netFails[p.ID()]++
		n := r.netFails[p.ID()]
		r.mu.Unlock()
		// CNI plugins time out under load as containerd does: only a
		// failure that lasts fails a rollout.
		st.Reason, st.Message = api.ReasonNetworkError, err.Error()
		if n < transientTries {
			st.Reason, st.Message = api.ReasonContainerCreating, fmt.Sprintf("pod network: attempt %d failed; retrying: %v", n, err)
		} else {
			r.failedOnce(p, st)
		}
		r.report(ctx, p, st)
		return true // tried again at the next resync
	}
	r.mu.Lock()
	delete(r.netFails, p.ID())
	r.mu.Unlock()
	st.IP = att.IP
	byID := map[string]*runtime.ContainerState{}
	for i := range observed {
		byID[observed[i].ID] = &observed[i]
	}
	running, ready, probed, dialing := true, true, false, false
	var lastStart time.Time // of the container started last
	for _, c := range p.Containers {
		cs := r.syncContainer(ctx, p, c, att, byID[containerID(p, c.Name)])
		if ctx.Err() != nil {
			return true
		}
		st.Containers = append(st.Containers, cs)
		running = running && cs.State == api.ContainerRunning
		ready = ready && cs.Ready
		probed = probed || c.ReadinessProbe != nil
		if cs.State != api.ContainerRunning && st.Reason == "" {
			st.Reason, st.Message = cs.Reason, cs.Message
		}
		if tr := r.track(p, c.Name); tr.startedAt.After(lastStart) {
			lastStart = tr.startedAt
		}
	}
	if running {
		st.Phase = api.PodRunning
		// Without a readiness probe, a pod is ready only once all its
		// containers have run for MinReadySeconds: one that exits the
		// moment it starts is never seen ready.
		if minReady := seconds(min(p.MinReadySeconds, api.MaxProbeSeconds)); ready && !probed && minReady > 0 {
			if at := lastStart.Add(minReady); r.cfg.Now().Before(at) {
				ready = false
				r.wakeAt(at)
			}
		} else if !ready && !probed {
			// Without a readiness probe, readiness is a dial of the
			// port in each pass: keep passing until it answers.
			dialing = true
		}
		st.Ready = ready
		if st.StartedAt.IsZero() {
			st.StartedAt = r.cfg.Now().UTC().Truncate(time.Second)
		}
	}
	// Waiting pods (back-off, retries, min ready) asked for a pass when
	// their wait ends (wakeAt); probes wake one when their result changes.
	return !r.report(ctx, p, st) && !dialing
}

// report sends st unless the state has it already; it returns whether it
// sent it.
func (r *Reconciler) report(ctx context.Context, p *api.Pod, st api.PodStatus) bool {
	st.Events = r.podEvents(p)
	st.Bound()
	if reflect.DeepEqual(normalize(p.Status), normalize(st)) {
		return false
	}
	if err := r.cfg.Store.SetPodStatus(ctx, p.ID(), st); err != nil && ctx.Err() == nil {
		r.log.Warn("report pod status", "pod", p.ID(), "err", err)
	}
	return true
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
	st.Events = normalizeEvents(st.Events)
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
		cs := api.ContainerStatus{Name: c.Name, State: state, RestartCount: tr.restarts, Reason: reason, Message: msg,
			LastExitCode: tr.lastExitCode, LastLog: tr.lastLog}
		if tr.lastOOM {
			cs.LastExitReason = api.ReasonOOMKilled
		}
		return cs
	}
	if obs != nil && obs.Labels[runtime.LabelSpecHash] != specHash(c) {
		log.Info("replacing container created from another spec")
		r.probes.stop(id)
		if err := r.cfg.Runtime.Remove(ctx, id); err != nil {
			tr.failures++
			reason, msg := failureStatus(err, tr.failures)
			return status(api.ContainerWaiting, reason, msg)
		}
		obs = nil
	}
	if obs == nil {
		r.probes.stop(id) // gone: whatever probed it probes nothing now
		if now.Before(tr.retryAt) {
			r.wakeAt(tr.retryAt)
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
			// Only an error that will not go away fails at once; others
			// (containerd slow under load, a call cut off at its
			// deadline) are retried quietly a few times first.
			tr.failures++
			tr.retryAt = now.Add(r.cfg.Backoff.Delay(tr.failures))
			tr.errReason, tr.errMessage = failureStatus(err, tr.failures)
			log.Warn("container not started", "reason", tr.errReason, "err", err, "retry_in", r.cfg.Backoff.Delay(tr.failures))
			// Events for failures that fail a rollout; the quiet retries
			// of a transient one are only logged.
			switch tr.errReason {
			case api.ReasonErrImagePull:
				r.event(p, api.EventWarning, api.EventPullFailed, fmt.Sprintf("Failed to pull image %q: %v", c.Image, err))
			case api.ReasonCreateError:
				r.event(p, api.EventWarning, api.EventFailed, fmt.Sprintf("Container %s not created: %v", c.Name, err))
			}
			return status(api.ContainerWaiting, tr.errReason, tr.errMessage)
		}
		tr.failures, tr.errReason, tr.errMessage = 0, "", ""
		tr.started(now)
		log.Info("container started", "ip", att.IP)
		r.event(p, api.EventNormal, api.EventStarted, "Started container "+c.Name)
		return r.runningStatus(ctx, p, c, att, tr, status)
	}
	if obs.Running {
		if tr.startedAt.IsZero() {
			// Adopted after an agent restart. One the last agent reported
			// ready has run for its min ready seconds already.
			adopted := tr.adoptedReady
			tr.started(now)
			tr.adoptedReady = adopted
			if adopted {
				tr.startedAt = now.Add(-seconds(min(p.MinReadySeconds, api.MaxProbeSeconds)))
			}
		}
		if tr.backoffN > 0 && now.Sub(tr.startedAt) > r.cfg.Backoff.Reset {
			tr.backoffN = 0
		}
		if alive, why, found := r.probes.result(probeKey{id, liveness}, tr.run); found && !alive {
			return r.restartUnhealthy(ctx, p, c, tr, why, status)
		}
		return r.runningStatus(ctx, p, c, att, tr, status)
	}
	// Not running: its probes have nothing to probe, and a restart gets new ones.
	r.probes.stop(id)
	if obs.HasTask && !obs.ExitedAt.IsZero() && !obs.ExitedAt.Equal(tr.lastExit) {
		tr.lastExit = obs.ExitedAt
		tr.restarts++
		tr.backoffN++
		tr.lastExitCode = obs.ExitCode
		tr.exitReason, tr.lastOOM = "", obs.OOMKilled
		if obs.OOMKilled {
			tr.exitReason = oomMessage(c)
		}
		tr.lastLog = lastLog(r.logDir(p, c.Name))
		tr.nextStart = obs.ExitedAt.Add(r.cfg.Backoff.Delay(tr.backoffN))
		log.Warn("container exited; restarting after backoff", "exit_code", obs.ExitCode, "restarts", tr.restarts, "backoff", r.cfg.Backoff.Delay(tr.backoffN))
		reason, msg := exitEvent(c, obs)
		r.event(p, api.EventWarning, reason, msg)
	}
	if now.Before(tr.nextStart) {
		r.wakeAt(tr.nextStart)
		reason := api.ReasonCrashLoopBackOff
		if tr.lastOOM {
			reason = api.ReasonOOMKilled
		}
		return status(api.ContainerWaiting, reason, r.backoffMessage(tr))
	}
	if err := r.cfg.Runtime.Start(ctx, id); err != nil {
		if ctx.Err() == nil {
			log.Warn("restart failed", "err", err)
		}
		tr.failures++
		reason, msg := failureStatus(err, tr.failures)
		return status(api.ContainerWaiting, reason, msg)
	}
	tr.failures = 0
	tr.started(now)
	r.event(p, api.EventNormal, api.EventStarted, "Started container "+c.Name)
	return r.runningStatus(ctx, p, c, att, tr, status)
}

// started notes that a new incarnation of the container started at now.
func (tr *containerTrack) started(now time.Time) {
	tr.startedAt = now
	tr.run++
	tr.adoptedReady = false
}

// backoffMessage says why a container waits to restart.
func (r *Reconciler) backoffMessage(tr *containerTrack) string {
	d := r.cfg.Backoff.Delay(tr.backoffN)
	if tr.exitReason != "" {
		return fmt.Sprintf("back-off %s restarting container: %s", d, tr.exitReason)
	}
	return fmt.Sprintf("back-off %s restarting container that exited with code %d", d, tr.lastExitCode)
}

// runningStatus is the status of a running container: it makes sure its
// probes run and says whether it is ready.
func (r *Reconciler) runningStatus(ctx context.Context, p *api.Pod, c api.Container, att podnet.Attachment, tr *containerTrack,
	status func(state, reason, msg string) api.ContainerStatus) api.ContainerStatus {
	id := containerID(p, c.Name)
	target := probeTarget{id: id, ip: att.IP, pod: p.ID(), name: c.Name}
	if c.LivenessProbe != nil {
		r.probes.ensure(ctx, probeKey{id, liveness}, tr.run, *c.LivenessProbe, tr.startedAt, target, true)
	} else {
		r.probes.stop(id, liveness)
	}
	if c.ReadinessProbe == nil {
		r.probes.stop(id, readiness)
		cs := status(api.ContainerRunning, "", "")
		cs.Ready = r.ready(ctx, att, c)
		return cs
	}
	key := probeKey{id, readiness}
	r.probes.ensure(ctx, key, tr.run, *c.ReadinessProbe, tr.startedAt, target, tr.adoptedReady)
	ok, why, _ := r.probes.result(key, tr.run)
	cs := status(api.ContainerRunning, "", "")
	cs.Ready = ok
	if !ok && why != "" {
		cs.Message = "readiness probe failed: " + why
		if why != tr.unready {
			r.event(p, api.EventWarning, api.EventUnhealthy, "Readiness probe of "+c.Name+" failed: "+why)
		}
	}
	if ok || why != "" {
		tr.unready = why
	}
	return cs
}

// restartUnhealthy stops a container whose liveness probe failed, as a
// crash: it counts as a restart and the container restarts after the
// backoff, with why in its status until then.
func (r *Reconciler) restartUnhealthy(ctx context.Context, p *api.Pod, c api.Container, tr *containerTrack, why string,
	status func(state, reason, msg string) api.ContainerStatus) api.ContainerStatus {
	id := containerID(p, c.Name)
	log := r.log.With("pod", p.ID(), "container", c.Name)
	reason := "liveness probe failed: " + why
	code, err := r.cfg.Runtime.Stop(ctx, id, r.cfg.StopTimeout)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("stop container that failed its liveness probe; will retry", "err", err)
		}
		return status(api.ContainerRunning, "", reason)
	}
	r.probes.stop(id)
	tr.restarts++
	tr.backoffN++
	if code >= 0 {
		tr.lastExitCode = code
	}
	tr.exitReason, tr.lastOOM = reason, false
	tr.lastLog = lastLog(r.logDir(p, c.Name))
	tr.startedAt = time.Time{}
	tr.nextStart = r.cfg.Now().Add(r.cfg.Backoff.Delay(tr.backoffN))
	log.Warn("container stopped after failing its liveness probe; restarting after backoff", "reason", why,
		"exit_code", code, "restarts", tr.restarts, "backoff", r.cfg.Backoff.Delay(tr.backoffN))
	r.event(p, api.EventWarning, api.EventUnhealthy, "Liveness probe of "+c.Name+" failed: "+why)
	r.event(p, api.EventNormal, api.EventKilling, fmt.Sprintf("Stopped container %s (exit code %d): it failed its liveness probe and is restarted after back-off", c.Name, code))
	return status(api.ContainerWaiting, api.ReasonCrashLoopBackOff, r.backoffMessage(tr))
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
	start := r.cfg.Now()
	pulled, err := r.cfg.Runtime.EnsureImage(ctx, c.Image)
	if err != nil {
		return fmt.Errorf("%w: %w", errPull, err)
	}
	if pulled {
		r.event(p, api.EventNormal, api.EventPulled, fmt.Sprintf("Pulled image %q in %s", c.Image, r.cfg.Now().Sub(start).Round(time.Millisecond)))
	}
	logDir := r.logDir(p, c.Name)
	if err := os.MkdirAll(logDir, 0o750); err != nil {
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
	var mounts []runtime.Mount
	if r.cfg.ResolvConf != nil {
		path, err := r.writeResolvConf(p)
		if err != nil {
			return fmt.Errorf("write the pod's resolv.conf: %w", err)
		}
		mounts = append(mounts, runtime.Mount{Source: path, Destination: "/etc/resolv.conf", ReadOnly: true})
	}
	spec := runtime.ContainerSpec{
		ID: id, Image: c.Image, Command: c.Command, Args: c.Args, Env: env,
		Hostname: p.Name, NetNSPath: att.NetNSPath,
		CPULimitMillis: c.CPULimit, CPURequestMillis: c.CPURequest, MemoryLimitBytes: c.MemoryLimit << 20,
		LogDir: logDir, Mounts: mounts,
		Labels: map[string]string{
			runtime.LabelPod:       p.ID(),
			runtime.LabelContainer: c.Name,
			runtime.LabelSpecHash:  specHash(c),
		},
		PidsLimit: c.PidsLimit,
	}
	if spec.PidsLimit == 0 {
		spec.PidsLimit = r.cfg.DefaultPidsLimit
	}
	if sec := c.Security; sec != nil {
		spec.RunAsUser, spec.RunAsGroup, spec.ReadOnlyRootFS = sec.RunAsUser, sec.RunAsGroup, sec.ReadOnlyRootFilesystem
		if sec.Capabilities != nil {
			spec.CapAdd, spec.CapDrop = sec.Capabilities.Add, sec.Capabilities.Drop
		}
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
	for _, c := range p.Containers {
		r.probes.stop(containerID(p, c.Name))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(observed))
	for i, c := range observed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.cfg.Runtime.Stop(ctx, c.ID, r.cfg.StopTimeout); err != nil {
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
	if r.cfg.PodDir != "" {
		if err := os.RemoveAll(filepath.Join(r.cfg.PodDir, podKey(p))); err != nil {
			log.Warn("remove pod directory", "err", err)
		}
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
	r.forgetEvents(p.ID())
	delete(r.netFails, p.ID())
	r.removed[p.ID()] = r.cfg.Now()
	r.mu.Unlock()
	log.Info("pod removed")
}

// fenceStopTimeout bounds the SIGTERM grace of a fenced pod's containers:
// they must be down before the servers start their replacements.
const fenceStopTimeout = 2 * time.Second

// fence stops the running containers of a self-fencing pod while the node
// is fenced, leaving the containers, network and pod in place: when the
// node is back in contact, the pod is synced as usual (started again if
// the servers still want it here). Nothing is reported: the servers
// cannot be reached.
func (r *Reconciler) fence(ctx context.Context, p *api.Pod, observed []runtime.ContainerState) {
	for _, c := range p.Containers {
		r.probes.stop(containerID(p, c.Name))
	}
	timeout := min(r.cfg.StopTimeout, fenceStopTimeout)
	var wg sync.WaitGroup
	for _, c := range observed {
		if !c.Running {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.cfg.Runtime.Stop(ctx, c.ID, timeout); err != nil {
				if ctx.Err() == nil {
					r.log.Warn("stop container of a fenced pod; will retry", "pod", p.ID(), "container", c.Labels[runtime.LabelContainer], "err", err)
				}
				return
			}
			r.log.Warn("node is fenced: stopped container of self-fencing pod", "pod", p.ID(), "container", c.Labels[runtime.LabelContainer])
		}()
	}
	wg.Wait()
}

// lastLog is what a container's status shows of its last run when it
// exits: its last lines, as many and as long as the state keeps.
func lastLog(dir string) []string {
	// Longer than the state keeps: PodStatus.Bound cuts them on a rune boundary.
	return containerlog.LastLines(dir, 10, 4*api.MaxLogLineLen)
}

// hostPortMappings are the host ports p's containers declare, for the pod
// network to forward; podnet defaults the protocol to tcp and drops
// duplicates.
func hostPortMappings(p *api.Pod) []podnet.PortMapping {
	var out []podnet.PortMapping
	for _, c := range p.Containers {
		for _, port := range c.Ports {
			if port.HostPort != 0 {
				out = append(out, podnet.PortMapping{HostPort: port.HostPort, ContainerPort: port.ContainerPort, Protocol: port.Protocol})
			}
		}
	}
	return out
}
