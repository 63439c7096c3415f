package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{"dev defaults", func(c *Config) { c.Dev = true }, ""},
		{"token required outside dev", func(c *Config) {}, "--token"},
		{"relative data dir", func(c *Config) { c.Dev, c.DataDir = true, "data" }, "--data-dir"},
		{"bad api addr", func(c *Config) { c.Dev, c.APIAddr = true, "7400" }, "--api-addr"},
		{"ipv6 pod range", func(c *Config) { c.Dev, c.PodCIDR = true, "fd00::/64" }, "--pod-cidr"},
		{"tiny pod range", func(c *Config) { c.Dev, c.PodCIDR = true, "10.0.0.0/30" }, "--pod-cidr"},
		{"long bridge name", func(c *Config) { c.Dev, c.BridgeName = true, "flotilla-bridge-0" }, "--bridge"},
		{"no node name", func(c *Config) { c.Dev, c.NodeName = true, "" }, "--node-name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.NodeName = "n1"
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to name %s", err, tt.want)
			}
		})
	}
}

func TestDevTokenIsStableAndPrivate(t *testing.T) {
	dir := t.TempDir()
	tok, err := devToken(dir)
	if err != nil || len(tok) < 32 {
		t.Fatalf("devToken = %q, %v", tok, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	again, _ := devToken(dir)
	if again != tok {
		t.Errorf("token changed across restarts: %q → %q", tok, again)
	}
}

func TestRunDirKeepsSocketPathsShort(t *testing.T) {
	c := DefaultConfig()
	c.DataDir = "/" + strings.Repeat("very-long-directory/", 20)
	if l := len(c.ContainerdSocket()); l > 100 {
		t.Errorf("socket path %d bytes; unix sockets allow ~104", l)
	}
}
