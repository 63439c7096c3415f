package routes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultProtocol is the rtnetlink protocol number that marks flotilla's
// routes ("proto 0x4f" in `ip route`); iproute2 and the kernel assign it
// to no one.
const DefaultProtocol = 0x4f

// mainTable is the kernel's main routing table (RT_TABLE_MAIN).
const mainTable = unix.RT_TABLE_MAIN

// Route sends traffic for one node's pod range to that node.
type Route struct {
	// PodCIDR is the node's pod range.
	PodCIDR netip.Prefix
	// Via is the node's address, on a network this node is directly on.
	Via netip.Addr
}

func (r Route) String() string { return r.PodCIDR.String() + " via " + r.Via.String() }

// Config configures a Manager.
type Config struct {
	// Table is the routing table the routes go in; 0 means main.
	Table int
	// Protocol marks the routes this Manager owns; 0 means DefaultProtocol.
	// It must be a private number above RTPROT_STATIC (4) and at most 255,
	// used by nothing else on the host: every route with it in Table is
	// this Manager's to replace or delete.
	Protocol int
	// Source, when set, is the source address of every route (ip route's
	// "src"): the node's pod bridge address, so that the node's own
	// connections to pods on other nodes come from inside the cluster's
	// pod range, which pod networks let in, and their replies route back
	// through the pod routes. Until the host has the address (the bridge
	// comes up after the first routes are synced), routes are set without
	// it and Sync reports it, so the caller's retry adds it.
	Source netip.Addr
	// Logger receives a line for every route set or removed; nil discards.
	Logger *slog.Logger
}

// netlinker is the part of *netlink.Handle that Manager uses.
type netlinker interface {
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

var _ netlinker = (*netlink.Handle)(nil)

// Manager keeps the kernel's routes that carry its protocol equal to the
// set last given to Sync. Its methods may be called concurrently; they run
// one at a time.
type Manager struct {
	table, proto int
	src          netip.Addr
	cfgErr       error
	log          *slog.Logger
	nl           netlinker

	mu sync.Mutex
}

// New returns a Manager for the network namespace of the thread that calls
// its methods (the host's, for the agent). A bad Config is reported by
// every Sync and Cleanup.
func New(cfg Config) *Manager {
	// A zero Handle opens a netlink socket per call, as netlink's package
	// functions do.
	return newManager(cfg, &netlink.Handle{})
}

func newManager(cfg Config, nl netlinker) *Manager {
	m := &Manager{table: cfg.Table, proto: cfg.Protocol, src: cfg.Source.Unmap(), log: cfg.Logger, nl: nl}
	if m.table == 0 {
		m.table = mainTable
	}
	if m.proto == 0 {
		m.proto = DefaultProtocol
	}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case m.proto <= unix.RTPROT_STATIC || m.proto > 255:
		m.cfgErr = fmt.Errorf("routes: protocol %d is not a private rtnetlink protocol: use one in 5..255 that nothing else uses (default %#x); 0..4 are the kernel's and the administrator's routes", m.proto, DefaultProtocol)
	case m.table < 0 || m.table == unix.RT_TABLE_LOCAL:
		m.cfgErr = fmt.Errorf("routes: table %d cannot hold pod routes; use 0 (main) or a table of your own", m.table)
	}
	return m
}

// Sync makes this Manager's routes in the table exactly want: it sets each
// wanted route (netlink replace, which changes a route's gateway in place)
// and then deletes its routes that are not wanted. Routes of other
// protocols are never touched: a wanted route whose PodCIDR already has one
// is refused. Bad entries in want (invalid, mixed IPv4/IPv6, one PodCIDR
// with two gateways) are refused too, and any route of ours for their
// PodCIDR is left as it is. The rest is synced anyway; the error lists
// everything refused or failed.
func (m *Manager) Sync(ctx context.Context, want []Route) error {
	if m.cfgErr != nil {
		return m.cfgErr
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	desired, keep, errs := normalize(want)
	current, err := m.list()
	if err != nil {
		return err
	}
	ours := map[netip.Prefix][]netlink.Route{}
	foreign := map[netip.Prefix]netlink.Route{}
	for _, r := range current {
		dst := prefixOf(r)
		if int(r.Protocol) == m.proto {
			ours[dst] = append(ours[dst], r)
		} else {
			foreign[dst] = r
		}
	}

	set, removed := 0, 0
	for _, dst := range sortedKeys(desired) {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("sync routes: %w", err))...)
		}
		via := desired[dst]
		src := m.src
		if src.IsValid() && src.Is4() != dst.Addr().Is4() {
			src = netip.Addr{}
		}
		if slices.ContainsFunc(ours[dst], func(r netlink.Route) bool {
			return r.Priority == 0 && gateway(r) == via && source(r) == src
		}) {
			continue
		}
		if f, ok := foreign[dst]; ok {
			errs = append(errs, fmt.Errorf("route %s via %s: the table already has a route to %s that is not flotilla's (%s); not replacing it: remove it or give the node another pod range",
				dst, via, dst, describe(f)))
			continue
		}
		err := m.nl.RouteReplace(m.kernelRoute(dst, via, src))
		if err != nil && src.IsValid() && errors.Is(err, unix.EINVAL) {
			// The source is not on the host yet: route without it now.
			errs = append(errs, fmt.Errorf("route %s via %s: source %s is not an address of this host yet; routed without it until it is: %w", dst, via, src, err))
			err = m.nl.RouteReplace(m.kernelRoute(dst, via, netip.Addr{}))
		}
		if err != nil {
			errs = append(errs, explain(fmt.Sprintf("set route %s via %s", dst, via), err))
			continue
		}
		set++
		m.log.Info("pod route set", "pod_cidr", dst, "via", via, "src", src, "table", m.table)
	}

	for _, dst := range sortedKeys(ours) {
		for _, r := range ours[dst] {
			_, wanted := desired[dst]
			if wanted && r.Priority == 0 || keep[dst] {
				continue
			}
			if err := m.del(r); err != nil {
				errs = append(errs, err)
				continue
			}
			removed++
			m.log.Info("pod route removed", "pod_cidr", dst, "via", gateway(r), "table", m.table)
		}
	}
	m.log.Debug("pod routes synced", "wanted", len(desired), "set", set, "removed", removed, "errors", len(errs))
	return errors.Join(errs...)
}

