package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/routes"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// certValidity is how long a node certificate lasts; agents get a new one
// when theirs expires within a month (at start).
const certValidity = 365 * 24 * time.Hour

// identity is what a fleet agent proves itself with.
type identity struct {
	caPEM, certPEM, keyPEM []byte
	ca                     *pki.CA // servers only
}

// loadIdentity returns this agent's certificate: kept from an earlier start,
// issued by the CA key on servers, or obtained from a server with the join token.
func loadIdentity(ctx context.Context, cfg *Config, log *slog.Logger) (*identity, error) {
	id := &identity{}
	var err error
	if id.caPEM, err = os.ReadFile(cfg.CAFile); err != nil {
		return nil, fmt.Errorf("read --ca-file: %w", err)
	}
	if cfg.CAKeyFile != "" {
		keyPEM, err := os.ReadFile(cfg.CAKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca-key-file: %w", err)
		}
		if id.ca, err = pki.LoadCA(id.caPEM, keyPEM); err != nil {
			return nil, fmt.Errorf("--ca-file/--ca-key-file: %w", err)
		}
	}
	dir := filepath.Join(cfg.DataDir, "tls")
	certPath, keyPath := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && c.Leaf != nil && time.Until(c.Leaf.NotAfter) > 30*24*time.Hour && hasIP(c.Leaf.IPAddresses, cfg.AdvertiseAddr) {
		id.certPEM, _ = os.ReadFile(certPath)
		id.keyPEM, _ = os.ReadFile(keyPath)
		return id, nil
	}
	ips := []net.IP{net.ParseIP(cfg.AdvertiseAddr)}
	if id.ca != nil {
		id.certPEM, id.keyPEM, err = id.ca.Issue(cfg.NodeName, ips, nil, certValidity)
		if err != nil {
			return nil, fmt.Errorf("issue node certificate: %w", err)
		}
	} else {
		token, err := readSecret(cfg.JoinTokenFile, "--join-token-file")
		if err != nil {
			return nil, err
		}
		client := rpc.NewClient(nil, 10*time.Second)
		for attempt := 0; ; attempt++ {
			for _, s := range cfg.RetryJoin {
				addr := net.JoinHostPort(hostOf(s), strconv.Itoa(cfg.RPCPort))
				id.certPEM, id.keyPEM, err = client.Join(ctx, addr, id.caPEM, string(token), cfg.NodeName, ips)
				if err == nil {
					log.Info("joined: got a node certificate", "server", addr)
					break
				}
				if errors.Is(err, rpc.ErrJoinTokenRejected) {
					return nil, fmt.Errorf("join the fleet through %s: %w", addr, err)
				}
				log.Warn("join: no certificate yet; retrying", "server", addr, "err", err)
			}
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("join the fleet: %w (last error: %v)", ctx.Err(), err)
			case <-time.After(2 * time.Second):
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, id.certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, id.keyPEM, 0o600); err != nil {
		return nil, err
	}
	return id, nil
}

func hasIP(ips []net.IP, want string) bool {
	w := net.ParseIP(want)
	for _, ip := range ips {
		if ip.Equal(w) {
			return true
		}
	}
	return false
}

// hostOf strips a port from a retry-join address.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// leaderForwarder sends a follower's writes to the leader over mTLS RPC,
// finding the leader's RPC address in the membership metadata.
type leaderForwarder struct {
	members *membership.Membership
	client  *rpc.Client
}

func (f *leaderForwarder) Forward(ctx context.Context, leaderID string, entry []byte) (uint64, []byte, error) {
	for _, m := range f.members.Members() {
		if m.Name == leaderID && m.Meta.RPCAddr != "" {
			return f.client.Apply(ctx, m.Meta.RPCAddr, entry)
		}
	}
	return 0, nil, fmt.Errorf("leader %q is not in this agent's membership list yet: %w", leaderID, state.ErrNotLeader)
}

// fleetLoop makes raft follow membership: it bootstraps the servers once
// --bootstrap-expect of them are seen, and on the leader adds new agents
// (servers as voters, clients as non-voters), marks failed nodes down and
// removes servers that left or stayed failed past the grace period.
type fleetLoop struct {
	cfg     *Config
	store   *state.Store
	members *membership.Membership
	log     *slog.Logger
	// RemoveGrace is how long a failed server keeps its raft vote: long
	// enough to ride out a reboot, short enough that a replaced VM does not
	// leave the quorum stuck.
	removeGrace  time.Duration
	bootstrapped bool
	failedSince  map[string]time.Time
}

func (f *fleetLoop) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := f.reconcile(ctx); err != nil && ctx.Err() == nil {
			f.log.Debug("membership reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-f.members.Events():
		case <-t.C:
		}
	}
}

