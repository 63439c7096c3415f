package podnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Config configures the CNI pod network of one agent. Several agents may share
// a host (lab nodes): give each its own BridgeName, PodCIDR, NetNSPrefix,
// DataDir and ChainPrefix, and no NetNSPrefix may be a prefix of another's.
type Config struct {
	// BridgeName is the Linux bridge the pods attach to (at most 15
	// characters). It is also the CNI network name.
	BridgeName string
	// PodCIDR is this node's IPv4 pod range, e.g. "10.244.0.0/24". Its first
	// address is the gateway, on the bridge; pods get the others.
	PodCIDR string
	// NetNSPrefix starts the name of every pod netns this agent makes:
	// /run/netns/<NetNSPrefix><key>.
	NetNSPrefix string
	// PluginDirs are searched, in order, for the CNI plugin binaries.
	PluginDirs []string
	// DataDir holds host-local's IP allocations (DataDir/ipam) and libcni's
	// result cache (DataDir/cache). It must survive agent restarts.
	DataDir string
	// ChainPrefix names the iptables chains <ChainPrefix>-FWD and
	// <ChainPrefix>-IN in the filter table and, with ClusterCIDR,
	// <ChainPrefix>-MASQ in the nat table (at most 24 characters, 23 with
	// ClusterCIDR, as chain names stop at 28). Host ports are forwarded by
	// the CNI portmap plugin in chains of its own (CNI-HOSTPORT-*, CNI-DN-*).
	ChainPrefix string
	// IPMasq masquerades traffic from pods to outside the pod range. It is
	// ignored when ClusterCIDR is set.
	IPMasq bool
	// ClusterCIDR is the pod range of the whole cluster, e.g.
	// "10.244.0.0/16", which holds PodCIDR and every other node's range.
	// When set, the bridge plugin does not masquerade; the <ChainPrefix>-MASQ
	// chain does instead, for traffic from PodCIDR to outside ClusterCIDR
	// only, so pods on other nodes see the source pod's IP. Empty (a single
	// agent) leaves masquerading to the bridge plugin (IPMasq).
	ClusterCIDR string
	// MTU of the bridge and the pods' interfaces; 0 lets the bridge plugin
	// choose (1500).
	MTU int
	// DenyCIDRs are IPv4 ranges pods may not reach, through the node or on
	// it: <ChainPrefix>-FWD refuses forwarded traffic from the bridge to
	// them and <ChainPrefix>-IN (jumped to from INPUT for the bridge) what
	// is addressed to the node, with a TCP reset or an ICMP error so the
	// pod fails at once rather than after a timeout. The default denies the
	// cloud metadata service, which hands out the node's cloud credentials.
	// Ranges that hold a pod address are refused: pods would lose each other.
	DenyCIDRs []netip.Prefix
	// Logger receives what the network does; nil discards it.
	Logger *slog.Logger
}

// DefaultConfig returns a working configuration for a single agent on a host.
func DefaultConfig() Config {
	return Config{
		BridgeName:  "flotilla0",
		PodCIDR:     "10.244.0.0/24",
		NetNSPrefix: "flt-",
		PluginDirs:  []string{"/usr/lib/cni", "/opt/cni/bin"},
		DataDir:     "/var/lib/flotilla/cni",
		ChainPrefix: "FLOTILLA",
		IPMasq:      true,
		DenyCIDRs:   []netip.Prefix{netip.MustParsePrefix(MetadataCIDR)},
	}
}

// MetadataCIDR is the link-local address of the cloud metadata service
// (AWS, GCP, Azure, OpenStack and others), which pods are denied by default:
// it hands out the node's cloud credentials and user-data.
const MetadataCIDR = "169.254.169.254/32"

const (
	// maxIfName is IFNAMSIZ less the trailing NUL.
	maxIfName = 15
	// maxChainName is XT_EXTENSION_MAXNAMELEN less the trailing NUL.
	maxChainName = 28
	// fwdChainSuffix is appended to ChainPrefix for the FORWARD chain.
	fwdChainSuffix = "-FWD"
	// masqChainSuffix is appended to ChainPrefix for the nat POSTROUTING
	// chain used with ClusterCIDR.
	masqChainSuffix = "-MASQ"
	// inChainSuffix is appended to ChainPrefix for the INPUT chain that
	// refuses DenyCIDRs on the node itself; it is shorter than the others,
	// so the prefix checks below cover it.
	inChainSuffix = "-IN"
	// outChainSuffix is appended to ChainPrefix for the OUTPUT chain that
	// quiets the node's DNS port while it restarts; as long as -FWD.
	outChainSuffix = "-OUT"
	// maxDenyCIDRs bounds DenyCIDRs: each costs four rules.
	maxDenyCIDRs = 64
	// maxNetNSPrefix and maxKey keep prefix+key within a file name (255).
	maxNetNSPrefix = 50
	maxKey         = 200
)

