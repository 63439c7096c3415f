package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/svcproxy"
	"github.com/flotilla-io/flotilla/agent/svcsync"
)

// Services on a node: svcproxy's rules for every service, a route that
// keeps service addresses on the node, the cluster DNS on the pod bridge's
// address, and (through the node reconciler) a resolv.conf in every pod
// that points at it. svcsync keeps the rules and names in step with the
// state.
//
// Agent shutdown leaves the rules and the route in place, so that a
// restart has no gap: the new agent's first sync finds them as it wants
// them and writes nothing. `flotilla-agent cleanup` removes them.

// serviceRouteProtocol marks the route of the service range ("proto 0x50"
// in `ip route`): not agent/routes' 0x4f, whose Sync deletes every route
// of its protocol it was not given.
const serviceRouteProtocol = 0x50

// resolvConfPath is where the node's own resolver configuration is read:
// its nameservers are the cluster DNS's upstreams, its search domains
// follow the cluster's in every pod.
const resolvConfPath = "/etc/resolv.conf"

// serviceSource is the state the service side reads: svcsync's Source and
// the cluster's layout. *store.Store and *clientstate.Store are both.
type serviceSource interface {
	svcsync.Source
	ClusterConfig() (state.ClusterConfig, bool)
}

// serviceNode is what startServices set up.
type serviceNode struct {
	// resolvConf renders a pod's resolv.conf (node.Config.ResolvConf).
	resolvConf func(namespace string) ([]byte, error)
	collector  prometheus.Collector
}

// serviceLayout is the service side of the cluster config as this node
// uses it.
type serviceLayout struct {
	serviceRange netip.Prefix
	domain       string
	// clusterCIDR is the pod range of the whole cluster, nodeCIDR this
	// node's.
	clusterCIDR, nodeCIDR netip.Prefix
	gateway               netip.Addr // the pod bridge's address
}

// layoutOf reads the layout from the cluster config, with the defaults of
// a cluster bootstrapped before services existed.
func layoutOf(cfg *Config, cc state.ClusterConfig, gateway netip.Addr) (serviceLayout, error) {
	l := serviceLayout{serviceRange: cc.ServiceRange(), domain: cc.Domain(), gateway: gateway}
	var err error
	if l.nodeCIDR, err = netip.ParsePrefix(cfg.PodCIDR); err != nil {
		return l, fmt.Errorf("this node's pod range %q: %w", cfg.PodCIDR, err)
	}
	l.clusterCIDR = l.nodeCIDR
	if cfg.Fleet() {
		if l.clusterCIDR, err = netip.ParsePrefix(cfg.ClusterPodCIDR); err != nil {
			return l, fmt.Errorf("the cluster's pod range %q: %w", cfg.ClusterPodCIDR, err)
		}
	}
	return l, nil
}

// startServices sets up the node's service data path after the pod network
// is up (the bridge carries the gateway): route and sysctls, the service
// rules' syncer, the DNS server, and the loop that feeds them from src,
// whose first sync waits for ready. The layout is src's cluster config,
// which is fixed once set. Each step is recorded in lc.
func startServices(cfg *Config, lc *lifecycle, src serviceSource, gateway netip.Addr, ready func(context.Context)) (*serviceNode, error) {
	log := cfg.Logger
	cc, _ := src.ClusterConfig() // none: the defaults, as the state machine's
	l, err := layoutOf(cfg, cc, gateway)
	if err != nil {
		return nil, err
	}
	if err := serviceSysctls(cfg.BridgeName); err != nil {
		return nil, err
	}
	if err := ensureServiceRoute(cfg.BridgeName, l.serviceRange, l.gateway, log); err != nil {
		return nil, err
	}

	pcfg := svcproxy.DefaultConfig()
	pcfg.ChainPrefix, pcfg.CommentTag = cfg.ChainPrefix, strings.ToLower(cfg.ChainPrefix)
	pcfg.ClusterCIDR, pcfg.NodePodCIDR, pcfg.Logger = l.clusterCIDR, l.nodeCIDR, log.With("component", "svcproxy")
	pcfg.SNATAddress = l.gateway
	proxy, err := svcproxy.NewSyncer(pcfg, svcproxy.NewExecApplier(svcproxy.DefaultExecConfig()))
	if err != nil {
		return nil, err
	}

	dcfg := clusterdns.DefaultConfig()
	dcfg.Domain, dcfg.ResolvConf, dcfg.Logger = l.domain, resolvConfPath, log
	dcfg.Listen = []string{netip.AddrPortFrom(l.gateway, 53).String()}
	dns, err := clusterdns.New(dcfg)
	if err != nil {
		return nil, fmt.Errorf("cluster DNS: %w", err)
	}
	// Serve what the view holds now (a restarted node's), not an empty
	// zone whose NXDOMAINs pods would cache until the first sync.
	node := cfg.NodeName
	if _, err := dns.Update(svcsync.DNSView(src.Services(), src.Endpoints(), src.Pods(state.PodFilter{Node: node}))); err != nil {
		log.Warn("cluster DNS: some names left out", "err", err)
	}
	if err := dns.Start(lc.ctx); err != nil {
		return nil, fmt.Errorf("cluster DNS on %s (the pod bridge %s): %w; is another DNS server bound to port 53 on all addresses (dnsmasq, bind)? make it listen on specific addresses", dcfg.Listen[0], cfg.BridgeName, err)
	}
	lc.addFinal("cluster-dns", func() {
		if err := dns.Close(); err != nil {
			log.Warn("stop cluster DNS", "err", err)
		}
	})

	scfg := svcsync.DefaultConfig()
	scfg.NodeName, scfg.Source, scfg.Proxy, scfg.DNS, scfg.Ready, scfg.Logger = node, src, proxy, dns, ready, log
	syncer, err := svcsync.New(scfg)
	if err != nil {
		return nil, err
	}
	lc.loop("services", syncer.Run)
	log.Info("services ready", "service_range", l.serviceRange, "domain", l.domain, "dns", dcfg.Listen[0],
		"cluster_cidr", l.clusterCIDR, "chains", cfg.ChainPrefix+"-SVC-*")

	search := nodeSearchDomains(resolvConfPath)
	return &serviceNode{
		resolvConf: func(ns string) ([]byte, error) {
			return clusterdns.PodResolvConf(l.gateway, ns, l.domain, search...)
		},
		collector: svcsync.NewCollector(syncer, dns.Stats),
	}, nil
}

