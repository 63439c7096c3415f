package state

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
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"

	"github.com/flotilla-io/flotilla/api"
)

// Store is the replicated cluster state: a raft node and the FSM it feeds.
// Write methods propose through raft and return once the entry is committed
// and applied here; on a node that is not the leader they go through the
// Forwarder, if set, and still return only once this node applied them.
// Read methods read the local FSM. All methods are safe for concurrent use.
type Store struct {
	logger          *slog.Logger
	fsm             *fsm
	raft            *raft.Raft
	localID         raft.ServerID
	localAddr       raft.ServerAddress
	nonVoter        bool
	forwarder       Forwarder     // nil: writes off the leader fail with ErrNotLeader
	timeout         time.Duration // bounds raft housekeeping calls (barrier, config change)
	electionTimeout time.Duration // how long a write off the leader waits for one to be known
	observer        *raft.Observer
	closers         []func() error // storage and data-dir lock, closed after raft, in order

	shutdownCh chan struct{}
	wg         sync.WaitGroup // monitorLeadership, nudgeFollowers
	// nudgeCh asks nudgeFollowers to tell followers the commit index now
	// (see ApplyRaw); its buffer of one coalesces requests.
	nudgeCh   chan struct{}
	closeOnce sync.Once
	closeErr  error

	// ready is true when a leader is known and, if it is this node, it has
	// applied every entry of earlier terms. readyCh is closed while ready.
	readyMu sync.Mutex
	ready   bool
	readyCh chan struct{}
}

// Open opens (or creates) the state in cfg.DataDir and starts raft. It does
// not wait for an election: call WaitLeader before the first write.
func Open(ctx context.Context, cfg Config) (_ *Store, err error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("state: invalid config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("state: open: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hlog := newHCLogger(logger, "raft")

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
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
		return nil, fmt.Errorf("state: invalid raft timing in config: %w", err)
	}

	s := &Store{
		logger:          logger,
		fsm:             newFSM(),
		localID:         rc.LocalID,
		nonVoter:        cfg.NonVoter,
		forwarder:       cfg.Forwarder,
		timeout:         max(10*cfg.ElectionTimeout, 10*time.Second),
		electionTimeout: max(cfg.ElectionTimeout, cfg.HeartbeatTimeout),
		shutdownCh:      make(chan struct{}),
		readyCh:         make(chan struct{}),
		nudgeCh:         make(chan struct{}, 1),
	}
	defer func() {
		if err != nil {
			s.closeStorage()
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
		_, trans = raft.NewInmemTransport("")
	} else {
		w, fsnaps, err := s.openDisk(cfg, hlog)
		if err != nil {
			return nil, err
		}
		logs, stable, snaps = w, w, fsnaps // the WAL is both log and stable store
		var advertise net.Addr
		if cfg.RaftAdvertiseAddr != "" {
			if advertise, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertiseAddr); err != nil {
				return nil, fmt.Errorf("state: RaftAdvertiseAddr: %w", err)
			}
		}
		// With port 0 the transport reports the port it was given, which
		// becomes this server's address in the raft configuration.
		if trans, err = openTransport(cfg, advertise, logger, hlog); err != nil {
			return nil, fmt.Errorf("state: raft transport on %s: %w", cfg.RaftBindAddr, err)
		}
	}
	s.localAddr = trans.LocalAddr()

	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		closeTransport(trans)
		return nil, fmt.Errorf("state: read raft state: %w", err)
	}
	switch {
	case !existing && cfg.Bootstrap:
		logger.Info("bootstrapping a new single-voter raft cluster", "id", s.localID, "address", s.localAddr)
		boot := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: s.localID, Address: s.localAddr}}}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, boot); err != nil {
			closeTransport(trans)
			return nil, fmt.Errorf("state: bootstrap raft: %w", err)
		}
	case !existing && cfg.NonVoter:
		logger.Info("no raft state; waiting for the leader to add this agent as a non-voter", "id", s.localID, "address", s.localAddr)
	case !existing:
		logger.Info("no raft state and bootstrap is off; waiting for BootstrapServers or to be added to a cluster", "id", s.localID, "address", s.localAddr)
	}

	r, err := raft.NewRaft(rc, s.fsm, logs, stable, snaps, trans)
	if err != nil {
		closeTransport(trans)
		return nil, fmt.Errorf("state: start raft: %w", err)
	}
	s.raft = r

	// Observations only wake the monitor, which then reads the current
	// leader, so a dropped one (the channel is not blocking, to never stall
	// raft) loses nothing as long as one is queued.
	obsCh := make(chan raft.Observation, 8)
	s.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
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
		return nil, nil, fmt.Errorf("state: create data dir: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	s.closers = append(s.closers, unlock)

	path := filepath.Join(dir, "raft.db")
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, nil, fmt.Errorf("state: open raft log %s: %w", path, err)
	}
	s.closers = append(s.closers, bolt.Close)

	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, cfg.SnapshotRetain, hlog.Named("snapshot"))
	if err != nil {
		return nil, nil, fmt.Errorf("state: open snapshot store in %s: %w", dir, err)
	}
	return bolt, snaps, nil
}

