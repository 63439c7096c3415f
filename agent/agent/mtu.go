package agent

import (
	"github.com/vishvananda/netlink"
)

// uplinkMTU is the MTU of the interface holding the default route, so pod
// traffic leaving the node is not fragmented or dropped on clouds whose
// networks use less than 1500 (1460 on GCE, 1400 on some VMs). 0 when the
// node has no default route, which leaves the plugin's default.
func uplinkMTU() int {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				return l.Attrs().MTU
			}
		}
	}
	return 0
}
