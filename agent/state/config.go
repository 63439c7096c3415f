package state

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// DefaultRaftBindAddr is where raft listens unless told otherwise.
const DefaultRaftBindAddr = "127.0.0.1:7401"

// Config configures a Store. Start from DefaultConfig.
type Config struct {
	// NodeName is this server's raft ID; it must be unique in the cluster
	// and stay the same across restarts.
	NodeName string

	// DataDir holds the state; the store uses DataDir/raft (log, stable
	// store, snapshots) and locks it so only one agent uses it at a time.
	DataDir string

	// RaftBindAddr is the TCP address raft listens on. Port 0 picks a free
	// port (for tests). Binding to all interfaces (0.0.0.0) needs
	// RaftAdvertiseAddr, the address peers dial.
	RaftBindAddr      string
	RaftAdvertiseAddr string

	// TLS, when set, carries raft's traffic over mutually authenticated
	// TLS: the store listens with it, so it must require and verify client
	// certificates (ClientAuth RequireAndVerifyClientCert), and dials with
	// it, verifying the peer's certificate against the host of the address
	// dialed when ServerName is empty (so a peer's certificate needs that IP
	// or name as a SAN). It is used as given otherwise. Nil keeps plain TCP,
	// for dev mode and tests only: anyone who can reach RaftBindAddr can
	// then write to the log.
	TLS *tls.Config

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

	// InMemory keeps the log, stable store and snapshots in memory and uses
	// raft's in-memory transport: nothing survives Close. It is for tests of
	// packages that need a Store; DataDir and RaftBindAddr are ignored.
	InMemory bool

	// Logger receives the store's and raft's logs; nil discards them.
	Logger *slog.Logger

	// Raft timing. A follower that hears from no leader for HeartbeatTimeout
	// starts an election, so it bounds how fast a single voter becomes leader
	// after start (between one and two times it).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// Snapshots: raft checks every SnapshotInterval whether more than
	// SnapshotThreshold entries were written since the last snapshot, and
	// keeps TrailingLogs entries after it. SnapshotRetain snapshots are kept.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotRetain    int
}

// DefaultConfig returns a Config for a single-node agent; set NodeName and
// DataDir. Timings are tuned for a fast election of a single voter on a LAN.
func DefaultConfig() Config {
	return Config{
		RaftBindAddr:       DefaultRaftBindAddr,
		Bootstrap:          true,
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
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
	if !c.InMemory {
		if c.DataDir == "" {
			errs = append(errs, errors.New("DataDir must be set (or InMemory, for tests)"))
		}
		if err := checkBindAddr(c.RaftBindAddr, c.RaftAdvertiseAddr); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NonVoter && c.Bootstrap {
		errs = append(errs, errors.New("NonVoter and Bootstrap are both set: a non-voter cannot bootstrap a cluster; turn Bootstrap off"))
	}
	if c.TLS != nil && !c.InMemory {
		if err := checkTLS(c.TLS); err != nil {
			errs = append(errs, err)
		}
	}
	if c.SnapshotRetain < 1 {
		errs = append(errs, fmt.Errorf("SnapshotRetain is %d; keep at least 1", c.SnapshotRetain))
	}
	return errors.Join(errs...)
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

// checkTLS refuses a TLS config that would let a peer without a certificate
// of the cluster into raft, where it could append to the log.
func checkTLS(c *tls.Config) error {
	var errs []error
	if len(c.Certificates) == 0 && c.GetCertificate == nil {
		errs = append(errs, errors.New("TLS has no certificate: set Certificates (this node's certificate and key)"))
	}
	if c.ClientAuth != tls.RequireAndVerifyClientCert {
		errs = append(errs, fmt.Errorf("TLS.ClientAuth is %s; raft peers must prove who they are: use tls.RequireAndVerifyClientCert with ClientCAs set to the cluster CA", c.ClientAuth))
	}
	if c.InsecureSkipVerify {
		errs = append(errs, errors.New("TLS.InsecureSkipVerify is set; raft must verify its peers: set RootCAs to the cluster CA instead"))
	}
	return errors.Join(errs...)
}
