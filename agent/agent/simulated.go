package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/flotilla-io/flotilla/agent/node"
	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
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
func RunSimulatedNode(ctx context.Context, cfg Config) error {
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
	cn, _, err := startClientWith(ctx, &cfg, lc, "", false)
	if err != nil {
		return err
	}
	ncfg := node.DefaultConfig()
	ncfg.NodeName, ncfg.Store, ncfg.Runtime, ncfg.Network = cfg.NodeName, cn, runtime.NewFake(), podnet.NewFake()
	ncfg.LogDir, ncfg.Logger = filepath.Join(cfg.DataDir, "logs"), cfg.Logger
	ncfg.Probe = func(context.Context, string) bool { return true }
	rec, err := node.New(ncfg)
	if err != nil {
		return err
	}
	lc.loop("node", rec.Run)
	<-ctx.Done()
	return nil
}
