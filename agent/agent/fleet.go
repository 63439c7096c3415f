package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/hashicorp/memberlist"
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

// fleetBase is what every fleet agent starts with: the cluster's secrets,
// membership (created, not started: the identity asks it for servers to
// join through) and this node's identity.
type fleetBase struct {
	cfg         *Config
	log         *slog.Logger
	bind        string
	fallbackRPC []string // the retry-join servers' RPC addresses
	caPEM       []byte
	ca          *pki.CA // servers only
	joinToken   []byte
	members     *membership.Membership
	id          *fleet.Identity
	client      *rpc.Client
}

func (b *fleetBase) hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// servers are the RPC addresses of the servers to join, renew, watch and
// write through.
func (b *fleetBase) servers() []string { return fleet.ServerRPCAddrs(b.members, b.fallbackRPC) }

// newFleetBase reads the secrets, creates membership (admit decides who
// may be a member; nil admits everyone) and gets this node's certificate.
func newFleetBase(ctx context.Context, cfg *Config, admit func(string) error) (*fleetBase, error) {
	b := &fleetBase{cfg: cfg, log: cfg.Logger, bind: cfg.BindAddr}
	if b.bind == "" {
		b.bind = cfg.AdvertiseAddr
	}
	var retryJoin []string
	for _, j := range cfg.RetryJoin {
		b.fallbackRPC = append(b.fallbackRPC, b.hostPort(hostOf(j), cfg.RPCPort))
		retryJoin = append(retryJoin, gossipJoinAddr(j, cfg.GossipPort))
	}
	var err error
	if b.caPEM, err = os.ReadFile(cfg.CAFile); err != nil {
		return nil, fmt.Errorf("read --ca-file: %w", err)
	}
	if cfg.CAKeyFile != "" {
		keyPEM, err := os.ReadFile(cfg.CAKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca-key-file: %w", err)
		}
		if b.ca, err = pki.LoadCA(b.caPEM, keyPEM); err != nil {
			return nil, fmt.Errorf("--ca-file/--ca-key-file: %w", err)
		}
	}
	if cfg.JoinTokenFile != "" {
		if b.joinToken, err = readSecret(cfg.JoinTokenFile, "--join-token-file"); err != nil {
			return nil, err
		}
	}
	rawKey, err := readSecret(cfg.GossipKeyFile, "--gossip-key-file")
	if err != nil {
		return nil, err
	}
	gossipKey, err := pki.DecodeGossipKey(string(rawKey))
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file: %w", err)
	}

	role := membership.RoleClient
	if cfg.Server {
		role = membership.RoleServer
	}
	self := selfNode(cfg)
	mcfg := membership.DefaultConfig()
	mcfg.NodeName, mcfg.BindAddr, mcfg.BindPort, mcfg.AdvertiseAddr, mcfg.AdvertisePort = cfg.NodeName, b.bind, cfg.GossipPort, cfg.AdvertiseAddr, cfg.GossipPort
	mcfg.SecretKey, mcfg.Logger, mcfg.RetryJoin, mcfg.Admit = gossipKey, b.log, retryJoin, admit
	mcfg.Tune = func(mc *memberlist.Config) {
		// Zero values (a Config not made by DefaultConfig) keep memberlist's.
		if cfg.GossipProbeInterval > 0 && cfg.GossipProbeTimeout > 0 {
			mc.ProbeInterval, mc.ProbeTimeout = cfg.GossipProbeInterval, cfg.GossipProbeTimeout
		}
		if cfg.GossipSuspicionMult > 0 && cfg.GossipSuspicionMaxMult > 0 {
			mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = cfg.GossipSuspicionMult, cfg.GossipSuspicionMaxMult
		}
		if cfg.TuneGossip != nil {
			cfg.TuneGossip(mc)
		}
	}
	mcfg.Meta = membership.Meta{Role: role, APIAddr: b.hostPort(cfg.AdvertiseAddr, apiPort(cfg.APIAddr)), RPCAddr: b.hostPort(cfg.AdvertiseAddr, cfg.RPCPort),
		RaftAddr: b.hostPort(cfg.AdvertiseAddr, cfg.RaftPort), CPUMillis: self.CPUMillis, MemoryMiB: self.MemoryMiB, Version: cfg.Version}
	if b.members, err = membership.New(mcfg); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	b.id, err = fleet.LoadIdentity(ctx, fleet.IdentityConfig{
		NodeName: cfg.NodeName, Server: cfg.Server, AdvertiseIP: net.ParseIP(cfg.AdvertiseAddr),
		Dir: filepath.Join(cfg.DataDir, "tls"), CAPEM: b.caPEM, CA: b.ca, JoinToken: string(b.joinToken),
		Servers: b.servers, Validity: cfg.CertValidity, Logger: b.log,
	})
	if err != nil {
		return nil, err
	}
	b.client = rpc.NewClient(b.id.Keypair, 35*time.Second)
	return b, nil
}

