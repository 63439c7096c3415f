package containerdproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
)

// Process is a running containerd, started by this Start call or adopted from
// an earlier one through the pid file. Its methods are safe for concurrent use.
type Process struct {
	cfg     Config
	pid     int
	adopted bool
	// exited is closed once our child has been reaped; nil when adopted, as
	// only the parent can wait for a process.
	exited chan struct{}
}

// Start makes sure a containerd described by cfg is running and answering.
//
// If the pid file names a live containerd started with cfg.ConfigPath whose
// socket answers and whose root and state directories still exist, that
// daemon is reused. One that lost them (a data dir wiped while it ran) or
// does not answer is stopped and replaced, and the log says why. Otherwise
// Start writes config.toml, starts containerd in its own process group,
// records its pid, and waits up to cfg.ReadyTimeout for the socket to answer.
//
// The daemon is not tied to ctx or to this process: it keeps running when the
// agent exits (that is what lets containers survive agent restarts) until Stop
// is called. When Start started the daemon, a goroutine reaps it when it exits.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("address", cfg.Address)

	if pid, err := readPidFile(cfg.PidFile); err == nil && isOurContainerd(pid, cfg) {
		// A daemon whose directories were removed while it ran (the data
		// dir wiped while a killed agent's containerd lived on) answers but
		// writes into deleted directories, so every image import and
		// container then fails with errors that do not say why.
		why := lostDirs(pid, cfg)
		switch {
		case why != "":
			log.Warn("containerd from pid file lost its data; stopping it and starting a fresh one (containers it ran are not recovered)", "pid", pid, "reason", why)
		case answers(ctx, cfg.Address, 2*time.Second) == nil:
			log.Info("reusing running containerd", "pid", pid)
			return &Process{cfg: cfg, pid: pid, adopted: true}, nil
		default:
			// Hung or half-started: replace it. Its shims (and so its
			// containers) survive and the new daemon reloads them.
			why = "it does not answer"
			log.Warn("containerd from pid file does not answer; restarting it", "pid", pid)
		}
		old := &Process{cfg: cfg, pid: pid, adopted: true}
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := old.Stop(stopCtx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("stop containerd pid %d (%s): %w", pid, why, err)
		}
	}
	if answers(ctx, cfg.Address, time.Second) == nil {
		return nil, fmt.Errorf("another containerd already serves %s but is not recorded in %s; stop it or choose another data dir", cfg.Address, cfg.PidFile)
	}

	binary, env, err := resolveBinaries(cfg.Binary)
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.Root, cfg.State} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("create containerd directory: %w", err)
		}
	}
	for _, f := range []string{cfg.Address, cfg.LogPath, cfg.PidFile} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return nil, fmt.Errorf("create containerd directory: %w", err)
		}
	}
	if err := writeFileAtomic(cfg.ConfigPath, renderConfig(cfg), 0o644); err != nil {
		return nil, fmt.Errorf("write containerd config: %w", err)
	}
	logFile, err := os.OpenFile(cfg.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open containerd log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor

	cmd := exec.Command(binary, "--config", cfg.ConfigPath)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group: a terminal's Ctrl-C to the agent must not stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &Process{cfg: cfg, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	log.Info("started containerd", "pid", p.pid, "binary", binary, "log", cfg.LogPath)

	if err := writeFileAtomic(cfg.PidFile, []byte(strconv.Itoa(p.pid)+"\n"), 0o644); err != nil {
		p.kill()
		return nil, fmt.Errorf("write containerd pid file: %w", err)
	}
	if err := p.waitReady(ctx); err != nil {
		p.kill()
		return nil, fmt.Errorf("containerd (pid %d) did not become ready on %s: %w; see %s:\n%s", p.pid, cfg.Address, err, cfg.LogPath, tail(cfg.LogPath, 2048))
	}
	log.Info("containerd ready", "pid", p.pid)
	return p, nil
}

// Pid returns the daemon's process id.
func (p *Process) Pid() int { return p.pid }

// Address returns the daemon's gRPC socket path.
func (p *Process) Address() string { return p.cfg.Address }

// Adopted reports whether Start reused a daemon started earlier.
func (p *Process) Adopted() bool { return p.adopted }

// Alive reports whether the daemon process still runs (a zombie, exited but
// not yet reaped, counts as gone).
func (p *Process) Alive() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
		}
	}
	return pidAlive(p.pid)
}

// Stop sends SIGTERM and waits for the daemon to exit until ctx is done, then
// sends SIGKILL. It removes the pid file. Running containers are not stopped:
// their shims outlive containerd and a later Start reloads them.
func (p *Process) Stop(ctx context.Context) error {
	log := p.cfg.Logger.With("address", p.cfg.Address, "pid", p.pid)
	if p.Alive() {
		if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal containerd pid %d: %w", p.pid, err)
		}
		if !p.waitExit(ctx) {
			log.Warn("containerd did not exit after SIGTERM; killing it")
			p.kill()
			if p.Alive() {
				return fmt.Errorf("containerd pid %d did not exit after SIGKILL", p.pid)
			}
		}
		log.Info("containerd stopped")
	}
	if pid, err := readPidFile(p.cfg.PidFile); err == nil && pid == p.pid {
		_ = os.Remove(p.cfg.PidFile)
	}
	return nil
}

