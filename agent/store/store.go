package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"

	"github.com/flotilla-io/flotilla/agent/state"
)

// Store is the agent's raft node: it feeds the replicated data model (a
// state.FSM) with committed entries. Write methods propose a command and
// return once it is committed and applied here; on a node that is not the
// leader they go through the Forwarder, if set, and still return only once
// this node applied them. Read methods read the local FSM. All methods are
// safe for concurrent use.
type Store struct {
	logger          *slog.Logger
	fsm             *state.FSM
	raft            *raft.Raft
	localID         raft.ServerID
	localAddr       raft.ServerAddress
	nonVoter        bool
	forwarder       Forwarder     // nil: writes off the leader fail with ErrNotLeader
	timeout         time.Duration // bounds raft housekeeping calls (barrier, config change)
	electionTimeout time.Duration // how long a write off the leader waits for one to be known
	observer        *raft.Observer
	stream          *tlsStreamLayer // nil without a network transport
	peers           peerCache
	closers         []func() error // storage and data-dir lock, closed after raft, in order

	shutdownCh chan struct{}
	wg         sync.WaitGroup // monitorLeadership, nudgeFollowers
	// nudgeCh asks nudgeFollowers to tell followers the commit index now
	// (see ApplyLocal); its buffer of one coalesces requests.
	nudgeCh chan struct{}
	// applying counts proposals waiting to commit (see ApplyLocal).
	applying  atomic.Int64
	closeOnce sync.Once
	closeErr  error
	// establishedTerm is the raft term in which this node last established
	// its leadership (0 when it does not lead); only monitorLeadership
	// reads and writes it.
	establishedTerm uint64

	// ready is true when a leader is known and, if it is this node, it has
	// applied every entry of earlier terms. readyCh is closed while ready.
	// leading is true while this node is a leader past its barrier;
	// leadGained is closed while leading, leadLost when that term ends.
	readyMu    sync.Mutex
	ready      bool
	readyCh    chan struct{}
	leading    bool
	leadGained chan struct{}
	leadLost   chan struct{}
}