// startMembership starts gossip and records how it ends: a client's clean
// stop leaves the fleet at once (a crash is noticed by failure detection);
// a server only shuts down, as Consul and Nomad servers do: leaving would
// take its vote away, and stopping every server for an upgrade would then
// leave a raft of one.
func (b *fleetBase) startMembership(ctx context.Context, lc *lifecycle) error {
	if err := b.members.Start(ctx); err != nil {
		return fmt.Errorf("start membership: %w", err)
	}
	lc.add("membership", func() {
		var err error
		if b.cfg.Server {
			err = b.members.Shutdown()
		} else {
			err = b.members.Leave(5 * time.Second)
		}
		if err != nil {
			b.log.Warn("leave the fleet", "err", err)
		}
	})
	lc.loop("certificate-renewal", func(ctx context.Context) { b.id.Run(ctx, b.client) })
	return nil
}

// syncRoutes keeps host-gw routes to the other nodes' pod ranges. They
// stay when the agent stops, as the service rules do: its pods keep
// reaching pods on other nodes while it restarts (measured in the lab:
// removing them at stop failed a connection through a service address
// during a 0.7 s restart). `flotilla-agent cleanup` removes them. Their
// source is this node's pod bridge address (the first of podCIDR, its pod
// range): other nodes' pod networks let new connections in only from the
// cluster's pod range, so the node's own connections to their pods (the
// ingress proxy's, a health check's) must come from it.
func (b *fleetBase) syncRoutes(lc *lifecycle, src fleet.RouteSource, podCIDR string) {
	rcfg := routes.Config{Logger: b.log}
	if p, err := netip.ParsePrefix(podCIDR); err == nil {
		rcfg.Source = p.Masked().Addr().Next()
	}
	rm := routes.New(rcfg)
	selfAddr, _ := netip.ParseAddr(b.cfg.AdvertiseAddr)
	lc.loop("routes", func(ctx context.Context) { fleet.SyncRoutes(ctx, b.cfg.NodeName, selfAddr, src, rm, b.log) })
}

// members lists the gossip members for the API.
func (b *fleetBase) apiMembers() []api.Member { return apiMembers(b.members.Members()) }

