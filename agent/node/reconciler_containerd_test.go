package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerdproc/containerdtest"
	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	ctrd "github.com/flotilla-io/flotilla/agent/runtime/containerd"
	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/imagebuild"
)

// TestMain makes the test binary the containers' log driver, as
// flotilla-agent is (containerd's shim runs it).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == containerlog.DriverCommand {
		os.Exit(containerlog.DriverMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// ownNetNS is a pod network that gives containers no netns path, so runc
// makes each its own: these tests are about containerd, not the network.
type ownNetNS struct{ *podnet.Fake }

func (n ownNetNS) Setup(ctx context.Context, key string, opts ...podnet.SetupOption) (podnet.Attachment, error) {
	a, err := n.Fake.Setup(ctx, key, opts...)
	a.NetNSPath = ""
	return a, err
}

// A containerd stopped with SIGSTOP stalls the node's reconcile only while
// it is stopped: the node reports it (the guard's health, which the agent
// publishes as the RuntimeUnhealthy condition) and, once containerd is
// continued, a pod placed meanwhile starts while the running one keeps
// running.
func TestReconcilerWithPausedContainerd(t *testing.T) {
	containerdtest.SkipUnlessPrivileged(t)
	cgroup := "/flotilla-node-test-" + randHexStr(4)
	t.Cleanup(func() { containerdtest.RemoveCgroup(t, cgroup) })
	d := containerdtest.Start(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rc := ctrd.DefaultConfig()
	rc.Address, rc.Namespace, rc.CgroupParent = d.Address(), "flotilla-node-test", cgroup
	rc.RuncRoot, rc.LogDriver = filepath.Join(d.Config.State, "runc"), exe
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, err := ctrd.New(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	img, err := imagebuild.BuildBusybox(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "busybox.tar")
	if err := imagebuild.WriteTarball(tarball, "flotilla.local/busybox:test", img); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rt.ImportImages(ctx, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}

	pod := func(name string) api.Pod {
		return api.Pod{Namespace: "default", Name: name, Deployment: "sleep", Node: "n1", Generation: 1,
			Containers: []api.Container{{Name: "app", Image: "flotilla.local/busybox:test", Command: []string{"sleep", "600"}}},
			Status:     api.PodStatus{Phase: api.PodPending}}
	}
	a, b := pod("sleep-a"), pod("sleep-b")
	store := newFakeStore(a)
	guard := runtime.NewGuard(rt, "containerd", runtime.Deadlines{Call: 2 * time.Second, UnhealthyAfter: time.Second}, nil)
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Store, cfg.Runtime, cfg.Network, cfg.LogDir = "n1", store, guard, ownNetNS{podnet.NewFake()}, t.TempDir()
	cfg.Resync, cfg.StopTimeout = 200*time.Millisecond, time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { r.Run(runCtx); close(ran) }()
	t.Cleanup(func() { stop(); <-ran })

	running := func(id string) bool { return store.pod(id).Status.Phase == api.PodRunning }
	waitUntil(t, 30*time.Second, "pod a running", func() bool { return running(a.ID()) })

	pid := d.Process.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	cont := func() {
		if !continued {
			continued = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(cont)
	store.mu.Lock()
	store.pods[b.ID()] = b
	store.version++
	store.mu.Unlock()
	waitUntil(t, 10*time.Second, "the node to report containerd unhealthy", func() bool { return !guard.Health().Healthy })
	t.Logf("while stopped: %s", guard.Health().Message)
	if running(b.ID()) {
		t.Fatal("pod b started while containerd was stopped")
	}
	time.Sleep(3 * time.Second) // calls time out and are retried meanwhile

	cont()
	waitUntil(t, 60*time.Second, "pod b running once containerd is back", func() bool { return running(b.ID()) })
	if !running(a.ID()) {
		t.Errorf("pod a: %+v", store.pod(a.ID()).Status)
	}
	waitUntil(t, 10*time.Second, "the node to report containerd healthy", func() bool { return guard.Health().Healthy })
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randHexStr(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
