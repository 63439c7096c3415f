package membership

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Status is what this node knows of a member.
//
// There is no "suspect": memberlist v0.7 does not show when it suspects a
// member, only when it has decided the member failed.
type Status int

// Member statuses.
const (
	// StatusAlive: the member answers probes (or has not missed enough yet).
	StatusAlive Status = iota + 1
	// StatusFailed: the member stopped answering and its suspicion timed
	// out. It may come back (a reboot), and is then alive again.
	StatusFailed
	// StatusLeft: the member left on purpose (Leave).
	StatusLeft
)

func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusFailed:
		return "failed"
	case StatusLeft:
		return "left"
	}
	return "unknown"
}

// EventType says what happened to a member.
type EventType int

// Event types.
const (
	// EventJoin: a member is alive, for the first time or again.
	EventJoin EventType = iota + 1
	// EventUpdate: an alive member changed its Meta.
	EventUpdate
	// EventFail: a member was marked failed.
	EventFail
	// EventLeave: a member left on purpose.
	EventLeave
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventFail:
		return "fail"
	case EventLeave:
		return "leave"
	}
	return "unknown"
}

// Member is one node of the fleet as this node sees it.
type Member struct {
	Name string
	// Addr and Port are the member's gossip address.
	Addr netip.Addr
	Port uint16
	Meta Meta
	// Status is alive, failed or left.
	Status Status
}

// Event is a change of one member; Member is its state after the change.
type Event struct {
	Type   EventType
	Member Member
}

// Leave intents. A node about to Leave sends every peer this one-byte type
// and its name as a memberlist user message.
const msgLeaveIntent byte = 1

// intentTTL bounds how long a leave intent counts: heard before the member
// is gone, it makes that a leave; heard just after a member was marked
// failed (the message overtaken by the gossip of its death), it turns the
// failure into a leave. An intent whose leave never came expires.
const intentTTL = 30 * time.Second

// entry is a member and when its status last changed.
type entry struct {
	Member
	since time.Time
}

// table is the member list, kept from memberlist's event delegate (called
// one at a time) and its NotifyMsg (called concurrently with it). Every
// change is emitted as an Event while the lock is held, so events come out
// in the order the table changed.
type table struct {
	self      string
	admit     func(name string) error // nil admits everyone
	tombstone time.Duration
	log       *slog.Logger
	emit      func(Event)
	now       func() time.Time

	mu      sync.Mutex
	members map[string]*entry
	intents map[string]time.Time // member name → when its leave intent came
	leaving bool                 // this node is leaving
	pruned  time.Time            // when prune last walked the table
}

// pruneEvery bounds how often prune walks the table: a leave (or a
// failure) at every member of a thousand-node fleet would otherwise walk
// it a thousand times per departure. list leaves out what prune has not
// removed yet.
const pruneEvery = time.Minute

func newTable(self string, tombstone time.Duration, admit func(string) error, log *slog.Logger, emit func(Event)) *table {
	return &table{
		self: self, tombstone: tombstone, admit: admit, log: log, emit: emit, now: time.Now,
		members: map[string]*entry{}, intents: map[string]time.Time{},
	}
}

// memberOf converts memberlist's node. A peer whose meta does not decode
// is still a member, with a zero Meta.
func (t *table) memberOf(n *memberlist.Node, status Status) Member {
	addr, _ := netip.AddrFromSlice(n.Addr)
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		t.log.Warn("member has meta this agent cannot read; is it a flotilla agent of another version?",
			"member", n.Name, "addr", n.Address(), "err", err)
	}
	return Member{Name: n.Name, Addr: addr.Unmap(), Port: n.Port, Meta: meta, Status: status}
}

// admitted reports whether name may be a member. Called with t.mu held.
func (t *table) admitted(name string) bool {
	return t.admit == nil || name == t.self || t.admit(name) == nil
}

// set stores m and emits typ for it, unless m is not admitted (any more).
// Called with t.mu held.
func (t *table) set(m Member, typ EventType) {
	if !t.admitted(m.Name) {
		delete(t.members, m.Name)
		return
	}
	t.members[m.Name] = &entry{Member: m, since: t.now()}
	t.emit(Event{Type: typ, Member: copyMember(m)})
}

func (t *table) join(n *memberlist.Node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// An intent from before this join is about an earlier life.
	delete(t.intents, n.Name)
	m := t.memberOf(n, StatusAlive)
	t.log.Info("member joined", "member", m.Name, "addr", m.Addr, "role", m.Meta.Role)
	t.set(m, EventJoin)
}

