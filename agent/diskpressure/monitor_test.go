package diskpressure

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// fakeFS is a file system of 100 bytes whose use the test sets and steps
// lower.
type fakeFS struct {
	mu   sync.Mutex
	used uint64
}

func (f *fakeFS) statfs(string) (Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Usage{Total: 100, Avail: 100 - f.used}, nil
}

func (f *fakeFS) set(used uint64) { f.mu.Lock(); f.used = used; f.mu.Unlock() }

// step frees n bytes and records that it ran.
func (f *fakeFS) step(name string, n uint64, ran *[]string) Step {
	return Step{Name: name, Run: func(context.Context) (string, error) {
		f.mu.Lock()
		f.used -= min(n, f.used)
		f.mu.Unlock()
		*ran = append(*ran, name)
		return "", nil
	}}
}

func TestMonitor(t *testing.T) {
	tests := []struct {
		name      string
		used      []uint64 // usage before each check
		logs      uint64   // what pruning logs frees
		images    uint64
		pressure  []bool // after each check
		wantSteps []string
	}{
		{name: "under the threshold nothing runs", used: []uint64{89}, pressure: []bool{false}},
		{name: "pruning logs is enough: no pressure", used: []uint64{92}, logs: 10, pressure: []bool{false}, wantSteps: []string{"logs"}},
		{name: "logs then images", used: []uint64{95}, logs: 5, images: 10, pressure: []bool{false}, wantSteps: []string{"logs", "images"}},
		{name: "not enough to free: pressure", used: []uint64{95}, pressure: []bool{true}, wantSteps: []string{"logs", "images"}},
		{name: "pressure holds between the watermarks and clears under the low one",
			used: []uint64{95, 87, 84}, pressure: []bool{true, true, false}, wantSteps: []string{"logs", "images", "logs", "images"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeFS{}
			var ran []string
			cfg := DefaultConfig()
			cfg.Dir, cfg.Statfs = "/data", fs.statfs
			cfg.Steps = []Step{fs.step("logs", tt.logs, &ran), fs.step("images", tt.images, &ran)}
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range tt.used {
				fs.set(u)
				m.Check(context.Background())
				c, got := m.Condition()
				if got != tt.pressure[i] {
					t.Fatalf("check %d at %d%%: pressure %v, want %v", i, u, got, tt.pressure[i])
				}
				if got && (c.Type != api.NodeConditionDiskPressure || !strings.Contains(c.Message, "/data") || c.Since.IsZero()) {
					t.Errorf("condition = %+v", c)
				}
			}
			if strings.Join(ran, ",") != strings.Join(tt.wantSteps, ",") {
				t.Errorf("steps ran %v, want %v", ran, tt.wantSteps)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		high, low float64
		want      string
	}{{0, 0, "--disk-pressure-threshold"}, {101, 80, "--disk-pressure-threshold"}, {90, 95, "--disk-pressure-low"}, {90, 0, "--disk-pressure-low"}} {
		cfg := DefaultConfig()
		cfg.Dir, cfg.High, cfg.Low = "/data", c.high, c.low
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("high %g low %g: err %v, want one naming %s", c.high, c.low, err, c.want)
		}
	}
}

// On a real (tmpfs) file system of 4 MiB: filling it past the threshold
// brings pressure after the step has run, and removing the file ends it.
func TestMonitorOnTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	stepRan := false
	cfg := DefaultConfig()
	cfg.Dir, cfg.Interval = dir, time.Second
	cfg.Steps = []Step{{Name: "noop", Run: func(context.Context) (string, error) { stepRan = true; return "", nil }}}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 3900<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if !m.Check(context.Background()) {
		t.Fatal("no pressure at 95%")
	}
	if c, ok := m.Condition(); !ok || !stepRan || !strings.Contains(c.Message, "% full") {
		t.Fatalf("condition %+v %v, step ran %v", c, ok, stepRan)
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	if !m.Check(context.Background()) {
		t.Fatal("pressure did not end once the file was gone")
	}
	if _, ok := m.Condition(); ok {
		t.Fatal("condition still set")
	}
}
