package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// recorder is one ordered log shared by the fakes of a test, so a test can
// check that a member was verified before it was added to raft.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
}

// fakeRaft is the raft node and the state it replicates: the
// configuration, node records and revocations.
type fakeRaft struct {
	rec          *recorder
	mu           sync.Mutex
	servers      []store.Server
	hasState     bool
	nodes        map[string]api.Node
	revocations  map[string]time.Time
	bootstrapErr error
	addErr       error // AddVoter and AddNonvoter fail with it, changing nothing
}

var _ Raft = (*fakeRaft)(nil)

func newFakeRaft(rec *recorder) *fakeRaft {
	return &fakeRaft{rec: rec, nodes: map[string]api.Node{}, revocations: map[string]time.Time{}}
}

func (f *fakeRaft) Servers() ([]store.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.servers), nil
}

func (f *fakeRaft) HasState() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hasState
}

func (f *fakeRaft) BootstrapServers(servers []store.Server) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, s := range servers {
		ids = append(ids, fmt.Sprintf("%s@%s/voter=%t", s.ID, s.Address, s.Voter))
	}
	f.rec.add("bootstrap %v", ids)
	if f.bootstrapErr != nil {
		return f.bootstrapErr
	}
	f.servers, f.hasState = slices.Clone(servers), true
	return nil
}

func (f *fakeRaft) AddVoter(_ context.Context, id, addr string) error {
	return f.addServer(id, addr, true)
}

func (f *fakeRaft) AddNonvoter(_ context.Context, id, addr string) error {
	return f.addServer(id, addr, false)
}

func (f *fakeRaft) addServer(id, addr string, voter bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if voter {
		f.rec.add("add-voter %s %s", id, addr)
	} else {
		f.rec.add("add-nonvoter %s %s", id, addr)
	}
	if f.addErr != nil {
		return f.addErr
	}
	f.servers = slices.DeleteFunc(f.servers, func(s store.Server) bool { return s.ID == id })
	f.servers = append(f.servers, store.Server{ID: id, Address: addr, Voter: voter})
	return nil
}

func (f *fakeRaft) RemoveServer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec.add("remove %s", id)
	f.servers = slices.DeleteFunc(f.servers, func(s store.Server) bool { return s.ID == id })
	return nil
}

func (f *fakeRaft) Nodes() []api.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Node
	for _, n := range f.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (f *fakeRaft) SetNodeStatus(_ context.Context, name, status string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec.add("status %s %s", name, status)
	n, ok := f.nodes[name]
	if !ok {
		return fmt.Errorf("node %s: not found", name)
	}
	n.Status = status
	f.nodes[name] = n
	return nil
}

func (f *fakeRaft) Revocations() map[string]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.revocations)
}

// fakeMembers is the membership list.
type fakeMembers struct {
	mu   sync.Mutex
	list []membership.Member
}

var _ Members = (*fakeMembers)(nil)

func (f *fakeMembers) Members() []membership.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.list)
}

func (f *fakeMembers) set(ms ...membership.Member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = ms
}

// member is a node of the test fleet at ip: raft on port 7300, RPC on 7400.
// Its gossip address is ip too: the policy dials only a member's own address.
func member(name, role string, status membership.Status, ip string) membership.Member {
	return membership.Member{Name: name, Status: status, Addr: netip.MustParseAddr(ip), Meta: membership.Meta{
		Role: role, RaftAddr: ip + ":7300", RPCAddr: ip + ":7400",
	}}
}

// fakeVerifier knows which certificate ("role/name") listens at each raft
// address; an address it does not know has none.
type fakeVerifier struct {
	rec   *recorder
	mu    sync.Mutex
	certs map[string]string
}

var _ PeerVerifier = (*fakeVerifier)(nil)

func (f *fakeVerifier) VerifyPeer(_ context.Context, raftAddr, name, role string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec.add("verify %s %s at %s", name, role, raftAddr)
	got, ok := f.certs[raftAddr]
	switch {
	case !ok:
		return fmt.Errorf("dial %s: connection refused", raftAddr)
	case got != role+"/"+name:
		return fmt.Errorf("the certificate at %s is %s, not %s/%s", raftAddr, got, role, name)
	}
	return nil
}

// fakeProber answers what servers know of raft, by RPC address.
type fakeProber struct {
	rec    *recorder
	states map[string]rpc.RaftState
	errs   map[string]error
}

var _ ClusterProber = (*fakeProber)(nil)

func (f *fakeProber) RaftState(_ context.Context, addr string) (rpc.RaftState, error) {
	f.rec.add("probe %s", addr)
	if err := f.errs[addr]; err != nil {
		return rpc.RaftState{}, err
	}
	return f.states[addr], nil
}

// clock is a settable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // a poll interval, not a wait for the condition
	}
}

var errBoom = errors.New("boom")