// startServer starts a fleet server, each step recorded in lc: identity,
// membership, the replicated state (a raft voter), the RPC server, the
// membership policy, node registration (which yields this node's pod
// range, written into cfg.PodCIDR) and host-gw routes. It returns the store
// and the API's TLS configuration.
func startServer(ctx context.Context, cfg *Config, lc *lifecycle, tokenHash [32]byte, logs rpc.NodeLogs, execs rpc.NodeExec) (*store.Store, *fleetBase, error) {
	log := cfg.Logger
	// Membership admits no removed node, which the store knows once open.
	var st *store.Store
	b, err := newFleetBase(ctx, cfg, func(name string) error { return admit(st, name) })
	if err != nil {
		return nil, nil, err
	}
	kp := b.id.Keypair

	scfg := store.DefaultConfig()
	scfg.NodeName, scfg.DataDir, scfg.Logger, scfg.Keypair = cfg.NodeName, cfg.DataDir, log, kp
	scfg.RaftBindAddr, scfg.RaftAdvertiseAddr = b.hostPort(b.bind, cfg.RaftPort), b.hostPort(cfg.AdvertiseAddr, cfg.RaftPort)
	scfg.Bootstrap = false
	scfg.Multiplier = cfg.RaftMultiplier
	if scfg.Multiplier == 0 {
		scfg.Multiplier = defaultFleetRaftMultiplier
	}
	scfg.Forwarder = &fleet.Forwarder{Members: b.members, Client: b.client}
	if st, err = store.Open(ctx, scfg); err != nil {
		return nil, nil, fmt.Errorf("open state: %w", err)
	}
	lc.add("store", func() {
		if err := st.Close(); err != nil {
			log.Warn("close state", "err", err)
		}
	})

	// Servers serve RPC: writes, joins, renewals, watches, raft state and
	// their own containers' logs and execs.
	rsrv, err := rpc.NewServer(rpc.ServerConfig{
		TLS: kp.ServerTLS(tls.VerifyClientCertIfGiven, nil), Backend: st, CA: b.ca, JoinToken: string(b.joinToken),
		APITokenHash: &tokenHash, CertValidity: cfg.CertValidity, NodeName: cfg.NodeName, Logs: logs, Exec: execs, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	rln, err := net.Listen("tcp", b.hostPort(b.bind, cfg.RPCPort))
	if err != nil {
		return nil, nil, fmt.Errorf("listen for RPC on %s: %w", b.hostPort(b.bind, cfg.RPCPort), err)
	}
	go func() { _ = rsrv.Serve(rln) }()
	lc.add("rpc", func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rsrv.Shutdown(sctx)
	})

	if err := b.startMembership(ctx, lc); err != nil {
		return nil, nil, err
	}
	policy := fleet.NewPolicy(fleet.PolicyConfig{
		NodeName: cfg.NodeName, Server: true, BootstrapExpect: cfg.BootstrapExpect, Fallback: b.fallbackRPC,
		Raft: st, Members: b.members, Verifier: &fleet.TLSVerifier{Keypair: kp}, Prober: b.client, Logger: log,
		LegacyClientRaft: cfg.LegacyClientRaft,
	})
	lc.loop("membership-events", func(ctx context.Context) { policy.Pump(ctx, b.members.Events()) })
	lc.loop("fleet-leader", func(ctx context.Context) { st.RunLeaderLoop(ctx, policy.RunLeader) })
	lc.loop("bootstrap", func(ctx context.Context) { _ = policy.Bootstrap(ctx) })
	// The first server to commit this sets the cluster's ranges.
	lc.loop("cluster-config", func(ctx context.Context) {
		cc := state.ClusterConfig{PodCIDR: cfg.ClusterPodCIDR, NodeMaskBits: cfg.NodeMaskBits, LostNodeGraceMillis: cfg.LostNodeGrace.Milliseconds(),
			ServiceCIDR: cfg.ServiceCIDR, NodePortRange: cfg.NodePortRange, ClusterDomain: cfg.ClusterDomain}
		retry(ctx, time.Second, func() error { return st.SetClusterConfig(ctx, cc) })
	})

	node, err := registerNode(ctx, cfg, st.RegisterNode, log)
	if err != nil {
		return nil, nil, err
	}
	cfg.PodCIDR = node.PodCIDR
	// The cluster's range is whatever the first server committed, not
	// necessarily this server's flag.
	if cc, ok := st.ClusterConfig(); ok {
		cfg.ClusterPodCIDR = cc.PodCIDR
	}
	log.Info("registered with the fleet", "pod_cidr", node.PodCIDR, "leader", st.Leader())
	b.syncRoutes(lc, st, cfg.PodCIDR)
	return st, b, nil
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

// registerNode records this node in the state through register (the
// store's, or a client's forwarded write) and returns it as stored, with
// the pod range the leader gave it, retrying until a leader answers.
func registerNode(ctx context.Context, cfg *Config, register func(context.Context, api.Node) (api.Node, error), log *slog.Logger) (api.Node, error) {
	self := selfNode(cfg)
	self.PodCIDR = ""
	for {
		n, err := register(ctx, self)
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

// gossipJoinAddr is where gossip joins a retry-join address: its own port
// if it names one (the servers' gossip port, as in Consul's retry_join),
// else this agent's --gossip-port, which servers normally share. The node
// simulator needs the first: its many nodes share one address, each on a
// gossip port of its own.
func gossipJoinAddr(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(port))
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

func apiMembers(ms []membership.Member) []api.Member {
	out := make([]api.Member, len(ms))
	for i, m := range ms {
		out[i] = api.Member{Name: m.Name, Address: m.Addr.String(), Role: m.Meta.Role, Status: m.Status.String()}
	}
	return out
}
