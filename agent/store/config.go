package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
)

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// NodeName is this server's raft ID; it must be unique in the cluster
	// and stay the same across restarts.
	NodeName string

	// DataDir holds the state; the store uses DataDir/raft (log, stable
	// store, snapshots) and locks it so only one agent uses it at a time.
	DataDir string

	// Keypair, when set, makes the store a member of a fleet: raft listens
	// on RaftBindAddr over mutually authenticated TLS with this node's
	// certificate, accepts only peers holding a server certificate of the
	// cluster (only servers lead or stand for election, so only they dial
	// raft), and dials only peers whose certificate names the server the
	// raft configuration expects at that address. Nil is a single agent
	// (dev mode): raft has no network listener at all, so nothing outside
	// the process can append to its log.
	Keypair *pki.Keypair

	// RaftBindAddr is the TCP address raft listens on in a fleet. Port 0
	// picks a free port (for tests). Binding to all interfaces (0.0.0.0)
	// needs RaftAdvertiseAddr, the address peers dial.
	RaftBindAddr      string
	RaftAdvertiseAddr string

	// Bootstrap makes this node the single voter of a new cluster when it
	// has no raft state yet; with state on disk it is ignored. Servers of a
	// multi-server cluster leave it off and call BootstrapServers instead.
	Bootstrap bool

	// NonVoter marks a client agent: it keeps a full replica of the state
	// for its reads but has no vote, never leads and never bootstraps; the
	// leader adds it with AddNonvoter. Its writes go to the leader through
	// Forwarder.
	NonVoter bool

	// Forwarder, when set, sends writes made on a node that is not the
	// leader to the leader (see Forwarder). Nil makes such writes fail with
	// ErrNotLeader, as in dev mode.
	Forwarder Forwarder

	// InMemory keeps the log, stable store and snapshots in memory: nothing
	// survives Close. It is for tests of packages that need a Store;
	// DataDir is ignored.
	InMemory bool

	// Logger receives the store's and raft's logs; nil discards them.
	Logger *slog.Logger

	// Raft timing at Multiplier 1, tuned for a LAN (and the lab): a
	// follower that hears from no leader for HeartbeatTimeout starts an
	// election, so it bounds failover and how fast a single voter becomes
	// leader after start (between one and two times it).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// Multiplier scales HeartbeatTimeout, ElectionTimeout and
	// LeaderLeaseTimeout, as Consul's raft_multiplier does: higher values
	// ride out slow disks, busy CPUs and lossy links without needless
	// elections, at the cost of slower failover. 0 means 1.
	Multiplier int

	// Snapshots: raft checks every SnapshotInterval whether more than
	// SnapshotThreshold entries were written since the last snapshot, and
	// keeps TrailingLogs entries after it. SnapshotRetain snapshots are kept.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotRetain    int
}

// MaxMultiplier bounds Config.Multiplier (Consul's limit too).
const MaxMultiplier = 10

// DefaultConfig returns a Config for a single-node agent; set NodeName and
// DataDir. Timings are tuned for a fast election of a single voter on a LAN.
func DefaultConfig() Config {
	return Config{
		RaftBindAddr:       "127.0.0.1:7401",
		Bootstrap:          true,
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		Multiplier:         1,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
	}
}

// validate checks what raft.ValidateConfig does not.
func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("NodeName must be set: it is this server's raft ID"))
	}
	if !c.InMemory && c.DataDir == "" {
		errs = append(errs, errors.New("DataDir must be set (or InMemory, for tests)"))
	}
	if c.Keypair != nil {
		if err := checkBindAddr(c.RaftBindAddr, c.RaftAdvertiseAddr); err != nil {
			errs = append(errs, err)
		}
		if id := c.Keypair.Identity(); id.Name != c.NodeName {
			errs = append(errs, fmt.Errorf("the node certificate is for %q but NodeName is %q; they must be the same", id.Name, c.NodeName))
		}
	}
	if c.NonVoter && c.Bootstrap {
		errs = append(errs, errors.New("NonVoter and Bootstrap are both set: a non-voter cannot bootstrap a cluster; turn Bootstrap off"))
	}
	if c.NonVoter && c.Keypair == nil {
		errs = append(errs, errors.New("NonVoter without Keypair: a non-voter must reach the leader over the network"))
	}
	if c.Multiplier < 0 || c.Multiplier > MaxMultiplier {
		errs = append(errs, fmt.Errorf("Multiplier %d is out of range 1..%d", c.Multiplier, MaxMultiplier))
	}
	if c.SnapshotRetain < 1 {
		errs = append(errs, fmt.Errorf("SnapshotRetain is %d; keep at least 1", c.SnapshotRetain))
	}
	return errors.Join(errs...)
}

func (c *Config) multiplier() time.Duration {
	if c.Multiplier < 1 {
		return 1
	}
	return time.Duration(c.Multiplier)
}

func checkBindAddr(bind, advertise string) error {
	host, _, err := net.SplitHostPort(bind)
	if err != nil {
		return fmt.Errorf("RaftBindAddr %q is not host:port: %w", bind, err)
	}
	if advertise != "" {
		if _, err := net.ResolveTCPAddr("tcp", advertise); err != nil {
			return fmt.Errorf("RaftAdvertiseAddr %q: %w", advertise, err)
		}
		return nil
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("RaftBindAddr %q listens on all interfaces; set RaftAdvertiseAddr to the address peers should dial", bind)
	}
	return nil
}
