package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla-io/flotilla/agent/clientstate"
	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/api"
)

// clientNode is what a client agent's node loop and route sync read and
// write: the cache of its watch (its pods, every node, the cluster config)
// and its writes, which go to the leader.
type clientNode struct {
	*clientstate.Store
	writes *clientstate.Writes
}

// SetPodStatus reports what this node observed of one of its pods.
func (c *clientNode) SetPodStatus(ctx context.Context, id string, st api.PodStatus) error {
	return c.writes.SetPodStatus(ctx, id, st)
}

// RemovePods removes this node's pods it stopped.
func (c *clientNode) RemovePods(ctx context.Context, ids []string) error {
	return c.writes.RemovePods(ctx, ids)
}

// startClient starts a fleet client, each step recorded in lc. A client
// holds no raft state: it watches the servers for its own pods, every
// node and the cluster config, keeps what it watched in a cache on disk
// (so its pods, routes and rules stay while no server answers, and it
// restarts from it), and sends its writes to the leader. It registers this
// node (cfg.PodCIDR and cfg.ClusterPodCIDR are set from what the fleet
// says) and keeps host-gw routes.
func startClient(ctx context.Context, cfg *Config, lc *lifecycle) (*clientNode, *fleetBase, error) {
	return startClientWith(ctx, cfg, lc, filepath.Join(cfg.DataDir, "client-state.json"), true)
}

// startClientWith is startClient with the cache at cachePath ("" keeps it
// in memory) and, with routes false, no host-gw routes: a simulated node.
func startClientWith(ctx context.Context, cfg *Config, lc *lifecycle, cachePath string, routes bool) (*clientNode, *fleetBase, error) {
	log := cfg.Logger
	b, err := newFleetBase(ctx, cfg, nil)
	if err != nil {
		return nil, nil, err
	}
	// Agents of earlier versions kept a full replica here as raft
	// non-voters: every tenant's deployments. A client has no business
	// with it any more.
	if old := filepath.Join(cfg.DataDir, "raft"); exists(old) {
		log.Info("removing the raft state this client kept when clients were raft members", "dir", old)
		if err := os.RemoveAll(old); err != nil {
			log.Warn("remove old raft state", "err", err)
		}
	}
	cs, err := clientstate.Open(cachePath, log)
	if err != nil {
		return nil, nil, fmt.Errorf("open the client's cache: %w", err)
	}
	lc.add("client-state", func() { _ = cs.Close() })
	if err := b.startMembership(ctx, lc); err != nil {
		return nil, nil, err
	}
	lc.loop("watch", func(ctx context.Context) { cs.Run(ctx, b.client, b.servers) })
	// Membership events tell a client when a server is alive again: its
	// watch then asks at once instead of waiting out a back-off. (They
	// must be read anyway: unread, they pile up in memory.)
	lc.loop("membership-events", func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-b.members.Events():
				if ev.Member.Meta.Role == membership.RoleServer && (ev.Type == membership.EventJoin || ev.Type == membership.EventUpdate) {
					cs.Retry(ev.Member.Meta.RPCAddr)
				}
			}
		}
	})
	writes := &clientstate.Writes{Node: cfg.NodeName, Store: cs, Client: b.client, RPCAddr: rpcAddrOf(b.members), Servers: b.servers}

	// A client that restarts while no server answers starts from its cache:
	// its pods must keep running. It registers again in the background.
	if n, ok := cs.Node(cfg.NodeName); ok && n.PodCIDR != "" {
		if cc, ok := cs.ClusterConfig(); ok {
			cfg.PodCIDR, cfg.ClusterPodCIDR = n.PodCIDR, cc.PodCIDR
			again := *cfg
			lc.loop("register", func(ctx context.Context) {
				if _, err := registerNode(ctx, &again, writes.RegisterNode, log); err != nil && ctx.Err() == nil {
					log.Warn("register with the fleet", "err", err)
				}
			})
			log.Info("started from the cached view; registering again in the background", "pod_cidr", n.PodCIDR, "index", cs.Index())
			if routes {
				b.syncRoutes(lc, cs, cfg.PodCIDR)
			}
			return &clientNode{Store: cs, writes: writes}, b, nil
		}
	}
	node, err := registerNode(ctx, cfg, writes.RegisterNode, log)
	if err != nil {
		return nil, nil, err
	}
	cfg.PodCIDR = node.PodCIDR
	// The cluster's range comes with the watch; the pod network needs it
	// before the first pod starts.
	for {
		if cc, ok := cs.ClusterConfig(); ok {
			cfg.ClusterPodCIDR = cc.PodCIDR
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("wait for the cluster config from the servers: %w", ctx.Err())
		case <-cs.Changed():
		case <-time.After(time.Second):
		}
	}
	log.Info("registered with the fleet", "pod_cidr", node.PodCIDR, "leader", cs.Leader())
	if routes {
		b.syncRoutes(lc, cs, cfg.PodCIDR)
	}
	return &clientNode{Store: cs, writes: writes}, b, nil
}

// rpcAddrOf finds an alive server's RPC address by name (the leader's, for
// a client's writes). Servers, not Members: it runs for every status write,
// and copying a thousand members each time is what a client cannot afford.
func rpcAddrOf(m *membership.Membership) func(string) string {
	return func(name string) string {
		for _, mb := range m.Servers() {
			if mb.Name == name {
				return mb.Meta.RPCAddr
			}
		}
		return ""
	}
}

// apiAddrs are the API addresses of the alive servers, where a client's API
// sends what it does not answer itself (once per request).
func apiAddrs(m *membership.Membership) func() []string {
	return func() []string {
		var out []string
		for _, mb := range m.Servers() {
			if mb.Meta.APIAddr != "" {
				out = append(out, mb.Meta.APIAddr)
			}
		}
		return out
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// clientMetrics is what a client's /v1/metrics reads: its own pods; it
// holds no deployments and never leads.
type clientMetrics struct{ *clientNode }

func (clientMetrics) Deployments(string) []api.Deployment { return nil }
func (clientMetrics) IsLeader() bool                      { return false }
func (clientMetrics) Skipped() (uint64, string)           { return 0, "" }
