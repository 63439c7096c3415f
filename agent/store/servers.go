package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// Server is a member of the raft configuration.
type Server struct {
	// ID is the agent's raft ID: its node name (Config.NodeName).
	ID string
	// Address is the raft host:port peers dial (Config.RaftAdvertiseAddr,
	// else RaftBindAddr).
	Address string
	// Voter is false for a non-voter (a client agent).
	Voter bool
}

// BootstrapServers starts a new cluster whose voters are exactly servers,
// as Consul and Nomad do once bootstrap_expect servers see each other.
// Every server calls it with the same list (the order does not matter: it
// is sorted by ID), which must include this server as a voter. It does
// nothing and returns nil when this store has raft state already: it was
// bootstrapped before, or a leader reached it first. It fails on a
// non-voter.
//
// Calling it on servers with different lists can split the cluster: call
// it only once the expected number of servers are known.
func (s *Store) BootstrapServers(servers []Server) error {
	if s.nonVoter {
		return errors.New("store: bootstrap: this agent is a non-voter (client agent); only servers bootstrap, and the leader adds clients")
	}
	if len(servers) == 0 {
		return errors.New("store: bootstrap: no servers given")
	}
	sorted := slices.Clone(servers)
	slices.SortFunc(sorted, func(a, b Server) int { return cmp.Compare(a.ID, b.ID) })
	var (
		conf  raft.Configuration
		self  bool
		addrs = map[string]string{}
	)
	for i, srv := range sorted {
		if err := checkServer(srv.ID, srv.Address); err != nil {
			return fmt.Errorf("store: bootstrap: %w", err)
		}
		if i > 0 && sorted[i-1].ID == srv.ID {
			return fmt.Errorf("store: bootstrap: server %s is listed twice", srv.ID)
		}
		if other, ok := addrs[srv.Address]; ok {
			return fmt.Errorf("store: bootstrap: servers %s and %s have the same address %s", other, srv.ID, srv.Address)
		}
		addrs[srv.Address] = srv.ID
		suffrage := raft.Nonvoter
		if srv.Voter {
			suffrage = raft.Voter
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: suffrage, ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address)})
		if raft.ServerID(srv.ID) != s.localID {
			continue
		}
		self = true
		if !srv.Voter {
			return fmt.Errorf("store: bootstrap: this server %s is listed as a non-voter; a server bootstraps as a voter", srv.ID)
		}
		if raft.ServerAddress(srv.Address) != s.localAddr {
			s.logger.Warn("bootstrap lists this server at another address than it listens on; peers will dial the listed one",
				"id", srv.ID, "listed", srv.Address, "raft_address", s.localAddr)
		}
	}
	if !self {
		return fmt.Errorf("store: bootstrap: this server %s is not in the list; each server bootstraps with the full list, itself included", s.localID)
	}
	s.peers.set(conf.Servers)
	err := s.waitFuture(context.Background(), s.raft.BootstrapCluster(conf))
	switch {
	case errors.Is(err, raft.ErrCantBootstrap):
		s.logger.Debug("raft has state already; not bootstrapping", "id", s.localID)
		return nil
	case err != nil:
		return fmt.Errorf("store: bootstrap raft with %d servers: %w", len(sorted), err)
	}
	s.logger.Info("bootstrapped a new raft cluster", "id", s.localID, "servers", len(sorted))
	return nil
}