// logStore is what raft needs of the disk store: log and stable store in one.
type logStore interface {
	raft.LogStore
	raft.StableStore
}

// openTransport listens for raft's peers: over mutually authenticated TLS
// when cfg.TLS is set, else over plain TCP (dev mode).
func openTransport(cfg Config, advertise net.Addr, logger *slog.Logger, hlog hclog.Logger) (raft.Transport, error) {
	const maxPool, timeout = 3, 10 * time.Second
	if cfg.TLS == nil {
		return raft.NewTCPTransportWithLogger(cfg.RaftBindAddr, advertise, maxPool, timeout, hlog.Named("transport"))
	}
	stream, err := newTLSStreamLayer(cfg.RaftBindAddr, advertise, cfg.TLS, logger.With("component", "raft-tls"))
	if err != nil {
		return nil, err
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: maxPool,
		Timeout: timeout,
		Logger:  hlog.Named("transport"),
	}), nil
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
		if err := s.closeStorage(); err != nil {
			errs = append(errs, fmt.Errorf("close raft storage: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("state: close: %w", err)
		}
	})
	return s.closeErr
}

// monitorLeadership keeps ready current. Like Nomad's leader loop, a node
// that becomes leader first issues a barrier so its FSM holds every entry
// committed before, then fixes its own address in the raft configuration.
func (s *Store) monitorLeadership(obsCh <-chan raft.Observation) {
	defer s.wg.Done()
	for {
		s.checkLeadership()
		select {
		case <-s.shutdownCh:
			return
		case <-obsCh:
		}
	}
}

func (s *Store) checkLeadership() {
	for {
		_, id := s.raft.LeaderWithID()
		switch {
		case id == "":
			s.setReady(false)
			return
		case id != s.localID:
			s.setReady(true)
			return
		}
		s.setReady(false)
		err := s.establishLeadership()
		if err == nil {
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
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	switch {
	case v && !s.ready:
		close(s.readyCh)
	case !v && s.ready:
		s.readyCh = make(chan struct{})
	}
	s.ready = v
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
			return fmt.Errorf("state: wait for raft leader: %w", errClosed)
		default:
		}
		if ready {
			return nil
		}
		select {
		case <-ch:
		case <-s.shutdownCh:
			return fmt.Errorf("state: wait for raft leader: %w", errClosed)
		case <-ctx.Done():
			return fmt.Errorf("state: no raft leader yet (is this node bootstrapped or joined to a cluster?): %w", ctx.Err())
		}
	}
}

// IsLeader reports whether this node is the raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's raft address, or "" when none is known.
func (s *Store) Leader() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// Index returns the raft index of the last entry applied to the state.
// Raft's own entries (configuration, no-ops) do not advance it.
func (s *Store) Index() uint64 {
	i, _ := s.fsm.watch()
	return i
}