// nameRE is what CNI accepts as a container ID or network name; keys and
// netns prefixes must match it too, so they are safe file names.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// chainRE keeps chain names to characters iptables prints back unquoted.
var chainRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_\-]*$`)

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.BridgeName == "":
		errs = append(errs, errors.New("bridge name is empty; set it, e.g. \"flotilla0\""))
	case len(c.BridgeName) > maxIfName:
		errs = append(errs, fmt.Errorf("bridge name %q is %d characters; Linux allows at most %d", c.BridgeName, len(c.BridgeName), maxIfName))
	case !nameRE.MatchString(c.BridgeName):
		errs = append(errs, fmt.Errorf("bridge name %q has characters other than letters, digits, '_', '.', '-' (or starts with one of the last three)", c.BridgeName))
	}

	pfx, podErr := netip.ParsePrefix(c.PodCIDR)
	if podErr != nil {
		errs = append(errs, fmt.Errorf("pod CIDR %q: %w; want an IPv4 range like \"10.244.0.0/24\"", c.PodCIDR, podErr))
	} else {
		switch {
		case !pfx.Addr().Is4():
			errs = append(errs, fmt.Errorf("pod CIDR %q is not IPv4; only IPv4 pod ranges are supported", c.PodCIDR))
		case pfx.Bits() > 30:
			errs = append(errs, fmt.Errorf("pod CIDR %q is too small; use /30 or larger (the gateway takes one address)", c.PodCIDR))
		case pfx.Masked() != pfx:
			errs = append(errs, fmt.Errorf("pod CIDR %q has host bits set; did you mean %q?", c.PodCIDR, pfx.Masked()))
		}
	}

	if c.ClusterCIDR != "" {
		if cl, err := netip.ParsePrefix(c.ClusterCIDR); err != nil {
			errs = append(errs, fmt.Errorf("cluster CIDR %q: %w; want an IPv4 range like \"10.244.0.0/16\"", c.ClusterCIDR, err))
		} else {
			switch {
			case !cl.Addr().Is4():
				errs = append(errs, fmt.Errorf("cluster CIDR %q is not IPv4; only IPv4 pod ranges are supported", c.ClusterCIDR))
			case cl.Masked() != cl:
				errs = append(errs, fmt.Errorf("cluster CIDR %q has host bits set; did you mean %q?", c.ClusterCIDR, cl.Masked()))
			case podErr == nil && pfx.Addr().Is4() && (cl.Bits() > pfx.Bits() || !cl.Contains(pfx.Addr())):
				errs = append(errs, fmt.Errorf("pod CIDR %q is not inside cluster CIDR %q; the node's pod range must be part of the cluster's", c.PodCIDR, c.ClusterCIDR))
			}
		}
	}

	switch {
	case c.NetNSPrefix == "":
		errs = append(errs, errors.New("netns prefix is empty; set it, e.g. \"flt-\", so this agent's netns can be told from others'"))
	case len(c.NetNSPrefix) > maxNetNSPrefix:
		errs = append(errs, fmt.Errorf("netns prefix %q is %d characters; at most %d are allowed", c.NetNSPrefix, len(c.NetNSPrefix), maxNetNSPrefix))
	case !nameRE.MatchString(c.NetNSPrefix):
		errs = append(errs, fmt.Errorf("netns prefix %q has characters other than letters, digits, '_', '.', '-' (or starts with one of the last three)", c.NetNSPrefix))
	}

	if len(c.PluginDirs) == 0 {
		errs = append(errs, errors.New("no CNI plugin directories; set them, e.g. [\"/usr/lib/cni\", \"/opt/cni/bin\"]"))
	}
	for _, d := range c.PluginDirs {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("CNI plugin directory %q is not an absolute path", d))
		}
	}

	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("data dir %q is not an absolute path; set it, e.g. \"/var/lib/flotilla/cni\"", c.DataDir))
	}

	longest := fwdChainSuffix
	if c.ClusterCIDR != "" {
		longest = masqChainSuffix
	}
	switch chain := c.ChainPrefix + longest; {
	case c.ChainPrefix == "":
		errs = append(errs, errors.New("iptables chain prefix is empty; set it, e.g. \"FLOTILLA\""))
	case len(chain) > maxChainName:
		errs = append(errs, fmt.Errorf("iptables chain prefix %q is too long: chain %q has %d characters, iptables allows %d", c.ChainPrefix, chain, len(chain), maxChainName))
	case !chainRE.MatchString(c.ChainPrefix):
		errs = append(errs, fmt.Errorf("iptables chain prefix %q has characters other than letters, digits, '_', '-'", c.ChainPrefix))
	case strings.HasPrefix(c.ChainPrefix, "CNI-"):
		errs = append(errs, fmt.Errorf("iptables chain prefix %q starts with \"CNI-\", which the CNI plugins use for their own chains", c.ChainPrefix))
	}

	if len(c.DenyCIDRs) > maxDenyCIDRs {
		errs = append(errs, fmt.Errorf("%d denied CIDRs; at most %d are allowed", len(c.DenyCIDRs), maxDenyCIDRs))
	}
	for i, p := range c.DenyCIDRs {
		switch {
		case checkDenyCIDR(p) != nil:
			errs = append(errs, fmt.Errorf("denied CIDR: %w", checkDenyCIDR(p)))
		case slices.Contains(c.DenyCIDRs[:i], p):
			errs = append(errs, fmt.Errorf("denied CIDR %s is listed twice", p))
		case podErr == nil && p.Overlaps(pfx):
			errs = append(errs, fmt.Errorf("denied CIDR %s overlaps pod CIDR %s; pods could not reach each other or the gateway", p, c.PodCIDR))
		case c.ClusterCIDR != "" && overlaps(p, c.ClusterCIDR):
			errs = append(errs, fmt.Errorf("denied CIDR %s overlaps cluster CIDR %s; pods could not reach pods on other nodes", p, c.ClusterCIDR))
		}
	}

	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("MTU %d is out of range; use 576..65535, or 0 for the plugin default", c.MTU))
	}

	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid pod network config: %w", err)
	}
	return nil
}

// fwdChain is the filter-table chain that accepts the bridge's traffic.
func (c Config) fwdChain() string { return c.ChainPrefix + fwdChainSuffix }

// masqChain is the nat-table chain that masquerades pod traffic leaving the
// cluster (used with ClusterCIDR).
func (c Config) masqChain() string { return c.ChainPrefix + masqChainSuffix }

// inChain is the filter-table chain INPUT jumps to for the bridge's
// traffic, which refuses DenyCIDRs on the node itself.
func (c Config) inChain() string { return c.ChainPrefix + inChainSuffix }

// outChain is the filter-table chain OUTPUT jumps to for the bridge's
// traffic (see outputRules).
func (c Config) outChain() string { return c.ChainPrefix + outChainSuffix }

func overlaps(p netip.Prefix, cidr string) bool {
	q, err := netip.ParsePrefix(cidr)
	return err == nil && p.Overlaps(q)
}

// checkDenyCIDR reports whether p can become a deny rule: a masked IPv4
// prefix (pods have IPv4 addresses only, and the rules are iptables', not
// ip6tables').
func checkDenyCIDR(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("an invalid prefix; want an IPv4 range like \"169.254.169.254/32\"")
	case !p.Addr().Is4():
		return fmt.Errorf("%s is not IPv4; pods have IPv4 addresses only", p)
	case p.Masked() != p:
		return fmt.Errorf("%s has host bits set; did you mean %s?", p, p.Masked())
	}
	return nil
}

// ParseDenyCIDRs parses ranges pods may not reach (Config.DenyCIDRs), as
// flags or configuration give them: "169.254.169.254/32", or an address
// alone for a /32. It reports every bad value at once. Overlaps with the
// pod ranges are checked by Config.Validate.
func ParseDenyCIDRs(values []string) ([]netip.Prefix, error) {
	var (
		out  []netip.Prefix
		errs []error
	)
	for _, v := range values {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				errs = append(errs, fmt.Errorf("%q is not an IPv4 range like \"169.254.169.254/32\" or an address", v))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err := checkDenyCIDR(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.Contains(out, p) {
			errs = append(errs, fmt.Errorf("%s is listed twice", p))
			continue
		}
		out = append(out, p)
	}
	if len(out) > maxDenyCIDRs {
		errs = append(errs, fmt.Errorf("%d ranges; at most %d are allowed", len(out), maxDenyCIDRs))
	}
	return out, errors.Join(errs...)
}

// validKey reports whether key can be a CNI container ID and part of a
// file name (the pod's netns, libcni's cache files): never a path of its
// own, so no "/", "..", NUL or name longer than a file name allows.
func validKey(key string) error {
	switch {
	case key == "":
		return errors.New("pod key is empty")
	case len(key) > maxKey:
		return fmt.Errorf("pod key %q... is %d characters; at most %d are allowed", key[:32], len(key), maxKey)
	case strings.ContainsRune(key, 0):
		return fmt.Errorf("pod key %q holds a NUL byte", key)
	case strings.ContainsRune(key, '/'):
		return fmt.Errorf("pod key %q holds a '/'; it would name a path outside the netns directory", key)
	case key == "." || key == "..":
		return fmt.Errorf("pod key %q names a directory, not a pod", key)
	case strings.Contains(key, ".."):
		return fmt.Errorf("pod key %q holds \"..\"", key)
	case !nameRE.MatchString(key):
		return fmt.Errorf("pod key %q must start with a letter or digit and hold only letters, digits, '_', '.', '-'", key)
	}
	return nil
}

// inboundFrom is the range whose new connections the FORWARD chain lets
// into the pod bridge: the cluster's pod range, or this node's alone. An
// invalid configuration yields the zero prefix, which forwardRules refuses.
func (c Config) inboundFrom() netip.Prefix {
	r := c.ClusterCIDR
	if r == "" {
		r = c.PodCIDR
	}
	p, err := netip.ParsePrefix(r)
	if err != nil {
		return netip.Prefix{}
	}
	return p.Masked()
}