// serviceSysctls turns off ICMP redirects on the node. A pod's connection
// to a service address leaves through the bridge it came in by (the
// service route, or a DNAT to a pod on the same bridge), so the kernel
// sends the pod a redirect first, which takes tokens of the per-host ICMP
// rate limit that the port-unreachable of a service without endpoints
// needs. Measured here, 40 back-to-back connections from a pod to such a
// service (1 s timeout each): 17 refused with redirects on, 22 with them
// off; the rest wait out the rate limit of the REJECT itself (a burst of
// 6, then 1/s per pod). The kernel ORs "all" with the interface's
// setting, so the bridge's alone changes nothing (measured: 17 refused
// too). Forwarding is podnet's (Init).
func serviceSysctls(bridge string) error {
	for _, iface := range []string{"all", bridge} {
		p := filepath.Join("/proc/sys/net/ipv4/conf", iface, "send_redirects")
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("turn off ICMP redirects (net.ipv4.conf.%s.send_redirects=0): %w", iface, err)
		}
	}
	return nil
}

// ensureServiceRoute routes the service range to the pod bridge with the
// bridge's address as source: a service address never leaves through the
// default route (traffic to a port no service has goes nowhere, as on
// Kubernetes), and the node itself can connect to services (its traffic
// takes the source address pods answer to, in the cluster's range, so it
// needs no masquerading). Another agent's route to the same range through
// another bridge (agents sharing a network namespace, as the tests run
// them) is left alone with a warning: give each its own --service-cidr.
func ensureServiceRoute(bridge string, dst netip.Prefix, src netip.Addr, log *slog.Logger) error {
	link, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("route the service range %s: bridge %s: %w", dst, bridge, err)
	}
	want := serviceRoute(link.Attrs().Index, dst, src)
	have, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Dst: want.Dst}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil {
		return fmt.Errorf("route the service range %s: list routes: %w", dst, err)
	}
	for _, r := range have {
		switch {
		case r.Priority != 0:
			continue // another metric: does not collide with ours
		case r.LinkIndex == want.LinkIndex && r.Src.Equal(want.Src) && r.Protocol == want.Protocol && r.Gw == nil:
			return nil
		case r.LinkIndex != want.LinkIndex || r.Protocol != want.Protocol:
			log.Warn("the service range is already routed elsewhere; not replacing that route (is another agent in this network namespace using the same --service-cidr?)",
				"service_range", dst, "route", r.String())
			return nil
		}
	}
	if err := netlink.RouteReplace(want); err != nil {
		return fmt.Errorf("route the service range %s to bridge %s: %w", dst, bridge, err)
	}
	log.Info("service range routed to the pod bridge", "service_range", dst, "bridge", bridge, "src", src)
	// A range of an earlier layout (a data dir purged and made anew) goes.
	stale, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: want.LinkIndex, Protocol: serviceRouteProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("route the service range %s: list routes: %w", dst, err)
	}
	for _, r := range stale {
		if r.Dst != nil && r.Dst.String() != want.Dst.String() {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				log.Warn("remove the route of an earlier service range", "route", r.String(), "err", err)
			}
		}
	}
	return nil
}

func serviceRoute(link int, dst netip.Prefix, src netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: link,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)},
		Src:       src.AsSlice(),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  serviceRouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
}

// removeServiceRoutes deletes the service routes through the bridge: every
// route of serviceRouteProtocol on it, whatever range it is for (cleanup
// reads no state). A missing bridge has none left.
func removeServiceRoutes(bridge string) error {
	link, err := netlink.LinkByName(bridge)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil
		}
		return fmt.Errorf("remove service routes: bridge %s: %w", bridge, err)
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: link.Attrs().Index, Protocol: serviceRouteProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("remove service routes: list routes: %w", err)
	}
	var errs []error
	for _, r := range rs {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove service route %s: %w", r.String(), err))
		}
	}
	return errors.Join(errs...)
}

// cleanupServiceRules removes every svcproxy chain and jump of this agent's
// prefix (found through iptables-save; no state needed).
func cleanupServiceRules(ctx context.Context, cfg *Config) error {
	pcfg := svcproxy.DefaultConfig()
	pcfg.ChainPrefix, pcfg.CommentTag, pcfg.Logger = cfg.ChainPrefix, strings.ToLower(cfg.ChainPrefix), cfg.Logger
	s, err := svcproxy.NewSyncer(pcfg, svcproxy.NewExecApplier(svcproxy.DefaultExecConfig()))
	if err != nil {
		return err
	}
	return s.Cleanup(ctx)
}

// nodeSearchDomains returns the search domains of the node's resolv.conf,
// which pods search after the cluster's, as Kubernetes' ClusterFirst does.
func nodeSearchDomains(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 1 && (f[0] == "search" || f[0] == "domain") {
			out = f[1:] // the last such line wins, as in glibc
		}
	}
	return out
}