// Changed returns a channel that is closed when the next entry is applied.
// Take the channel before reading the state, then wait on it, so a change
// between the read and the wait is not missed.
func (s *Store) Changed() <-chan struct{} {
	_, ch := s.fsm.watch()
	return ch
}

// WaitIndex blocks until Index() >= index.
func (s *Store) WaitIndex(ctx context.Context, index uint64) error {
	for {
		i, ch := s.fsm.watch()
		if i >= index {
			return nil
		}
		select {
		case <-ch:
		case <-s.shutdownCh:
			return fmt.Errorf("state: wait for index %d: %w", index, errClosed)
		case <-ctx.Done():
			return fmt.Errorf("state: wait for index %d (at %d): %w", index, i, ctx.Err())
		}
	}
}

func (s *Store) notLeader() error {
	if addr := s.Leader(); addr != "" {
		return fmt.Errorf("%w; the leader is %s", ErrNotLeader, addr)
	}
	return fmt.Errorf("%w; no leader is known yet", ErrNotLeader)
}

// propose appends a command to the raft log and waits until it is committed
// and applied here, returning what the FSM returned. Off the leader, with a
// Forwarder, the leader proposes it (see forward). ctx bounds the wait; when
// it ends first, the entry may still be applied later.
func (s *Store) propose(ctx context.Context, t MessageType, body any) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("state: %s: %w", t, err)
	}
	cmd, err := encodeCommand(t, body)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var resp any
	if s.forwarder != nil && s.raft.State() != raft.Leader {
		resp, err = s.forward(ctx, t, cmd)
	} else {
		_, resp, err = s.applyLocal(ctx, t, cmd)
	}
	if err != nil {
		return nil, err
	}
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// applyLocal proposes cmd, an encoded command of type t, on this node,
// which must be the leader, and waits until it is applied. It returns the
// entry's index and the FSM's answer, which may be an error (the entry
// then is committed all the same); err is for raft-level failures.
func (s *Store) applyLocal(ctx context.Context, t MessageType, cmd []byte) (uint64, any, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, fmt.Errorf("state: %s: %w", t, err)
	}
	if s.raft.State() != raft.Leader {
		return 0, nil, fmt.Errorf("state: %s: %w", t, s.notLeader())
	}
	var enqueue time.Duration
	if dl, ok := ctx.Deadline(); ok {
		if enqueue = time.Until(dl); enqueue <= 0 {
			return 0, nil, fmt.Errorf("state: %s: %w", t, context.DeadlineExceeded)
		}
	}
	f := s.raft.Apply(cmd, enqueue)
	if err := s.waitFuture(ctx, f); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return 0, nil, fmt.Errorf("state: %s: %w", t, s.notLeader())
		case errors.Is(err, raft.ErrLeadershipLost):
			return 0, nil, fmt.Errorf("state: %s: %w: leadership was lost before the entry committed; it may still be applied", t, ErrNotLeader)
		case errors.Is(err, raft.ErrRaftShutdown):
			return 0, nil, fmt.Errorf("state: %s: %w", t, errClosed)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return 0, nil, fmt.Errorf("state: %s: raft did not take the entry in time: %w", t, context.DeadlineExceeded)
		}
		return 0, nil, fmt.Errorf("state: %s: %w", t, err)
	}
	return f.Index(), f.Response(), nil
}

// answer returns the FSM's answer to a write as the T it must be. Only a
// forwarded write can get something else: a leader of another version.
func answer[T any](t MessageType, resp any) (T, error) {
	v, ok := resp.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("state: %s: the answer is a %T, not a %T; do all agents run the same version?", t, resp, zero)
	}
	return v, nil
}

