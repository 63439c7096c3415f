package routes

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeNetlink is a routing table with the kernel's rules for what Sync
// relies on: replace matches a route by table, destination and metric,
// whatever its protocol (so a Manager that replaced a foreign route would
// be caught); delete also matches the protocol and gateway when given.
type fakeNetlink struct {
	routes    []netlink.Route
	failDst   map[string]error // RouteReplace of this destination fails
	ops       []string
	listCalls int
}

var _ netlinker = (*fakeNetlink)(nil)

func (f *fakeNetlink) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.listCalls++
	var out []netlink.Route
	for _, r := range f.routes {
		if mask&netlink.RT_FILTER_TABLE != 0 && r.Table != filter.Table {
			continue
		}
		if family != netlink.FAMILY_ALL && r.Family != family {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func sameKey(a, b *netlink.Route) bool {
	return a.Table == b.Table && prefixOf(*a) == prefixOf(*b) && a.Priority == b.Priority
}

func (f *fakeNetlink) RouteReplace(r *netlink.Route) error {
	if err := f.failDst[prefixOf(*r).String()]; err != nil {
		return err
	}
	f.ops = append(f.ops, "replace "+show(*r))
	for i := range f.routes {
		if sameKey(&f.routes[i], r) {
			f.routes[i] = *r
			return nil
		}
	}
	f.routes = append(f.routes, *r)
	return nil
}

func (f *fakeNetlink) RouteDel(r *netlink.Route) error {
	for i := range f.routes {
		c := &f.routes[i]
		if sameKey(c, r) && (r.Protocol == 0 || r.Protocol == c.Protocol) && (r.Gw == nil || r.Gw.Equal(c.Gw)) {
			f.ops = append(f.ops, "del "+show(*c))
			f.routes = slices.Delete(f.routes, i, i+1)
			return nil
		}
	}
	return unix.ESRCH
}

// show prints a route as the tests write them: "10.244.1.0/24 via 10.0.0.2 proto 79".
func show(r netlink.Route) string {
	s := prefixOf(r).String()
	if gw := gateway(r); gw.IsValid() {
		s += " via " + gw.String()
	} else if r.LinkIndex > 0 {
		s += fmt.Sprintf(" dev %d", r.LinkIndex)
	}
	s += fmt.Sprintf(" proto %d", int(r.Protocol))
	if r.Priority != 0 {
		s += fmt.Sprintf(" metric %d", r.Priority)
	}
	if r.Table != mainTable {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}

// parseRoute reads the form show prints (dev N for a link route).
func parseRoute(s string) netlink.Route {
	f := strings.Fields(s)
	dst := netip.MustParsePrefix(f[0])
	r := netlink.Route{Table: mainTable, Family: netlink.FAMILY_V4}
	if dst.Addr().Is6() {
		r.Family = netlink.FAMILY_V6
	}
	if dst.Bits() > 0 {
		r.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}
	}
	for i := 1; i+1 < len(f); i += 2 {
		var n int
		fmt.Sscan(f[i+1], &n)
		switch f[i] {
		case "via":
			r.Gw = netip.MustParseAddr(f[i+1]).AsSlice()
		case "dev":
			r.LinkIndex = n
		case "proto":
			r.Protocol = netlink.RouteProtocol(n)
		case "metric":
			r.Priority = n
		case "table":
			r.Table = n
		}
	}
	return r
}

func (f *fakeNetlink) table() []string {
	var out []string
	for _, r := range f.routes {
		out = append(out, show(r))
	}
	slices.Sort(out)
	return out
}
