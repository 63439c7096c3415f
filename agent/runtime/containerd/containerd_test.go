package containerd_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/flotilla-io/flotilla/agent/containerdproc/containerdtest"
	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/runtime"
	ctrd "github.com/flotilla-io/flotilla/agent/runtime/containerd"
	"github.com/flotilla-io/flotilla/internal/imagebuild"
)

const (
	testNamespace = "flotilla-test"
	demoTag       = "flotilla.local/demo:v1"
)

// env is one test's containerd, runtime and demo image.
type env struct {
	daemon  *containerdtest.Daemon
	rt      *ctrd.Runtime
	cfg     ctrd.Config
	cgroup  string
	logDir  string
	demo    v1.Image
	tarball string
}

// setup starts a private containerd and a Runtime on it, and builds the demo
// image into a tarball. Everything is cleaned up when t ends.
func setup(t testing.TB) *env {
	t.Helper()
	e := setupBare(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := imagebuild.BuildDemo(ctx, "", "v1")
	if err != nil {
		t.Fatalf("build demo image: %v", err)
	}
	e.demo = img
	e.tarball = filepath.Join(t.TempDir(), "demo.tar")
	if err := imagebuild.WriteTarball(e.tarball, demoTag, img); err != nil {
		t.Fatal(err)
	}
	return e
}

// setupBare is setup without the demo image.
func setupBare(t testing.TB) *env {
	t.Helper()
	containerdtest.SkipUnlessPrivileged(t)
	e := &env{cgroup: "/flotilla-test-" + randHex(4), logDir: t.TempDir()}
	// Registered before the daemon, so it runs after the daemon's cleanup
	// has deleted the containers (cleanups run last-in first-out).
	t.Cleanup(func() { containerdtest.RemoveCgroup(t, e.cgroup) })
	e.daemon = containerdtest.Start(t)
	e.cfg = ctrd.DefaultConfig()
	e.cfg.Address = e.daemon.Address()
	e.cfg.Namespace = testNamespace
	e.cfg.CgroupParent = e.cgroup
	e.cfg.RuncRoot = filepath.Join(e.daemon.Config.State, "runc")
	e.cfg.LogDriver = logDriver(t)
	e.rt = newRuntime(t, e.cfg)
	return e
}

// TestMain makes the test binary the log driver too: the shim runs it as
// flotilla-agent's log-driver command (Config.LogDriver).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == containerlog.DriverCommand {
		os.Exit(containerlog.DriverMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// logDriver is this test binary, which TestMain makes a log driver.
func logDriver(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func newRuntime(t testing.TB, cfg ctrd.Config) *ctrd.Runtime {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rt, err := ctrd.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func (e *env) importDemo(t testing.TB) {
	t.Helper()
	f, err := os.Open(e.tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := e.rt.ImportImages(context.Background(), f)
	if err != nil {
		t.Fatalf("ImportImages: %v", err)
	}
	if !slices.Contains(names, demoTag) {
		t.Fatalf("ImportImages = %q, want it to contain %q", names, demoTag)
	}
}

func TestLifecycle(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.importDemo(t)
	// Already present: no pull (there is no registry for flotilla.local).
	if _, err := e.rt.EnsureImage(ctx, demoTag); err != nil {
		t.Fatalf("EnsureImage of an imported image: %v", err)
	}

	const id = "default_web-abc_app"
	logDir := filepath.Join(e.logDir, "pods", "web-abc", "app")
	spec := runtime.ContainerSpec{
		ID:               id,
		Image:            demoTag,
		Env:              map[string]string{"VERSION": "v1-test"},
		Hostname:         "web-abc",
		MemoryLimitBytes: 64 << 20,
		CPULimitMillis:   500,
		CPURequestMillis: 250,
		LogDir:           logDir,
		Labels:           map[string]string{runtime.LabelPod: "default/web-abc", runtime.LabelContainer: "app"},
	}
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := e.rt.Create(ctx, spec); !errors.Is(err, runtime.ErrAlreadyExists) {
		t.Fatalf("second Create with the same ID: %v, want runtime.ErrAlreadyExists", err)
	}
	if st := find(t, e.rt, id); st.HasTask || st.Labels[runtime.LabelPod] != "default/web-abc" {
		t.Fatalf("after Create: %+v", st)
	}

	if err := e.rt.Start(ctx, id); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st := waitFor(t, e.rt, id, "running", func(s runtime.ContainerState) bool { return s.Running && s.Pid > 0 })
	firstPid := st.Pid
	waitFile(t, logDir, "flotilla-demo version=v1-test listening on :8080")

	// Limits reach the container's cgroup (cgroup v1 layout).
	cg := func(ctrl, file string) string {
		return filepath.Join("/sys/fs/cgroup", ctrl, e.cgroup, id, file)
	}
	checkFile(t, cg("memory", "memory.limit_in_bytes"), strconv.Itoa(64<<20))
	checkFile(t, cg("cpu", "cpu.cfs_quota_us"), "50000")
	checkFile(t, cg("cpu", "cpu.cfs_period_us"), "100000")
	checkFile(t, cg("cpu", "cpu.shares"), "256")
	checkFile(t, cg("memory", "cgroup.procs"), strconv.Itoa(int(firstPid)))
	if _, err := os.Stat(filepath.Join(e.cfg.RuncRoot, testNamespace, id, "state.json")); err != nil {
		t.Errorf("runc state not under RuncRoot: %v", err)
	}

	// Starting a running container is a no-op.
	if err := e.rt.Start(ctx, id); err != nil {
		t.Fatalf("Start of a running container: %v", err)
	}

	// A crash (SIGKILL behind the runtime's back) shows as exited with 137.
	killTask(t, e.rt, id, syscall.SIGKILL)
	st = waitFor(t, e.rt, id, "exited", func(s runtime.ContainerState) bool { return s.HasTask && !s.Running })
	if st.ExitCode != 137 || st.ExitedAt.IsZero() {
		t.Fatalf("after SIGKILL: exit code %d, exited at %v; want 137 and a time", st.ExitCode, st.ExitedAt)
	}

	// Start restarts it, logging a new run beside the last.
	if err := e.rt.Start(ctx, id); err != nil {
		t.Fatalf("restart: %v", err)
	}
	st = waitFor(t, e.rt, id, "running again", func(s runtime.ContainerState) bool { return s.Running && s.Pid > 0 })
	if st.Pid == firstPid {
		t.Errorf("restart kept pid %d", st.Pid)
	}
	// Running means runc started the process, not that the app installed its
	// SIGTERM handler: wait for its second "listening" line before stopping.
	waitFileCount(t, logDir, "listening on :8080", 2)

	// Stop is graceful: the demo app handles SIGTERM.
	start := time.Now()
	if code, err := e.rt.Stop(ctx, id, 10*time.Second); err != nil || code != 0 {
		t.Fatalf("Stop = %d, %v; want exit code 0 (the demo exits cleanly on SIGTERM)", code, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s; SIGTERM should have been enough", d)
	}
	if st := find(t, e.rt, id); st.HasTask || st.Running {
		t.Fatalf("after Stop: %+v", st)
	}
	waitFile(t, logDir, "shutting down")
	if code, err := e.rt.Stop(ctx, id, time.Second); err != nil || code != -1 {
		t.Fatalf("Stop without a task = %d, %v; want -1, nil", code, err)
	}

	if err := e.rt.Remove(ctx, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := e.rt.Remove(ctx, id); err != nil {
		t.Fatalf("Remove of a missing container: %v", err)
	}
	if code, err := e.rt.Stop(ctx, id, time.Second); err != nil || code != -1 {
		t.Fatalf("Stop of a missing container = %d, %v; want -1, nil", code, err)
	}
	assertEmpty(t, e.rt, e.cfg.Snapshotter)
}

func TestRemoveRunningAndExitCode(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.importDemo(t)

	// EXIT_CODE makes the demo exit at once: a crash loop's first step.
	crash := runtime.ContainerSpec{ID: "crash", Image: demoTag, Env: map[string]string{"EXIT_CODE": "7"},
		LogDir: filepath.Join(e.logDir, "crash")}
	run := runtime.ContainerSpec{ID: "run", Image: demoTag}
	for _, s := range []runtime.ContainerSpec{crash, run} {
		if err := e.rt.Create(ctx, s); err != nil {
			t.Fatalf("Create %s: %v", s.ID, err)
		}
		if err := e.rt.Start(ctx, s.ID); err != nil {
			t.Fatalf("Start %s: %v", s.ID, err)
		}
	}
	st := waitFor(t, e.rt, "crash", "exited", func(s runtime.ContainerState) bool { return s.HasTask && !s.Running })
	if st.ExitCode != 7 {
		t.Errorf("exit code = %d, want 7", st.ExitCode)
	}
	waitFile(t, crash.LogDir, "exiting with code 7")
	waitFor(t, e.rt, "run", "running", func(s runtime.ContainerState) bool { return s.Running })

	// Remove kills a running task and cleans up an exited one.
	for _, id := range []string{"run", "crash"} {
		if err := e.rt.Remove(ctx, id); err != nil {
			t.Fatalf("Remove %s: %v", id, err)
		}
	}
	assertEmpty(t, e.rt, e.cfg.Snapshotter)
}

// Creates of one ID at once: one creates the container, the others find it
// (runtime.ErrAlreadyExists) and leave its snapshot alone, so it starts.
func TestConcurrentCreateOfOneID(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.importDemo(t)

	const id, n = "twice", 4
	spec := runtime.ContainerSpec{ID: id, Image: demoTag, Labels: map[string]string{runtime.LabelPod: "default/twice"}}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.rt.Create(ctx, spec)
		}()
	}
	wg.Wait()
	created := 0
	for _, err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, runtime.ErrAlreadyExists):
			t.Errorf("Create: %v, want nil or runtime.ErrAlreadyExists", err)
		}
	}
	if created != 1 {
		t.Fatalf("%d Creates succeeded, want 1", created)
	}
	if err := e.rt.Start(ctx, id); err != nil {
		t.Fatalf("Start after concurrent Creates: %v", err)
	}
	waitFor(t, e.rt, id, "running", func(s runtime.ContainerState) bool { return s.Running })
	if err := e.rt.Remove(ctx, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	assertEmpty(t, e.rt, e.cfg.Snapshotter)
}

func TestCommandAndArgs(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.importDemo(t)
	tests := []struct {
		name          string
		command, args []string
		want          []string
	}{
		{"image defaults", nil, nil, []string{"/app"}},
		{"args replace cmd", nil, []string{"a", "b"}, []string{"/app", "a", "b"}},
		{"command replaces entrypoint", []string{"/bin/true"}, nil, []string{"/bin/true"}},
		{"command and args", []string{"/app", "-x"}, []string{"y"}, []string{"/app", "-x", "y"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("args-%d", i)
			err := e.rt.Create(ctx, runtime.ContainerSpec{ID: id, Image: demoTag, Command: tt.command, Args: tt.args,
				Env: map[string]string{"A": "1", "PORT": "9090"}, Hostname: "h" + id})
			if err != nil {
				t.Fatal(err)
			}
			c, err := e.rt.Client().LoadContainer(nsCtx(ctx), id)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := c.Spec(nsCtx(ctx))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(spec.Process.Args, tt.want) {
				t.Errorf("args = %q, want %q", spec.Process.Args, tt.want)
			}
			for _, want := range []string{"A=1", "PORT=9090"} {
				if !slices.Contains(spec.Process.Env, want) {
					t.Errorf("env %q lacks %s", spec.Process.Env, want)
				}
			}
			if slices.Contains(spec.Process.Env, "PORT=8080") {
				t.Errorf("env %q keeps the image's PORT", spec.Process.Env)
			}
			if spec.Hostname != "h"+id {
				t.Errorf("hostname = %q", spec.Hostname)
			}
			if want := e.cgroup + "/" + id; spec.Linux.CgroupsPath != want {
				t.Errorf("cgroups path = %q, want %q", spec.Linux.CgroupsPath, want)
			}
			if err := e.rt.Remove(ctx, id); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := e.rt.Create(ctx, runtime.ContainerSpec{ID: "noimg", Image: "flotilla.local/nope:v1"}); err == nil ||
		!strings.Contains(err.Error(), "not present") {
		t.Errorf("Create with a missing image: %v, want a 'not present' error", err)
	}
	assertEmpty(t, e.rt, e.cfg.Snapshotter)
}

// TestTasksSurviveContainerdRestart is how an agent restart adopts pods: the
// shim outlives containerd and a new containerd reloads it.
func TestTasksSurviveContainerdRestart(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.importDemo(t)
	const id = "survivor"
	if err := e.rt.Create(ctx, runtime.ContainerSpec{ID: id, Image: demoTag, Labels: map[string]string{runtime.LabelSpecHash: "h1"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	before := waitFor(t, e.rt, id, "running", func(s runtime.ContainerState) bool { return s.Running })

	e.daemon.Stop(t)
	if !pidAlive(int(before.Pid)) {
		t.Fatal("container process died with containerd")
	}
	if _, err := e.rt.List(ctx); err == nil {
		t.Fatal("List succeeded with containerd stopped")
	}
	e.daemon.Restart(t)

	// The old Runtime's connection comes back by itself...
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := e.rt.List(ctx)
		if err == nil {
			if len(list) != 1 || !list[0].Running || list[0].Pid != before.Pid {
				t.Fatalf("old runtime after containerd restart: %+v, want %s running as pid %d", list, id, before.Pid)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old runtime did not reconnect within 10s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// ...and a new one (a restarted agent) adopts the container.
	rt := newRuntime(t, e.cfg)
	after := find(t, rt, id)
	if !after.Running || after.Pid != before.Pid || after.Labels[runtime.LabelSpecHash] != "h1" {
		t.Fatalf("after containerd restart: %+v, want running pid %d with labels", after, before.Pid)
	}
	if err := rt.Remove(ctx, id); err != nil {
		t.Fatalf("Remove after restart: %v", err)
	}
	assertEmpty(t, rt, e.cfg.Snapshotter)
}

func TestPullFromInsecureRegistry(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := startRegistry(t)
	ref := addr + "/demo:v1"
	if err := imagebuild.Push(ctx, ref, e.demo); err != nil {
		t.Fatal(err)
	}

	cfg := e.cfg
	cfg.InsecureRegistries = []string{addr}
	rt := newRuntime(t, cfg)
	if pulled, err := rt.EnsureImage(ctx, ref); err != nil || !pulled {
		t.Fatalf("EnsureImage(%s) = %v, %v; want it pulled", ref, pulled, err)
	}
	// Pulled and unpacked: a container can be created and run from it.
	if err := rt.Create(ctx, runtime.ContainerSpec{ID: "pulled", Image: ref}); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx, "pulled"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, rt, "pulled", "running", func(s runtime.ContainerState) bool { return s.Running })
	if err := rt.Remove(ctx, "pulled"); err != nil {
		t.Fatal(err)
	}
	// A second EnsureImage finds it locally.
	if pulled, err := rt.EnsureImage(ctx, ref); err != nil || pulled {
		t.Fatalf("second EnsureImage = %v, %v; want it found here, not pulled", pulled, err)
	}

	missing := addr + "/demo:nope"
	_, err := rt.EnsureImage(ctx, missing)
	if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), missing) {
		t.Errorf("EnsureImage(%s) = %v, want a 'not found' error naming the image", missing, err)
	}
	_, err = rt.EnsureImage(ctx, addr+"/nosuchrepo:v1")
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("EnsureImage of a missing repository = %v, want 'not found'", err)
	}
	down := "127.0.0.1:" + strconv.Itoa(freePort(t)) + "/demo:v1"
	_, err = rt.EnsureImage(ctx, down)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("EnsureImage from a stopped registry = %v, want 'unreachable'", err)
	}
}

func TestImportOCIArchive(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// One image named by a full reference, one by a bare tag only.
	archive := ociArchive(t, map[string]v1.Image{"flotilla.local/demo:oci": e.demo, "v1": e.demo})
	names, err := e.rt.ImportImages(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("ImportImages(OCI archive): %v", err)
	}
	digest, _ := e.demo.Digest()
	want := []string{"flotilla.local/demo:oci", "flotilla.local/imported@" + digest.String()}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("ImportImages = %q, want it to contain %q", names, w)
		}
	}
	// Imported images are unpacked: a container runs straight away.
	if err := e.rt.Create(ctx, runtime.ContainerSpec{ID: "oci", Image: "flotilla.local/demo:oci"}); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Start(ctx, "oci"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.rt, "oci", "running", func(s runtime.ContainerState) bool { return s.Running })
	if err := e.rt.Remove(ctx, "oci"); err != nil {
		t.Fatal(err)
	}

	if _, err := e.rt.ImportImages(ctx, strings.NewReader("not a tar")); err == nil {
		t.Error("ImportImages of garbage succeeded")
	}
}

// --- helpers ---

// ociArchive writes images into an OCI image layout, annotated with
// org.opencontainers.image.ref.name, and returns it as a tar.
func ociArchive(t *testing.T, imgs map[string]v1.Image) []byte {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for ref, img := range imgs {
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: ref})); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name, _ = filepath.Rel(dir, path)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func nsCtx(ctx context.Context) context.Context { return namespaces.WithNamespace(ctx, testNamespace) }

func find(t *testing.T, rt *ctrd.Runtime, id string) runtime.ContainerState {
	t.Helper()
	list, err := rt.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, s := range list {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("container %s not in List: %+v", id, list)
	return runtime.ContainerState{}
}

// waitFor polls List until cond holds for id, or fails after 15 s.
func waitFor(t *testing.T, rt *ctrd.Runtime, id, what string, cond func(runtime.ContainerState) bool) runtime.ContainerState {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := find(t, rt, id)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not %s after 15s: %+v", id, what, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFile polls until the container log in dir contains want, or fails
// after 10 s.
func waitFile(t *testing.T, dir, want string) {
	t.Helper()
	waitFileCount(t, dir, want, 1)
}

// waitFileCount polls until the container log in dir (its previous and
// current runs) contains want n times, or fails after 10 s.
func waitFileCount(t *testing.T, dir, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b := logText(dir)
		if strings.Count(b, want) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log in %s does not contain %q %d times after 10s:\n%s", dir, want, n, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logText returns what a container wrote to its log directory in its
// previous and current runs, as plain lines.
func logText(dir string) string {
	var b strings.Builder
	_ = containerlog.Read(context.Background(), dir, containerlog.ReadOptions{Tail: -1, Previous: true}, &b)
	_ = containerlog.Read(context.Background(), dir, containerlog.ReadOptions{Tail: -1}, &b)
	return b.String()
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Errorf("%s = %q, want %q", path, got, want)
	}
}

func killTask(t *testing.T, rt *ctrd.Runtime, id string, sig syscall.Signal) {
	t.Helper()
	ctx := nsCtx(context.Background())
	c, err := rt.Client().LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(ctx, sig); err != nil {
		t.Fatal(err)
	}
}

// assertEmpty checks that no containers and no container snapshots are left.
func assertEmpty(t *testing.T, rt *ctrd.Runtime, snapshotter string) {
	t.Helper()
	list, err := rt.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("containers left: %+v", list)
	}
	var active []string
	err = rt.Client().SnapshotService(snapshotter).Walk(nsCtx(context.Background()), func(_ context.Context, info snapshots.Info) error {
		if info.Kind != snapshots.KindCommitted {
			active = append(active, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 0 {
		t.Errorf("snapshots left: %q", active)
	}
}

func pidAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRegistry runs Debian's docker-registry on a free loopback port with
// its storage in a temp dir, and returns host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("skipping: docker-registry is not installed (apt-get install docker-registry)")
	}
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "storage"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
	})

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile.Name())
			t.Fatalf("docker-registry on %s not ready after 10s (last error %v):\n%s", addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReadOnlyBindMount is how a pod gets its resolv.conf: a host file
// bind-mounted read-only over a path the image lacks (the demo image has
// no /etc at all).
func TestReadOnlyBindMount(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.importDemo(t)
	src := filepath.Join(t.TempDir(), "resolv.conf")
	const content = "nameserver 10.244.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	const id = "mount-ro"
	spec := runtime.ContainerSpec{ID: id, Image: demoTag, LogDir: filepath.Join(e.logDir, id),
		Mounts: []runtime.Mount{{Source: src, Destination: "/etc/resolv.conf", ReadOnly: true}}}
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.rt.Remove(context.Background(), id) })
	if err := e.rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, e.rt, id, "running", func(s runtime.ContainerState) bool { return s.Running && s.Pid > 0 })
	// The container's own view of the file, through its root.
	got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/resolv.conf", st.Pid))
	if err != nil || string(got) != content {
		t.Fatalf("resolv.conf in the container = %q, %v; want %q", got, err, content)
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.SplitSeq(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/etc/resolv.conf" {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 6 || !slices.Contains(strings.Split(f[5], ","), "ro") {
		t.Errorf("mount of /etc/resolv.conf in the container: %q, want it read-only", line)
	}
	if err := e.rt.Create(ctx, runtime.ContainerSpec{ID: "mount-rel", Image: demoTag,
		Mounts: []runtime.Mount{{Source: "resolv.conf", Destination: "/etc/resolv.conf"}}}); err == nil || !strings.Contains(err.Error(), "must be absolute") {
		t.Errorf("Create with a relative mount source: %v, want it refused", err)
	}
}
