package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
)

// Config is everything a flotilla-agent needs to run.
type Config struct {
	// Dev runs server and node in one process with a single raft voter and
	// a generated token, like `nomad agent -dev`.
	Dev      bool
	NodeName string
	DataDir  string
	// APIAddr is where the HTTP API listens (loopback unless told otherwise).
	APIAddr  string
	RaftAddr string
	// Token authenticates API requests. In dev mode an empty token is
	// generated and written to <DataDir>/token (0600).
	Token string

	// ContainerdAddress is an existing containerd socket; empty means the
	// agent starts and supervises its own containerd, as k3s does.
	ContainerdAddress   string
	ContainerdBinary    string
	ContainerdNamespace string
	InsecureRegistries  []string
	// ImageDir holds image archives (*.tar) imported at start, for air-gapped nodes.
	ImageDir string

	PodCIDR       string
	BridgeName    string
	ChainPrefix   string
	NetNSPrefix   string
	CgroupParent  string
	CNIPluginDirs []string
	// MTU of pod interfaces; 0 takes the MTU of the default route's interface.
	MTU int

	// Fleet mode (any of Server, RetryJoin or CAFile set): memberlist
	// membership, raft across servers (clients are non-voters), mTLS RPC.
	Server          bool
	BootstrapExpect int
	RetryJoin       []string
	// AdvertiseAddr is the IP other agents reach this one at; BindAddr is
	// where gossip, raft and RPC listen (default: AdvertiseAddr).
	AdvertiseAddr string
	BindAddr      string
	GossipPort    int
	RaftPort      int
	RPCPort       int
	CAFile        string
	CAKeyFile     string // servers only: signs the certificates of joining agents
	GossipKeyFile string
	JoinTokenFile string
	TokenFile     string
	// ClusterPodCIDR is split into one range per node (servers set it at bootstrap).
	ClusterPodCIDR string
	NodeMaskBits   int
	Labels         map[string]string

	Version string
	Logger  *slog.Logger
}

// Fleet reports whether the agent joins a fleet rather than running alone in dev mode.
func (c *Config) Fleet() bool { return !c.Dev && (c.Server || len(c.RetryJoin) > 0 || c.CAFile != "") }

// DefaultConfig returns the values a single dev agent on a laptop uses.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:            host,
		DataDir:             "/var/lib/flotilla",
		APIAddr:             "127.0.0.1:7400",
		RaftAddr:            "127.0.0.1:7401",
		ContainerdNamespace: "flotilla",
		PodCIDR:             "10.244.0.0/24",
		BridgeName:          "flotilla0",
		ChainPrefix:         "FLOTILLA",
		NetNSPrefix:         "flt-",
		CgroupParent:        "/flotilla",
		CNIPluginDirs:       []string{"/usr/lib/cni", "/opt/cni/bin"},
		GossipPort:          7402,
		RaftPort:            7401,
		RPCPort:             7403,
		ClusterPodCIDR:      "10.244.0.0/16",
		NodeMaskBits:        24,
		Version:             "dev",
	}
}

// Validate reports every problem with c, naming the flag to fix.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name: must not be empty"))
	}
	if !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("--data-dir: %q must be an absolute path", c.DataDir))
	}
	for flag, addr := range map[string]string{"--api-addr": c.APIAddr, "--raft-addr": c.RaftAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port: %w", flag, addr, err))
		}
	}
	if p, err := netip.ParsePrefix(c.PodCIDR); !c.Fleet() && (err != nil || !p.Addr().Is4() || p.Bits() > 28) {
		errs = append(errs, fmt.Errorf("--pod-cidr: %q must be an IPv4 range of at least /28, e.g. 10.244.0.0/24", c.PodCIDR))
	}
	if l := len(c.BridgeName); l == 0 || l > 15 {
		errs = append(errs, fmt.Errorf("--bridge: %q must be 1 to 15 characters (a Linux interface name)", c.BridgeName))
	}
	if !c.Dev && c.Token == "" && c.TokenFile == "" {
		errs = append(errs, errors.New("--token or --token-file: required outside --dev (or set FLOTILLA_TOKEN)"))
	}
	if c.Fleet() {
		if c.CAFile == "" {
			errs = append(errs, errors.New("--ca-file: a fleet agent needs the cluster CA certificate (flotilla_cluster's ca_cert_pem)"))
		}
		if c.CAKeyFile == "" && c.JoinTokenFile == "" {
			errs = append(errs, errors.New("--join-token-file: an agent without --ca-key-file needs the join token to get its certificate"))
		}
		if c.Server && c.BootstrapExpect < 1 {
			errs = append(errs, errors.New("--bootstrap-expect: a server needs the number of servers to wait for (1, 3 or 5)"))
		}
		if !c.Server && len(c.RetryJoin) == 0 {
			errs = append(errs, errors.New("--retry-join: a client agent needs at least one server address"))
		}
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("--advertise-addr: %q is not an IP address other agents can reach this one at", c.AdvertiseAddr))
		}
		if p, err := netip.ParsePrefix(c.ClusterPodCIDR); err != nil || !p.Addr().Is4() || p.Bits() >= c.NodeMaskBits {
			errs = append(errs, fmt.Errorf("--cluster-pod-cidr: %q must be an IPv4 range larger than one node's /%d", c.ClusterPodCIDR, c.NodeMaskBits))
		}
	}
	return errors.Join(errs...)
}

// runDir holds sockets: unix socket paths are limited to 108 bytes, so they
// cannot live under an arbitrarily deep data dir.
func (c *Config) runDir() string {
	sum := sha256.Sum256([]byte(c.DataDir))
	return filepath.Join("/run/flotilla", hex.EncodeToString(sum[:])[:12])
}

// ContainerdSocket is the containerd socket the agent uses.
func (c *Config) ContainerdSocket() string {
	if c.ContainerdAddress != "" {
		return c.ContainerdAddress
	}
	return filepath.Join(c.runDir(), "containerd.sock")
}