// Cleanup deletes every route of this Manager's protocol in its table.
func (m *Manager) Cleanup(ctx context.Context) error {
	if m.cfgErr != nil {
		return m.cfgErr
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	current, err := m.list()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range current {
		if int(r.Protocol) != m.proto {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("clean up routes: %w", err))...)
		}
		if err := m.del(r); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Info("pod route removed", "pod_cidr", prefixOf(r), "via", gateway(r), "table", m.table)
	}
	return errors.Join(errs...)
}

// list returns every route in the table, of any protocol and family.
func (m *Manager) list() ([]netlink.Route, error) {
	rs, err := m.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: m.table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes in table %d: %w", m.table, err)
	}
	return rs, nil
}

// del deletes one of our routes as listed; the kernel matches the protocol
// too, so it cannot take another's route. Already gone is fine.
func (m *Manager) del(r netlink.Route) error {
	if err := m.nl.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
		return explain(fmt.Sprintf("delete route %s", describe(r)), err)
	}
	return nil
}

func (m *Manager) kernelRoute(dst netip.Prefix, via, src netip.Addr) *netlink.Route {
	family := netlink.FAMILY_V4
	if dst.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	return &netlink.Route{
		Dst:      &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:       via.AsSlice(),
		Src:      srcIP(src),
		Protocol: netlink.RouteProtocol(m.proto),
		Table:    m.table,
		Family:   family,
	}
}

// normalize checks want. It returns the routes to have, by masked PodCIDR;
// the PodCIDRs whose existing routes must be kept because their entries
// were refused; and why each was refused.
func normalize(want []Route) (desired map[netip.Prefix]netip.Addr, keep map[netip.Prefix]bool, errs []error) {
	desired, keep = map[netip.Prefix]netip.Addr{}, map[netip.Prefix]bool{}
	for _, r := range want {
		if !r.PodCIDR.IsValid() {
			errs = append(errs, fmt.Errorf("route %v: no valid pod CIDR", r))
			continue
		}
		dst, via := r.PodCIDR.Masked(), r.Via.Unmap()
		switch {
		case keep[dst]:
			continue
		case !via.IsValid() || via.IsUnspecified():
			errs = append(errs, fmt.Errorf("route to %s: no gateway address", dst))
		case via.Is4() != dst.Addr().Is4():
			errs = append(errs, fmt.Errorf("route %s via %s: pod CIDR and gateway are of different IP versions", dst, via))
		default:
			prev, dup := desired[dst]
			if !dup || prev == via {
				desired[dst] = via
				continue
			}
			errs = append(errs, fmt.Errorf("pod CIDR %s is wanted via both %s and %s; two nodes claim one pod range, keeping the route as it is", dst, prev, via))
		}
		// Refused: whatever the other entries for dst say.
		delete(desired, dst)
		keep[dst] = true
	}
	return desired, keep, errs
}

// prefixOf returns a listed route's destination; nil is the default route.
func prefixOf(r netlink.Route) netip.Prefix {
	if r.Dst == nil {
		if r.Family == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	addr, _ := netip.AddrFromSlice(r.Dst.IP)
	ones, _ := r.Dst.Mask.Size()
	return netip.PrefixFrom(addr.Unmap(), ones)
}

// srcIP is a route's source for netlink: nil for none.
func srcIP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

// source returns a listed route's source address, if it has one.
func source(r netlink.Route) netip.Addr {
	a, _ := netip.AddrFromSlice(r.Src)
	return a.Unmap()
}

// gateway returns a listed route's single gateway, if it has one.
func gateway(r netlink.Route) netip.Addr {
	a, _ := netip.AddrFromSlice(r.Gw)
	return a.Unmap()
}

// describe says what a listed route is, as `ip route` would.
func describe(r netlink.Route) string {
	s := prefixOf(r).String()
	if gw := gateway(r); gw.IsValid() {
		s += " via " + gw.String()
	}
	if r.LinkIndex > 0 {
		s += fmt.Sprintf(" dev #%d", r.LinkIndex)
	}
	return s + fmt.Sprintf(" proto %d metric %d", int(r.Protocol), r.Priority)
}

// explain wraps a kernel error with what usually causes it.
func explain(what string, err error) error {
	switch {
	case errors.Is(err, unix.ENETUNREACH):
		return fmt.Errorf("%s: %w: the gateway is not on a network this node is directly on; host-gw routing needs every node on one L2 segment", what, err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%s: %w: changing routes needs root (CAP_NET_ADMIN)", what, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%s: %w: the kernel refused the route (is the gateway one of this node's own addresses?)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func sortedKeys[V any](m map[netip.Prefix]V) []netip.Prefix {
	keys := make([]netip.Prefix, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return keys
}
