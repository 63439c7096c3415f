package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/pkg/apparmor"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sync/singleflight"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/runtime"
)

// LabelLogDir records a container's log directory so Start can find it.
const LabelLogDir = "io.flotilla.log-dir"

// labelLogPath is where agents before containerlog recorded a container's
// single log file, <dir>.log: Start of such a container writes to <dir>.
const labelLogPath = "io.flotilla.log-path"

const (
	// cfsPeriod is the CFS period for CPU limits, in microseconds.
	cfsPeriod = 100000
	// runcRuntime is containerd's runc shim v2, the default runtime.
	runcRuntime = "io.containerd.runc.v2"
	// killWait bounds how long Stop waits for a SIGKILLed task to exit.
	killWait = 10 * time.Second
)

var _ runtime.Runtime = (*Runtime)(nil)

// Runtime runs containers in one containerd namespace. It is safe for
// concurrent use.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	client *containerd.Client
	// httpClient talks to registries; it has timeouts, unlike http.DefaultClient.
	httpClient *http.Client
	// pulls collapses concurrent EnsureImage calls for the same image.
	pulls singleflight.Group
	// ids serializes Create and Remove of one container ID: Create removes
	// a snapshot it takes for garbage and cleans up after a failure, and
	// neither may hit the snapshot of a concurrent Create of the same ID.
	ids idLocks
	// appArmor is whether the host has AppArmor: containers then run
	// under AppArmorProfile.
	appArmor bool
}

// idLocks is a mutex per container ID, held only while in use.
type idLocks struct {
	mu    sync.Mutex
	locks map[string]*idLock
}

type idLock struct {
	mu    sync.Mutex
	users int // holders and waiters; the entry goes when it drops to 0
}

// lock locks id and returns the function that unlocks it.
func (l *idLocks) lock(id string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*idLock{}
	}
	e := l.locks[id]
	if e == nil {
		e = &idLock{}
		l.locks[id] = e
	}
	e.users++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.users--; e.users == 0 {
			delete(l.locks, id)
		}
		l.mu.Unlock()
	}
}

// New connects to containerd at cfg.Address and checks that it answers.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	client, err := containerd.New(cfg.Address,
		containerd.WithDefaultNamespace(cfg.Namespace),
		containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w; check that containerd is running", cfg.Address, err)
	}
	r := &Runtime{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "runtime", "namespace", cfg.Namespace),
		client: client,
		httpClient: &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
		}},
	}
	v, err := client.Version(r.nsCtx(ctx))
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("containerd at %s does not answer: %w", cfg.Address, err)
	}
	r.appArmor = apparmor.HostSupports()
	r.log.Info("connected to containerd", "address", cfg.Address, "version", v.Version, "apparmor", r.appArmor)
	return r, nil
}

// Close releases the connection to containerd. Containers keep running.
func (r *Runtime) Close() error {
	r.httpClient.CloseIdleConnections()
	return r.client.Close()
}

// Client returns the underlying containerd client, for tests and diagnostics.
func (r *Runtime) Client() *containerd.Client { return r.client }

func (r *Runtime) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}

func snapshotKey(id string) string { return id + "-snapshot" }

// cgroupFS is where the host's cgroup file systems are mounted.
const cgroupFS = "/sys/fs/cgroup"

// cgroupPath is the container's cgroup as specOpts sets it, or as
// containerd's default spec does (/<namespace>/<id>) without CgroupParent.
func (r *Runtime) cgroupPath(id string) string {
	if r.cfg.CgroupParent != "" {
		return path.Join(r.cfg.CgroupParent, id)
	}
	return path.Join("/", r.cfg.Namespace, id)
}

// oomKilled reports whether the memory cgroup at cgroupPath counted an OOM
// kill: "oom_kill N" in memory.oom_control (cgroup v1, kernel 4.13 and
// later) or memory.events (cgroup v2). The cgroup outlives the task's exit
// until the task is deleted, which is when a List sees it stopped.
func oomKilled(fsRoot, cgroupPath string) bool {
	for _, f := range []string{
		filepath.Join(fsRoot, "memory", cgroupPath, "memory.oom_control"),
		filepath.Join(fsRoot, cgroupPath, "memory.events"),
	} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		return oomKillCount(b) > 0
	}
	return false
}

// oomKillCount reads the "oom_kill N" line of a cgroup memory file.
func oomKillCount(b []byte) int64 {
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == "oom_kill" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return 0
}