// Open opens (or creates) the state in cfg.DataDir and starts raft. It does
// not wait for an election: call WaitLeader before the first write.
func Open(ctx context.Context, cfg Config) (_ *Store, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("store: invalid config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hlog := newHCLogger(logger, "raft")

	m := cfg.multiplier()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout * m
	rc.ElectionTimeout = cfg.ElectionTimeout * m
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout * m
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	// Buffer applyCh so concurrent writers share one fsync (about 1.5x the
	// throughput here). It voids Apply's enqueue timeout, which propose does
	// not rely on: ctx bounds the whole wait.
	rc.BatchApplyCh = true
	rc.Logger = hlog
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("store: invalid raft timing in config: %w", err)
	}

	s := &Store{
		logger:          logger,
		fsm:             state.NewFSM(logger),
		localID:         rc.LocalID,
		nonVoter:        cfg.NonVoter,
		forwarder:       cfg.Forwarder,
		timeout:         max(10*rc.ElectionTimeout, 10*time.Second),
		electionTimeout: max(rc.ElectionTimeout, rc.HeartbeatTimeout),
		shutdownCh:      make(chan struct{}),
		readyCh:         make(chan struct{}),
		leadGained:      make(chan struct{}),
		leadLost:        make(chan struct{}),
		nudgeCh:         make(chan struct{}, 1),
	}
	defer func() {
		if err != nil {
			_ = s.closeStorage()
		}
	}()

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		trans  raft.Transport
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		w, fsnaps, err := s.openDisk(cfg, hlog)
		if err != nil {
			return nil, err
		}
		// Recent entries from memory: the leader reads each entry back
		// once per follower to replicate it, which from bolt costs a read
		// transaction each (Consul and Nomad cache 512 the same way).
		cached, err := raft.NewLogCache(logCacheSize, w)
		if err != nil {
			return nil, fmt.Errorf("store: raft log cache: %w", err)
		}
		logs, stable, snaps = cached, w, fsnaps
	}
	if cfg.Keypair == nil {
		// A single agent: an in-process transport, so raft has no network
		// listener anyone could append to the log through.
		_, trans = raft.NewInmemTransport(raft.ServerAddress("inmem:" + cfg.NodeName))
	} else {
		var advertise net.Addr
		if cfg.RaftAdvertiseAddr != "" {
			if advertise, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertiseAddr); err != nil {
				return nil, fmt.Errorf("store: RaftAdvertiseAddr: %w", err)
			}
		}
		// With port 0 the transport reports the port it was given, which
		// becomes this server's address in the raft configuration.
		s.stream, err = newTLSStreamLayer(cfg.RaftBindAddr, advertise, cfg.Keypair, s.acceptPeer, s.dialPeer, s.Revoked, logger.With("component", "raft-tls"))
		if err != nil {
			return nil, fmt.Errorf("store: raft transport on %s: %w", cfg.RaftBindAddr, err)
		}
		const maxPool, timeout = 3, 10 * time.Second
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: s.stream, MaxPool: maxPool, Timeout: timeout, Logger: hlog.Named("transport"),
		})
	}
	s.localAddr = trans.LocalAddr()

	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		closeTransport(trans)
		return nil, fmt.Errorf("store: read raft state: %w", err)
	}
	switch {
	case !existing && cfg.Bootstrap:
		logger.Info("bootstrapping a new single-voter raft cluster", "id", s.localID, "address", s.localAddr)
		boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: s.localID, Address: s.localAddr}}}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, boot); err != nil {
			closeTransport(trans)
			return nil, fmt.Errorf("store: bootstrap raft: %w", err)
		}
	case !existing && cfg.NonVoter:
		logger.Info("no raft state; waiting for the leader to add this agent as a non-voter", "id", s.localID, "address", s.localAddr)
	case !existing:
		logger.Info("no raft state and bootstrap is off; waiting for BootstrapServers or to be added to a cluster", "id", s.localID, "address", s.localAddr)
	}

	r, err := raft.NewRaft(rc, s.fsm, logs, stable, snaps, trans)
	if err != nil {
		closeTransport(trans)
		return nil, fmt.Errorf("store: start raft: %w", err)
	}
	s.raft = r
	s.refreshPeers()

	// Observations only wake the monitor, which then reads the current
	// leader and configuration, so a dropped one (the channel is not
	// blocking, to never stall raft) loses nothing as long as one is queued.
	obsCh := make(chan raft.Observation, 8)
	s.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(s.observer)
	s.wg.Add(2)
	go s.monitorLeadership(obsCh)
	go s.nudgeFollowers()
	return s, nil
}

// openDisk locks DataDir/raft and opens the log and stable store (one bolt
// file, as Consul and Nomad used for years) and the snapshot store in it.
//
// Not raft-boltdb/v2 (bbolt): it imports go-metrics/compat, which the
// go-metrics that raft v1.8 and memberlist v0.7 need no longer has.
//
// Not raft-wal: its v0.4.0 (the latest) cannot reopen a log after raft
// truncated a conflicting suffix, which is what a follower does after its
// leader is killed (hashicorp/raft-wal#31: "sealed segment has no index
// block"); the lab's kill-the-leader test hit it.
func (s *Store) openDisk(cfg Config, hlog hclog.Logger) (logStore, raft.SnapshotStore, error) {
	dir := raftDir(cfg.DataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("store: create data dir: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("store: %w", err)
	}
	s.closers = append(s.closers, unlock)

	path := filepath.Join(dir, "raft.db")
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, nil, fmt.Errorf("store: open raft log %s: %w", path, err)
	}
	s.closers = append(s.closers, bolt.Close)

	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, cfg.SnapshotRetain, hlog.Named("snapshot"))
	if err != nil {
		return nil, nil, fmt.Errorf("store: open snapshot store in %s: %w", dir, err)
	}
	return bolt, snaps, nil
}

