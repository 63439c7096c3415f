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

	Version string
	Logger  *slog.Logger
}

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
	if p, err := netip.ParsePrefix(c.PodCIDR); err != nil || !p.Addr().Is4() || p.Bits() > 28 {
		errs = append(errs, fmt.Errorf("--pod-cidr: %q must be an IPv4 range of at least /28, e.g. 10.244.0.0/24", c.PodCIDR))
	}
	if l := len(c.BridgeName); l == 0 || l > 15 {
		errs = append(errs, fmt.Errorf("--bridge: %q must be 1 to 15 characters (a Linux interface name)", c.BridgeName))
	}
	if !c.Dev && c.Token == "" {
		errs = append(errs, errors.New("--token: required outside --dev (or set FLOTILLA_TOKEN)"))
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
