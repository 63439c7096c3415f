package state

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/hashicorp/raft"
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
		return errors.New("state: bootstrap: this agent is a non-voter (client agent); only servers bootstrap, and the leader adds clients")
	}
	if len(servers) == 0 {
		return errors.New("state: bootstrap: no servers given")
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
			return fmt.Errorf("state: bootstrap: %w", err)
		}
		if i > 0 && sorted[i-1].ID == srv.ID {
			return fmt.Errorf("state: bootstrap: server %s is listed twice", srv.ID)
		}
		if other, ok := addrs[srv.Address]; ok {
			return fmt.Errorf("state: bootstrap: servers %s and %s have the same address %s", other, srv.ID, srv.Address)
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
			return fmt.Errorf("state: bootstrap: this server %s is listed as a non-voter; a server bootstraps as a voter", srv.ID)
		}
		if raft.ServerAddress(srv.Address) != s.localAddr {
			s.logger.Warn("bootstrap lists this server at another address than it listens on; peers will dial the listed one",
				"id", srv.ID, "listed", srv.Address, "raft_address", s.localAddr)
		}
	}
	if !self {
		return fmt.Errorf("state: bootstrap: this server %s is not in the list; each server bootstraps with the full list, itself included", s.localID)
	}
	err := s.waitFuture(context.Background(), s.raft.BootstrapCluster(conf))
	switch {
	case errors.Is(err, raft.ErrCantBootstrap):
		s.logger.Debug("raft has state already; not bootstrapping", "id", s.localID)
		return nil
	case err != nil:
		return fmt.Errorf("state: bootstrap raft with %d servers: %w", len(sorted), err)
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
		return raft.Configuration{}, fmt.Errorf("state: read raft configuration: %w", err)
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
		return fmt.Errorf("state: %s: %w", what, err)
	}
	if s.raft.State() != raft.Leader {
		return fmt.Errorf("state: %s %s: %w", what, id, s.notLeader())
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
	var f raft.IndexFuture
	if voter {
		f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.timeout)
	} else {
		f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.timeout)
	}
	if err := s.waitFuture(ctx, f); err != nil {
		return s.configChangeError(what, id, err)
	}
	s.logger.Info("raft configuration changed", "change", what, "id", id, "address", addr)
	return nil
}

// RemoveServer removes a server from the raft configuration; it is a no-op
// for one that is not in it. Leader only, like AddVoter. Removing the
// leader itself makes it step down once the change commits.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("state: remove server: the ID is empty")
	}
	if s.raft.State() != raft.Leader {
		return fmt.Errorf("state: remove server %s: %w", id, s.notLeader())
	}
	conf, err := s.configuration()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(conf.Servers, func(srv raft.Server) bool { return string(srv.ID) == id }) {
		return nil
	}
	if err := s.waitFuture(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, s.timeout)); err != nil {
		return s.configChangeError("remove server", id, err)
	}
	s.logger.Info("raft configuration changed", "change", "remove server", "id", id)
	return nil
}

func (s *Store) configChangeError(what, id string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return fmt.Errorf("state: %s %s: %w", what, id, s.notLeader())
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("state: %s %s: %w: leadership was lost before the change committed; it may still apply", what, id, ErrNotLeader)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("state: %s %s: %w", what, id, errClosed)
	}
	return fmt.Errorf("state: %s %s: %w", what, id, err)
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