// Create creates the container and its root file system snapshot. The image
// must be present (EnsureImage or ImportImages first). A container with the
// ID that exists is left alone: the error wraps runtime.ErrAlreadyExists.
func (r *Runtime) Create(ctx context.Context, spec runtime.ContainerSpec) error {
	ctx = r.nsCtx(ctx)
	if spec.ID == "" {
		return errors.New("create container: empty ID")
	}
	defer r.ids.lock(spec.ID)()
	if _, err := r.client.LoadContainer(ctx, spec.ID); err == nil {
		return fmt.Errorf("create container %s: %w", spec.ID, runtime.ErrAlreadyExists)
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	sandbox, err := sandboxOpts(spec, r.appArmor)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, errors.Join(runtime.ErrInvalidSpec, err))
	}
	ref, err := normalizeRef(spec.Image)
	if err != nil {
		return fmt.Errorf("create container %s: %w", spec.ID, err)
	}
	img, err := r.client.GetImage(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("create container %s: image %q is not present in namespace %s; pull it (EnsureImage) or import it first: %w", spec.ID, spec.Image, r.cfg.Namespace, err)
		}
		return fmt.Errorf("create container %s: look up image %q: %w", spec.ID, spec.Image, err)
	}

	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Destination) {
			return fmt.Errorf("create container %s: mount %q on %q: both paths must be absolute: %w", spec.ID, m.Source, m.Destination, runtime.ErrInvalidSpec)
		}
	}
	if spec.LogDir != "" {
		if !filepath.IsAbs(spec.LogDir) {
			return fmt.Errorf("create container %s: log directory %q must be absolute: %w", spec.ID, spec.LogDir, runtime.ErrInvalidSpec)
		}
		if r.cfg.LogDriver == "" {
			return fmt.Errorf("create container %s: it has a log directory, and the runtime has no LogDriver to write it", spec.ID)
		}
		labels[LabelLogDir] = spec.LogDir
	}

	// A snapshot left by an earlier failed Create would make Prepare fail;
	// with no container owning it, it is garbage.
	snapshotter := r.client.SnapshotService(r.cfg.Snapshotter)
	if err := snapshotter.Remove(ctx, snapshotKey(spec.ID)); err != nil && !errdefs.IsNotFound(err) {
		r.log.Warn("removing stale snapshot", "id", spec.ID, "err", err)
	}

	opts := []containerd.NewContainerOpts{
		containerd.WithImage(img),
		containerd.WithSnapshotter(r.cfg.Snapshotter),
		containerd.WithNewSnapshot(snapshotKey(spec.ID), img),
		containerd.WithNewSpec(append(r.specOpts(img, spec), sandbox...)...),
		containerd.WithContainerLabels(labels),
	}
	if r.cfg.RuncRoot != "" {
		opts = append(opts, containerd.WithRuntime(runcRuntime, &runcoptions.Options{Root: r.cfg.RuncRoot}))
	}
	_, err = r.client.NewContainer(ctx, spec.ID, opts...)
	if err != nil {
		if _, lerr := r.client.LoadContainer(ctx, spec.ID); lerr == nil {
			// Created behind our back (another client of the namespace):
			// the snapshot is that container's now.
			return fmt.Errorf("create container %s: %w", spec.ID, runtime.ErrAlreadyExists)
		}
		if rerr := snapshotter.Remove(ctx, snapshotKey(spec.ID)); rerr != nil && !errdefs.IsNotFound(rerr) {
			r.log.Warn("cleaning snapshot after failed create", "id", spec.ID, "err", rerr)
		}
		if errdefs.IsAlreadyExists(err) {
			// The snapshot of an earlier attempt that containerd was still
			// making when that attempt gave up (its deadline, an agent
			// restart): removed above, or adopted with its container at the
			// next try. Either way not a failure of this container.
			return fmt.Errorf("create container %s: leftovers of an earlier attempt (%v): %w", spec.ID, err, runtime.ErrAlreadyExists)
		}
		return fmt.Errorf("create container %s from %q: %w", spec.ID, spec.Image, err)
	}
	r.log.Debug("created container", "id", spec.ID, "image", ref)
	return nil
}