func (f *fleetLoop) reconcile(ctx context.Context) error {
	ms := f.members.Members()
	if f.cfg.Server && !f.bootstrapped {
		// A server with raft state of its own (a restart) never waits for
		// its peers: raft elects a leader from the configuration it has.
		if cur, err := f.store.Servers(); err == nil && len(cur) > 0 {
			f.bootstrapped = true
		}
	}
	if f.cfg.Server && !f.bootstrapped {
		var servers []state.Server
		for _, m := range ms {
			if m.Meta.Role == "server" && m.Status == membership.StatusAlive {
				servers = append(servers, state.Server{ID: m.Name, Address: m.Meta.RaftAddr, Voter: true})
			}
		}
		if len(servers) < f.cfg.BootstrapExpect {
			return fmt.Errorf("waiting for %d servers to bootstrap, have %d", f.cfg.BootstrapExpect, len(servers))
		}
		sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
		if err := f.store.BootstrapServers(servers); err != nil {
			return fmt.Errorf("bootstrap raft: %w", err)
		}
		f.bootstrapped = true
		f.log.Info("raft bootstrapped (or already had state)", "servers", len(servers))
	}
	if !f.store.IsLeader() {
		return nil
	}
	cur, err := f.store.Servers()
	if err != nil {
		return err
	}
	inRaft := map[string]state.Server{}
	for _, s := range cur {
		inRaft[s.ID] = s
	}
	nodes := map[string]api.Node{}
	for _, n := range f.store.Nodes() {
		nodes[n.Name] = n
	}
	var errs []error
	for _, m := range ms {
		s, known := inRaft[m.Name]
		switch m.Status {
		case membership.StatusAlive:
			delete(f.failedSince, m.Name)
			if !known || s.Address != m.Meta.RaftAddr {
				if m.Meta.Role == "server" {
					errs = append(errs, f.store.AddVoter(ctx, m.Name, m.Meta.RaftAddr))
				} else {
					errs = append(errs, f.store.AddNonvoter(ctx, m.Name, m.Meta.RaftAddr))
				}
				f.log.Info("added to raft", "node", m.Name, "role", m.Meta.Role)
			}
			if n, ok := nodes[m.Name]; ok && n.Status != "ready" {
				errs = append(errs, f.store.SetNodeStatus(ctx, m.Name, "ready"))
			}
		case membership.StatusFailed:
			if _, ok := f.failedSince[m.Name]; !ok {
				f.failedSince[m.Name] = time.Now()
				f.log.Warn("node failed", "node", m.Name)
			}
			if n, ok := nodes[m.Name]; ok && n.Status != "down" {
				errs = append(errs, f.store.SetNodeStatus(ctx, m.Name, "down"))
			}
			if known && m.Name != f.cfg.NodeName && time.Since(f.failedSince[m.Name]) > f.removeGrace {
				errs = append(errs, f.store.RemoveServer(ctx, m.Name))
				f.log.Warn("removed failed node from raft after grace period", "node", m.Name, "grace", f.removeGrace)
			}
		case membership.StatusLeft:
			if n, ok := nodes[m.Name]; ok && n.Status != "left" {
				errs = append(errs, f.store.SetNodeStatus(ctx, m.Name, "left"))
			}
			if known && m.Name != f.cfg.NodeName {
				errs = append(errs, f.store.RemoveServer(ctx, m.Name))
				f.log.Info("node left; removed from raft", "node", m.Name)
			}
		}
	}
	return errors.Join(errs...)
}

