package podnet

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // empty: valid
	}{
		{"default", func(*Config) {}, ""},
		{"15-char bridge", func(c *Config) { c.BridgeName = "abcdefghijklmno" }, ""},
		{"/30", func(c *Config) { c.PodCIDR = "10.1.2.0/30" }, ""},
		{"MTU", func(c *Config) { c.MTU = 1400 }, ""},
		{"empty bridge", func(c *Config) { c.BridgeName = "" }, "bridge name is empty"},
		{"16-char bridge", func(c *Config) { c.BridgeName = "abcdefghijklmnop" }, "at most 15"},
		{"bridge with slash", func(c *Config) { c.BridgeName = "br/0" }, "bridge name \"br/0\" has characters"},
		{"bad CIDR", func(c *Config) { c.PodCIDR = "10.244.0.0" }, "pod CIDR \"10.244.0.0\""},
		{"IPv6 CIDR", func(c *Config) { c.PodCIDR = "fd00::/64" }, "not IPv4"},
		{"/31", func(c *Config) { c.PodCIDR = "10.1.2.0/31" }, "too small"},
		{"host bits", func(c *Config) { c.PodCIDR = "10.244.0.5/24" }, `did you mean "10.244.0.0/24"`},
		{"empty netns prefix", func(c *Config) { c.NetNSPrefix = "" }, "netns prefix is empty"},
		{"netns prefix slash", func(c *Config) { c.NetNSPrefix = "a/b" }, "netns prefix \"a/b\""},
		{"long netns prefix", func(c *Config) { c.NetNSPrefix = strings.Repeat("n", 51) }, "at most 50"},
		{"no plugin dirs", func(c *Config) { c.PluginDirs = nil }, "no CNI plugin directories"},
		{"relative plugin dir", func(c *Config) { c.PluginDirs = []string{"cni"} }, "not an absolute path"},
		{"relative data dir", func(c *Config) { c.DataDir = "data" }, "data dir \"data\""},
		{"empty chain prefix", func(c *Config) { c.ChainPrefix = "" }, "chain prefix is empty"},
		{"long chain prefix", func(c *Config) { c.ChainPrefix = strings.Repeat("A", 25) }, "too long"},
		{"24-char chain prefix", func(c *Config) { c.ChainPrefix = strings.Repeat("A", 24) }, ""},
		{"CNI- chain prefix", func(c *Config) { c.ChainPrefix = "CNI-X" }, "CNI-"},
		{"chain prefix space", func(c *Config) { c.ChainPrefix = "A B" }, "chain prefix \"A B\""},
		{"cluster CIDR", func(c *Config) { c.PodCIDR, c.ClusterCIDR = "10.244.7.0/24", "10.244.0.0/16" }, ""},
		{"cluster CIDR equals pod CIDR", func(c *Config) { c.ClusterCIDR = "10.244.0.0/24" }, ""},
		{"pod CIDR outside cluster CIDR", func(c *Config) { c.PodCIDR, c.ClusterCIDR = "10.245.0.0/24", "10.244.0.0/16" },
			`pod CIDR "10.245.0.0/24" is not inside cluster CIDR "10.244.0.0/16"`},
		{"pod CIDR larger than cluster CIDR", func(c *Config) { c.PodCIDR, c.ClusterCIDR = "10.244.0.0/16", "10.244.0.0/24" },
			`pod CIDR "10.244.0.0/16" is not inside cluster CIDR "10.244.0.0/24"`},
		{"bad cluster CIDR", func(c *Config) { c.ClusterCIDR = "10.244.0.0" }, `cluster CIDR "10.244.0.0"`},
		{"IPv6 cluster CIDR", func(c *Config) { c.ClusterCIDR = "fd00::/48" }, "cluster CIDR \"fd00::/48\" is not IPv4"},
		{"cluster CIDR host bits", func(c *Config) { c.ClusterCIDR = "10.244.1.0/16" }, `did you mean "10.244.0.0/16"`},
		{"24-char chain prefix with cluster CIDR", func(c *Config) { c.ChainPrefix, c.ClusterCIDR = strings.Repeat("A", 24), "10.244.0.0/16" }, "too long"},
		{"23-char chain prefix with cluster CIDR", func(c *Config) { c.ChainPrefix, c.ClusterCIDR = strings.Repeat("A", 23), "10.244.0.0/16" }, ""},
		{"MTU too small", func(c *Config) { c.MTU = 100 }, "MTU 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("want error containing %q, got none", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

func TestConfigValidateReportsAll(t *testing.T) {
	cfg := Config{}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("empty config validated")
	}
	for _, want := range []string{"bridge name", "pod CIDR", "netns prefix", "plugin directories", "data dir", "chain prefix"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

func TestValidKey(t *testing.T) {
	for key, ok := range map[string]bool{
		"pod-1":                  true,
		"a.b_c-D9":               true,
		"":                       false,
		"-x":                     false,
		"a/b":                    false,
		"a b":                    false,
		strings.Repeat("k", 201): false,
	} {
		if err := validKey(key); (err == nil) != ok {
			t.Errorf("validKey(%q) = %v, want ok=%v", key, err, ok)
		}
	}
}
