package state

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// ClusterConfig is the cluster's network layout. It is set once, through
// raft, by the first server whose SetClusterConfig commits; later ones keep
// it, so every node carves its pod range from the same range.
type ClusterConfig struct {
	// PodCIDR is the range every node's pod range is taken from, e.g.
	// 10.244.0.0/16.
	PodCIDR string `json:"pod_cidr"`
	// NodeMaskBits is the prefix length of one node's pod range, e.g. 24:
	// a /16 then holds 256 nodes of 254 pods each.
	NodeMaskBits int `json:"node_mask_bits"`
	// ServiceCIDR is the range service virtual IPs are given from;
	// DefaultServiceCIDR when empty (clusters bootstrapped before services).
	ServiceCIDR string `json:"service_cidr,omitempty"`
	// NodePortRange is the range node ports are given from, "30000-32767"
	// (DefaultNodePortRange) when empty.
	NodePortRange string `json:"node_port_range,omitempty"`
	// ClusterDomain is the DNS domain of service and pod names,
	// DefaultClusterDomain when empty.
	ClusterDomain string `json:"cluster_domain,omitempty"`
	// LostNodeGraceMillis is how long after a node is marked down the
	// leader replaces its pods, and how long a node cut off from the
	// servers waits before stopping its self-fencing pods; 0 means
	// DefaultLostNodeGrace (clusters bootstrapped before it existed).
	LostNodeGraceMillis int64 `json:"lost_node_grace_millis,omitempty"`
}

// DefaultLostNodeGrace is LostNodeGrace when the cluster config has none.
const DefaultLostNodeGrace = 2 * time.Second

// Defaults of the service layout, Kubernetes' own.
const (
	DefaultServiceCIDR   = "10.96.0.0/16"
	DefaultNodePortRange = "30000-32767"
	DefaultClusterDomain = "cluster.local"
)

// ServiceRange returns the service range (DefaultServiceCIDR when unset or
// unreadable: Validate refused such a config before it was stored).
func (c ClusterConfig) ServiceRange() netip.Prefix {
	if p, err := netip.ParsePrefix(c.ServiceCIDR); err == nil && p.Addr().Is4() {
		return p.Masked()
	}
	return netip.MustParsePrefix(DefaultServiceCIDR)
}

// NodePorts returns the node port range.
func (c ClusterConfig) NodePorts() (lo, hi int) {
	if lo, hi, err := api.ParseNodePortRange(c.NodePortRange); err == nil {
		return lo, hi
	}
	return api.DefaultNodePortMin, api.DefaultNodePortMax
}

// Domain returns the cluster domain.
func (c ClusterConfig) Domain() string {
	if c.ClusterDomain == "" {
		return DefaultClusterDomain
	}
	return c.ClusterDomain
}

// LostNodeGrace returns the grace before a lost node's pods are replaced.
func (c ClusterConfig) LostNodeGrace() time.Duration {
	if c.LostNodeGraceMillis <= 0 {
		return DefaultLostNodeGrace
	}
	return time.Duration(c.LostNodeGraceMillis) * time.Millisecond
}

// maxNodeRangeBits bounds how many node ranges a cluster range may hold
// (2^32), which keeps a range's index in a uint64 with room to spare.
const maxNodeRangeBits = 32

// Validate checks the layout: ranges that parse, a node mask that fits.
func (c ClusterConfig) Validate() error {
	p, err := netip.ParsePrefix(c.PodCIDR)
	if err != nil {
		return fmt.Errorf("PodCIDR %q is not a CIDR range such as 10.244.0.0/16: %w", c.PodCIDR, err)
	}
	if p != p.Masked() {
		return fmt.Errorf("PodCIDR %s has host bits set; did you mean %s?", p, p.Masked())
	}
	if c.LostNodeGraceMillis < 0 || c.LostNodeGraceMillis > int64(time.Hour/time.Millisecond) {
		return fmt.Errorf("LostNodeGraceMillis %d is out of range 0..3600000", c.LostNodeGraceMillis)
	}
	if p.Addr().Is4In6() {
		// Node ranges are compared unmapped: a mapped cluster range would
		// hand out the same range twice.
		return fmt.Errorf("PodCIDR %s is an IPv4-mapped IPv6 range; give it as IPv4", p)
	}
	bits := p.Addr().BitLen()
	switch {
	case c.NodeMaskBits < p.Bits():
		return fmt.Errorf("NodeMaskBits /%d is shorter than PodCIDR %s: a node's range must fit in the cluster's", c.NodeMaskBits, p)
	case c.NodeMaskBits > bits-2:
		return fmt.Errorf("NodeMaskBits /%d leaves no room for pods; use at most /%d (e.g. /24)", c.NodeMaskBits, bits-2)
	case c.NodeMaskBits-p.Bits() > maxNodeRangeBits:
		return fmt.Errorf("PodCIDR %s with NodeMaskBits /%d holds more than 2^%d node ranges; use a longer PodCIDR prefix or a shorter node mask", p, c.NodeMaskBits, maxNodeRangeBits)
	}
	if c.ServiceCIDR != "" {
		sp, err := netip.ParsePrefix(c.ServiceCIDR)
		if err != nil {
			return fmt.Errorf("ServiceCIDR %q is not a CIDR range such as 10.96.0.0/12: %w", c.ServiceCIDR, err)
		}
		if sp.Overlaps(p) {
			return fmt.Errorf("ServiceCIDR %s overlaps PodCIDR %s; they must be disjoint", sp, p)
		}
		if !sp.Addr().Is4() || sp.Bits() < 12 || sp.Bits() > 28 || sp != sp.Masked() {
			return fmt.Errorf("ServiceCIDR %s must be an IPv4 range from /12 to /28 without host bits, such as 10.96.0.0/16", sp)
		}
	}
	if c.NodePortRange != "" {
		if _, _, err := api.ParseNodePortRange(c.NodePortRange); err != nil {
			return fmt.Errorf("NodePortRange: %w", err)
		}
	}
	if c.ClusterDomain != "" {
		for l := range strings.SplitSeq(c.ClusterDomain, ".") {
			if api.ValidateDNSLabel(l) != nil {
				return fmt.Errorf("ClusterDomain %q must be DNS labels separated by dots, such as cluster.local", api.TruncateText(c.ClusterDomain, 80))
			}
		}
		if len(c.ClusterDomain) > 100 {
			return fmt.Errorf("ClusterDomain is %d characters; at most 100", len(c.ClusterDomain))
		}
	}
	return nil
}

