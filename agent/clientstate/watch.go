package clientstate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
)

// DefaultWatchWait is how long a server holds a watch that has nothing new
// to say before it answers anyway.
const DefaultWatchWait = 30 * time.Second

// Watcher asks a server for the changes to this node's view (rpc.Client).
// Run calls it from one goroutine at a time; a call may block for up to
// wait, plus the network's time.
type Watcher interface {
	// Watch returns the changes to the caller's view after index since,
	// from the server at addr (host:port of its RPC server), once there are
	// some or wait has passed.
	Watch(ctx context.Context, addr string, since uint64, wait time.Duration) (rpc.WatchResponse, error)
}

var _ Watcher = (*rpc.Client)(nil)

// Status is how the watch is doing, for the agent's status.
type Status struct {
	// Connected is true while the last watch call got an answer that could
	// be applied.
	Connected bool
	// Server is the address watched last.
	Server string
	// LastContact is when an answer was last applied; zero if never.
	LastContact time.Time
	Index       uint64
	Leader      string
}

// Run keeps the view up to date until ctx ends: it watches from the view's
// index, applies each answer and asks again at once. servers returns the
// servers' RPC addresses; it is called before every watch, so membership
// changes are followed. When a call fails, or a server answers with an
// index older than the view (it lags behind one the view followed), Run
// moves to the next server after a backoff (100 ms doubling up to 2 s,
// reset by an answer applied; a refused certificate waits the longest). It always asks from the last applied index;
// only a server answering Reset replaces the view. It logs a warning when
// the watch is lost and an info line when it is back, not at every retry.
// Run one at a time per Store.
func (s *Store) Run(ctx context.Context, w Watcher, servers func() []string) {
	defer s.connected.Store(false)
	var (
		addr    string
		first   = true
		backoff = s.backoffMin
		// lost is true from the first failure until an answer is applied;
		// only its changes are logged above Debug.
		lost bool
		// contacted is false until the first answer is applied.
		contacted bool
		// behind counts answers in a row that were behind the view.
		behind int
	)
	// Listing the servers walks every member of the fleet, and a watch
	// answers at every change of any node: at a thousand nodes, listing
	// them per answer was most of what an idle client allocated. They are
	// listed again after a failure and every serversRefresh.
	var (
		addrs   []string
		addrsAt time.Time
	)
	for ctx.Err() == nil {
		if addrs == nil || time.Since(addrsAt) >= serversRefresh {
			addrs, addrsAt = servers(), time.Now()
		}
		if len(addrs) == 0 {
			addrs = nil
			lost = s.watchFailed(lost, "", errors.New("no server address is known yet; check retry_join and that servers are alive"))
			if !s.backoffSleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, s.backoffMax)
			continue
		}
		if !slices.Contains(addrs, addr) {
			// Spread clients over the servers rather than all on the first.
			i := 0
			if first && s.startAt != nil {
				i = s.startAt(len(addrs))
			}
			addr = addrs[i%len(addrs)]
		}
		first = false
		s.setServer(addr)

		since := s.Index()
		rewind := behind >= rewindAfter
		if rewind {
			since = 0 // ask for the whole view, whatever its index
		}
		start := time.Now()
		wait, minGap := s.watchWait, s.minEmptyGap
		if f := s.maxWait.Load(); f != nil {
			if d := (*f)(); d > 0 {
				wait, minGap = min(wait, d), min(minGap, d)
			}
		}
		// A call to a server that comes back alive (it was marked failed,
		// or restarted) is cut short: it waits on a connection that may be
		// dead, for up to its wait and 15 s more.
		callCtx, cancelCall := context.WithCancel(ctx)
		retried := s.retrySignal()
		go func() {
			for {
				select {
				case <-callCtx.Done():
					return
				case <-retried:
					if s.retryAddr() == addr || s.retryAddr() == "" {
						cancelCall()
						return
					}
					retried = s.retrySignal()
				}
			}
		}()
		resp, err := w.Watch(callCtx, addr, since, wait)
		cutShort := callCtx.Err() != nil && ctx.Err() == nil
		cancelCall() // ends the goroutine above
		if cutShort {
			continue // at once, from the same index
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if err = s.apply(resp, rewind); errors.Is(err, ErrBehind) {
				err = fmt.Errorf("server %s lags behind: %w", addr, err)
			}
		}
		// Answers behind the view, or stuck at it, from server after
		// server: either they all lag, or the fleet's state went back.
		switch {
		case errors.Is(err, ErrBehind), err == nil && resp.Index == since && since > 0 && len(resp.Events) == 0 && resp.Leader == "":
			behind++
		default:
			behind = 0
		}
		if err == nil && resp.Leader == "" && len(resp.Events) == 0 && !resp.Reset {
			// A server that knows no leader may be cut off from the
			// others: its view stops moving. Ask another.
			addr = nextAddr(addrs, addr)
		}
		if err != nil {
			lost = s.watchFailed(lost, addr, err)
			addr = nextAddr(addrs, addr)
			addrs = nil
			if errors.Is(err, state.ErrForbidden) {
				// The certificate was refused (revoked, say): asking again
				// soon will not help; keep serving the cached view.
				backoff = s.backoffMax
			}
			if !s.backoffSleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, s.backoffMax)
			continue
		}
		s.connected.Store(true)
		s.lastContact.Store(time.Now().UnixNano())
		if resp.Leader != "" {
			s.leaderContact.Store(time.Now().UnixNano())
		}
		if lost || !contacted {
			contacted = true
			s.log.Info("watching the cluster state", "server", addr, "index", resp.Index, "reset", resp.Reset)
		}
		lost = false
		backoff = s.backoffMin
		// A server that answers at once with nothing new (it ignored wait)
		// must not turn the loop into a busy one against it.
		if len(resp.Events) == 0 && !resp.Reset && resp.Index == since {
			if gap := minGap - time.Since(start); gap > 0 && !sleepCtx(ctx, gap) {
				return
			}
		}
	}
}