// specOpts builds the OCI spec: the image's config, then the overrides;
// Create appends sandboxOpts.
// Command and Args follow Kubernetes: Command replaces the ENTRYPOINT (and
// drops the image's CMD), Args replaces the CMD.
func (r *Runtime) specOpts(img containerd.Image, spec runtime.ContainerSpec) []oci.SpecOpts {
	opts := []oci.SpecOpts{oci.WithImageConfigArgs(img, spec.Args)}
	if len(spec.Command) > 0 {
		opts = append(opts, oci.WithProcessArgs(append(slices.Clone(spec.Command), spec.Args...)...))
	}
	if len(spec.Env) > 0 {
		env := make([]string, 0, len(spec.Env))
		for _, k := range slices.Sorted(maps.Keys(spec.Env)) {
			env = append(env, k+"="+spec.Env[k])
		}
		opts = append(opts, oci.WithEnv(env))
	}
	if spec.Hostname != "" {
		opts = append(opts, oci.WithHostname(spec.Hostname))
	}
	if spec.NetNSPath != "" {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: spec.NetNSPath}))
	}
	if spec.MemoryLimitBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(spec.MemoryLimitBytes)))
	}
	if spec.CPULimitMillis > 0 {
		opts = append(opts, oci.WithCPUCFS(spec.CPULimitMillis*cfsPeriod/1000, cfsPeriod))
	}
	if spec.CPURequestMillis > 0 {
		opts = append(opts, oci.WithCPUShares(cpuShares(spec.CPURequestMillis)))
	}
	if r.cfg.CgroupParent != "" {
		opts = append(opts, oci.WithCgroup(path.Join(r.cfg.CgroupParent, spec.ID)))
	}
	if len(spec.Mounts) > 0 {
		opts = append(opts, oci.WithMounts(bindMounts(spec.Mounts)))
	}
	return opts
}

// bindMounts turns the spec's mounts into OCI bind mounts. rbind as the
// CRI plugin mounts them; "ro" makes runc remount read-only.
func bindMounts(ms []runtime.Mount) []specs.Mount {
	out := make([]specs.Mount, 0, len(ms))
	for _, m := range ms {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		out = append(out, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source,
			Options: []string{"rbind", "rprivate", "nosuid", "nodev", mode}})
	}
	return out
}

// cpuShares converts a CPU request to cgroup v1 shares as the kubelet does
// (1000m = 1024 shares, at least 2).
func cpuShares(millis int64) uint64 {
	s := millis * 1024 / 1000
	if s < 2 {
		s = 2
	}
	return uint64(s)
}

