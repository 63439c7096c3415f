package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// Raft is what the membership policy needs of the raft node (store.Store).
type Raft interface {
	Servers() ([]store.Server, error)
	HasState() bool
	BootstrapServers([]store.Server) error
	AddVoter(ctx context.Context, id, addr string) error
	// AddNonvoter is for LegacyClientRaft only.
	AddNonvoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string) error
	Nodes() []api.Node
	SetNodeStatus(ctx context.Context, name, status string) error
	Revocations() map[string]time.Time
}

// PeerVerifier proves who listens at a member's raft address: that the
// certificate there names the member and carries the role it claims.
// Gossip is spoken by anyone holding the gossip key (every client VM), so
// what a member says of itself is only a claim until this checks it.
type PeerVerifier interface {
	VerifyPeer(ctx context.Context, raftAddr, name, role string) error
}

// ClusterProber asks a server what it knows of the raft cluster (rpc.Client).
type ClusterProber interface {
	RaftState(ctx context.Context, addr string) (rpc.RaftState, error)
}

// PolicyConfig configures a Policy.
type PolicyConfig struct {
	NodeName        string
	Server          bool
	BootstrapExpect int
	// RemoveGrace is how long a failed server keeps its raft vote: long
	// enough to ride out a reboot, short enough that a replaced VM does not
	// leave the quorum stuck.
	RemoveGrace time.Duration
	// VerifyTTL is how long a verified member is not verified again.
	VerifyTTL time.Duration
	// Fallback are servers' RPC addresses to ask about raft besides the
	// server members (the retry-join addresses).
	Fallback []string
	Raft     Raft
	Members  Members
	Verifier PeerVerifier
	Prober   ClusterProber
	Logger   *slog.Logger
	Now      func() time.Time
	// LegacyClientRaft is for benchmarks only: the leader adds verified
	// client members to raft as non-voters, as it did before clients left
	// raft, so that BenchmarkFleetScale can measure that design beside
	// this one (agent.Config.LegacyClientRaft).
	LegacyClientRaft bool
}

// Policy makes raft follow membership, as Consul's and Nomad's servers do:
// servers bootstrap once BootstrapExpect of them see each other (unless a
// raft cluster exists already), and the leader adds servers it has
// verified as voters, records node statuses, and removes servers that
// left, stayed failed past RemoveGrace or were removed from the fleet.
// Raft is servers only: clients read through watches (agent/clientstate).
type Policy struct {
	cfg  PolicyConfig
	log  *slog.Logger
	kick chan struct{}

	failedSince map[string]time.Time // leader loop only
	mu          sync.Mutex           // guards verified: bootstrap and leader loop may overlap
	verified    map[verifyKey]*verification
	warned      map[string]time.Time // rate-limits repeated refusals
}

type verifyKey struct{ name, addr, role string }

// NewPolicy returns a Policy; run it with Bootstrap (servers), Pump and,
// on the leader, RunLeader.
func NewPolicy(cfg PolicyConfig) *Policy {
	if cfg.RemoveGrace == 0 {
		cfg.RemoveGrace = 5 * time.Minute
	}
	if cfg.VerifyTTL == 0 {
		cfg.VerifyTTL = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Policy{
		cfg: cfg, log: cfg.Logger.With("component", "fleet"), kick: make(chan struct{}, 1),
		failedSince: map[string]time.Time{}, verified: map[verifyKey]*verification{}, warned: map[string]time.Time{},
	}
}

// Pump reads membership events until ctx ends and turns them into wake-ups
// of the leader loop, so events never pile up while this node does not lead.
func (p *Policy) Pump(ctx context.Context, events <-chan membership.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			select {
			case p.kick <- struct{}{}:
			default:
			}
		}
	}
}

