package containerdproc_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/flotilla-io/flotilla/agent/containerdproc"
	"github.com/flotilla-io/flotilla/agent/containerdproc/containerdtest"
	"github.com/flotilla-io/flotilla/internal/syncbuf"
)

func TestStartReuseStop(t *testing.T) {
	d := containerdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := d.Process
	if first.Adopted() {
		t.Fatal("first Start should have started a new daemon, not adopted one")
	}
	if !first.Alive() {
		t.Fatal("daemon not alive after Start")
	}
	version(t, d.Address())

	cfgText, err := os.ReadFile(d.Config.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version = 2", `"io.containerd.grpc.v1.cri"`, d.Config.Root, d.Config.State} {
		if !strings.Contains(string(cfgText), want) {
			t.Errorf("config.toml lacks %q:\n%s", want, cfgText)
		}
	}

	// A second Start with the same config (an agent restart) reuses the daemon.
	second, err := containerdproc.Start(ctx, d.Config)
	if err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if !second.Adopted() || second.Pid() != first.Pid() {
		t.Fatalf("second Start: adopted=%v pid=%d, want adopted pid %d", second.Adopted(), second.Pid(), first.Pid())
	}

	// Stop through the adopted handle: it is not our child, so Stop polls.
	if err := second.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if first.Alive() {
		t.Fatal("daemon still alive after Stop")
	}
	if _, err := os.Stat(d.Config.PidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left after Stop: %v", err)
	}

	// A stale pid file (pid of a dead process) must not stop a fresh start.
	if err := os.WriteFile(d.Config.PidFile, []byte("999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Restart(t)
	if d.Process.Adopted() || d.Process.Pid() == first.Pid() {
		t.Fatalf("restart after stale pid file: adopted=%v pid=%d", d.Process.Adopted(), d.Process.Pid())
	}
	version(t, d.Address())
}

func TestStartFailsWithHelpfulError(t *testing.T) {
	containerdtest.SkipUnlessPrivileged(t)
	cfg := containerdproc.DefaultConfig(t.TempDir())
	cfg.Binary = "/nonexistent/containerd"
	_, err := containerdproc.Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Start with a missing binary: err = %v, want a 'not found' error", err)
	}
}

func TestConfigValidation(t *testing.T) {
	long := "/" + strings.Repeat("x", 120)
	tests := []struct {
		name string
		cfg  containerdproc.Config
		want string
	}{
		{"empty", containerdproc.Config{}, "Root is empty"},
		{"relative", func() containerdproc.Config {
			c := containerdproc.DefaultConfig("/tmp/x")
			c.Root = "rel"
			return c
		}(), "must be an absolute path"},
		{"long socket", containerdproc.DefaultConfig(long), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := containerdproc.Start(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func version(t *testing.T, address string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := containerd.New(address)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	t.Logf("containerd %s", v.Version)
}

// TestStartReplacesDaemonThatLostItsData: a containerd left running by a
// killed agent whose data dir was then wiped must not be reused (it would
// fail every image import with a misleading error); Start stops it, starts
// a fresh one and logs why.
func TestStartReplacesDaemonThatLostItsData(t *testing.T) {
	tests := []struct {
		name       string
		wipe       func(t *testing.T, cfg containerdproc.Config)
		wantReason string
	}{
		{"root removed", func(t *testing.T, cfg containerdproc.Config) {
			removeAll(t, cfg.Root)
		}, "root directory"},
		{"root removed and made again", func(t *testing.T, cfg containerdproc.Config) {
			removeAll(t, cfg.Root)
			if err := os.MkdirAll(cfg.Root, 0o711); err != nil {
				t.Fatal(err)
			}
		}, "metadata database"},
		{"state removed", func(t *testing.T, cfg containerdproc.Config) {
			removeAll(t, cfg.State)
		}, "state directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := containerdtest.Start(t)
			old := d.Process
			tt.wipe(t, d.Config)

			var logs syncBuffer
			d.Config.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			d.Restart(t) // Start with the same config, as a restarted agent does
			if d.Process.Adopted() || d.Process.Pid() == old.Pid() {
				t.Fatalf("Start reused the daemon (adopted=%v, pid %d, old pid %d)", d.Process.Adopted(), d.Process.Pid(), old.Pid())
			}
			if old.Alive() {
				t.Errorf("old daemon pid %d still runs", old.Pid())
			}
			if !strings.Contains(logs.String(), tt.wantReason) {
				t.Errorf("log does not say why (%q):\n%s", tt.wantReason, logs.String())
			}
			if _, err := os.Stat(filepath.Join(d.Config.Root, "io.containerd.metadata.v1.bolt", "meta.db")); err != nil {
				t.Errorf("fresh daemon has no metadata database: %v", err)
			}
			version(t, d.Address())

			// And the fresh daemon is reused by the next start.
			again, err := containerdproc.Start(context.Background(), d.Config)
			if err != nil || !again.Adopted() || again.Pid() != d.Process.Pid() {
				t.Fatalf("next Start: %v, adopted=%v pid=%d; want the fresh daemon pid %d reused", err, again != nil && again.Adopted(), pidOf(again), d.Process.Pid())
			}
		})
	}
}

func removeAll(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}

func pidOf(p *containerdproc.Process) int {
	if p == nil {
		return 0
	}
	return p.Pid()
}

// syncBuffer is a log sink a test reads while something writes it.
type syncBuffer = syncbuf.Buffer
