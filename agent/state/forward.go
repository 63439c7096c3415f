package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Forwarder sends a write from an agent that is not the raft leader to the
// leader, as Consul's and Nomad's followers do. It is how client agents
// (non-voters) and follower servers accept writes.
//
// Forward delivers entry to the agent whose raft ID (node name) is leaderID
// and returns what that agent's ApplyRaw returned. entry is a complete raft
// log entry (type byte and JSON body) that the caller will not modify.
// Forward is called concurrently, once per write, and may block until ctx
// ends.
//
// The store reads the outcome from resp whenever it is not empty, so a
// Forwarder that carries (index, resp) faithfully and errors only as text
// loses nothing: resp holds the error's kind (ErrExists, ErrNotLeader, …).
// An error with an empty resp means the leader was not reached or did not
// answer; the store reports it as ErrNotLeader (the write may or may not
// have been applied) unless it already wraps one of the package's errors.
type Forwarder interface {
	Forward(ctx context.Context, leaderID string, entry []byte) (index uint64, resp []byte, err error)
}

// ApplyRaw is the leader's side of Forwarder: it applies an entry a
// follower forwarded and waits until it is committed and applied here.
// The entry is checked first (a known type byte and a body that decodes
// and passes the same checks as the write methods) because a replica
// panics on an entry it cannot apply. Off the leader it fails with
// ErrNotLeader. raft keeps entry: do not modify it afterwards.
//
// It returns the entry's raft index and resp, the FSM's answer encoded for
// the forwarding store. When the FSM refuses the write (ErrExists,
// ErrNotFound, ErrConflict), the entry was still committed: ApplyRaw returns
// its index, resp, and that error as err. Any other failure returns index 0,
// the error as err, and the same error encoded in resp.
func (s *Store) ApplyRaw(ctx context.Context, entry []byte) (index uint64, resp []byte, err error) {
	t, err := checkEntry(entry)
	if err != nil {
		b, _ := encodeResponse(nil, err)
		return 0, b, err
	}
	index, fsmResp, err := s.applyLocal(ctx, t, entry)
	if index > 0 {
		// The forwarding agent waits until it applied the entry itself.
		select {
		case s.nudgeCh <- struct{}{}:
		default: // a nudge is pending; it covers this entry too
		}
	}
	if err == nil {
		err, _ = fsmResp.(error)
	}
	b, encErr := encodeResponse(fsmResp, err)
	if encErr != nil {
		return index, nil, errors.Join(err, encErr)
	}
	return index, b, err
}

// forward sends cmd to the leader and waits until this node has applied
// it, so a read right after the write sees it. It returns what propose
// would on the leader.
func (s *Store) forward(ctx context.Context, t MessageType, cmd []byte) (any, error) {
	leader, err := s.awaitLeaderID(ctx)
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", t, err)
	}
	if leader == s.localID { // elected since propose looked
		_, resp, err := s.applyLocal(ctx, t, cmd)
		return resp, err
	}
	index, b, ferr := s.forwarder.Forward(ctx, string(leader), cmd)
	if len(b) == 0 {
		if ferr == nil {
			ferr = errors.New("it answered nothing")
		}
		if errorKind(ferr) != "" {
			return nil, fmt.Errorf("state: %s: forwarded to leader %s: %w", t, leader, ferr)
		}
		return nil, fmt.Errorf("state: %s: %w: forwarding to leader %s failed; the write may or may not have been applied: %w", t, ErrNotLeader, leader, ferr)
	}
	resp, err := decodeResponse(b)
	if err != nil {
		return nil, fmt.Errorf("state: %s: from leader %s: %w", t, leader, err)
	}
	if index == 0 { // not applied: refused before or while proposing
		if e, ok := resp.(error); ok {
			return nil, fmt.Errorf("forwarded to leader %s: %w", leader, e)
		}
		return nil, fmt.Errorf("state: %s: leader %s answered without a raft index", t, leader)
	}
	if err := s.waitApplied(ctx, index); err != nil {
		return resp, fmt.Errorf("state: %s: %w", t, err)
	}
	return resp, nil
}

// nudgeFollowers tells followers the commit index soon after a forwarded
// write commits, so the agent that forwarded it, waiting to apply it, does
// not wait for raft to do so on its own: raft sends the commit index with
// the next entries or, when none come, only after CommitTimeout (50 to
// 100ms by default), which would make a lone forwarded write that slow.
// Appending a barrier sends it at once. Waiting for each barrier before the
// next makes it at most one per commit round, however many writes ask.
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
var errNoLeader = fmt.Errorf("%w: no raft leader is reachable from this agent: it may be cut off from the majority of servers; retry, or send the request to another agent", ErrNotLeader)

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