func (t *table) update(n *memberlist.Node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.memberOf(n, StatusAlive)
	t.log.Debug("member updated", "member", m.Name)
	t.set(m, EventUpdate)
}

func (t *table) leave(n *memberlist.Node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var m Member
	if e, ok := t.members[n.Name]; ok {
		m = e.Member // as last known: a dead node's meta is not news
	} else {
		m = t.memberOf(n, StatusFailed)
	}
	at, intended := t.intents[n.Name]
	delete(t.intents, n.Name)
	switch {
	case n.Name == t.self && t.leaving, intended && now.Sub(at) < intentTTL:
		m.Status = StatusLeft
		t.log.Info("member left", "member", m.Name, "addr", m.Addr)
		t.set(m, EventLeave)
	default:
		m.Status = StatusFailed
		t.log.Warn("member failed: it stopped answering", "member", m.Name, "addr", m.Addr)
		t.set(m, EventFail)
	}
	t.prune(now)
}

// intent records that name is about to leave. If it was marked failed a
// moment ago, its intent came late and it left after all.
func (t *table) intent(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if e, ok := t.members[name]; ok && e.Status == StatusFailed && now.Sub(e.since) < intentTTL {
		m := e.Member
		m.Status = StatusLeft
		t.log.Info("member left (its notice came after it was marked failed)", "member", name)
		t.set(m, EventLeave)
		return
	}
	t.log.Debug("member is leaving", "member", name)
	t.intents[name] = now
}

// setLeaving marks this node as leaving, so its own departure is a leave.
func (t *table) setLeaving() {
	t.mu.Lock()
	t.leaving = true
	t.mu.Unlock()
}

// prune forgets members failed or left longer than the tombstone timeout,
// and expired intents. Called with t.mu held.
func (t *table) prune(now time.Time) {
	if d := now.Sub(t.pruned); d >= 0 && d < pruneEvery {
		return
	}
	t.pruned = now
	for name, e := range t.members {
		if t.expired(e, now) {
			delete(t.members, name)
		}
	}
	for name, at := range t.intents {
		if now.Sub(at) > intentTTL {
			delete(t.intents, name)
		}
	}
}

// expired reports whether e is a tombstone older than the timeout.
func (t *table) expired(e *entry, now time.Time) bool {
	return e.Status != StatusAlive && now.Sub(e.since) > t.tombstone
}

// list returns the members sorted by name.
func (t *table) list() []Member { return t.listWhere(nil) }

// listWhere is list with only the members keep accepts (nil keeps all):
// a caller that wants a few of a thousand members copies only those.
func (t *table) listWhere(keep func(*Member) bool) []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prune(t.now())
	var out []Member
	if keep == nil {
		out = make([]Member, 0, len(t.members))
	}
	now := t.now()
	for _, e := range t.members {
		if (keep == nil || keep(&e.Member)) && !t.expired(e, now) && t.admitted(e.Name) {
			out = append(out, copyMember(e.Member))
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func copyMember(m Member) Member {
	m.Meta = m.Meta.clone()
	return m
}

// delegate is what memberlist calls: memberlist.Delegate for this node's
// meta and user messages, memberlist.EventDelegate for member changes.
// Neither may block: they run in memberlist's packet handling.
type delegate struct {
	table *table
	log   *slog.Logger

	mu   sync.Mutex
	meta []byte // this node's encoded Meta
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate = (*delegate)(nil)
)

// NotifyAlive filters peers' alive messages through Config.Admit: a peer
// refused is not merged into memberlist's list at all.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	if d.table.admit == nil || n.Name == d.table.self {
		return nil
	}
	if err := d.table.admit(n.Name); err != nil {
		return fmt.Errorf("not admitted: %w", err)
	}
	return nil
}

func (d *delegate) setMeta(b []byte) {
	d.mu.Lock()
	d.meta = b
	d.mu.Unlock()
}

// NodeMeta returns this node's encoded Meta. Its size was checked against
// MetaMaxSize when it was set; memberlist panics beyond limit.
func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		d.log.Error("node meta over memberlist's limit; sending none", "bytes", len(d.meta), "limit", limit)
		return nil
	}
	return slices.Clone(d.meta)
}

// NotifyMsg receives peers' user messages: leave intents. b is reused by
// memberlist after the call.
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) < 2 || b[0] != msgLeaveIntent {
		d.log.Debug("ignoring unknown gossip user message", "bytes", len(b))
		return
	}
	d.table.intent(string(b[1:]))
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.table.join(n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.table.update(n) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.table.leave(n) }
