package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// eventBuffer is the Events channel's buffer; past it events wait in the
// queue.
const eventBuffer = 256

// ErrNotStarted is returned by methods that need Start first.
var ErrNotStarted = errors.New("membership not started")

// Membership is this node's place in the fleet. Create it with New, then
// Start it; Leave (or Shutdown) ends it, and it cannot be started again.
// Its methods are safe for concurrent use.
type Membership struct {
	cfg    Config
	log    *slog.Logger
	table  *table
	deleg  *delegate
	queue  *eventQueue
	events chan Event

	life sync.Mutex // held through Start, Leave and Shutdown: one at a time

	mu       sync.Mutex // guards what follows
	ml       *memberlist.Memberlist
	started  bool
	shutdown bool
	stop     chan struct{} // closed by Shutdown: ends the goroutines below
	wg       sync.WaitGroup
}

// New checks cfg and returns a Membership that has not joined anything yet.
func New(cfg Config) (*Membership, error) {
	cfg.SecretKey = slices.Clone(cfg.SecretKey)
	cfg.RetryJoin = slices.Clone(cfg.RetryJoin)
	cfg.Meta = cfg.Meta.clone()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("membership config: %w", err)
	}
	meta, _ := cfg.Meta.encode() // checked by validate
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Membership{
		cfg:    cfg,
		log:    log,
		queue:  newEventQueue(log),
		events: make(chan Event, eventBuffer),
		stop:   make(chan struct{}),
	}
	m.table = newTable(cfg.NodeName, cfg.TombstoneTimeout, cfg.Admit, log, m.queue.push)
	m.deleg = &delegate{table: m.table, log: log, meta: meta}
	return m, nil
}

// Start opens the gossip listeners (TCP and UDP) and, if Config.RetryJoin
// lists peers, starts a goroutine that tries them every RetryInterval until
// this node has joined at least one other node, logging each failure with
// its reason. ctx bounds only that goroutine; gossip runs until Leave or
// Shutdown.
func (m *Membership) Start(ctx context.Context) error {
	m.life.Lock()
	defer m.life.Unlock()
	if _, err := m.running(); !errors.Is(err, ErrNotStarted) {
		return errors.New("membership: Start called twice, or after Shutdown")
	}
	if len(m.cfg.SecretKey) == 0 {
		m.log.Warn("gossip is not encrypted: any host that reaches the gossip port can join; set a gossip key outside tests and dev")
	}
	mc := m.cfg.memberlistConfig(m.deleg, m.log)
	if mc.Transport == nil {
		tr, err := newTransport(mc.BindAddr, mc.BindPort, mc.Logger)
		if err != nil {
			return fmt.Errorf("start gossip on %s:%d: %w", m.cfg.BindAddr, m.cfg.BindPort, err)
		}
		mc.Transport, mc.BindPort = tr, tr.Port()
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = tr.Port()
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if mc.Transport != nil {
			_ = mc.Transport.Shutdown()
		}
		return fmt.Errorf("start gossip on %s:%d: %w", m.cfg.BindAddr, m.cfg.BindPort, err)
	}
	m.mu.Lock()
	m.ml, m.started = ml, true
	m.mu.Unlock()
	m.log.Info("gossip started", "node", m.cfg.NodeName, "addr", m.LocalAddr(), "encrypted", len(m.cfg.SecretKey) > 0)

	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.queue.run(m.events, m.stop)
	}()
	if len(m.cfg.RetryJoin) > 0 {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.retryJoin(ctx, ml)
		}()
	}
	return nil
}

