package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/agent/state"
)

// Forwarder sends a write from an agent that is not the raft leader to the
// leader, as Consul's and Nomad's followers do. It is how client agents
// (non-voters) and follower servers accept writes.
//
// Forward delivers cmd, a typed request, to the agent whose raft ID (node
// name) is leaderID, which checks who sent it (the caller's certificate,
// and the API token in ctx, if any), validates it, proposes it itself and
// answers with a Reply. Forward is called concurrently, once per write, and
// may block until ctx ends. An error means the leader was not reached or
// did not answer: the write may or may not have been applied.
type Forwarder interface {
	Forward(ctx context.Context, leaderID string, cmd state.Command) (Reply, error)
}

func (s *Store) notLeader() error {
	if addr := s.Leader(); addr != "" {
		return fmt.Errorf("%w; the leader is %s", state.ErrNotLeader, addr)
	}
	return fmt.Errorf("%w; no leader is known yet", state.ErrNotLeader)
}

// Write proposes cmd and waits until it is committed and applied here,
// returning what the FSM answered (the written object, or nil). cmd is
// validated first; nothing invalid reaches the log. Off the leader, with a
// Forwarder, the leader proposes it (see forward). ctx bounds the wait;
// when it ends first, the entry may still be applied later.
//
// Write trusts its caller: it is for this agent's own code (the API, which
// authenticated the request, and the agent's loops). What other agents send
// goes through their RPC endpoint's authorization and then ApplyLocal.
func (s *Store) Write(ctx context.Context, cmd state.Command) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", cmd.Type(), err)
	}
	if err := cmd.Validate(); err != nil {
		return nil, err
	}
	if s.forwarder != nil && s.raft.State() != raft.Leader {
		return s.forward(ctx, cmd)
	}
	_, resp, err := s.applyLocal(ctx, cmd)
	if err != nil {
		return nil, err
	}
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// ApplyLocal is the leader's side of Forwarder: it proposes cmd, a write
// another agent sent and the caller authorized, and waits until it is
// committed and applied here. It checks cmd as the state machine will
// (state.ValidateEntry), so nothing it cannot apply reaches the log; the
// caller bounds sizes with cmd.Validate. Off the leader it answers
// ErrNotLeader: a forwarded write is never forwarded again.
func (s *Store) ApplyLocal(ctx context.Context, cmd state.Command) Reply {
	if err := state.ValidateEntry(cmd); err != nil {
		return NewReply(0, nil, err)
	}
	index, resp, err := s.applyLocal(ctx, cmd)
	// The forwarding agent waits until it applied the entry itself. While
	// other writes are on their way, the entries raft sends for them carry
	// the commit index; the last one nudges.
	if index > 0 && s.applying.Load() == 0 {
		select {
		case s.nudgeCh <- struct{}{}:
		default: // a nudge is pending; it covers this entry too
		}
	}
	return NewReply(index, resp, err)
}

// applyLocal proposes cmd on this node, which must be the leader, and waits
// until it is applied. It returns the entry's index and the FSM's answer,
// which may be an error (the entry then is committed all the same); err is
// for failures before the FSM answered.
func (s *Store) applyLocal(ctx context.Context, cmd state.Command) (uint64, any, error) {
	t := cmd.Type()
	if err := ctx.Err(); err != nil {
		return 0, nil, fmt.Errorf("store: %s: %w", t, err)
	}
	if s.raft.State() != raft.Leader {
		return 0, nil, fmt.Errorf("store: %s: %w", t, s.notLeader())
	}
	entry, err := state.Encode(cmd)
	if err != nil {
		return 0, nil, fmt.Errorf("store: %w", err)
	}
	if len(entry) > state.MaxEntryBytes {
		return 0, nil, fmt.Errorf("store: %s: the entry is %d bytes, more than %d: %w", t, len(entry), state.MaxEntryBytes, state.ErrInvalid)
	}
	var enqueue time.Duration
	if dl, ok := ctx.Deadline(); ok {
		if enqueue = time.Until(dl); enqueue <= 0 {
			return 0, nil, fmt.Errorf("store: %s: %w", t, context.DeadlineExceeded)
		}
	}
	s.applying.Add(1)
	f := s.raft.Apply(entry, enqueue)
	err = s.waitFuture(ctx, f)
	s.applying.Add(-1)
	if err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return 0, nil, fmt.Errorf("store: %s: %w", t, s.notLeader())
		case errors.Is(err, raft.ErrLeadershipLost):
			return 0, nil, fmt.Errorf("store: %s: %w: leadership was lost before the entry committed; it may still be applied", t, state.ErrNotLeader)
		case errors.Is(err, raft.ErrRaftShutdown):
			return 0, nil, fmt.Errorf("store: %s: %w", t, errClosed)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return 0, nil, fmt.Errorf("store: %s: raft did not take the entry in time: %w", t, context.DeadlineExceeded)
		}
		return 0, nil, fmt.Errorf("store: %s: %w", t, err)
	}
	return f.Index(), f.Response(), nil
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

