package containerd

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOOMKilledReadsCgroupFiles(t *testing.T) {
	tests := []struct {
		name, file, content string
		want                bool
	}{
		{"v1 killed", "memory/flotilla/c1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", true},
		{"v1 not killed", "memory/flotilla/c1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", false},
		{"v2 killed", "flotilla/c1/memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n", true},
		{"v2 oom without a kill", "flotilla/c1/memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n", false},
		{"no cgroup", "other/file", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, tt.file)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := oomKilled(root, "/flotilla/c1"); got != tt.want {
				t.Errorf("oomKilled = %v, want %v", got, tt.want)
			}
		})
	}
}
