package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/flotilla-io/flotilla/agent/routes"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// WantedRoutes returns the host-gw routes this node needs: each other
// node's pod range via that node's address. What a node record says
// becomes a route on every node, so each one is checked here again, where
// it becomes a route, whatever let it into the state: the range must be
// one node range of the cluster's pod range that no other node claims, and
// the gateway a unicast address that is not this node's, loopback,
// link-local (the cloud metadata address is), multicast, or inside the
// pod or service range. Records that fail are left out and returned as
// errors.
func WantedRoutes(self string, selfAddr netip.Addr, nodes []api.Node, cc state.ClusterConfig) ([]routes.Route, []error) {
	var (
		want   []routes.Route
		errs   []error
		claims = map[netip.Prefix][]string{}
	)
	pods, _ := netip.ParsePrefix(cc.PodCIDR)
	svc, _ := netip.ParsePrefix(cc.ServiceCIDR)
	for _, n := range nodes {
		if n.PodCIDR == "" { // a node that left keeps its pods (5 min) and its route; a removed one is gone
			continue
		}
		p, err := netip.ParsePrefix(n.PodCIDR)
		if err == nil {
			err = cc.NodeRange(p)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
			continue
		}
		claims[p] = append(claims[p], n.Name)
		if n.Name == self {
			continue
		}
		via, err := netip.ParseAddr(n.Address)
		// The route is programmed via the unmapped address (routes.Manager
		// unmaps it), so that is the one to check: "::ffff:10.244.1.5" is
		// neither in an IPv4 pod range nor equal to an IPv4 address.
		via = via.Unmap()
		switch {
		case err != nil:
			err = fmt.Errorf("address %q: %w", n.Address, err)
		case via.Zone() != "":
			// Prefix.Contains is false for an address with a zone.
			err = fmt.Errorf("address %q has a zone; a node's address has none", n.Address)
		case via == selfAddr.Unmap():
			err = fmt.Errorf("address %s is this node's", via)
		case !via.IsGlobalUnicast() || via.IsLinkLocalUnicast():
			err = fmt.Errorf("address %s is not a unicast address a node can have", via)
		case pods.IsValid() && pods.Contains(via), svc.IsValid() && svc.Contains(via):
			err = fmt.Errorf("address %s is inside the cluster's pod or service range", via)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
			continue
		}
		want = append(want, routes.Route{PodCIDR: p, Via: via})
	}
	// Two records claiming one range: route neither, rather than guess.
	kept := want[:0]
	for _, r := range want {
		if len(claims[r.PodCIDR]) > 1 {
			errs = append(errs, fmt.Errorf("pod range %s is claimed by nodes %v", r.PodCIDR, claims[r.PodCIDR]))
			continue
		}
		kept = append(kept, r)
	}
	return kept, errs
}

// RouteSource is what route sync reads (store.Store).
type RouteSource interface {
	Nodes() []api.Node
	ClusterConfig() (state.ClusterConfig, bool)
	Changed() <-chan struct{}
}

// RouteSyncer programs routes (routes.Manager).
type RouteSyncer interface {
	Sync(ctx context.Context, want []routes.Route) error
}

// SyncRoutes keeps a route to every other node's pod range via that node
// (host-gw) until ctx ends.
func SyncRoutes(ctx context.Context, self string, selfAddr netip.Addr, src RouteSource, rm RouteSyncer, log *slog.Logger) {
	last, lastRefused := "", ""
	for {
		changed := src.Changed()
		if cc, ok := src.ClusterConfig(); ok {
			want, refused := WantedRoutes(self, selfAddr, src.Nodes(), cc)
			if r := fmt.Sprint(refused); len(refused) > 0 && r != lastRefused {
				log.Warn("refusing to route to node records that fail the checks", "refused", refused)
				lastRefused = r
			}
			if key := fmt.Sprint(want); key != last {
				if err := rm.Sync(ctx, want); err != nil {
					log.Warn("sync pod routes", "err", err)
				} else {
					last = key
					log.Info("pod routes synced", "routes", len(want))
				}
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
