package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// withResolvConf gives the fixture a pod directory and a resolv.conf that
// names the namespace.
func withResolvConf(dir string) func(*fixture, *Config) {
	return func(_ *fixture, c *Config) {
		c.PodDir = dir
		c.ResolvConf = func(ns string) ([]byte, error) {
			return fmt.Appendf(nil, "nameserver 10.244.0.1\nsearch %s.svc.cluster.local\n", ns), nil
		}
	}
}

func TestReconcilerMountsThePodsResolvConf(t *testing.T) {
	dir := t.TempDir()
	p := demoPod("web-a")
	f := newFixtureWith(t, withResolvConf(dir), p)
	// A pod directory of a pod removed while the agent was down.
	orphan := filepath.Join(dir, "default_gone")
	must(t, os.MkdirAll(orphan, 0o755))
	f.step(t)

	spec, ok := f.rt.Spec(containerID(&p, "app"))
	if !ok {
		t.Fatal("container not created")
	}
	path := filepath.Join(dir, "default_web-a", "resolv.conf")
	want := []runtime.Mount{{Source: path, Destination: "/etc/resolv.conf", ReadOnly: true}}
	if fmt.Sprint(spec.Mounts) != fmt.Sprint(want) {
		t.Errorf("mounts = %+v, want %+v", spec.Mounts, want)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "nameserver 10.244.0.1\nsearch default.svc.cluster.local\n" {
		t.Errorf("resolv.conf = %q, %v", b, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("resolv.conf mode: %v, %v; want 0644 (readable by any user in the container)", st, err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphaned pod directory left: %v", err)
	}

	// An agent restart adopts the container as it is: the mount is not in
	// the spec hash, and the file is the same.
	before := f.rt.Starts
	f2 := newFixtureWith(t, withResolvConf(dir))
	f2.store, f2.rt, f2.net = f.store, f.rt, f.net
	f2.r.cfg.Store, f2.r.cfg.Runtime, f2.r.cfg.Network = f.store, f.rt, f.net
	f2.step(t)
	if f.rt.Starts != before {
		t.Errorf("adoption restarted the container: starts %d → %d", before, f.rt.Starts)
	}

	f.store.update(p.ID(), func(p *api.Pod) { p.Stop = true })
	f2.step(t)
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("pod directory left after the pod was removed: %v", err)
	}
}

func TestReconcilerNeedsPodDirForResolvConf(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Store, cfg.Runtime, cfg.Network, cfg.LogDir = "n1", newFakeStore(), runtime.NewFake(), podnet.NewFake(), t.TempDir()
	cfg.ResolvConf = func(string) ([]byte, error) { return nil, nil }
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "PodDir") {
		t.Errorf("New with ResolvConf and no PodDir: %v, want it refused", err)
	}
}