// retryJoin tries the RetryJoin peers until one other node is known.
func (m *Membership) retryJoin(ctx context.Context, ml *memberlist.Memberlist) {
	t := time.NewTicker(m.cfg.RetryInterval)
	defer t.Stop()
	for attempt := 1; ; attempt++ {
		n, err := m.join(ml, m.cfg.RetryJoin)
		switch {
		case err == nil && ml.NumMembers() > 1:
			m.log.Info("joined the fleet", "contacted", n, "members", ml.NumMembers(), "attempts", attempt)
			return
		case err == nil:
			// Reaching only ourselves (our own address is in the list)
			// joins no one.
			m.log.Warn("retry join: no other node reached yet; retrying", "peers", m.cfg.RetryJoin, "attempt", attempt, "every", m.cfg.RetryInterval)
		default:
			m.log.Warn("retry join failed; retrying", "attempt", attempt, "every", m.cfg.RetryInterval, "err", err)
		}
		select {
		case <-ctx.Done():
			m.log.Info("retry join stopped", "reason", ctx.Err())
			return
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

// Join contacts the given peers ("host" or "host:port") and merges their
// member lists into this node's. It returns how many it reached; the error
// says why each of the others failed, and is nil if any was reached.
func (m *Membership) Join(addrs ...string) (int, error) {
	ml, err := m.running()
	if err != nil {
		return 0, err
	}
	norm := make([]string, 0, len(addrs))
	for _, a := range addrs {
		na, err := m.cfg.joinAddr(a)
		if err != nil {
			return 0, err
		}
		norm = append(norm, na)
	}
	return m.join(ml, norm)
}

// join is Join with addresses already in host:port form. It contacts them
// one at a time and stops early at Shutdown, so Shutdown waits for at most
// one contact in flight (memberlist's TCPTimeout against a peer that drops
// packets).
func (m *Membership) join(ml *memberlist.Memberlist, norm []string) (int, error) {
	var (
		joined int
		errs   []error
	)
	for _, addr := range norm {
		select {
		case <-m.stop:
			return joined, errors.New("membership is shut down")
		default:
		}
		n, err := ml.Join([]string{addr})
		joined += n
		if err != nil {
			errs = append(errs, flatten(err)...)
		}
	}
	if joined > 0 || len(errs) == 0 {
		return joined, nil
	}
	hint := "check the address, and that the peer's gossip port is open"
	if len(m.cfg.SecretKey) > 0 {
		hint += " and every node has the same gossip key"
	} else {
		hint += " and its gossip is not encrypted (this node has no gossip key)"
	}
	err := errs[0]
	if len(errs) > 1 {
		err = errors.Join(errs...)
	}
	return 0, fmt.Errorf("join %s: %w; %s", strings.Join(norm, ", "), err, hint)
}

// flatten unpacks memberlist's multierror, whose text spans lines.
func flatten(err error) []error {
	var multi interface{ WrappedErrors() []error }
	if errors.As(err, &multi) {
		return multi.WrappedErrors()
	}
	return []error{err}
}

// running returns the memberlist if Start was called and Shutdown was not.
func (m *Membership) running() (*memberlist.Memberlist, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutdown {
		return nil, errors.New("membership is shut down")
	}
	if !m.started {
		return nil, ErrNotStarted
	}
	return m.ml, nil
}

// Members returns every member this node knows, itself included, sorted by
// name: alive ones, and failed or left ones until TombstoneTimeout.
func (m *Membership) Members() []Member {
	return m.table.list()
}

// Servers is Members with only the alive servers: what a client asks for
// whenever it picks a server, without copying every member of the fleet.
func (m *Membership) Servers() []Member {
	return m.table.listWhere(func(mb *Member) bool { return mb.Meta.Role == RoleServer && mb.Status == StatusAlive })
}

// Events delivers a Join, Update, Fail or Leave event for every change of a
// member, this node included, in the order this node saw them. Read it
// promptly: events wait in an unbounded queue rather than block gossip or
// be dropped, so a reader that stops reading holds them all in memory. The
// channel is never closed; stop reading when the Membership is shut down.
// There is one channel: with several readers each event goes to one.
func (m *Membership) Events() <-chan Event {
	return m.events
}

// UpdateMeta sets this node's Meta and gossips it. It returns once the
// update has gone out to the fleet, or at ctx's deadline (DefaultLeaveTimeout
// without one); the update still spreads after a timeout.
func (m *Membership) UpdateMeta(ctx context.Context, meta Meta) error {
	meta = meta.clone()
	b, err := meta.encode()
	if err != nil {
		return err
	}
	ml, err := m.running()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("update node meta: %w", err)
	}
	timeout := DefaultLeaveTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	m.deleg.setMeta(b)
	if err := ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("update node meta: set here, but %w after %v; it spreads with later gossip", err, timeout)
	}
	return nil
}

// Leave tells the fleet this node is leaving, waits up to timeout (0 means
// DefaultLeaveTimeout) for that to go out, then shuts down. Peers see a
// Leave event at once instead of a Fail after the failure timeout.
func (m *Membership) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultLeaveTimeout
	}
	deadline := time.Now().Add(timeout)
	m.life.Lock()
	defer m.life.Unlock()
	ml, err := m.running()
	if err != nil {
		return nil // never started, or already shut down
	}
	m.table.setLeaving()
	// Tell each peer first that what comes next is a leave (see doc.go).
	// One UDP packet each, sent now, ahead of the leave's own gossip.
	msg := append([]byte{msgLeaveIntent}, m.cfg.NodeName...)
	for _, n := range ml.Members() {
		if n.Name == m.cfg.NodeName {
			continue
		}
		if err := ml.SendBestEffort(n, msg); err != nil {
			m.log.Debug("leave notice not sent; the peer will see a failure", "member", n.Name, "err", err)
		}
	}
	var errs []error
	if err := ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		errs = append(errs, fmt.Errorf("leave the fleet: %w; peers will see this node as failed", err))
	} else {
		m.log.Info("left the fleet", "node", m.cfg.NodeName)
	}
	errs = append(errs, m.shutdownLocked())
	return errors.Join(errs...)
}

// Shutdown stops gossip without telling the fleet: peers mark this node
// failed after the failure timeout. Use Leave to go cleanly. It is safe to
// call more than once.
func (m *Membership) Shutdown() error {
	m.life.Lock()
	defer m.life.Unlock()
	return m.shutdownLocked()
}

// shutdownLocked is Shutdown with m.life held.
func (m *Membership) shutdownLocked() error {
	m.mu.Lock()
	if m.shutdown {
		m.mu.Unlock()
		return nil
	}
	m.shutdown = true
	close(m.stop)
	ml := m.ml
	m.mu.Unlock()

	var err error
	if ml != nil {
		if err = ml.Shutdown(); err != nil {
			err = fmt.Errorf("shut down gossip: %w", err)
		}
	}
	m.wg.Wait()
	return err
}

// LocalName returns this node's name.
func (m *Membership) LocalName() string {
	return m.cfg.NodeName
}

// LocalAddr returns the address peers gossip with this node at (the port
// picked when BindPort was 0); the zero AddrPort before Start.
func (m *Membership) LocalAddr() netip.AddrPort {
	m.mu.Lock()
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return netip.AddrPort{}
	}
	n := ml.LocalNode()
	addr, _ := netip.AddrFromSlice(n.Addr)
	return netip.AddrPortFrom(addr.Unmap(), n.Port)
}