// waitFuture waits for f, for ctx to end or for the store to close.
//
// raft answers a future when the entry is applied or fails, but at Shutdown
// it abandons the ones still queued (in applyCh or on their way to the FSM)
// without an answer; hence the shutdown case. The helper goroutine ends
// with the answer, so it outlives the call only for such an abandoned
// future, and only once the store is closed.
func (s *Store) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w; the write may still be applied", ctx.Err())
	case <-s.shutdownCh:
		return fmt.Errorf("%w; the write may or may not have been committed", errClosed)
	}
}

// CreateDeployment stores a new deployment with generation 1. It fails with
// ErrExists if one of that name exists, even one being deleted.
func (s *Store) CreateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	if err := checkName("deployment", d.Namespace, d.Name); err != nil {
		return api.Deployment{}, err
	}
	resp, err := s.propose(ctx, CreateDeploymentType, DeploymentRequest{Deployment: d})
	if err != nil {
		return api.Deployment{}, err
	}
	return answer[api.Deployment](CreateDeploymentType, resp)
}

// UpdateDeployment replaces a deployment's spec. Its generation grows only
// when the pod template (containers or labels) changes, which starts a
// rollout; a replicas-only change keeps it. It fails with ErrNotFound if
// the deployment does not exist or is being deleted.
func (s *Store) UpdateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	if err := checkName("deployment", d.Namespace, d.Name); err != nil {
		return api.Deployment{}, err
	}
	resp, err := s.propose(ctx, UpdateDeploymentType, DeploymentRequest{Deployment: d})
	if err != nil {
		return api.Deployment{}, err
	}
	return answer[api.Deployment](UpdateDeploymentType, resp)
}

// DeleteDeployment marks a deployment as being deleted; the controller stops
// its pods and then calls RemoveDeployment. Deleting it again is no error;
// a missing one is ErrNotFound.
func (s *Store) DeleteDeployment(ctx context.Context, ns, name string) error {
	if err := checkName("deployment", ns, name); err != nil {
		return err
	}
	_, err := s.propose(ctx, DeleteDeploymentType, DeploymentNameRequest{Namespace: ns, Name: name})
	return err
}

// RemoveDeployment removes a deployment that is being deleted and has no
// pods left; otherwise it fails with ErrConflict (ErrNotFound if missing).
func (s *Store) RemoveDeployment(ctx context.Context, ns, name string) error {
	if err := checkName("deployment", ns, name); err != nil {
		return err
	}
	_, err := s.propose(ctx, RemoveDeploymentType, DeploymentNameRequest{Namespace: ns, Name: name})
	return err
}

// PutPods inserts new pods, all or none: it fails with ErrExists if a pod ID
// is taken, ErrNotFound if a pod's deployment is missing and ErrConflict if
// it is being deleted. CreateIndex is set from the raft index.
func (s *Store) PutPods(ctx context.Context, pods []api.Pod) error {
	if len(pods) == 0 {
		return nil
	}
	for i := range pods {
		if err := checkName("pod", pods[i].Namespace, pods[i].Name); err != nil {
			return err
		}
	}
	_, err := s.propose(ctx, PutPodsType, PutPodsRequest{Pods: pods})
	return err
}

// StopPods sets Stop and the terminating phase on pods; the node stops them
// and then removes them. Unknown IDs are ignored.
func (s *Store) StopPods(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.propose(ctx, StopPodsType, PodIDsRequest{IDs: ids})
	return err
}

// SetPodStatus records a pod's observed status. An unknown ID is ignored (the
// pod may have been removed); a stopping pod stays terminating and not ready.
func (s *Store) SetPodStatus(ctx context.Context, id string, st api.PodStatus) error {
	_, err := s.propose(ctx, SetPodStatusType, SetPodStatusRequest{ID: id, Status: st})
	return err
}

// RemovePods deletes pods from the state. Unknown IDs are ignored.
func (s *Store) RemovePods(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.propose(ctx, RemovePodsType, PodIDsRequest{IDs: ids})
	return err
}

