package podnet

import (
	"cmp"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flotilla-io/flotilla/internal/iptrule"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Host ports are forwarded by the CNI portmap plugin, the last plugin of
// the conflist, which programs DNAT rules with iptables (nat table) on ADD
// and removes them on DEL. Its layout, which this file reads to remove what
// the plugin may have missed:
//
//	PREROUTING, OUTPUT: -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//	CNI-HOSTPORT-DNAT:  -p tcp -m comment --comment "dnat name: \"<network>\" id: \"<key>\""
//	                    -m multiport --dports 8080 -j CNI-DN-<hash>
//	CNI-DN-<hash>:      -s <pod range> -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK (hairpin)
//	                    -s 127.0.0.1 -p tcp --dport 8080 -j CNI-HOSTPORT-SETMARK (localhost)
//	                    -p tcp --dport 8080 -j DNAT --to-destination <pod IP>:80
//	POSTROUTING:        -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
//	CNI-HOSTPORT-MASQ:  -m mark --mark 0x2000/0x2000 -j MASQUERADE
//
// CNI-HOSTPORT-DNAT, -SETMARK and -MASQ are shared with every other user of
// the plugin in this network namespace; the plugin never removes them, and
// cleanupHostPorts removes them only when nobody uses them. For 127.0.0.1
// the plugin also sets route_localnet on the bridge, which the agent's
// INPUT chain makes safe (see localnetGuard). The plugin shells out to
// iptables, so it works with either backend (nf_tables is Debian's default);
// the integration tests run it for real.

// PortMapping forwards a port of the node to a port of the pod.
type PortMapping struct {
	// HostPort is the port on every address of the node.
	HostPort int
	// ContainerPort is the port on the pod's IP.
	ContainerPort int
	// Protocol is "tcp" or "udp"; "" means "tcp".
	Protocol string
}

func (m PortMapping) String() string {
	return fmt.Sprintf("%d/%s->%d", m.HostPort, m.Protocol, m.ContainerPort)
}

// SetupOption changes what Network.Setup sets up.
type SetupOption func(*setupOptions)

type setupOptions struct {
	portMappings []PortMapping
}

// WithPortMappings makes Setup forward these ports of the node to the pod:
// traffic to any of the node's addresses on HostPort (from other hosts,
// from pods and from the node itself, 127.0.0.1 included) reaches the pod
// IP on ContainerPort. Teardown removes the forwarding. Setup of a pod that
// is already set up makes its forwarding match the mappings given.
// Duplicates are ignored; one host port and protocol mapped to two
// container ports is an error.
func WithPortMappings(m []PortMapping) SetupOption {
	return func(o *setupOptions) { o.portMappings = append(o.portMappings, m...) }
}

func applySetupOptions(opts []SetupOption) setupOptions {
	var o setupOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// normalizePortMappings checks the mappings and returns them with the
// protocol lower-cased and defaulted, without duplicates, sorted by host
// port and protocol; nil for none.
func normalizePortMappings(in []PortMapping) ([]PortMapping, error) {
	var (
		out  []PortMapping
		errs []error
	)
	for _, m := range in {
		m.Protocol = strings.ToLower(m.Protocol)
		if m.Protocol == "" {
			m.Protocol = "tcp"
		}
		switch {
		case m.Protocol != "tcp" && m.Protocol != "udp":
			errs = append(errs, fmt.Errorf("host port %d: protocol %q is not \"tcp\" or \"udp\"", m.HostPort, m.Protocol))
		case m.HostPort < 1 || m.HostPort > 65535:
			errs = append(errs, fmt.Errorf("host port %d is out of range 1..65535", m.HostPort))
		case m.ContainerPort < 1 || m.ContainerPort > 65535:
			errs = append(errs, fmt.Errorf("host port %d/%s: container port %d is out of range 1..65535", m.HostPort, m.Protocol, m.ContainerPort))
		default:
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b PortMapping) int {
		return cmp.Or(cmp.Compare(a.HostPort, b.HostPort), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.ContainerPort, b.ContainerPort))
	})
	out = slices.Compact(out)
	for i := 1; i < len(out); i++ {
		if a, b := out[i-1], out[i]; a.HostPort == b.HostPort && a.Protocol == b.Protocol {
			errs = append(errs, fmt.Errorf("host port %d/%s is mapped to container ports %d and %d; a host port can go to one only", a.HostPort, a.Protocol, a.ContainerPort, b.ContainerPort))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid port mappings: %w", err)
	}
	return out, nil
}

// portMappingsCapability is the CNI capability (and libcni CapabilityArgs
// key) the portmap plugin reads its mappings from (CNI CONVENTIONS.md).
const portMappingsCapability = "portMappings"

// cniPortMapping is one entry of the portMappings capability argument.
type cniPortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// capabilityArgs are libcni's CapabilityArgs for normalized mappings; nil
// for none, so a pod without host ports is set up as before they existed.
func capabilityArgs(pms []PortMapping) map[string]any {
	if len(pms) == 0 {
		return nil
	}
	out := make([]cniPortMapping, len(pms))
	for i, m := range pms {
		out[i] = cniPortMapping{HostPort: m.HostPort, ContainerPort: m.ContainerPort, Protocol: m.Protocol}
	}
	return map[string]any{portMappingsCapability: out}
}

// portMappingsFromCapabilityArgs reads the mappings back from
// CapabilityArgs as libcni's cache returns them (decoded JSON).
func portMappingsFromCapabilityArgs(args map[string]any) ([]PortMapping, error) {
	v, ok := args[portMappingsCapability]
	if !ok || v == nil {
		return nil, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("read cached port mappings: %w", err)
	}
	var entries []cniPortMapping
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("read cached port mappings: %w", err)
	}
	pms := make([]PortMapping, len(entries))
	for i, e := range entries {
		pms[i] = PortMapping{HostPort: e.HostPort, ContainerPort: e.ContainerPort, Protocol: e.Protocol}
	}
	return normalizePortMappings(pms)
}

// The portmap plugin's chain names (plugins/meta/portmap, stable across
// versions: changing them would strand rules on upgrade).
const (
	hostPortDNATChain    = "CNI-HOSTPORT-DNAT"
	hostPortSetMarkChain = "CNI-HOSTPORT-SETMARK"
	hostPortMasqChain    = "CNI-HOSTPORT-MASQ"
	hostPortChainPrefix  = "CNI-DN-"
)

// hostPortCommentPrefix starts the comment the portmap plugin puts on a
// pod's entry rules in CNI-HOSTPORT-DNAT.
func hostPortCommentPrefix(network string) string {
	return fmt.Sprintf(`dnat name: "%s" id: `, network)
}

func hostPortComment(network, key string) string {
	return hostPortCommentPrefix(network) + `"` + key + `"`
}

// hostPortChainName is the pod's chain as the plugin names it:
// CNI-DN- and the hex SHA-512 of network and key, cut to 28 characters.
func hostPortChainName(network, key string) string {
	sum := sha512.Sum512([]byte(network + key))
	return (hostPortChainPrefix + hex.EncodeToString(sum[:]))[:maxChainName]
}

// hostPortEntries returns the rules of CNI-HOSTPORT-DNAT and the pod
// chains that those carrying key's comment jump to (every pod of network
// when key is ""). A missing CNI-HOSTPORT-DNAT is no rules.
func hostPortEntries(ipt iptablesAPI, network, key string) (rules [][]string, chains []string, err error) {
	exists, err := ipt.ChainExists(natTable, hostPortDNATChain)
	if err != nil {
		return nil, nil, fmt.Errorf("iptables: look up nat chain %s: %w", hostPortDNATChain, err)
	}
	if !exists {
		return nil, nil, nil
	}
	rules, err = chainRules(ipt, natTable, hostPortDNATChain)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range rules {
		comment, target := iptrule.ArgAfter(r, "--comment"), iptrule.ArgAfter(r, "-j")
		mine := comment == hostPortComment(network, key)
		if key == "" {
			mine = strings.HasPrefix(comment, hostPortCommentPrefix(network))
		}
		if mine && strings.HasPrefix(target, hostPortChainPrefix) && !slices.Contains(chains, target) {
			chains = append(chains, target)
		}
	}
	return rules, chains, nil
}

// removeHostPortRules removes the portmap plugin's rules and chain of one
// pod, or of every pod of network when key is "". The plugin removes them
// on DEL only when it is given the pod's port mappings, which libcni has
// only in its cache; this needs no state: the pod's chain is found by the
// comment on its entry rules and by the plugin's name for it.
func removeHostPortRules(ipt iptablesAPI, network, key string) error {
	rules, chains, err := hostPortEntries(ipt, network, key)
	if err != nil {
		return err
	}
	if key != "" {
		named := hostPortChainName(network, key)
		exists, err := ipt.ChainExists(natTable, named)
		if err != nil {
			return fmt.Errorf("iptables: look up nat chain %s: %w", named, err)
		}
		if exists && !slices.Contains(chains, named) {
			chains = append(chains, named)
		}
	}
	return removeHostPortChains(ipt, rules, chains)
}

// removeHostPortChains deletes each of chains and the rules of
// CNI-HOSTPORT-DNAT (dnatRules, as listed) that jump to it.
func removeHostPortChains(ipt iptablesAPI, dnatRules [][]string, chains []string) error {
	for _, r := range dnatRules {
		if !slices.Contains(chains, iptrule.ArgAfter(r, "-j")) {
			continue
		}
		if err := ipt.Delete(natTable, hostPortDNATChain, r...); err != nil {
			return fmt.Errorf("iptables: delete host port rule %q from nat %s: %w", r, hostPortDNATChain, err)
		}
	}
	for _, c := range chains {
		if err := ipt.ClearAndDeleteChain(natTable, c); err != nil {
			return fmt.Errorf("iptables: delete host port chain %s: %w", c, err)
		}
	}
	return nil
}

// hostPortDNAT is one DNAT rule of a pod's chain.
type hostPortDNAT struct {
	Protocol string
	HostPort int
	To       netip.AddrPort
}

// wantHostPortDNAT are the DNAT rules that forward pms to ip, sorted.
func wantHostPortDNAT(pms []PortMapping, ip netip.Addr) []hostPortDNAT {
	out := make([]hostPortDNAT, 0, len(pms))
	for _, m := range pms {
		out = append(out, hostPortDNAT{Protocol: m.Protocol, HostPort: m.HostPort, To: netip.AddrPortFrom(ip, uint16(m.ContainerPort))})
	}
	sortHostPortDNAT(out)
	return out
}

func sortHostPortDNAT(s []hostPortDNAT) {
	slices.SortFunc(s, func(a, b hostPortDNAT) int {
		return cmp.Or(cmp.Compare(a.HostPort, b.HostPort), cmp.Compare(a.Protocol, b.Protocol), a.To.Compare(b.To))
	})
}

// liveHostPortDNAT reads the DNAT rules that forward host ports to the
// pod key now, sorted: those of the chains its entry rules jump to.
func liveHostPortDNAT(ipt iptablesAPI, network, key string) ([]hostPortDNAT, error) {
	_, chains, err := hostPortEntries(ipt, network, key)
	if err != nil {
		return nil, err
	}
	var out []hostPortDNAT
	for _, c := range chains {
		rules, err := chainRules(ipt, natTable, c)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			if iptrule.ArgAfter(r, "-j") != "DNAT" {
				continue
			}
			port, err := strconv.Atoi(iptrule.ArgAfter(r, "--dport"))
			to, err2 := netip.ParseAddrPort(iptrule.ArgAfter(r, "--to-destination"))
			if err != nil || err2 != nil {
				return nil, fmt.Errorf("iptables: unexpected rule %q in nat %s", r, c)
			}
			out = append(out, hostPortDNAT{Protocol: iptrule.ArgAfter(r, "-p"), HostPort: port, To: to})
		}
	}
	sortHostPortDNAT(out)
	return out, nil
}

