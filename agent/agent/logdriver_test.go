package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// The shim runs the log driver as root: the one beside the agent is used
// only when it is an executable that no one but its owner may change.
func TestLogDriverBeside(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name  string
		mode  os.FileMode // 0: no driver installed
		dir   bool
		useIt bool
	}{
		{name: "none installed"},
		{name: "installed", mode: 0o755, useIt: true},
		{name: "writable by its group", mode: 0o775},
		{name: "writable by anyone", mode: 0o757},
		{name: "not executable", mode: 0o644},
		{name: "a directory", mode: 0o755, dir: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "flotilla-agent")
			if err := os.WriteFile(exe, nil, 0o755); err != nil {
				t.Fatal(err)
			}
			driver := filepath.Join(dir, logDriverBinary)
			switch {
			case tc.dir:
				if err := os.Mkdir(driver, tc.mode); err != nil {
					t.Fatal(err)
				}
			case tc.mode != 0:
				if err := os.WriteFile(driver, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(driver, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			want := exe
			if tc.useIt {
				want = driver
			}
			if got := logDriverBeside(exe, log); got != want {
				t.Errorf("log driver %s, want %s", got, want)
			}
		})
	}
}