// kill sends SIGKILL and waits up to 5 s for the process to go away.
func (p *Process) kill() {
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.waitExit(ctx)
}

// waitExit waits until the process is gone or ctx is done; it reports
// whether the process is gone.
func (p *Process) waitExit(ctx context.Context) bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return true
		case <-ctx.Done():
			return false
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for pidAlive(p.pid) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return !pidAlive(p.pid)
		}
	}
	return true
}

// waitReady polls the socket until it answers, the child exits, or the
// ready timeout (or ctx) ends.
func (p *Process) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = answers(ctx, p.cfg.Address, time.Second); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return errors.New("containerd exited during startup")
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// answers returns nil if a containerd at address serves the version API.
func answers(ctx context.Context, address string, timeout time.Duration) error {
	if _, err := os.Stat(address); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := containerd.New(address, containerd.WithTimeout(timeout))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err
}

// resolveBinaries finds containerd, its runc shim and runc, and returns the
// containerd path and an environment whose PATH lets containerd find the shim
// and the shim find runc (Debian installs runc in /usr/sbin, which is not on
// every PATH).
func resolveBinaries(binary string) (string, []string, error) {
	bin, err := exec.LookPath(binary)
	if err != nil && binary == "containerd" {
		bin, err = exec.LookPath("/usr/bin/containerd")
	}
	if err != nil {
		return "", nil, fmt.Errorf("containerd binary %q not found: %w; install containerd (apt-get install containerd) or set the binary path", binary, err)
	}
	dirs := []string{filepath.Dir(bin)}
	shim, err := lookPathIn("containerd-shim-runc-v2", filepath.Dir(bin))
	if err != nil {
		return "", nil, fmt.Errorf("containerd-shim-runc-v2 not found next to %s or in PATH; install containerd's runc shim", bin)
	}
	dirs = append(dirs, filepath.Dir(shim))
	runc, err := lookPathIn("runc", "/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin")
	if err != nil {
		return "", nil, errors.New("runc not found in PATH, /usr/sbin or /usr/bin; install runc (apt-get install runc)")
	}
	dirs = append(dirs, filepath.Dir(runc))

	path := os.Getenv("PATH")
	for i := len(dirs) - 1; i >= 0; i-- {
		if !containsPathDir(path, dirs[i]) {
			path = dirs[i] + string(os.PathListSeparator) + path
		}
	}
	env := []string{"PATH=" + strings.TrimSuffix(path, string(os.PathListSeparator))}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return bin, env, nil
}

// lookPathIn looks name up in PATH, then in the given directories.
func lookPathIn(name string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

func containsPathDir(path, dir string) bool {
	for _, d := range filepath.SplitList(path) {
		if filepath.Clean(d) == filepath.Clean(dir) {
			return true
		}
	}
	return false
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad content %q", path, b)
	}
	return pid, nil
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...; comm may contain spaces or parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// isOurContainerd reports whether pid is alive and is a containerd started
// with cfg.ConfigPath, so a recycled pid is never mistaken for the daemon.
func isOurContainerd(pid int, cfg Config) bool {
	if !pidAlive(pid) {
		return false
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd") {
		return false
	}
	for i, a := range args {
		if a == "--config="+cfg.ConfigPath || (a == "--config" && i+1 < len(args) && args[i+1] == cfg.ConfigPath) {
			return true
		}
	}
	return false
}

// metadataDB is containerd's metadata database under its root, which the
// daemon holds open from start to exit.
const metadataDB = "io.containerd.metadata.v1.bolt/meta.db"

// lostDirs says why the running containerd pid, started with cfg, cannot be
// reused although it may still answer: its root or state directory is gone,
// or the metadata database it holds open was deleted (its root was removed
// and made again, by the daemon itself or by someone else). It returns ""
// when neither is so.
func lostDirs(pid int, cfg Config) string {
	for _, d := range []struct{ name, path string }{{"root", cfg.Root}, {"state", cfg.State}} {
		if _, err := os.Stat(d.path); errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf("its %s directory %s is gone", d.name, d.path)
		}
	}
	db := filepath.Join(cfg.Root, metadataDB)
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return "" // it exited meanwhile; Start goes on to start one
	}
	for _, fd := range fds {
		// The kernel marks a deleted file's link target " (deleted)".
		if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && target == db+" (deleted)" {
			return fmt.Sprintf("its metadata database %s was deleted while it ran", db)
		}
	}
	return ""
}

// tail returns up to the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
