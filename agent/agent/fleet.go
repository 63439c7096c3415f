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
	"strconv"
	"time"

	"github.com/flotilla-io/flotilla/agent/fleet"
	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/routes"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// defaultFleetRaftMultiplier scales raft's LAN timings for real networks
// when --raft-multiplier is not given: 2 gives Consul's timings at its
// multiplier 1 (1 s heartbeat and election timeouts), which Consul
// recommends for production; the lab runs at 1.
const defaultFleetRaftMultiplier = 2

// startFleet joins the fleet, each step recorded in lc: identity,
// membership, the replicated state, the RPC server (servers), the
// membership policy and certificate renewal, node registration (which
// yields this node's pod range, written into cfg.PodCIDR) and host-gw
// routes. It returns the store and the API's TLS configuration.
func startFleet(ctx context.Context, cfg *Config, lc *lifecycle, tokenHash [32]byte) (*store.Store, *tls.Config, func() []api.Member, error) {
	log := cfg.Logger
	bind := cfg.BindAddr
	if bind == "" {
		bind = cfg.AdvertiseAddr
	}
	hostPort := func(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	var fallbackRPC, retryJoin []string
	for _, j := range cfg.RetryJoin {
		fallbackRPC = append(fallbackRPC, hostPort(hostOf(j), cfg.RPCPort))
		retryJoin = append(retryJoin, hostPort(hostOf(j), cfg.GossipPort))
	}

	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read --ca-file: %w", err)
	}
	var ca *pki.CA
	var joinToken []byte
	if cfg.CAKeyFile != "" {
		keyPEM, err := os.ReadFile(cfg.CAKeyFile)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read --ca-key-file: %w", err)
		}
		if ca, err = pki.LoadCA(caPEM, keyPEM); err != nil {
			return nil, nil, nil, fmt.Errorf("--ca-file/--ca-key-file: %w", err)
		}
	}
	if cfg.JoinTokenFile != "" {
		if joinToken, err = readSecret(cfg.JoinTokenFile, "--join-token-file"); err != nil {
			return nil, nil, nil, err
		}
	}
	rawKey, err := readSecret(cfg.GossipKeyFile, "--gossip-key-file")
	if err != nil {
		return nil, nil, nil, err
	}
	gossipKey, err := pki.DecodeGossipKey(string(rawKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--gossip-key-file: %w", err)
	}

	// Membership is created first (the identity asks it for servers to
	// join through) but started only once the store can answer its
	// admission checks.
	var st *store.Store
	role := membership.RoleClient
	if cfg.Server {
		role = membership.RoleServer
	}
	self := selfNode(cfg)
	mcfg := membership.DefaultConfig()
	mcfg.NodeName, mcfg.BindAddr, mcfg.BindPort, mcfg.AdvertiseAddr, mcfg.AdvertisePort = cfg.NodeName, bind, cfg.GossipPort, cfg.AdvertiseAddr, cfg.GossipPort
	mcfg.SecretKey, mcfg.Logger, mcfg.RetryJoin = gossipKey, log, retryJoin
	mcfg.Meta = membership.Meta{Role: role, APIAddr: hostPort(cfg.AdvertiseAddr, apiPort(cfg.APIAddr)), RPCAddr: hostPort(cfg.AdvertiseAddr, cfg.RPCPort),
		RaftAddr: hostPort(cfg.AdvertiseAddr, cfg.RaftPort), CPUMillis: self.CPUMillis, MemoryMiB: self.MemoryMiB, Version: cfg.Version}
	mcfg.Admit = func(name string) error { return admit(st, name) }
	members, err := membership.New(mcfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("membership: %w", err)
	}
	servers := func() []string { return fleet.ServerRPCAddrs(members, fallbackRPC) }

	id, err := fleet.LoadIdentity(ctx, fleet.IdentityConfig{
		NodeName: cfg.NodeName, Server: cfg.Server, AdvertiseIP: net.ParseIP(cfg.AdvertiseAddr),
		Dir: filepath.Join(cfg.DataDir, "tls"), CAPEM: caPEM, CA: ca, JoinToken: string(joinToken),
		Servers: servers, Validity: cfg.CertValidity, Logger: log,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	kp := id.Keypair
	client := rpc.NewClient(kp, 35*time.Second)

	scfg := store.DefaultConfig()
	scfg.NodeName, scfg.DataDir, scfg.Logger, scfg.Keypair = cfg.NodeName, cfg.DataDir, log, kp
	scfg.RaftBindAddr, scfg.RaftAdvertiseAddr = hostPort(bind, cfg.RaftPort), hostPort(cfg.AdvertiseAddr, cfg.RaftPort)
	scfg.Bootstrap, scfg.NonVoter = false, !cfg.Server
	scfg.Multiplier = cfg.RaftMultiplier
	if scfg.Multiplier == 0 {
		scfg.Multiplier = defaultFleetRaftMultiplier
	}
	scfg.Forwarder = &fleet.Forwarder{Members: members, Client: client}
	if st, err = store.Open(ctx, scfg); err != nil {
		return nil, nil, nil, fmt.Errorf("open state: %w", err)
	}
	lc.add("store", func() {
		if err := st.Close(); err != nil {
			log.Warn("close state", "err", err)
		}
	})

	if cfg.Server {
		// Only servers serve RPC: writes, joins, renewals and raft state.
		rsrv, err := rpc.NewServer(rpc.ServerConfig{
			TLS: kp.ServerTLS(tls.VerifyClientCertIfGiven, nil), Backend: st, CA: ca, JoinToken: string(joinToken),
			APITokenHash: &tokenHash, CertValidity: cfg.CertValidity, NodeName: cfg.NodeName, Logger: log,
		})
		if err != nil {
			return nil, nil, nil, err
		}
		rln, err := net.Listen("tcp", hostPort(bind, cfg.RPCPort))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("listen for RPC on %s: %w", hostPort(bind, cfg.RPCPort), err)
		}
		go func() { _ = rsrv.Serve(rln) }()
		lc.add("rpc", func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = rsrv.Shutdown(sctx)
		})
	}

	if err := members.Start(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("start membership: %w", err)
	}
	lc.add("membership", func() {
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

	policy := fleet.NewPolicy(fleet.PolicyConfig{
		NodeName: cfg.NodeName, Server: cfg.Server, BootstrapExpect: cfg.BootstrapExpect, Fallback: fallbackRPC,
		Raft: st, Members: members, Verifier: &fleet.TLSVerifier{Keypair: kp}, Prober: client, Logger: log,
	})
	lc.loop("membership-events", func(ctx context.Context) { policy.Pump(ctx, members.Events()) })
	lc.loop("fleet-leader", func(ctx context.Context) { st.RunLeaderLoop(ctx, policy.RunLeader) })
	lc.loop("certificate-renewal", func(ctx context.Context) { id.Run(ctx, client) })
	if cfg.Server {
		lc.loop("bootstrap", func(ctx context.Context) { _ = policy.Bootstrap(ctx) })
		// The first server to commit this sets the cluster's ranges.
		lc.loop("cluster-config", func(ctx context.Context) {
			cc := state.ClusterConfig{PodCIDR: cfg.ClusterPodCIDR, NodeMaskBits: cfg.NodeMaskBits}
			retry(ctx, time.Second, func() error { return st.SetClusterConfig(ctx, cc) })
		})
	}

	node, err := registerNode(ctx, cfg, st, log)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg.PodCIDR = node.PodCIDR
	// The cluster's range is whatever the first server committed; clients
	// (and servers started with another flag value) take it from raft.
	if cc, ok := st.ClusterConfig(); ok {
		cfg.ClusterPodCIDR = cc.PodCIDR
	}
	log.Info("registered with the fleet", "pod_cidr", node.PodCIDR, "leader", st.Leader())

	rm := routes.New(routes.Config{Logger: log})
	lc.add("routes-cleanup", func() { _ = rm.Cleanup(context.Background()) })
	selfAddr, _ := netip.ParseAddr(cfg.AdvertiseAddr)
	lc.loop("routes", func(ctx context.Context) { fleet.SyncRoutes(ctx, cfg.NodeName, selfAddr, st, rm, log) })
	return st, kp.ServerTLS(tls.NoClientCert, nil), func() []api.Member { return apiMembers(members.Members()) }, nil
}

func apiMembers(ms []membership.Member) []api.Member {
	out := make([]api.Member, len(ms))
	for i, m := range ms {
		out[i] = api.Member{Name: m.Name, Address: m.Addr.String(), Role: m.Meta.Role, Status: m.Status.String()}
	}
	return out
}

// admit is membership's admission check: the name of a node removed from
// the fleet is not a member until it registers again (with a certificate
// issued after the removal).
func admit(st *store.Store, name string) error {
	if st == nil {
		return nil
	}
	if _, removed := st.State().Revoked(name); !removed {
		return nil
	}
	if _, registered := st.Node(name); registered {
		return nil
	}
	return errors.New("the node was removed from the fleet")
}

// registerNode records this node in the state and returns the pod range
// the leader gave it, retrying until a leader answers.
func registerNode(ctx context.Context, cfg *Config, st *store.Store, log *slog.Logger) (api.Node, error) {
	self := selfNode(cfg)
	self.PodCIDR = ""
	for {
		n, err := st.RegisterNode(ctx, self)
		if err == nil {
			return n, nil
		}
		if errors.Is(err, state.ErrForbidden) || errors.Is(err, state.ErrInvalid) {
			return api.Node{}, fmt.Errorf("register node: %w", err)
		}
		log.Info("waiting to register with the fleet", "err", err)
		select {
		case <-ctx.Done():
			return api.Node{}, fmt.Errorf("register node: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// retry calls f every interval until it succeeds or ctx ends.
func retry(ctx context.Context, interval time.Duration, f func() error) {
	for ctx.Err() == nil {
		if f() == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

// hostOf strips a port from a retry-join address.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func apiPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 7400
	}
	n, _ := strconv.Atoi(p)
	return n
}
