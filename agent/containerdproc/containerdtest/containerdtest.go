// Package containerdtest runs a throwaway private containerd for tests, as
// raft's testing.go ships its own harness. Start skips the test unless it runs
// as root on a machine with containerd installed, and its cleanup leaves
// nothing behind even when the test fails: it deletes every task and
// container, stops the daemon, kills shims and container processes it left,
// unmounts what is mounted under its directory and removes the directory.
package containerdtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/flotilla-io/flotilla/agent/containerdproc"
)

// Daemon is a private containerd owned by one test.
type Daemon struct {
	// Dir holds the daemon's root, state, socket, config and log.
	Dir    string
	Config containerdproc.Config
	// Process is the current daemon; Restart replaces it.
	Process *containerdproc.Process
}

// SkipUnlessPrivileged skips t unless it runs as root and containerd is
// installed.
func SkipUnlessPrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: containerd integration tests need root (run via make test as root)")
	}
	if _, err := exec.LookPath("/usr/bin/containerd"); err != nil {
		t.Skip("skipping: /usr/bin/containerd is not installed (apt-get install containerd runc)")
	}
}

// Start starts a private containerd in a fresh directory and registers its
// cleanup on t.
func Start(t testing.TB) *Daemon {
	t.Helper()
	SkipUnlessPrivileged(t)
	// A short directory of our own rather than t.TempDir(): socket paths are
	// limited to 104 bytes and long test names would exceed it.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	cfg := containerdproc.DefaultConfig(dir)
	cfg.Binary = "/usr/bin/containerd"
	cfg.ReadyTimeout = 20 * time.Second
	d := &Daemon{Dir: dir, Config: cfg}
	t.Cleanup(func() { d.cleanup(t) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.Process, err = containerdproc.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	return d
}

// Address returns the daemon's socket path.
func (d *Daemon) Address() string { return d.Config.Address }

// Stop stops the daemon, leaving its shims (and so its containers) running.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := d.Process.Stop(ctx); err != nil {
		t.Fatalf("stop containerd: %v", err)
	}
}

// Restart starts the daemon again with the same config after Stop.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := containerdproc.Start(ctx, d.Config)
	if err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	d.Process = p
}

// cleanup removes everything the daemon made. Each step runs even if an
// earlier one failed; problems are logged, not fatal, so the rest still runs.
func (d *Daemon) cleanup(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if d.Process != nil && d.Process.Alive() {
		if err := deleteAll(ctx, d.Config.Address); err != nil {
			t.Logf("containerdtest: deleting containers: %v", err)
		}
		if err := d.Process.Stop(ctx); err != nil {
			t.Logf("containerdtest: stopping containerd: %v", err)
		}
	}
	killShims(t, d.Config.Address)
	unmountUnder(t, d.Dir)
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Logf("containerdtest: removing %s: %v", d.Dir, err)
	}
}

// deleteAll kills and deletes every task and container in every namespace.
func deleteAll(ctx context.Context, address string) error {
	c, err := containerd.New(address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		return err
	}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := c.Containers(nctx)
		if err != nil {
			return err
		}
		for _, ctr := range ctrs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				_, _ = task.Delete(nctx, containerd.WithProcessKill)
			}
			if err := ctr.Delete(nctx, containerd.WithSnapshotCleanup); err != nil {
				_ = ctr.Delete(nctx)
			}
		}
	}
	return nil
}

// killShims kills runc shims serving address, and their children (the
// container processes) first, in case deleting tasks through the API failed.
func killShims(t testing.TB, address string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		ours := false
		for i := range args {
			if args[i] == "-address" && i+1 < len(args) && args[i+1] == address {
				ours = true
			}
		}
		if !ours {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		for _, child := range childrenOf(pid) {
			_ = syscall.Kill(child, syscall.SIGKILL)
		}
		t.Logf("containerdtest: killing leftover shim pid %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func childrenOf(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(s); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(t testing.TB, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("containerdtest: unmount %s: %v", m, err)
		}
	}
}

// RemoveCgroup removes a cgroup path (e.g. "/flotilla-test-1234") and its
// children from every cgroup v1 controller and the unified hierarchy. Tests
// that give containers their own cgroup parent call it in t.Cleanup.
func RemoveCgroup(t testing.TB, path string) {
	if path = filepath.Clean("/" + path); path == "/" {
		t.Errorf("containerdtest: refusing to remove the root cgroup")
		return
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		top := filepath.Join(root, path)
		if _, err := os.Stat(top); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			// EBUSY while a just-killed process is still exiting.
			deadline := time.Now().Add(3 * time.Second)
			for {
				err := syscall.Rmdir(dirs[i])
				if err == nil || os.IsNotExist(err) {
					break
				}
				if err != syscall.EBUSY || time.Now().After(deadline) {
					t.Logf("containerdtest: rmdir %s: %v", dirs[i], err)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}
