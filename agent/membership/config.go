package membership

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the gossip port (TCP and UDP) unless told otherwise.
const DefaultPort = 7402

// Defaults that DefaultConfig sets and zero values fall back to.
const (
	DefaultRetryInterval    = 2 * time.Second
	DefaultTombstoneTimeout = 24 * time.Hour
	DefaultLeaveTimeout     = 5 * time.Second
)

// Config configures a Membership. Start from DefaultConfig.
type Config struct {
	// NodeName is this node's name in the fleet; it must be unique and stay
	// the same across restarts.
	NodeName string

	// BindAddr is the IP gossip listens on (TCP and UDP); "" means 0.0.0.0.
	// BindPort 0 picks a free port (for tests; see Membership.LocalAddr).
	BindAddr string
	BindPort int

	// AdvertiseAddr is the IP peers reach this node at; "" lets memberlist
	// choose (the bind IP, or a private IP when bound to 0.0.0.0).
	// AdvertisePort 0 means the bound port.
	AdvertiseAddr string
	AdvertisePort int

	// SecretKey encrypts gossip (AES-GCM): 16, 24 or 32 bytes, the same on
	// every node. Nodes with another key, or none, cannot join. nil leaves
	// gossip in the clear, which is for tests and dev only.
	SecretKey []byte

	// Meta is what this node tells the fleet; see UpdateMeta to change it.
	Meta Meta

	// RetryJoin lists peers to join, as "host" (the gossip port is this
	// node's) or "host:port". Start keeps trying them every RetryInterval
	// (0 means DefaultRetryInterval) until it has joined at least one other
	// node; an empty list starts a fleet of one that others join.
	RetryJoin     []string
	RetryInterval time.Duration

	// TombstoneTimeout is how long failed and left members stay in Members
	// (0 means DefaultTombstoneTimeout), so that what follows membership
	// can act on them. A member that comes back is alive again at once.
	TombstoneTimeout time.Duration

	// Logger receives membership's and memberlist's logs; nil discards them.
	Logger *slog.Logger

	// Admit, if set, decides whether a peer may be a member, by name: a
	// non-nil error makes this node ignore the peer's alive messages (it is
	// never listed, or no longer once Admit refuses it) and never emit
	// events for it. The fleet refuses the names of removed nodes with it.
	// It is called from memberlist's packet handling: it must not block.
	Admit func(name string) error

	// Tune, if set, is called with the memberlist.Config built from
	// memberlist.DefaultLANConfig and the fields above, before it is used:
	// tests shorten probe and gossip intervals with it. It must leave Name,
	// Delegate, Events, Alive, Logger and LogOutput alone; they are set after it.
	Tune func(*memberlist.Config)
}

// DefaultConfig returns a Config with memberlist's LAN timings on
// 0.0.0.0:DefaultPort, named after the host. Set Meta, and SecretKey outside
// tests and dev.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:         host,
		BindAddr:         "0.0.0.0",
		BindPort:         DefaultPort,
		RetryInterval:    DefaultRetryInterval,
		TombstoneTimeout: DefaultTombstoneTimeout,
	}
}

// validate checks cfg and fills in defaults for zero values.
func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("NodeName must be set: it names this node in the fleet"))
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0"
	}
	if _, err := netip.ParseAddr(c.BindAddr); err != nil {
		errs = append(errs, fmt.Errorf("BindAddr %q must be an IP address", c.BindAddr))
	}
	if c.AdvertiseAddr != "" {
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("AdvertiseAddr %q must be an IP address", c.AdvertiseAddr))
		}
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("BindPort %d is not a port", c.BindPort))
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		errs = append(errs, fmt.Errorf("AdvertisePort %d is not a port", c.AdvertisePort))
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		errs = append(errs, fmt.Errorf("SecretKey is %d bytes; a gossip key is 16, 24 or 32 bytes (AES-128/192/256)", len(c.SecretKey)))
	}
	if err := c.Meta.Validate(); err != nil {
		errs = append(errs, err)
	}
	joins := make([]string, 0, len(c.RetryJoin))
	for _, j := range c.RetryJoin {
		addr, err := c.joinAddr(j)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		joins = append(joins, addr)
	}
	c.RetryJoin = joins
	if c.RetryInterval < 0 || c.TombstoneTimeout < 0 {
		errs = append(errs, errors.New("RetryInterval and TombstoneTimeout cannot be negative"))
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.TombstoneTimeout == 0 {
		c.TombstoneTimeout = DefaultTombstoneTimeout
	}
	return errors.Join(errs...)
}

// joinAddr turns a RetryJoin entry into host:port, giving a bare host this
// node's gossip port (peers normally share it).
func (c *Config) joinAddr(s string) (string, error) {
	if s == "" {
		return "", errors.New("RetryJoin has an empty address")
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return "", fmt.Errorf("RetryJoin address %q: bad port %q", s, port)
		}
		if host == "" {
			return "", fmt.Errorf("RetryJoin address %q has no host", s)
		}
		return s, nil
	}
	port := c.AdvertisePort
	if port == 0 {
		port = c.BindPort
	}
	if port == 0 {
		port = DefaultPort
	}
	// A bare IPv6 literal has colons but no brackets.
	return net.JoinHostPort(s, strconv.Itoa(port)), nil
}

// memberlistConfig builds memberlist's configuration from c, with d as its
// delegates and l as its logger.
func (c *Config) memberlistConfig(d *delegate, l *slog.Logger) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	// Gossip packets are small and the key encrypts them anyway; LZW
	// allocates a 64 KiB table per packet, which measured as most of a
	// member's CPU and garbage (TestAccSimulatedFleet's profile). Members
	// still read compressed packets from peers that send them.
	mc.EnableCompression = false
	mc.Name = c.NodeName
	mc.BindAddr, mc.BindPort = c.BindAddr, c.BindPort
	mc.AdvertiseAddr, mc.AdvertisePort = c.AdvertiseAddr, c.AdvertisePort
	if mc.AdvertisePort == 0 {
		// memberlist would advertise port 0 with an explicit
		// AdvertiseAddr; with BindPort 0 it fills in the picked port.
		mc.AdvertisePort = c.BindPort
	}
	if len(c.SecretKey) > 0 {
		mc.SecretKey = slices.Clone(c.SecretKey)
	}
	if c.Tune != nil {
		c.Tune(mc)
	}
	mc.Name = c.NodeName
	mc.Delegate, mc.Events = d, d
	if c.Admit != nil {
		mc.Alive = d
	}
	mc.Logger, mc.LogOutput = log.New(newLogBridge(l), "", 0), nil
	return mc
}