// NodeRange checks that p is one node's pod range in this layout: a block
// of exactly NodeMaskBits inside PodCIDR. What a node record says becomes a
// route on every node, so it is checked again where it does.
func (c ClusterConfig) NodeRange(p netip.Prefix) error {
	base, err := netip.ParsePrefix(c.PodCIDR)
	if err != nil {
		return fmt.Errorf("the cluster's pod range %q does not parse: %w", c.PodCIDR, err)
	}
	switch {
	case !p.IsValid():
		return errors.New("no pod range")
	case p != p.Masked():
		return fmt.Errorf("pod range %s has host bits set", p)
	case p.Bits() != c.NodeMaskBits:
		return fmt.Errorf("pod range %s is not a /%d, the cluster's node range size", p, c.NodeMaskBits)
	case !base.Contains(p.Addr()) || p.Addr().Is4() != base.Addr().Is4():
		return fmt.Errorf("pod range %s is outside the cluster's pod range %s", p, base)
	}
	return nil
}

// allocatePodCIDR returns the lowest block of cc.NodeMaskBits inside
// cc.PodCIDR that no node's PodCIDR overlaps. It depends only on its
// arguments (no map order shows), so every replica picks the same block.
func allocatePodCIDR(cc *ClusterConfig, nodes map[string]api.Node) (netip.Prefix, error) {
	if cc == nil {
		return netip.Prefix{}, fmt.Errorf("no pod range to give: the cluster's pod range is not set yet (a server sets it when the cluster bootstraps); retry shortly: %w", ErrConflict)
	}
	base, err := netip.ParsePrefix(cc.PodCIDR)
	if err != nil { // validated before it was stored; this is corruption
		return netip.Prefix{}, fmt.Errorf("stored cluster PodCIDR %q: %w", cc.PodCIDR, err)
	}
	mask := cc.NodeMaskBits
	total := uint64(1) << (mask - base.Bits())

	// The blocks each node's range covers, as [start, end) index intervals.
	type span struct{ start, end uint64 }
	var used []span
	for _, n := range nodes {
		p, err := netip.ParsePrefix(n.PodCIDR)
		if err != nil {
			continue // none, or not ours to interpret
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
		if !p.IsValid() || !p.Overlaps(base) {
			continue
		}
		switch {
		case p.Bits() <= base.Bits(): // covers the whole cluster range
			used = append(used, span{0, total})
		case p.Bits() >= mask: // inside one block
			i := blockIndex(base, mask, p.Addr())
			used = append(used, span{i, i + 1})
		default: // several blocks
			i := blockIndex(base, mask, p.Addr())
			used = append(used, span{i, i + uint64(1)<<(mask-p.Bits())})
		}
	}
	slices.SortFunc(used, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	var free uint64
	for _, s := range used {
		if s.start > free {
			break
		}
		free = max(free, s.end)
	}
	if free >= total {
		return netip.Prefix{}, fmt.Errorf("no pod range to give: the cluster's pod range %s is exhausted, all %d /%d node ranges are taken; remove nodes that left, or recreate the cluster with a larger pod range or smaller node ranges (a larger NodeMaskBits): %w",
			base, total, mask, ErrConflict)
	}
	return blockPrefix(base, mask, free), nil
}

// blockIndex returns the number formed by bits [base.Bits(), mask) of a:
// which block of base a falls in.
func blockIndex(base netip.Prefix, mask int, a netip.Addr) uint64 {
	b := a.AsSlice()
	var v uint64
	for i := base.Bits(); i < mask; i++ {
		v = v<<1 | uint64(b[i/8]>>(7-i%8)&1)
	}
	return v
}

// blockPrefix is the inverse of blockIndex: block i of base, as a prefix.
func blockPrefix(base netip.Prefix, mask int, i uint64) netip.Prefix {
	b := base.Addr().AsSlice()
	for bit := mask - 1; bit >= base.Bits(); bit-- {
		if i&1 == 1 {
			b[bit/8] |= 1 << (7 - bit%8)
		}
		i >>= 1
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, mask)
}
