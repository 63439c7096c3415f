package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/flotilla-io/flotilla/agent/fleet"
	"github.com/flotilla-io/flotilla/agent/node"
	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// RunSimulatedNode runs a client agent whose pods are only pretended, until
// ctx ends: a real member of the fleet — memberlist with the gossip key, a
// certificate from joining, the watch, registration and status writes to
// the leader — with an in-memory runtime and network, no containerd, no
// routes and no API. It is what the node simulator (tools/nodesim) runs
// many of in one process, as Kubernetes' kwok and Nomad's nomad-nodesim
// do, so that servers can be tried with more nodes than one machine holds:
// the servers cannot tell them from real clients. It needs no root.
//
// cfg is a client's fleet configuration (no --server); DataDir holds only
// its certificate. Pods it is given become ready as soon as they start.
// Nodes of one simulator share an address, so each has a gossip port of
// its own (cfg.GossipPort) and names the servers' in cfg.RetryJoin
// ("host:port").
func RunSimulatedNode(ctx context.Context, cfg Config) error {
	return RunSimulatedNodeWith(ctx, cfg, SimulatedOptions{})
}

// SimulatedOptions is what a simulator sets for one of its nodes beyond the
// node's Config.
type SimulatedOptions struct {
	// Registered, if set, is called once the node is registered with the
	// fleet and its node loop runs. It must not block.
	Registered func()
	// Crash, if set, ends a registered node as a crash would once it is
	// closed: gossip stops without a leave, so servers find the node
	// failed by failure detection, and its connections close.
	Crash <-chan struct{}
	// CPUMillis and MemoryMiB, when above 0, are the capacity the node
	// reports instead of the machine's, as kwok's node templates set it: a
	// simulator's nodes share one machine, and a benchmark can give them
	// room the fleet's real nodes lack, so that its pods land on them only.
	// A node of the current design registers with the machine's capacity
	// first and then with this one (its first registration is in
	// startClientWith): only pods placed in between see the machine's.
	CPUMillis, MemoryMiB int64
}

// registerFunc registers a node: the store's, or a client's write to the
// leader.
type registerFunc = func(context.Context, api.Node) (api.Node, error)

// RunSimulatedNodeWith is RunSimulatedNode with options. With
// cfg.LegacyClientRaft the node is a client of the design before clients
// left raft (see startLegacySimulatedNode), for benchmarks only.
func RunSimulatedNodeWith(ctx context.Context, cfg Config, opts SimulatedOptions) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Server || !cfg.Fleet() {
		return fmt.Errorf("a simulated node is a fleet client: give --retry-join and no --server")
	}
	if cfg.Token == "" && cfg.TokenFile == "" && cfg.APITokenHashFile == "" {
		cfg.Token = "unused" // it serves no API
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	lc := newLifecycle(ctx, cfg.Logger)
	defer lc.stop()
	withCapacity := func(register registerFunc) registerFunc {
		return func(ctx context.Context, n api.Node) (api.Node, error) {
			if opts.CPUMillis > 0 {
				n.CPUMillis = opts.CPUMillis
			}
			if opts.MemoryMiB > 0 {
				n.MemoryMiB = opts.MemoryMiB
			}
			return register(ctx, n)
		}
	}
	var (
		ns  node.Store
		b   *fleetBase
		err error
	)
	if cfg.LegacyClientRaft {
		ns, b, err = startLegacySimulatedNode(ctx, &cfg, lc, withCapacity)
	} else {
		var cn *clientNode
		if cn, b, err = startClientWith(ctx, &cfg, lc, "", false); err == nil {
			ns = cn
			if opts.CPUMillis > 0 || opts.MemoryMiB > 0 {
				_, err = registerNode(ctx, &cfg, withCapacity(cn.writes.RegisterNode), cfg.Logger)
			}
		}
	}
	if err != nil {
		return err
	}
	ncfg := node.DefaultConfig()
	ncfg.NodeName, ncfg.Store, ncfg.Runtime, ncfg.Network = cfg.NodeName, ns, runtime.NewFake(), podnet.NewFake()
	// Simulated pods have no network: their probes pass without dialing.
	ncfg.Dial = node.HealthyDial
	ncfg.LogDir, ncfg.Logger = filepath.Join(cfg.DataDir, "logs"), cfg.Logger
	ncfg.Probe = func(context.Context, string) bool { return true }
	// Resync catches containers that exited on their own; pretended ones
	// never do, and a simulator runs a thousand of these loops. A node with
	// pods passes again after every pass (each pod sync ends with a wake-up
	// whether or not anything changed): every MinInterval, 20 ms by default,
	// which a thousand nodes in one process cannot afford. At 1 s a pod
	// starts up to 1 s later than on a real node; what the servers see is
	// the same.
	ncfg.Resync, ncfg.MinInterval = 10*time.Second, time.Second
	rec, err := node.New(ncfg)
	if err != nil {
		return err
	}
	lc.loop("node", rec.Run)
	if opts.Registered != nil {
		opts.Registered()
	}
	select {
	case <-ctx.Done():
	case <-opts.Crash:
		// Leave (lc.stop's) does nothing after Shutdown.
		if err := b.members.Shutdown(); err != nil {
			cfg.Logger.Warn("simulated crash: stop gossip", "err", err)
		}
		cfg.Logger.Info("simulated crash: gossip stopped without leaving")
	}
	return nil
}