// Servers returns the latest raft configuration (committed or not), sorted
// by ID. A store that has not joined a cluster yet returns none.
func (s *Store) Servers() ([]Server, error) {
	conf, err := s.configuration()
	if err != nil {
		return nil, err
	}
	out := make([]Server, 0, len(conf.Servers))
	for _, srv := range conf.Servers {
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	slices.SortFunc(out, func(a, b Server) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (s *Store) configuration() (raft.Configuration, error) {
	f := s.raft.GetConfiguration()
	if err := s.waitFuture(context.Background(), f); err != nil {
		return raft.Configuration{}, fmt.Errorf("store: read raft configuration: %w", err)
	}
	return f.Configuration(), nil
}

// AddVoter adds a server with a vote, or updates its address, or gives a
// non-voter its vote; it is a no-op for a voter already at addr. It runs on
// the leader only (ErrNotLeader elsewhere) and returns once the change is
// committed. id is the node name, addr its raft host:port.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	return s.addServer(ctx, id, addr, true)
}

// AddNonvoter adds a server without a vote (a client agent), or updates
// its address; it is a no-op for a server already at addr. As in raft, it
// does not take the vote from a voter. Leader only, like AddVoter.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	return s.addServer(ctx, id, addr, false)
}

func (s *Store) addServer(ctx context.Context, id, addr string, voter bool) error {
	what := "add non-voter"
	if voter {
		what = "add voter"
	}
	if err := checkServer(id, addr); err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	if s.raft.State() != raft.Leader {
		return fmt.Errorf("store: %s %s: %w", what, id, s.notLeader())
	}
	conf, err := s.configuration()
	if err != nil {
		return err
	}
	for _, srv := range conf.Servers {
		if string(srv.ID) == id && string(srv.Address) == addr && (!voter || srv.Suffrage == raft.Voter) {
			return nil
		}
	}
	// Raft starts replicating to the new member as soon as the change is
	// appended, before it commits: tell the transport whom to expect there.
	s.peers.expect(raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: suffrageOf(voter)})
	var f raft.IndexFuture
	if voter {
		f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.timeout)
	} else {
		f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.timeout)
	}
	err = s.waitFuture(ctx, f)
	s.refreshPeers()
	if err != nil {
		return s.configChangeError(what, id, err)
	}
	s.logger.Info("raft configuration changed", "change", what, "id", id, "address", addr)
	return nil
}

func suffrageOf(voter bool) raft.ServerSuffrage {
	if voter {
		return raft.Voter
	}
	return raft.Nonvoter
}

// RemoveServer removes a server from the raft configuration; it is a no-op
// for one that is not in it. Leader only, like AddVoter. Removing the
// leader itself makes it step down once the change commits.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("store: remove server: the ID is empty")
	}
	if s.raft.State() != raft.Leader {
		return fmt.Errorf("store: remove server %s: %w", id, s.notLeader())
	}
	conf, err := s.configuration()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(conf.Servers, func(srv raft.Server) bool { return string(srv.ID) == id }) {
		return nil
	}
	err = s.waitFuture(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, s.timeout))
	s.refreshPeers()
	if err != nil {
		return s.configChangeError("remove server", id, err)
	}
	s.logger.Info("raft configuration changed", "change", "remove server", "id", id)
	return nil
}

func (s *Store) configChangeError(what, id string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return fmt.Errorf("store: %s %s: %w", what, id, s.notLeader())
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("store: %s %s: %w: leadership was lost before the change committed; it may still apply", what, id, state.ErrNotLeader)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("store: %s %s: %w", what, id, errClosed)
	}
	return fmt.Errorf("store: %s %s: %w", what, id, err)
}

func checkServer(id, addr string) error {
	if id == "" {
		return fmt.Errorf("server at %q has no ID; use its node name", addr)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("server %s: address %q is not host:port: %w", id, addr, err)
	}
	return nil
}

// LeaderID returns the leader's raft ID (its node name), or "" when none is
// known.
func (s *Store) LeaderID() string {
	_, id := s.raft.LeaderWithID()
	return string(id)
}

// LocalID returns this store's raft ID, Config.NodeName.
func (s *Store) LocalID() string { return string(s.localID) }

// HasState reports whether this store is part of a raft cluster: it was
// bootstrapped, or a leader added it.
func (s *Store) HasState() bool {
	servers, err := s.Servers()
	return err == nil && len(servers) > 0
}

// peerCache is the raft configuration by address, for the transport's
// checks of whom it dials: reading the configuration from raft there
// could wait on raft's own goroutines.
type peerCache struct {
	mu     sync.Mutex
	byAddr map[raft.ServerAddress]raft.Server
}