// rewindAfter is how many answers in a row, from the servers one after
// the other, may be behind the view before the client asks for the whole
// view again and takes it even if older.
const rewindAfter = 10

// serversRefresh is how often a watch that keeps answering lists the
// servers again, to follow servers that joined or left.
const serversRefresh = 5 * time.Second

// watchFailed records a failed watch call and returns the new lost state.
func (s *Store) watchFailed(lost bool, addr string, err error) bool {
	s.connected.Store(false)
	if !lost {
		s.log.Warn("lost the watch of the cluster state; pods, routes and rules keep running from the cached view while other servers are tried",
			"server", addr, "index", s.Index(), "err", err)
	} else {
		s.log.Debug("watch of the cluster state failed; trying the next server", "server", addr, "err", err)
	}
	return true
}

func nextAddr(addrs []string, cur string) string {
	i := slices.Index(addrs, cur)
	return addrs[(i+1)%len(addrs)]
}

// Connected reports whether the last watch call got an answer that could be
// applied.
func (s *Store) Connected() bool { return s.connected.Load() }

// LastContact returns when a watch answer was last applied; zero if never.
func (s *Store) LastContact() time.Time {
	ns := s.lastContact.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Retry tells the watch that the server at addr (its RPC address; ""
// for any) is alive again: a back-off ends at once, and a call waiting on
// that server is cut short and made again. A node that rejoins the fleet
// so learns what changed while it was away without waiting out a back-off
// of up to 2 s or a call on a dead connection. It never blocks.
func (s *Store) Retry(addr string) {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	s.retryTo = addr
	close(s.retry)
	s.retry = make(chan struct{})
}

func (s *Store) retrySignal() <-chan struct{} {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	return s.retry
}

func (s *Store) retryAddr() string {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	return s.retryTo
}

// backoffSleep sleeps d, or less if Retry is called; false when ctx ended.
func (s *Store) backoffSleep(ctx context.Context, d time.Duration) bool {
	retried := s.retrySignal()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-retried:
		return true
	case <-t.C:
		return true
	}
}

// LeaderContact returns when an answer from a server that knew a leader
// was last applied, in this run; zero if never. A node is in touch with
// the fleet's control plane as of then: what self-fencing measures.
func (s *Store) LeaderContact() time.Time {
	ns := s.leaderContact.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// SetMaxWait bounds how long each watch call waits for a change by what f
// returns (0: no bound beyond the default), so that answers, and with them
// LeaderContact, come at least that often: a heartbeat for self-fencing.
func (s *Store) SetMaxWait(f func() time.Duration) { s.maxWait.Store(&f) }

// Status returns how the watch is doing.
func (s *Store) Status() Status {
	s.mu.RLock()
	st := Status{Server: s.server, Index: s.index, Leader: s.leader}
	s.mu.RUnlock()
	st.Connected, st.LastContact = s.Connected(), s.LastContact()
	return st
}

func (s *Store) setServer(addr string) {
	s.mu.Lock()
	s.server = addr
	s.mu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