// otherChainRules reads a nat chain that somebody else's portmap plugin
// may be deleting right now (Flotilla's agents delete them under the host
// port lock; other CNI users on the host do not): a read that fails is
// tried again once the chain has had time to go, and gone says it went.
func otherChainRules(ipt iptablesAPI, chain string) (rules [][]string, gone bool, err error) {
	if rules, err = chainRules(ipt, natTable, chain); err == nil {
		return rules, false, nil
	}
	time.Sleep(100 * time.Millisecond)
	if exists, eerr := ipt.ChainExists(natTable, chain); eerr == nil && !exists {
		return nil, true, nil
	}
	rules, err = chainRules(ipt, natTable, chain)
	return rules, false, err
}

// cleanupHostPorts removes every host port rule of network: the chains
// entry rules with its comment jump to, then any other pod chain that
// forwards into podCIDR (left by a DEL that removed the entry rules but
// failed before the chain). The shared chains go too when nothing uses
// them any more; the plugin makes them again on its next ADD.
func cleanupHostPorts(ipt iptablesAPI, network string, podCIDR netip.Prefix) error {
	if err := removeHostPortRules(ipt, network, ""); err != nil {
		return err
	}
	all, err := ipt.ListChains(natTable)
	if err != nil {
		return fmt.Errorf("iptables: list nat chains: %w", err)
	}
	var mine, others []string
	for _, c := range all {
		if !strings.HasPrefix(c, hostPortChainPrefix) {
			continue
		}
		rules, gone, err := otherChainRules(ipt, c)
		if err != nil {
			return err
		}
		if gone {
			continue
		}
		ours := slices.ContainsFunc(rules, func(r []string) bool {
			to, err := netip.ParseAddrPort(iptrule.ArgAfter(r, "--to-destination"))
			return iptrule.ArgAfter(r, "-j") == "DNAT" && err == nil && podCIDR.Contains(to.Addr())
		})
		if ours {
			mine = append(mine, c)
		} else {
			others = append(others, c)
		}
	}
	if len(mine) > 0 {
		rules, _, err := hostPortEntries(ipt, network, "")
		if err != nil {
			return err
		}
		if err := removeHostPortChains(ipt, rules, mine); err != nil {
			return err
		}
	}

	// The shared chains, when no pod of anybody's uses them.
	rules, _, err := hostPortEntries(ipt, network, "")
	if err != nil || len(rules) > 0 || len(others) > 0 {
		return err
	}
	if err := removeChain(ipt, natTable, hostPortDNATChain, "PREROUTING", "OUTPUT"); err != nil {
		return err
	}
	if err := removeChain(ipt, natTable, hostPortMasqChain, "POSTROUTING"); err != nil {
		return err
	}
	return removeChain(ipt, natTable, hostPortSetMarkChain)
}