func (c *peerCache) set(servers []raft.Server) {
	m := make(map[raft.ServerAddress]raft.Server, len(servers))
	for _, srv := range servers {
		m[srv.Address] = srv
	}
	c.mu.Lock()
	for addr, srv := range c.byAddr {
		// Keep an expected member, voter (expected+1) or not, until the
		// configuration has it.
		if _, ok := m[addr]; !ok && srv.Suffrage >= expected {
			m[addr] = srv
		}
	}
	c.byAddr = m
	c.mu.Unlock()
}

// expected marks a member announced by expect that the configuration may
// not hold yet; it is not a raft suffrage.
const expected raft.ServerSuffrage = 100

func (c *peerCache) expect(srv raft.Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byAddr == nil {
		c.byAddr = map[raft.ServerAddress]raft.Server{}
	}
	if srv.Suffrage == raft.Voter {
		srv.Suffrage = expected + 1 // an expected voter
	} else {
		srv.Suffrage = expected
	}
	c.byAddr[srv.Address] = srv
}

func (c *peerCache) lookup(addr raft.ServerAddress) (raft.Server, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	srv, ok := c.byAddr[addr]
	return srv, ok
}

// refreshPeers reloads the peer cache from raft's latest configuration.
func (s *Store) refreshPeers() {
	conf, err := s.configuration()
	if err != nil {
		return
	}
	s.peers.set(conf.Servers)
}

// Revoked reports whether the certificate behind id was revoked: its node
// was removed from the fleet after the certificate was issued.
func (s *Store) Revoked(id pki.Identity) bool {
	at, ok := s.fsm.Revoked(id.Name)
	return ok && id.IssuedBefore(at)
}

// acceptPeer is who may open a raft connection to this node: a server
// whose certificate is not revoked.
func (s *Store) acceptPeer(id pki.Identity) error {
	if id.Role != pki.RoleServer {
		return fmt.Errorf("%s holds a %s certificate; only servers may connect to raft", id.Name, id.Role)
	}
	if s.Revoked(id) {
		return fmt.Errorf("the certificate of %s was revoked when the node was removed from the fleet", id.Name)
	}
	return nil
}

// dialPeer checks the peer this node dialed at addr: the member the raft
// configuration lists there (a server if it votes), not revoked. An
// address the configuration does not list can only be a server's: raft
// dials non-voters only after the leader added them, through expect.
func (s *Store) dialPeer(addr raft.ServerAddress, id pki.Identity) error {
	if s.Revoked(id) {
		return fmt.Errorf("the certificate of %s was revoked when the node was removed from the fleet", id.Name)
	}
	srv, ok := s.peers.lookup(addr)
	if !ok {
		if id.Role != pki.RoleServer {
			return fmt.Errorf("%s at %s holds a %s certificate and is not in the raft configuration", id.Name, addr, id.Role)
		}
		return nil
	}
	if string(srv.ID) != id.Name {
		return fmt.Errorf("the raft configuration has %s at %s, but the certificate there is %s's", srv.ID, addr, id.Name)
	}
	if (srv.Suffrage == raft.Voter || srv.Suffrage == expected+1) && id.Role != pki.RoleServer {
		return fmt.Errorf("%s votes in raft but holds a %s certificate; voters must hold a server certificate", id.Name, id.Role)
	}
	return nil
}

// RaftPeers returns the raft configuration for the API, with the leader
// marked.
func (s *Store) RaftPeers() ([]api.RaftPeer, error) {
	servers, err := s.Servers()
	if err != nil {
		return nil, err
	}
	leader := s.LeaderID()
	out := make([]api.RaftPeer, len(servers))
	for i, srv := range servers {
		out[i] = api.RaftPeer{ID: srv.ID, Address: srv.Address, Voter: srv.Voter, Leader: srv.ID == leader}
	}
	return out, nil
}