// logStore is what raft needs of the disk store: log and stable store in one.
type logStore interface {
	raft.LogStore
	raft.StableStore
}

func closeTransport(t raft.Transport) {
	if c, ok := t.(io.Closer); ok {
		_ = c.Close()
	}
}

// closeStorage closes what openDisk opened, newest first.
func (s *Store) closeStorage() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// Close stops raft and closes the stores. Writes in flight fail; an entry
// raft committed before Close is on disk and is applied again at the next
// Open.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.shutdownCh)
		var errs []error
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shut down raft: %w", err))
		}
		s.raft.DeregisterObserver(s.observer)
		s.wg.Wait()
		if s.stream != nil {
			_ = s.stream.Close()
		}
		if err := s.closeStorage(); err != nil {
			errs = append(errs, fmt.Errorf("close raft storage: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("store: close: %w", err)
		}
	})
	return s.closeErr
}

// monitorLeadership keeps ready current. Like Nomad's leader loop, a node
// that becomes leader first issues a barrier so its FSM holds every entry
// committed before, then fixes its own address in the raft configuration.
func (s *Store) monitorLeadership(obsCh <-chan raft.Observation) {
	defer s.wg.Done()
	_, changed := s.fsm.Watch()
	for {
		s.checkLeadership()
		select {
		case <-s.shutdownCh:
			return
		case <-obsCh:
			s.refreshPeers()
		case <-changed:
			// A node removed from the fleet loses its raft connections
			// at once, not at its next reconnect.
			_, changed = s.fsm.Watch()
			if s.stream != nil {
				s.stream.closeRevoked()
			}
		}
	}
}

func (s *Store) checkLeadership() {
	for {
		_, id := s.raft.LeaderWithID()
		switch {
		case id == "":
			s.establishedTerm = 0
			s.setReady(false)
			return
		case id != s.localID:
			s.establishedTerm = 0
			s.setReady(true)
			return
		}
		// The monitor checks after every applied entry and every peer
		// observation; a leader that established this term already must
		// not do it again: that would append a barrier per write and end
		// the leader loop's context while the term goes on.
		term := s.raft.CurrentTerm()
		if term == s.establishedTerm && s.raft.State() == raft.Leader {
			return
		}
		s.setReady(false)
		err := s.establishLeadership()
		if err == nil {
			s.establishedTerm = term
			s.setReady(true)
			return
		}
		if s.raft.State() != raft.Leader {
			return // lost it meanwhile; an observation follows
		}
		s.logger.Warn("cannot establish raft leadership; retrying", "error", err)
		select {
		case <-s.shutdownCh:
			return
		case <-time.After(time.Second):
		}
	}
}

// establishLeadership waits through s.waitFuture because raft may abandon
// these futures at Shutdown, and Close waits for this goroutine.
func (s *Store) establishLeadership() error {
	ctx := context.Background()
	if err := s.waitFuture(ctx, s.raft.Barrier(s.timeout)); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	f := s.raft.GetConfiguration()
	if err := s.waitFuture(ctx, f); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID != s.localID || srv.Address == s.localAddr {
			continue
		}
		// The node now listens elsewhere (a new bind address, or port 0).
		// A voter's address is what peers dial, so record the new one.
		s.logger.Info("raft address changed; updating the raft configuration", "id", s.localID, "old", srv.Address, "new", s.localAddr)
		if err := s.waitFuture(ctx, s.raft.AddVoter(s.localID, s.localAddr, 0, s.timeout)); err != nil {
			return fmt.Errorf("update own raft address: %w", err)
		}
	}
	return nil
}

func (s *Store) setReady(v bool) {
	_, id := s.raft.LeaderWithID()
	leading := v && id == s.localID && s.raft.State() == raft.Leader
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	switch {
	case v && !s.ready:
		close(s.readyCh)
	case !v && s.ready:
		s.readyCh = make(chan struct{})
	}
	s.ready = v
	switch {
	case leading && !s.leading:
		close(s.leadGained)
		s.leadLost = make(chan struct{})
	case !leading && s.leading:
		close(s.leadLost)
		s.leadGained = make(chan struct{})
	}
	s.leading = leading
}