// Start starts the container's task, its stdout and stderr going to a new
// run in the log directory given at Create. An exited task is deleted
// first, so Start also restarts. Starting a running container does nothing.
func (r *Runtime) Start(ctx context.Context, id string) error {
	ctx = r.nsCtx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	if task, err := c.Task(ctx, nil); err == nil {
		st, err := task.Status(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("start container %s: task status: %w", id, err)
		}
		switch st.Status {
		case containerd.Running, containerd.Paused, containerd.Pausing:
			return nil
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("start container %s: delete old task: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("start container %s: load task: %w", id, err)
	}

	labels, err := c.Labels(ctx)
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	ioCreator, err := r.logIO(labels)
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	task, err := c.NewTask(ctx, ioCreator)
	if errdefs.IsAlreadyExists(err) {
		// A task made by an earlier Start that gave up before containerd
		// answered: adopt it if it runs, else replace it.
		if old, lerr := c.Task(ctx, nil); lerr == nil {
			if st, serr := old.Status(ctx); serr == nil && (st.Status == containerd.Running || st.Status == containerd.Paused) {
				return nil
			}
			if _, derr := old.Delete(ctx, containerd.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
				return fmt.Errorf("start container %s: delete the task of an earlier attempt: %w", id, derr)
			}
		}
		task, err = c.NewTask(ctx, ioCreator)
	}
	if err != nil {
		return fmt.Errorf("start container %s: create task: %w", id, err)
	}
	if err := task.Start(ctx); err != nil {
		if _, derr := task.Delete(ctx, containerd.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
			r.log.Warn("deleting task that failed to start", "id", id, "err", derr)
		}
		return fmt.Errorf("start container %s: %w", id, err)
	}
	r.log.Debug("started container", "id", id, "pid", task.Pid())
	return nil
}

// logIO is where a task's stdout and stderr go. The shim starts the log
// driver (containerd's binary:// logging) and owns it, as it owns the
// task: the agent is not in the path of the output, and may restart or
// stop while containers write. Deleting the task stops the driver, once it
// has written what was left in the pipes.
//
// File logging (cio.LogFile) also keeps the agent out of the path, but the
// shim appends to one file forever: no rotation, no time or stream per line.
func (r *Runtime) logIO(labels map[string]string) (cio.Creator, error) {
	dir := labels[LabelLogDir]
	if dir == "" {
		if old := labels[labelLogPath]; old != "" {
			dir = strings.TrimSuffix(old, ".log")
		}
	}
	if dir == "" {
		return cio.NullIO, nil
	}
	if r.cfg.LogDriver == "" {
		return nil, fmt.Errorf("it has a log directory, and the runtime has no LogDriver to write it")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create log directory: %w", err)
	}
	return cio.BinaryIO(r.cfg.LogDriver, containerlog.DriverArgs(containerlog.WriterConfig{
		Dir: dir, MaxSize: r.cfg.LogMaxSize, MaxFiles: r.cfg.LogMaxFiles,
	})), nil
}

// Stop sends SIGTERM, waits up to timeout for the task to exit, then sends
// SIGKILL, and deletes the task. timeout <= 0 kills at once. It returns the
// exit code of the task it deleted, or -1: a container without a task, or
// a missing container, is not an error.
func (r *Runtime) Stop(ctx context.Context, id string, timeout time.Duration) (int, error) {
	ctx = r.nsCtx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return -1, nil
	} else if err != nil {
		return -1, fmt.Errorf("stop container %s: %w", id, err)
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return -1, nil
	} else if err != nil {
		return -1, fmt.Errorf("stop container %s: load task: %w", id, err)
	}
	st, err := task.Status(ctx)
	if err != nil && !errdefs.IsNotFound(err) {
		return -1, fmt.Errorf("stop container %s: task status: %w", id, err)
	}
	if st.Status != containerd.Stopped {
		// Wait must be set up before the signal, or the exit can be missed.
		waitCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		exitC, err := task.Wait(waitCtx)
		if err != nil {
			return -1, fmt.Errorf("stop container %s: wait: %w", id, err)
		}
		exited := false
		if timeout > 0 {
			if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
				return -1, fmt.Errorf("stop container %s: SIGTERM: %w", id, err)
			}
			exited = waitExit(ctx, exitC, timeout)
		}
		if !exited {
			if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
				return -1, fmt.Errorf("stop container %s: SIGKILL: %w", id, err)
			}
			if !waitExit(ctx, exitC, killWait) {
				if ctx.Err() != nil {
					return -1, fmt.Errorf("stop container %s: %w", id, ctx.Err())
				}
				return -1, fmt.Errorf("stop container %s: task did not exit %s after SIGKILL", id, killWait)
			}
		}
	}
	es, err := task.Delete(ctx)
	if err != nil && !errdefs.IsNotFound(err) {
		return -1, fmt.Errorf("stop container %s: delete task: %w", id, err)
	}
	code := -1
	if es != nil {
		code = int(es.ExitCode())
	}
	r.log.Debug("stopped container", "id", id, "exit_code", code)
	return code, nil
}

func waitExit(ctx context.Context, exitC <-chan containerd.ExitStatus, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-exitC:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Remove kills the container's task if any, then deletes the container and
// its snapshot. A missing container is not an error.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	defer r.ids.lock(id)()
	if _, err := r.Stop(ctx, id, 0); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	ctx = r.nsCtx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	r.log.Debug("removed container", "id", id)
	return nil
}

// List returns every container in the namespace with its task state, using
// two calls in all (containers, then all tasks), so it is cheap to poll.
func (r *Runtime) List(ctx context.Context) ([]runtime.ContainerState, error) {
	ctx = r.nsCtx(ctx)
	ctrs, err := r.client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	resp, err := r.client.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", errdefs.FromGRPC(err))
	}
	tasks := make(map[string]*tasktypes.Process, len(resp.Tasks))
	for _, t := range resp.Tasks {
		// containerd 1.6 fills only ID (the container's ID) for a task's
		// init process; later versions also set ContainerID.
		id := t.ContainerID
		if id == "" {
			id = t.ID
		}
		tasks[id] = t
	}
	out := make([]runtime.ContainerState, 0, len(ctrs))
	for _, c := range ctrs {
		st := runtime.ContainerState{ID: c.ID, Labels: c.Labels}
		if t, ok := tasks[c.ID]; ok {
			st.HasTask = true
			st.Pid = t.Pid
			switch t.Status {
			case tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
				st.Running = true
			case tasktypes.Status_STOPPED:
				st.ExitCode = int(t.ExitStatus)
				// An unset time comes back as year 1 (Go's zero time).
				if t.ExitedAt != nil && t.ExitedAt.Seconds > 0 {
					st.ExitedAt = t.ExitedAt.AsTime()
				}
				// SIGKILL is how the kernel's OOM killer ends a process.
				if t.ExitStatus == 128+uint32(syscall.SIGKILL) {
					st.OOMKilled = oomKilled(cgroupFS, r.cgroupPath(c.ID))
				}
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
