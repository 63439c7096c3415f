package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flotilla-io/flotilla/agent/containerdproc"
	"github.com/flotilla-io/flotilla/agent/ingress"
	"github.com/flotilla-io/flotilla/agent/routes"
	"github.com/flotilla-io/flotilla/agent/runtime"
)

// Cleanup removes what an agent with cfg made on this machine: its
// containers, pod networks, bridge and iptables chains (the service rules
// and the service route included), its ingress proxy (nginx), its host-gw routes, its supervised
// containerd with all its images, and with purge its data dir (raft
// state). The sysctls it set (forwarding on, ICMP redirects off) stay.
// The agent must be stopped first. Running it twice is harmless.
func Cleanup(ctx context.Context, cfg Config, purge bool) error {
	var errs []error
	supervised := cfg.ContainerdAddress == ""
	var proc *containerdproc.Process
	ccfg := containerdConfig(&cfg)
	if _, err := os.Stat(ccfg.Root); err == nil || !supervised {
		if supervised {
			p, err := containerdproc.Start(ctx, ccfg)
			if err != nil {
				errs = append(errs, fmt.Errorf("start containerd to remove containers: %w", err))
			}
			proc = p
		}
		if proc != nil || !supervised {
			if rt, err := newRuntime(ctx, &cfg); err != nil {
				errs = append(errs, err)
			} else {
				errs = append(errs, removeAllContainers(ctx, rt))
				rt.Close()
			}
		}
	}
	// Services first: their route goes through the bridge the network's
	// cleanup deletes.
	errs = append(errs, cleanupServiceRules(ctx, &cfg), removeServiceRoutes(cfg.BridgeName))
	// The ingress proxy, which outlives the agent's stop.
	errs = append(errs, ingress.Remove(ctx, ingressDir(&cfg), cfg.Logger))
	// Host-gw routes, which a fleet agent leaves when it stops. The flags
	// need not say it was one (the lab cleans up with the data dir alone):
	// its identity in the data dir does. A --dev agent makes none, and
	// leaves those of a fleet agent sharing the namespace alone.
	if cfg.Fleet() || exists(filepath.Join(cfg.DataDir, "tls")) {
		errs = append(errs, routes.New(routes.Config{Logger: cfg.Logger}).Cleanup(ctx))
	}
	if n, err := newNetwork(&cfg); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, n.Cleanup(ctx))
	}
	if proc != nil {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		errs = append(errs, proc.Stop(sctx))
		cancel()
	}
	if supervised {
		for _, dir := range []string{cfg.runDir(), filepath.Join(cfg.DataDir, "containerd")} {
			errs = append(errs, unmountUnder(dir), os.RemoveAll(dir))
		}
		_ = os.Remove(filepath.Dir(cfg.runDir())) // only if no other agent uses it
	}
	removeCgroupParent(cfg.CgroupParent)
	if purge {
		errs = append(errs, unmountUnder(cfg.DataDir), os.RemoveAll(cfg.DataDir))
	}
	return errors.Join(errs...)
}

func removeAllContainers(ctx context.Context, rt runtime.Runtime) error {
	cs, err := rt.List(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, rt.Remove(ctx, c.ID))
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount below dir (snapshots, netns binds a
// crashed agent left), deepest first, so the directory can be removed.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	prefix := filepath.Clean(dir) + "/"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4]+"/", prefix) {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroupParent removes the (empty) cgroup directories pods lived under.
func removeCgroupParent(parent string) {
	if parent == "" || parent == "/" {
		return
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	dirs2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", parent))
	for _, d := range append(dirs, dirs2...) {
		_ = os.Remove(d)
	}
}