// registerNode records this node in the state and returns the pod range
// the leader gave it, retrying until a leader answers.
func registerNode(ctx context.Context, cfg *Config, store *state.Store, log *slog.Logger) (api.Node, error) {
	self := selfNode(cfg)
	self.PodCIDR = ""
	for {
		n, err := store.RegisterNode(ctx, self)
		if err == nil {
			return n, nil
		}
		log.Info("waiting to register with the fleet", "err", err)
		select {
		case <-ctx.Done():
			return api.Node{}, fmt.Errorf("register node: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// syncRoutes keeps a route to every other node's pod range via that node (host-gw).
func syncRoutes(ctx context.Context, cfg *Config, store *state.Store, rm *routes.Manager, log *slog.Logger) {
	last := ""
	for {
		changed := store.Changed()
		var want []routes.Route
		for _, n := range store.Nodes() {
			if n.Name == cfg.NodeName || n.PodCIDR == "" || n.Status == "left" {
				continue
			}
			p, err1 := netip.ParsePrefix(n.PodCIDR)
			via, err2 := netip.ParseAddr(n.Address)
			if err1 != nil || err2 != nil {
				continue
			}
			want = append(want, routes.Route{PodCIDR: p, Via: via})
		}
		key := fmt.Sprint(want)
		if key != last {
			if err := rm.Sync(ctx, want); err != nil {
				log.Warn("sync pod routes", "err", err)
			} else {
				last = key
				log.Info("pod routes synced", "routes", len(want))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(5 * time.Second):
		}
	}
}

// startFleet joins the fleet: identity, membership, replicated state, the
// RPC server, the membership loop, node registration (which yields this
// node's pod range, written into cfg.PodCIDR) and host-gw routes. stop
// releases what it started, in reverse order.
func startFleet(ctx context.Context, cfg *Config, goLoop func(func(context.Context))) (_ *state.Store, apiTLS *tls.Config, stop func(), err error) {
	log := cfg.Logger
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	bind := cfg.BindAddr
	if bind == "" {
		bind = cfg.AdvertiseAddr
	}
	hostPort := func(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

	id, err := loadIdentity(ctx, cfg, log)
	if err != nil {
		return nil, nil, stop, err
	}
	peerTLS, err := pki.PeerTLS(id.caPEM, id.certPEM, id.keyPEM)
	if err != nil {
		return nil, nil, stop, fmt.Errorf("node certificate: %w", err)
	}
	rpcTLS, err := pki.ServerTLS(id.caPEM, id.certPEM, id.keyPEM, tls.VerifyClientCertIfGiven)
	if err != nil {
		return nil, nil, stop, err
	}
	if apiTLS, err = pki.ServerTLS(id.caPEM, id.certPEM, id.keyPEM, tls.NoClientCert); err != nil {
		return nil, nil, stop, err
	}
	clientTLS, err := pki.ClientTLS(id.caPEM, id.certPEM, id.keyPEM)
	if err != nil {
		return nil, nil, stop, err
	}

	var gossipKey []byte
	if cfg.GossipKeyFile != "" {
		raw, err := readSecret(cfg.GossipKeyFile, "--gossip-key-file")
		if err != nil {
			return nil, nil, stop, err
		}
		if gossipKey, err = pki.DecodeGossipKey(string(raw)); err != nil {
			return nil, nil, stop, fmt.Errorf("--gossip-key-file: %w", err)
		}
	}
	role := "client"
	if cfg.Server {
		role = "server"
	}
	self := selfNode(cfg)
	mcfg := membership.DefaultConfig()
	mcfg.NodeName, mcfg.BindAddr, mcfg.BindPort, mcfg.AdvertiseAddr, mcfg.AdvertisePort = cfg.NodeName, bind, cfg.GossipPort, cfg.AdvertiseAddr, cfg.GossipPort
	mcfg.SecretKey, mcfg.Logger = gossipKey, log
	mcfg.Meta = membership.Meta{Role: role, APIAddr: hostPort(cfg.AdvertiseAddr, apiPort(cfg.APIAddr)), RPCAddr: hostPort(cfg.AdvertiseAddr, cfg.RPCPort),
		RaftAddr: hostPort(cfg.AdvertiseAddr, cfg.RaftPort), CPUMillis: self.CPUMillis, MemoryMiB: self.MemoryMiB, Version: cfg.Version}
	for _, j := range cfg.RetryJoin {
		mcfg.RetryJoin = append(mcfg.RetryJoin, hostPort(hostOf(j), cfg.GossipPort))
	}
	members, err := membership.New(mcfg)
	if err != nil {
		return nil, nil, stop, fmt.Errorf("membership: %w", err)
	}

	scfg := state.DefaultConfig()
	scfg.NodeName, scfg.DataDir, scfg.Logger = cfg.NodeName, cfg.DataDir, log
	scfg.RaftBindAddr, scfg.RaftAdvertiseAddr = hostPort(bind, cfg.RaftPort), hostPort(cfg.AdvertiseAddr, cfg.RaftPort)
	scfg.Bootstrap, scfg.NonVoter, scfg.TLS = false, !cfg.Server, peerTLS
	scfg.Forwarder = &leaderForwarder{members: members, client: rpc.NewClient(clientTLS, 35*time.Second)}
	store, err := state.Open(ctx, scfg)
	if err != nil {
		return nil, nil, stop, fmt.Errorf("open state: %w", err)
	}
	closers = append(closers, func() {
		if err := store.Close(); err != nil {
			log.Warn("close state", "err", err)
		}
	})

	rcfg := rpc.ServerConfig{TLS: rpcTLS, Applier: store, Logger: log}
	if id.ca != nil {
		tok, err := readSecret(cfg.JoinTokenFile, "--join-token-file")
		if err != nil {
			return nil, nil, stop, fmt.Errorf("servers sign joining agents' certificates: %w", err)
		}
		rcfg.Joiner, rcfg.JoinToken = id.ca, string(tok)
	}
	rsrv, err := rpc.NewServer(rcfg)
	if err != nil {
		return nil, nil, stop, err
	}
	rln, err := net.Listen("tcp", hostPort(bind, cfg.RPCPort))
	if err != nil {
		return nil, nil, stop, fmt.Errorf("listen for RPC on %s: %w", hostPort(bind, cfg.RPCPort), err)
	}
	go func() { _ = rsrv.Serve(rln) }()
	closers = append(closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rsrv.Shutdown(sctx)
	})

	if err := members.Start(ctx); err != nil {
		return nil, nil, stop, fmt.Errorf("start membership: %w", err)
	}
	closers = append(closers, func() {
		// A client's clean stop leaves the fleet at once; a crash is noticed by
		// failure detection. A server only shuts down, as Consul and Nomad
		// servers do: leaving would take its vote away, and stopping every
		// server for an upgrade would then leave a raft of one.
		var err error
		if cfg.Server {
			err = members.Shutdown()
		} else {
			err = members.Leave(5 * time.Second)
		}
		if err != nil {
			log.Warn("leave the fleet", "err", err)
		}
	})
	fl := &fleetLoop{cfg: cfg, store: store, members: members, log: log.With("component", "fleet"),
		removeGrace: 5 * time.Minute, failedSince: map[string]time.Time{}}
	goLoop(fl.run)

	if cfg.Server {
		// The first server to commit this sets the cluster's ranges.
		go func() {
			for ctx.Err() == nil {
				if err := store.SetClusterConfig(ctx, state.ClusterConfig{PodCIDR: cfg.ClusterPodCIDR, NodeMaskBits: cfg.NodeMaskBits}); err == nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
	}
	node, err := registerNode(ctx, cfg, store, log)
	if err != nil {
		return nil, nil, stop, err
	}
	cfg.PodCIDR = node.PodCIDR
	// The cluster's range is whatever the first server committed; clients
	// (and servers started with another flag value) take it from raft.
	if cc, ok := store.ClusterConfig(); ok {
		cfg.ClusterPodCIDR = cc.PodCIDR
	}
	log.Info("registered with the fleet", "pod_cidr", node.PodCIDR, "leader", store.Leader())

	rm := routes.New(routes.Config{Logger: log})
	goLoop(func(ctx context.Context) { syncRoutes(ctx, cfg, store, rm, log) })
	closers = append(closers, func() { _ = rm.Cleanup(context.Background()) })
	return store, apiTLS, stop, nil
}

func apiPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 7400
	}
	n, _ := strconv.Atoi(p)
	return n
}
