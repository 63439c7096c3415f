package agent

import (
	"time"

	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/agent/pki"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{"dev defaults", func(c *Config) { c.Dev = true }, ""},
		{"token required outside dev", func(c *Config) {}, "--token-file or --api-token-hash-file"},
		{"token from the environment", func(c *Config) { c.Token = "s3cret" }, ""},
		{"token file", func(c *Config) { c.TokenFile = "/etc/flotilla/api.token" }, ""},
		{"token hash file", func(c *Config) { c.APITokenHashFile = "/etc/flotilla/api-token.sha256" }, ""},

		// The API outside a fleet is plain HTTP: loopback only.
		{"dev on loopback", func(c *Config) { c.Dev, c.APIAddr = true, "127.0.0.1:7400" }, ""},
		{"dev on another loopback address", func(c *Config) { c.Dev, c.APIAddr = true, "127.0.0.5:7400" }, ""},
		{"dev on IPv6 loopback", func(c *Config) { c.Dev, c.APIAddr = true, "[::1]:7400" }, ""},
		{"dev on localhost", func(c *Config) { c.Dev, c.APIAddr = true, "localhost:7400" }, ""},
		{"dev on all addresses", func(c *Config) { c.Dev, c.APIAddr = true, "0.0.0.0:7400" },
			"--api-addr 0.0.0.0:7400: a --dev agent serves plain HTTP; listen on loopback (127.0.0.1) or run a fleet agent, whose API is HTTPS"},
		{"dev on no host", func(c *Config) { c.Dev, c.APIAddr = true, ":7400" }, "--api-addr :7400: a --dev agent serves plain HTTP"},
		{"dev on a LAN address", func(c *Config) { c.Dev, c.APIAddr = true, "10.0.1.10:7400" }, "--api-addr 10.0.1.10:7400"},
		{"dev on a host name", func(c *Config) { c.Dev, c.APIAddr = true, "node1.internal:7400" }, "--api-addr node1.internal:7400"},
		{"non-fleet agent on all addresses", func(c *Config) { c.Token, c.APIAddr = "s3cret", "0.0.0.0:7400" }, "an agent outside a fleet"},
		{"dev server is not a fleet", func(c *Config) { c.Dev, c.Server, c.APIAddr = true, true, "0.0.0.0:7400" }, "a --dev agent serves plain HTTP"},
		{"fleet agent on its address", func(c *Config) { asFleetServer(c); c.APIAddr = "10.0.1.10:7400" }, ""},
		{"fleet agent on all addresses", func(c *Config) { asFleetServer(c); c.APIAddr = "0.0.0.0:7400" }, ""},

		// Ranges pods are denied.
		{"deny a second range", func(c *Config) { c.Dev, c.PodDenyCIDRs = true, []string{"169.254.169.254/32", "10.96.0.0/12"} }, ""},
		{"deny an address", func(c *Config) { c.Dev, c.PodDenyCIDRs = true, []string{"192.0.2.7"} }, ""},
		{"deny nothing", func(c *Config) { c.Dev, c.PodDenyCIDRs = true, nil }, ""},
		{"deny garbage", func(c *Config) { c.Dev, c.PodDenyCIDRs = true, []string{"metadata"} }, `--pod-deny-cidr: "metadata" is not an IPv4 range`},
		{"deny IPv6", func(c *Config) { c.Dev, c.PodDenyCIDRs = true, []string{"fd00:ec2::254/128"} }, "--pod-deny-cidr: fd00:ec2::254/128 is not IPv4"},
		{"deny host bits", func(c *Config) { c.Dev, c.PodDenyCIDRs = true, []string{"169.254.169.254/16"} }, "--pod-deny-cidr: 169.254.169.254/16 has host bits set"},
		{"deny the pod range", func(c *Config) { c.Dev, c.PodDenyCIDRs = true, []string{"10.0.0.0/8"} }, "--pod-deny-cidr: 10.0.0.0/8 overlaps the pod range 10.244.0.0/24 (--pod-cidr)"},
		{"deny other nodes' pods", func(c *Config) { asFleetServer(c); c.PodDenyCIDRs = []string{"10.244.9.0/24"} }, "overlaps the pod range 10.244.0.0/16 (--cluster-pod-cidr)"},

		{"raft multiplier picked by the agent", func(c *Config) { c.Dev, c.RaftMultiplier = true, 0 }, ""},
		{"raft multiplier 10", func(c *Config) { c.Dev, c.RaftMultiplier = true, 10 }, ""},
		{"raft multiplier 11", func(c *Config) { c.Dev, c.RaftMultiplier = true, 11 }, "--raft-multiplier: 11 is out of range 0..10"},
		{"raft multiplier negative", func(c *Config) { c.Dev, c.RaftMultiplier = true, -1 }, "--raft-multiplier"},
		{"relative data dir", func(c *Config) { c.Dev, c.DataDir = true, "data" }, "--data-dir"},
		{"bad api addr", func(c *Config) { c.Dev, c.APIAddr = true, "7400" }, "--api-addr"},
		{"ipv6 pod range", func(c *Config) { c.Dev, c.PodCIDR = true, "fd00::/64" }, "--pod-cidr"},
		{"tiny pod range", func(c *Config) { c.Dev, c.PodCIDR = true, "10.0.0.0/30" }, "--pod-cidr"},
		{"long bridge name", func(c *Config) { c.Dev, c.BridgeName = true, "flotilla-bridge-0" }, "--bridge"},
		{"no node name", func(c *Config) { c.Dev, c.NodeName = true, "" }, "--node-name"},

		// The service layout: servers and dev agents write it, clients ignore it.
		{"service layout unset means the defaults", func(c *Config) { c.Dev, c.ServiceCIDR, c.NodePortRange, c.ClusterDomain = true, "", "", "" }, ""},
		{"service range /28", func(c *Config) { c.Dev, c.ServiceCIDR = true, "10.97.3.16/28" }, ""},
		{"service range too large", func(c *Config) { c.Dev, c.ServiceCIDR = true, "10.0.0.0/8" }, `--service-cidr: "10.0.0.0/8" must be an IPv4 range from /12 to /28`},
		{"service range with host bits", func(c *Config) { c.Dev, c.ServiceCIDR = true, "10.96.0.1/16" }, "did you mean 10.96.0.0/16?"},
		{"service range over the pods", func(c *Config) { asFleetServer(c); c.ServiceCIDR = "10.244.128.0/20" }, "--service-cidr: 10.244.128.0/20 overlaps the pod range 10.244.0.0/16 (--cluster-pod-cidr)"},
		{"service range ignored on a client", func(c *Config) {
			asFleetServer(c)
			c.Server, c.RetryJoin, c.ServiceCIDR = false, []string{"10.0.1.10"}, "bad"
		}, ""},
		{"node port range backwards", func(c *Config) { c.Dev, c.NodePortRange = true, "32767-30000" }, "--service-node-port-range"},
		{"cluster domain with a bad label", func(c *Config) { c.Dev, c.ClusterDomain = true, "cluster_local" }, `--cluster-domain: "cluster_local" must be DNS labels`},
		{"long chain prefix", func(c *Config) { c.Dev, c.ChainPrefix = true, "FLOTILLA-LAB" }, "--iptables-chain-prefix"},

		// Container logs.
		{"small log files", func(c *Config) { c.Dev, c.ContainerLogMaxSize, c.ContainerLogMaxFiles = true, 64<<10, 2 }, ""},
		{"log files too small", func(c *Config) { c.Dev, c.ContainerLogMaxSize = true, 100 }, "--container-log-max-size: 100 bytes; at least 4096"},
		{"one log file", func(c *Config) { c.Dev, c.ContainerLogMaxFiles = true, 1 }, "--container-log-max-files: 1; at least 2"},
		{"relative log driver", func(c *Config) { c.Dev, c.LogDriver = true, "flotilla-agent" }, "log driver"},

		// The sandbox.
		{"no pids limit", func(c *Config) { c.Dev, c.DefaultPidsLimit = true, 0 }, ""},
		{"negative pids limit", func(c *Config) { c.Dev, c.DefaultPidsLimit = true, -1 }, "--default-pids-limit: -1 is out of range"},
		{"disk pressure low over threshold", func(c *Config) { c.Dev, c.DiskPressureThreshold, c.DiskPressureLow = true, 80, 90 }, "--disk-pressure-low: 90% must be in (0, --disk-pressure-threshold=80%]"},
		{"negative disk pressure threshold", func(c *Config) { c.Dev, c.DiskPressureThreshold = true, -1 }, "--disk-pressure-threshold: -1% is negative"},
		{"runtime call timeout too short", func(c *Config) { c.Dev, c.RuntimeCallTimeout = true, time.Millisecond }, "--runtime-call-timeout: 1ms is out of range 1s..1h"},
		{"allow capabilities", func(c *Config) { c.Dev, c.AllowedCapabilities = true, []string{"NET_ADMIN", "SYS_PTRACE"} }, ""},
		{"allow an unknown capability", func(c *Config) { c.Dev, c.AllowedCapabilities = true, []string{"cap_net_admin"} }, `--allow-capability: "cap_net_admin": write "NET_ADMIN"`},
		{"allow ALL", func(c *Config) { c.Dev, c.AllowedCapabilities = true, []string{"ALL"} }, `--allow-capability: adding "ALL"`},
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

// asFleetServer makes c a valid fleet server.
func asFleetServer(c *Config) {
	c.Server, c.BootstrapExpect, c.AdvertiseAddr = true, 1, "10.0.1.10"
	c.CAFile, c.CAKeyFile, c.GossipKeyFile, c.TokenFile = "/etc/flotilla/ca.pem", "/etc/flotilla/ca-key.pem", "/etc/flotilla/gossip.key", "/etc/flotilla/api.token"
}

func TestDefaultConfigDeniesMetadata(t *testing.T) {
	c := DefaultConfig()
	if len(c.PodDenyCIDRs) != 1 || c.PodDenyCIDRs[0] != "169.254.169.254/32" {
		t.Errorf("PodDenyCIDRs = %q, want [169.254.169.254/32]", c.PodDenyCIDRs)
	}
	if c.RaftMultiplier != 0 {
		t.Errorf("RaftMultiplier = %d, want 0 (the agent picks)", c.RaftMultiplier)
	}
}

func TestDevTokenIsStableAndPrivate(t *testing.T) {
	dir := t.TempDir()
	hash, err := devTokenHash(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil || len(strings.TrimSpace(string(tok))) < 32 {
		t.Fatalf("token file %q, %v", tok, err)
	}
	if !pki.TokenMatches(hash, string(tok)) {
		t.Error("the hash does not match the token written for the operator")
	}
	for _, f := range []string{"token", "api-token.sha256"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want mode 0600", f, fi, err)
		}
	}
	again, _ := devTokenHash(dir)
	if again != hash {
		t.Errorf("token hash changed across restarts")
	}
}

func TestRunDirKeepsSocketPathsShort(t *testing.T) {
	c := DefaultConfig()
	c.DataDir = "/" + strings.Repeat("very-long-directory/", 20)
	if l := len(c.ContainerdSocket()); l > 100 {
		t.Errorf("socket path %d bytes; unix sockets allow ~104", l)
	}
}
