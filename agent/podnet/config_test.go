package podnet

import (
	"fmt"
	"net/netip"
	"reflect"
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
		{"default denies metadata", func(c *Config) {
			if len(c.DenyCIDRs) != 1 || c.DenyCIDRs[0] != netip.MustParsePrefix(MetadataCIDR) {
				panic(fmt.Sprint("default DenyCIDRs ", c.DenyCIDRs))
			}
		}, ""},
		{"nothing denied", func(c *Config) { c.DenyCIDRs = nil }, ""},
		{"deny a range", func(c *Config) { c.DenyCIDRs = append(c.DenyCIDRs, netip.MustParsePrefix("10.96.0.0/12")) }, ""},
		{"deny IPv6", func(c *Config) { c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00:ec2::254/128")} }, "not IPv4"},
		{"deny host bits", func(c *Config) { c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("169.254.169.254/16")} }, "did you mean 169.254.0.0/16"},
		{"deny zero prefix", func(c *Config) { c.DenyCIDRs = []netip.Prefix{{}} }, "invalid prefix"},
		{"deny twice", func(c *Config) { c.DenyCIDRs = append(c.DenyCIDRs, netip.MustParsePrefix(MetadataCIDR)) }, "listed twice"},
		{"deny the pod range", func(c *Config) { c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }, "overlaps pod CIDR"},
		{"deny a pod address", func(c *Config) { c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.7/32")} }, "overlaps pod CIDR"},
		{"deny another node's pods", func(c *Config) {
			c.PodCIDR, c.ClusterCIDR = "10.244.7.0/24", "10.244.0.0/16"
			c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}
		}, "overlaps cluster CIDR"},
		{"deny too many", func(c *Config) {
			c.DenyCIDRs = nil
			for i := range 65 {
				c.DenyCIDRs = append(c.DenyCIDRs, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, byte(i), 1}), 32))
			}
		}, "at most 64"},
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
	tests := []struct {
		key     string
		wantErr string // empty: valid
	}{
		{"pod-1", ""},
		{"default_web-6f9c7d5b8a", ""},
		{"a.b_c-D9", ""},
		{strings.Repeat("k", 200), ""},
		{"", "empty"},
		{"-x", "must start with a letter or digit"},
		{"a b", "must start with a letter or digit"},
		{"a/b", "'/'"},
		{"../../etc", "'/'"},
		{"..", "names a directory"},
		{".", "names a directory"},
		{"a..b", `".."`},
		{"a\x00b", "NUL"},
		{strings.Repeat("k", 201), "201 characters; at most 200"},
	}
	for _, tt := range tests {
		err := validKey(tt.key)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("validKey(%q) = %v, want nil", tt.key, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("validKey(%q) = %v, want an error containing %q", tt.key, err, tt.wantErr)
		}
	}
}

func TestParseDenyCIDRs(t *testing.T) {
	got, err := ParseDenyCIDRs([]string{"169.254.169.254/32", "10.96.0.0/12", "192.0.2.7"})
	want := []netip.Prefix{netip.MustParsePrefix(MetadataCIDR), netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("192.0.2.7/32")}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseDenyCIDRs = %v, %v; want %v", got, err, want)
	}
	if got, err := ParseDenyCIDRs(nil); err != nil || len(got) != 0 {
		t.Errorf("ParseDenyCIDRs(nil) = %v, %v", got, err)
	}
	// Every bad value is reported at once.
	_, err = ParseDenyCIDRs([]string{"metadata", "fd00::1/128", "169.254.169.254/16", "192.0.2.7", "192.0.2.7/32", "10.0.0.0/8"})
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, want := range []string{`"metadata" is not an IPv4 range`, "fd00::1/128 is not IPv4", "did you mean 169.254.0.0/16", "192.0.2.7/32 is listed twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "10.0.0.0/8") {
		t.Errorf("a good value reported: %v", err)
	}
}