// UpsertNode registers a node or replaces its record, PodCIDR included (a
// dev agent records its configured range so). Fleet agents use RegisterNode.
func (s *Store) UpsertNode(ctx context.Context, n api.Node) error {
	req := UpsertNodeRequest{Node: n}
	if err := req.check(); err != nil {
		return err
	}
	_, err := s.propose(ctx, UpsertNodeType, req)
	return err
}

// RegisterNode registers a node or updates its record (addresses,
// capacity, status, labels, …) and returns it as stored. A node that has a
// pod range keeps it; one without gets the lowest free block of
// ClusterConfig.NodeMaskBits in ClusterConfig.PodCIDR, chosen by the FSM so
// every replica agrees. n.PodCIDR is ignored. It fails with ErrConflict
// while no ClusterConfig is set or when the cluster's range is exhausted.
func (s *Store) RegisterNode(ctx context.Context, n api.Node) (api.Node, error) {
	req := RegisterNodeRequest{Node: n}
	if err := req.check(); err != nil {
		return api.Node{}, err
	}
	resp, err := s.propose(ctx, RegisterNodeType, req)
	if err != nil {
		return api.Node{}, err
	}
	return answer[api.Node](RegisterNodeType, resp)
}

// SetNodeStatus records a node's status as membership sees it: NodeReady,
// NodeDown or NodeLeft. A missing node is ErrNotFound.
func (s *Store) SetNodeStatus(ctx context.Context, name, status string) error {
	req := SetNodeStatusRequest{Name: name, Status: status}
	if err := req.check(); err != nil {
		return err
	}
	_, err := s.propose(ctx, SetNodeStatusType, req)
	return err
}

// SetClusterConfig sets the cluster's network layout unless one is set
// already: the first server whose call commits wins, and later calls (with
// the same layout or not) change nothing and return nil. Read the layout in
// force with ClusterConfig.
func (s *Store) SetClusterConfig(ctx context.Context, cc ClusterConfig) error {
	req := SetClusterConfigRequest{Config: cc}
	if err := req.check(); err != nil {
		return err
	}
	if _, err := s.propose(ctx, SetClusterConfigType, req); err != nil {
		return err
	}
	if cur, ok := s.ClusterConfig(); ok && cur != cc {
		s.logger.Warn("the cluster config was set before, differently; keeping it", "in_force", cur, "asked", cc)
	}
	return nil
}

// PodFilter selects pods; empty fields match any pod.
type PodFilter struct {
	Namespace  string
	Deployment string
	Node       string
}

func (f PodFilter) match(p *api.Pod) bool {
	return (f.Namespace == "" || p.Namespace == f.Namespace) &&
		(f.Deployment == "" || p.Deployment == f.Deployment) &&
		(f.Node == "" || p.Node == f.Node)
}

// Deployment returns a deployment, including one being deleted.
func (s *Store) Deployment(ns, name string) (api.Deployment, bool) { return s.fsm.deployment(ns, name) }

// Deployments returns the deployments of a namespace ("" for all), sorted by
// namespace and name.
func (s *Store) Deployments(ns string) []api.Deployment { return s.fsm.listDeployments(ns) }

// Pod returns a pod by ID ("namespace/name").
func (s *Store) Pod(id string) (api.Pod, bool) { return s.fsm.pod(id) }

// Pods returns the pods filter selects, sorted by ID.
func (s *Store) Pods(filter PodFilter) []api.Pod { return s.fsm.listPods(filter) }

// Node returns a node by name.
func (s *Store) Node(name string) (api.Node, bool) { return s.fsm.node(name) }

// Nodes returns all nodes, sorted by name.
func (s *Store) Nodes() []api.Node { return s.fsm.listNodes() }

// ClusterConfig returns the cluster's network layout; false until one is
// set.
func (s *Store) ClusterConfig() (ClusterConfig, bool) { return s.fsm.getClusterConfig() }

// raftDir is where the store keeps raft's files under the data dir.
func raftDir(dataDir string) string { return filepath.Join(dataDir, "raft") }