// Bootstrap waits until this server is part of a raft cluster: it
// bootstraps a new one once BootstrapExpect servers are alive, verified,
// and none of them knows of a cluster already; otherwise it waits for the
// leader to add it. A server with raft state returns at once. It returns
// ctx's error if ctx ends first.
func (p *Policy) Bootstrap(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		done, err := p.bootstrapOnce(ctx)
		if done {
			return nil
		}
		if err != nil {
			p.log.Info("not bootstrapping raft yet", "reason", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// errClusterExists: a server with no raft state found a live cluster.
var errClusterExists = errors.New("a raft cluster exists already")

func (p *Policy) bootstrapOnce(ctx context.Context) (bool, error) {
	if p.cfg.Raft.HasState() {
		return true, nil
	}
	// Only servers whose certificates were verified count: a member that
	// merely claims the role (anyone with the gossip key can) neither joins
	// the first configuration nor holds the bootstrap up.
	members := p.cfg.Members.Members()
	alive := 0
	for _, m := range members {
		if m.Meta.Role == membership.RoleServer && m.Status == membership.StatusAlive {
			alive++
		}
	}
	if alive < p.cfg.BootstrapExpect {
		return false, fmt.Errorf("waiting for %d servers, %d are alive", p.cfg.BootstrapExpect, alive)
	}
	var servers []store.Server
	var addrs, unproven []string
	for _, m := range members {
		if m.Meta.Role != membership.RoleServer || m.Status != membership.StatusAlive {
			continue
		}
		if m.Name != p.cfg.NodeName {
			if err := p.verify(ctx, m); err != nil {
				unproven = append(unproven, m.Name)
				continue
			}
			if onMemberAddr(m.Meta.RPCAddr, m) {
				addrs = append(addrs, m.Meta.RPCAddr)
			}
		}
		servers = append(servers, store.Server{ID: m.Name, Address: m.Meta.RaftAddr, Voter: true})
	}
	if len(servers) < p.cfg.BootstrapExpect {
		return false, fmt.Errorf("waiting for %d servers, %d are alive and verified (not verified: %v)", p.cfg.BootstrapExpect, len(servers), unproven)
	}
	// As Consul's and Nomad's bootstrap_expect do: ask the others first. A
	// server back with an empty data dir (a replaced disk) must join the
	// cluster they hold, not start a second one beside it. Every one must
	// answer, and none may know of a cluster.
	var unanswered []error
	for _, addr := range dedupe(append(addrs, p.cfg.Fallback...)) {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := p.cfg.Prober.RaftState(qctx, addr)
		cancel()
		if err != nil {
			unanswered = append(unanswered, err)
			continue
		}
		if st.HasState {
			return false, fmt.Errorf("%w (the server at %s knows it, leader %q); waiting for its leader to add this server", errClusterExists, addr, st.Leader)
		}
	}
	if len(unanswered) > 0 {
		return false, fmt.Errorf("cannot tell whether a raft cluster exists: %w", errors.Join(unanswered...))
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	if err := p.cfg.Raft.BootstrapServers(servers); err != nil {
		return false, fmt.Errorf("bootstrap raft: %w", err)
	}
	p.log.Info("raft bootstrapped (or already had state)", "servers", len(servers))
	return true, nil
}

func dedupe(ss []string) []string {
	out := ss[:0:0]
	for _, s := range ss {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// onMemberAddr reports whether hostport is on the member's own gossip
// address: what a member says of its other addresses is only dialed there,
// so the gossip key does not let anyone make servers dial elsewhere.
func onMemberAddr(hostport string, m membership.Member) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap() == m.Addr.Unmap()
}

// verification is what the policy remembers of checking a member.
type verification struct {
	ok       time.Time // when it last passed; zero if it never did
	failures int       // consecutive failures
	retryAt  time.Time // no new check before then after a failure
	err      error
}

// verify checks a member's certificate at its raft address (which must be
// on the member's own address), remembering a success for VerifyTTL and
// backing off after failures (5 s, doubling, up to 5 min), so a member
// that claims what it cannot prove is not dialed every second.
func (p *Policy) verify(ctx context.Context, m membership.Member) error {
	addr, name, role := m.Meta.RaftAddr, m.Name, m.Meta.Role
	if !onMemberAddr(addr, m) {
		return fmt.Errorf("member %s gossips from %s but names raft address %q: not checked", name, m.Addr, addr)
	}
	k := verifyKey{name, addr, role}
	now := p.cfg.Now()
	p.mu.Lock()
	v := p.verified[k]
	if v == nil {
		v = &verification{}
		p.verified[k] = v
	}
	switch {
	case !v.ok.IsZero() && now.Sub(v.ok) < p.cfg.VerifyTTL:
		p.mu.Unlock()
		return nil
	case now.Before(v.retryAt):
		err := v.err
		p.mu.Unlock()
		return err
	}
	p.mu.Unlock()

	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := p.cfg.Verifier.VerifyPeer(vctx, addr, name, role)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		v.failures++
		v.retryAt = now.Add(min(5*time.Second<<min(v.failures-1, 10), 5*time.Minute))
		v.err = fmt.Errorf("member %s claims to be a %s at raft address %s, but that is not proven (next check after %s): %w", name, role, addr, v.retryAt.Format(time.TimeOnly), err)
		return v.err
	}
	*v = verification{ok: now}
	return nil
}

// RunLeader reconciles raft with membership until ctx ends: on every
// membership event and every second. Run it with store.RunLeaderLoop, so
// it acts only once this node's state holds every committed entry.
func (p *Policy) RunLeader(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	clear(p.failedSince) // a new term starts counting afresh
	for {
		if err := p.reconcile(ctx); err != nil && ctx.Err() == nil {
			p.log.Debug("membership reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-t.C:
		}
	}
}

func (p *Policy) reconcile(ctx context.Context) error {
	cur, err := p.cfg.Raft.Servers()
	if err != nil {
		return err
	}
	inRaft := map[string]store.Server{}
	for _, s := range cur {
		inRaft[s.ID] = s
	}
	nodes := map[string]api.Node{}
	for _, n := range p.cfg.Raft.Nodes() {
		nodes[n.Name] = n
	}
	revoked := p.cfg.Raft.Revocations()
	now := p.cfg.Now()
	var errs []error
	// A node removed from the fleet loses its raft membership too, until
	// it registers again with a certificate issued after the removal.
	for name := range revoked {
		if _, registered := nodes[name]; registered || name == p.cfg.NodeName {
			continue
		}
		if _, ok := inRaft[name]; ok {
			p.log.Warn("removing a node removed from the fleet from raft", "node", name)
			errs = append(errs, p.cfg.Raft.RemoveServer(ctx, name))
			delete(inRaft, name)
		}
	}
	for _, m := range p.cfg.Members.Members() {
		if _, gone := revoked[m.Name]; gone {
			if _, registered := nodes[m.Name]; !registered {
				continue
			}
		}
		s, known := inRaft[m.Name]
		switch m.Status {
		case membership.StatusAlive:
			delete(p.failedSince, m.Name)
			switch {
			case m.Meta.Role != membership.RoleServer && p.cfg.LegacyClientRaft:
				// The legacy path kept for the comparison: clients as
				// verified non-voters holding the full replica.
				if m.Name != p.cfg.NodeName && (!known || s.Address != m.Meta.RaftAddr) {
					if err := p.verify(ctx, m); err != nil {
						p.warnOnce(m.Name, "not adding a client to raft (legacy client raft)", err)
						continue
					}
					errs = append(errs, p.cfg.Raft.AddNonvoter(ctx, m.Name, m.Meta.RaftAddr))
					p.log.Info("added to raft as a non-voter (legacy client raft)", "node", m.Name, "verified", true)
				}
			case m.Meta.Role != membership.RoleServer:
				// Clients read through watches and hold no raft state; one
				// left in raft from when clients were non-voters goes.
				if known && m.Name != p.cfg.NodeName {
					p.log.Info("removing a client from raft: clients watch the servers now", "node", m.Name)
					errs = append(errs, p.cfg.Raft.RemoveServer(ctx, m.Name))
				}
			case m.Name != p.cfg.NodeName && (!known || s.Address != m.Meta.RaftAddr || !s.Voter):
				if err := p.verify(ctx, m); err != nil {
					p.warnOnce(m.Name, "not adding a member to raft", err)
					continue
				}
				errs = append(errs, p.cfg.Raft.AddVoter(ctx, m.Name, m.Meta.RaftAddr))
				p.log.Info("added to raft", "node", m.Name, "role", m.Meta.Role, "verified", true)
			}
			if n, ok := nodes[m.Name]; ok && n.Status != api.NodeReady {
				errs = append(errs, p.cfg.Raft.SetNodeStatus(ctx, m.Name, api.NodeReady))
			}
		case membership.StatusFailed:
			if _, ok := p.failedSince[m.Name]; !ok {
				p.failedSince[m.Name] = now
				p.log.Warn("node failed", "node", m.Name)
			}
			if n, ok := nodes[m.Name]; ok && n.Status != api.NodeDown {
				errs = append(errs, p.cfg.Raft.SetNodeStatus(ctx, m.Name, api.NodeDown))
			}
			if known && m.Name != p.cfg.NodeName && now.Sub(p.failedSince[m.Name]) > p.cfg.RemoveGrace {
				errs = append(errs, p.cfg.Raft.RemoveServer(ctx, m.Name))
				p.log.Warn("removed failed node from raft after grace period", "node", m.Name, "grace", p.cfg.RemoveGrace)
			}
		case membership.StatusLeft:
			if n, ok := nodes[m.Name]; ok && n.Status != api.NodeLeft {
				errs = append(errs, p.cfg.Raft.SetNodeStatus(ctx, m.Name, api.NodeLeft))
			}
			if known && m.Name != p.cfg.NodeName {
				errs = append(errs, p.cfg.Raft.RemoveServer(ctx, m.Name))
				p.log.Info("node left; removed from raft", "node", m.Name)
			}
		}
	}
	return errors.Join(errs...)
}

// warnOnce logs a refusal about key at most once a minute.
func (p *Policy) warnOnce(key, msg string, err error) {
	if at, ok := p.warned[key]; ok && p.cfg.Now().Sub(at) < time.Minute {
		return
	}
	p.warned[key] = p.cfg.Now()
	p.log.Warn(msg, "node", key, "err", err)
}