// RunLeaderLoop runs loop each time this node becomes the leader, once it
// has applied every entry committed before (the barrier Nomad's leader
// loop issues too), so leader work never acts on a stale state machine.
// loop's context ends when leadership is lost or ctx ends. RunLeaderLoop
// returns when ctx ends or the store closes, after loop has returned.
func (s *Store) RunLeaderLoop(ctx context.Context, loop func(ctx context.Context)) {
	for {
		s.readyMu.Lock()
		leading, gained, lost := s.leading, s.leadGained, s.leadLost
		s.readyMu.Unlock()
		if !leading {
			select {
			case <-gained:
				continue
			case <-ctx.Done():
				return
			case <-s.shutdownCh:
				return
			}
		}
		lctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(ctx, cancel)
		go func() {
			select {
			case <-lost:
			case <-s.shutdownCh:
			case <-lctx.Done():
			}
			cancel()
		}()
		loop(lctx)
		cancel()
		stop()
		// A loop that returns early waits for the next term.
		select {
		case <-lost:
		case <-ctx.Done():
			return
		case <-s.shutdownCh:
			return
		}
	}
}

var errClosed = errors.New("state store is closed")

// WaitLeader blocks until the cluster has a leader and, if it is this node,
// it has applied every entry committed before it was elected, so reads see
// every acknowledged write. A single voter elects itself within about two
// HeartbeatTimeouts.
func (s *Store) WaitLeader(ctx context.Context) error {
	for {
		s.readyMu.Lock()
		ready, ch := s.ready, s.readyCh
		s.readyMu.Unlock()
		select {
		case <-s.shutdownCh:
			return fmt.Errorf("store: wait for raft leader: %w", errClosed)
		default:
		}
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-s.shutdownCh:
			return fmt.Errorf("store: wait for raft leader: %w", errClosed)
		case <-ctx.Done():
			return fmt.Errorf("store: no raft leader yet (is this node bootstrapped or joined to a cluster?): %w", ctx.Err())
		}
	}
}

// IsLeader reports whether this node is the raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// LeaderContact returns when this server last heard from a leader: now
// while it leads (a leader that loses its quorum steps down), raft's last
// contact while it follows, zero if never.
func (s *Store) LeaderContact() time.Time {
	if s.IsLeader() {
		return time.Now()
	}
	if s.Leader() == "" {
		return time.Time{}
	}
	return s.raft.LastContact()
}

// Leader returns the leader's raft address, or "" when none is known.
func (s *Store) Leader() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// State returns the replicated data model this store feeds, for reads.
func (s *Store) State() *state.FSM { return s.fsm }

// Index returns the raft index of the last entry applied to the state.
// Raft's own entries (configuration, no-ops) do not advance it.
func (s *Store) Index() uint64 { return s.fsm.Index() }

// Changed returns a channel that is closed when the next entry is applied.
// Take the channel before reading the state, then wait on it, so a change
// between the read and the wait is not missed.
func (s *Store) Changed() <-chan struct{} {
	_, ch := s.fsm.Watch()
	return ch
}

// WaitIndex blocks until Index() >= index.
func (s *Store) WaitIndex(ctx context.Context, index uint64) error {
	for {
		i, ch := s.fsm.Watch()
		if i >= index {
			return nil
		}
		select {
		case <-ch:
		case <-s.shutdownCh:
			return fmt.Errorf("store: wait for index %d: %w", index, errClosed)
		case <-ctx.Done():
			return fmt.Errorf("store: wait for index %d (at %d): %w", index, i, ctx.Err())
		}
	}
}

// logCacheSize is how many recent raft entries stay in memory.
const logCacheSize = 512

// raftDir is where the store keeps raft's files under the data dir.
func raftDir(dataDir string) string { return filepath.Join(dataDir, "raft") }
