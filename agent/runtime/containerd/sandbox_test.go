package containerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/internal/imagebuild"
)

const busyboxTag = "flotilla.local/busybox:test"

// CapEff of a root process with Docker's default capabilities: CHOWN,
// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const dockerCapEff = "00000000a80425fb"

// importBusybox imports an image with a shell built from the host's static
// busybox (Debian's busybox-static, which scripts/install-deps.sh installs).
func importBusybox(t testing.TB, e *env) {
	t.Helper()
	if _, err := os.Stat(imagebuild.BusyboxPath); err != nil {
		t.Fatalf("%s: %v; the sandbox tests need a static busybox (apt-get install busybox-static, or scripts/install-deps.sh)", imagebuild.BusyboxPath, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := imagebuild.BuildBusybox(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "busybox.tar")
	if err := imagebuild.WriteTarball(path, busyboxTag, img); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := e.rt.ImportImages(ctx, f); err != nil {
		t.Fatalf("import busybox image: %v", err)
	}
}

// shell creates and starts a busybox container running script with sh,
// with the sandbox settings of spec, and returns its log directory.
func shell(t *testing.T, e *env, spec runtime.ContainerSpec, script string) string {
	t.Helper()
	spec.Image = busyboxTag
	spec.Command = []string{"sh", "-c", script}
	spec.LogDir = filepath.Join(e.logDir, spec.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.rt.Create(ctx, spec); err != nil {
		t.Fatalf("Create %s: %v", spec.ID, err)
	}
	if err := e.rt.Start(ctx, spec.ID); err != nil {
		t.Fatalf("Start %s: %v", spec.ID, err)
	}
	return spec.LogDir
}

// done waits for the script's last line, "done", and returns the log.
func done(t *testing.T, logDir string) string {
	t.Helper()
	waitFile(t, logDir, "\ndone\n")
	return logText(logDir)
}

// statusField returns a field of /proc/self/status as the script printed it.
func statusField(log, name string) string {
	m := regexp.MustCompile(`(?m)^` + name + `:\s*(\S+)`).FindStringSubmatch(log)
	if m == nil {
		return ""
	}
	return m[1]
}

const statusScript = `grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; `

// TestSandbox runs containers under real containerd and runc and checks,
// from inside, the sandbox every container gets and what the security
// settings change of it.
func TestSandbox(t *testing.T) {
	e := setupBare(t)
	importBusybox(t, e)

	t.Run("defaults", func(t *testing.T) {
		log := done(t, shell(t, e, runtime.ContainerSpec{ID: "defaults"}, statusScript+`
			echo junk > /tmp/mod.ko; insmod /tmp/mod.ko; echo "insmod=$?"
			unshare -U true; echo "unshare=$?"
			touch /rootfile && echo wrote-root
			echo done`))
		// Seccomp 2 is filter mode: a filter can be added, never removed,
		// and it passes to every child, so the container cannot change it.
		for field, want := range map[string]string{
			"Seccomp": "2", "NoNewPrivs": "1", "Uid": "0",
			"CapEff": dockerCapEff, "CapPrm": dockerCapEff, "CapBnd": dockerCapEff,
			"CapInh": "0000000000000000", "CapAmb": "0000000000000000",
		} {
			if got := statusField(log, field); got != want {
				t.Errorf("%s = %q, want %q", field, got, want)
			}
		}
		// init_module is refused with EPERM, by seccomp before the kernel
		// sees it (without the profile, this kernel, built without
		// modules, says ENOSYS; one with modules would refuse for the
		// missing SYS_MODULE). Creating a user namespace needs no
		// capability: only the seccomp profile refuses it.
		if !strings.Contains(log, "Operation not permitted") || !strings.Contains(log, "insmod=1") {
			t.Errorf("insmod was not refused with EPERM:\n%s", log)
		}
		if strings.Contains(log, "unshare=0") {
			t.Errorf("the container created a user namespace: no seccomp filter in force\n%s", log)
		}
		if !strings.Contains(log, "wrote-root") {
			t.Errorf("the root file system is read-only by default:\n%s", log)
		}
	})

	t.Run("pids limit", func(t *testing.T) {
		const limit = 16
		log := done(t, shell(t, e, runtime.ContainerSpec{ID: "pids", PidsLimit: limit}, `
			(i=0; while [ $i -lt 40 ]; do sleep 600 & i=$((i+1)); echo "forked $i"; done) 2>&1
			echo done`))
		// The shell, its subshell and the sleeps share the limit; the
		// fork past it fails.
		if !strings.Contains(log, "can't fork") {
			t.Errorf("no fork failed:\n%s", log)
		}
		n := 0
		for _, m := range regexp.MustCompile(`forked (\d+)`).FindAllStringSubmatch(log, -1) {
			n, _ = strconv.Atoi(m[1])
		}
		if n >= limit || n < limit-4 {
			t.Errorf("forked %d sleeps under a limit of %d pids; want a few less than the limit", n, limit)
		}
	})

	t.Run("user and read-only root", func(t *testing.T) {
		log := shell(t, e, runtime.ContainerSpec{ID: "user", PidsLimit: 100, RunAsUser: ptr(int64(imagebuild.BusyboxUID)), ReadOnlyRootFS: true},
			statusScript+`id
			touch /home/app/x && echo wrote-home
			touch /dev/shm/x && echo wrote-shm
			echo done; sleep 600`)
		log = done(t, log)
		want := fmt.Sprintf("uid=%d(app) gid=%d(app) groups=%d(app),%d(extra)",
			imagebuild.BusyboxUID, imagebuild.BusyboxGID, imagebuild.BusyboxGID, imagebuild.BusyboxExtraGID)
		if !strings.Contains(log, want) {
			t.Errorf("id does not say %q:\n%s", want, log)
		}
		// Not uid 0: the kernel clears its capabilities at exec, as Docker's and Kubernetes' containers have it.
		if got := statusField(log, "CapEff"); got != "0000000000000000" {
			t.Errorf("CapEff = %q, want none for a non-root user", got)
		}
		// /home/app is app's: only a read-only root stops the write.
		if strings.Contains(log, "wrote-home") || !strings.Contains(log, "Read-only file system") {
			t.Errorf("wrote to the read-only root:\n%s", log)
		}
		if !strings.Contains(log, "wrote-shm") {
			t.Errorf("/dev/shm is not writable:\n%s", log)
		}
		// Exec (probes) runs as the container's user too.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if code, out, err := e.rt.Exec(ctx, "user", []string{"id", "-u"}, 5*time.Second); err != nil || code != 0 || strings.TrimSpace(string(out)) != strconv.Itoa(imagebuild.BusyboxUID) {
			t.Errorf("Exec id -u = %d, %q, %v; want %d", code, out, err, imagebuild.BusyboxUID)
		}
		checkFile(t, filepath.Join("/sys/fs/cgroup/pids", e.cgroup, "user", "pids.max"), "100")
	})

	t.Run("user and group", func(t *testing.T) {
		log := done(t, shell(t, e, runtime.ContainerSpec{ID: "group", RunAsUser: ptr(int64(4242)), RunAsGroup: ptr(int64(4343))}, `id; echo done`))
		if !strings.Contains(log, "uid=4242 gid=4343 groups=4343") {
			t.Errorf("id:\n%s", log)
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		log := done(t, shell(t, e, runtime.ContainerSpec{ID: "caps", CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"}},
			statusScript+`chown 1000 /tmp && echo chowned; echo done`))
		if got, want := statusField(log, "CapEff"), fmt.Sprintf("%016x", 1<<10); got != want {
			t.Errorf("CapEff = %q, want NET_BIND_SERVICE (%s) only", got, want)
		}
		if strings.Contains(log, "chowned") {
			t.Errorf("chown worked without CHOWN:\n%s", log)
		}
		log = done(t, shell(t, e, runtime.ContainerSpec{ID: "noraw", CapDrop: []string{"NET_RAW"}}, statusScript+`echo done`))
		if got, want := statusField(log, "CapEff"), "00000000a80405fb"; got != want {
			t.Errorf("CapEff = %q, want the default set without NET_RAW (%s)", got, want)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := e.rt.Create(ctx, runtime.ContainerSpec{ID: "bad", Image: busyboxTag, CapAdd: []string{"ALL"}})
		if err == nil || !strings.Contains(err.Error(), "privileged") {
			t.Fatalf("Create adding ALL = %v, want it refused", err)
		}
		if cs, _ := e.rt.List(ctx); len(cs) > 0 {
			for _, c := range cs {
				if c.ID == "bad" {
					t.Error("the refused container exists")
				}
			}
		}
	})
}

func ptr[T any](v T) *T { return &v }