// forward sends cmd to the leader and waits until this node has applied
// it, so a read right after the write sees it. It returns what Write
// would on the leader.
func (s *Store) forward(ctx context.Context, cmd state.Command) (any, error) {
	t := cmd.Type()
	leader, err := s.awaitLeaderID(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", t, err)
	}
	if leader == s.localID { // elected since Write looked
		_, resp, err := s.applyLocal(ctx, cmd)
		if err == nil {
			err, _ = resp.(error)
		}
		return resp, err
	}
	reply, err := s.forwarder.Forward(ctx, string(leader), cmd)
	if err != nil {
		if ErrorKind(err) != KindInternal {
			return nil, fmt.Errorf("store: %s: forwarded to leader %s: %w", t, leader, err)
		}
		return nil, fmt.Errorf("store: %s: %w: forwarding to leader %s failed; the write may or may not have been applied: %w", t, state.ErrNotLeader, leader, err)
	}
	resp, rerr := reply.Result()
	if reply.Index == 0 { // not applied: refused before or while proposing
		if rerr == nil {
			rerr = fmt.Errorf("store: %s: leader %s answered without a raft index", t, leader)
		}
		return nil, rerr
	}
	if err := s.waitApplied(ctx, reply.Index); err != nil {
		return nil, fmt.Errorf("store: %s: %w", t, err)
	}
	return resp, rerr
}

// nudgeFollowers tells followers the commit index soon after the last of
// the forwarded writes in flight commits, so the agent that forwarded it,
// waiting to apply it, does not wait for raft to do so on its own: raft
// sends the commit index with the next entries or, when none come, only
// after CommitTimeout (50 to 100ms by default), which would make a lone
// forwarded write that slow. Appending a barrier sends it at once (at the
// cost of one more entry, which is why it waits for writes to pause).
// Waiting for each barrier before the next makes it at most one per commit
// round, however many writes ask.
func (s *Store) nudgeFollowers() {
	defer s.wg.Done()
	for {
		select {
		case <-s.shutdownCh:
			return
		case <-s.nudgeCh:
		}
		if s.raft.State() != raft.Leader {
			continue
		}
		// An error means leadership was lost or raft shut down; the new
		// leader's first entries carry the commit index anyway.
		_ = s.waitFuture(context.Background(), s.raft.Barrier(s.timeout))
	}
}

// waitApplied waits until this node applied a write the leader committed
// at index. Without a deadline in ctx it gives up after s.timeout, so a
// node cut off from the leader right after the commit does not hang.
func (s *Store) waitApplied(ctx context.Context, index uint64) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	if err := s.WaitIndex(ctx, index); err != nil {
		return fmt.Errorf("the leader committed the write at index %d but this agent has not applied it yet (it lags behind or was cut off from the leader): %w", index, err)
	}
	return nil
}

// errNoLeader is what a write gets when no leader is known after a wait.
var errNoLeader = fmt.Errorf("%w: no raft leader is reachable from this agent: it may be cut off from the majority of servers; retry, or send the request to another agent", state.ErrNotLeader)

// awaitLeaderID returns the leader's ID, waiting up to two election
// timeouts (bounded by ctx) for one when none is known: long enough to
// ride out an election, short enough for the caller to try elsewhere.
func (s *Store) awaitLeaderID(ctx context.Context) (raft.ServerID, error) {
	if id := s.reachableLeader(); id != "" {
		return id, nil
	}
	wait := time.NewTimer(2 * s.electionTimeout)
	defer wait.Stop()
	poll := time.NewTicker(s.electionTimeout / 10)
	defer poll.Stop()
	for {
		// readyCh closes when the monitor sees a leader; the ticker covers
		// a leader raft knows before the monitor has looked.
		s.readyMu.Lock()
		ch := s.readyCh
		if s.ready { // closed already; a stale view of a leader now gone
			ch = nil
		}
		s.readyMu.Unlock()
		select {
		case <-ch:
		case <-poll.C:
		case <-wait.C:
			return "", errNoLeader
		case <-ctx.Done():
			return "", fmt.Errorf("%w (%w)", errNoLeader, ctx.Err())
		case <-s.shutdownCh:
			return "", errClosed
		}
		if id := s.reachableLeader(); id != "" {
			return id, nil
		}
	}
}

// reachableLeader is the leader's ID if this agent heard from it recently.
// A follower cut off from the leader keeps its ID until its own election
// timer fires; forwarding to it meanwhile would hang on a dead connection,
// so a leader silent for longer than an election timeout counts as unknown.
func (s *Store) reachableLeader() raft.ServerID {
	_, id := s.raft.LeaderWithID()
	if id == "" || id == s.localID {
		return id
	}
	if last := s.raft.LastContact(); !last.IsZero() && time.Since(last) > s.electionTimeout {
		return ""
	}
	return id
}