// startLegacySimulatedNode starts a simulated client of the design before
// clients left raft, kept only so that BenchmarkFleetScale can measure it
// beside the current one (servers run with --legacy-client-raft): the
// leader adds the node to raft as a non-voter, which then holds the full
// replica (in memory here) and reads its pods from it; its writes go to the
// leader through the store's forwarder. Replication to it is real raft
// replication: that is the cost being compared. Each node needs a raft
// port of its own (cfg.RaftPort). wrap changes how it registers (the
// capacity it reports).
func startLegacySimulatedNode(ctx context.Context, cfg *Config, lc *lifecycle, wrap func(registerFunc) registerFunc) (*store.Store, *fleetBase, error) {
	log := cfg.Logger
	b, err := newFleetBase(ctx, cfg, nil)
	if err != nil {
		return nil, nil, err
	}
	scfg := store.DefaultConfig()
	scfg.NodeName, scfg.Logger, scfg.Keypair, scfg.InMemory = cfg.NodeName, log, b.id.Keypair, true
	scfg.RaftBindAddr, scfg.RaftAdvertiseAddr = b.hostPort(b.bind, cfg.RaftPort), b.hostPort(cfg.AdvertiseAddr, cfg.RaftPort)
	scfg.Bootstrap, scfg.NonVoter = false, true
	scfg.Multiplier = cfg.RaftMultiplier
	if scfg.Multiplier == 0 {
		scfg.Multiplier = defaultFleetRaftMultiplier
	}
	scfg.Forwarder = &fleet.Forwarder{Members: b.members, Client: b.client}
	st, err := store.Open(ctx, scfg)
	if err != nil {
		return nil, nil, fmt.Errorf("open state: %w", err)
	}
	lc.add("store", func() {
		if err := st.Close(); err != nil {
			log.Warn("close state", "err", err)
		}
	})
	if err := b.startMembership(ctx, lc); err != nil {
		return nil, nil, err
	}
	// The write returns once this replica applied it: once the leader has
	// added the node to raft and it caught up.
	n, err := registerNode(ctx, cfg, wrap(st.RegisterNode), log)
	if err != nil {
		return nil, nil, err
	}
	cfg.PodCIDR = n.PodCIDR
	log.Info("registered with the fleet as a raft non-voter (legacy)", "pod_cidr", n.PodCIDR, "leader", st.Leader())
	return st, b, nil
}
