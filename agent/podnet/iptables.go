package podnet

import (
	"fmt"
	"github.com/flotilla-io/flotilla/internal/iptrule"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// iptablesAPI is the part of coreos/go-iptables podnet calls, so the rule
// logic can be tested against fakeIPTables without root.
type iptablesAPI interface {
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	ClearAndDeleteChain(table, chain string) error
	List(table, chain string) ([]string, error)
	ListChains(table string) ([]string, error)
}

const (
	filterTable = "filter"
	natTable    = "nat"
)

// forwardRules are the rules of the agent's FORWARD chain. First, traffic
// from the pod bridge to each denied range is refused (see rejectRules);
// then everything out of the bridge is let through, whatever the FORWARD
// policy is (docker sets it to DROP) and whether or not br_netfilter makes
// bridged pod-to-pod traffic pass iptables. Into the bridge only what the
// cluster sends is let through: replies, what a DNAT sent there (a service
// address, a node port, a host port: the ways in from outside), and new
// connections from the cluster's range from (pods on other nodes, and
// other nodes themselves, whose routes to pod ranges carry their bridge
// address as source); the rest is dropped, so a host on the node's network
// cannot reach a pod by its IP. from and deny must hold masked IPv4
// prefixes (checkDenyCIDR); the rules are rendered the way `iptables -S`
// prints them, so syncChain finds them unchanged.
func forwardRules(bridge string, deny []netip.Prefix, from netip.Prefix) ([][]string, error) {
	if !from.IsValid() || !from.Addr().Is4() || from != from.Masked() {
		return nil, fmt.Errorf("the cluster range %v that may reach pods must be a masked IPv4 prefix", from)
	}
	var rules [][]string
	for _, p := range deny {
		if err := checkDenyCIDR(p); err != nil {
			return nil, err
		}
		rules = append(rules, rejectRules([]string{"-d", p.String(), "-i", bridge}, nil)...)
	}
	return append(rules,
		[]string{"-i", bridge, "-j", "ACCEPT"},
		[]string{"-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "ACCEPT"},
		[]string{"-s", from.String(), "-o", bridge, "-j", "ACCEPT"},
		[]string{"-o", bridge, "-j", "DROP"},
	), nil
}

// localnetGuard drops new connections a pod sends to the node's loopback
// range (127.0.0.0/8) over the bridge. The portmap plugin sets
// route_localnet on the bridge, so that 127.0.0.1:<host port> on the node
// reaches pods; that also makes the kernel accept such packets from the
// bridge, and a pod that may forge packets (CAP_NET_RAW) could reach
// services that listen on the node's loopback only (CVE-2020-8558, which
// kube-proxy closes with the same rule). Replies to the node's own
// connections to a host port arrive from the bridge addressed to 127.0.0.1
// too and are ESTABLISHED.
var localnetGuard = []string{"-d", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED", "-j", "DROP"}

// inputRules are the rules of the agent's INPUT chain, which INPUT jumps to
// for traffic from the pod bridge: localnetGuard first, then the rules
// that refuse what a pod sends to the node itself for a denied range, such
// as a metadata proxy on the host. Those match the destination the pod
// asked for (conntrack's original destination), so a proxy reached through
// a DNAT of the denied address to a node address is refused too. deny must
// be checked as for forwardRules.
func inputRules(deny []netip.Prefix) ([][]string, error) {
	rules := [][]string{slices.Clone(localnetGuard)}
	for _, p := range deny {
		if err := checkDenyCIDR(p); err != nil {
			return nil, err
		}
		// The conntrack match prints a /32 as a bare address.
		dst := p.String()
		if p.IsSingleIP() {
			dst = p.Addr().String()
		}
		rules = append(rules, rejectRules(nil, []string{"-m", "conntrack", "--ctorigdst", dst})...)
	}
	return rules, nil
}

// rejectRules refuses what matches: TCP with a reset, so a connection is
// refused at once, and all else with ICMP administratively prohibited,
// which fails a send at once too, where DROP would leave the pod waiting
// for a timeout. addr holds the matches iptables prints before -p (-d, -i),
// ext those it prints after (-m ...).
func rejectRules(addr, ext []string) [][]string {
	rule := func(proto []string, with string) []string {
		r := slices.Concat(addr, proto, ext)
		return append(r, "-j", "REJECT", "--reject-with", with)
	}
	return [][]string{
		rule([]string{"-p", "tcp"}, "tcp-reset"),
		rule(nil, "icmp-admin-prohibited"),
	}
}

// ensureForwardRules makes chain hold forwardRules and the first thing
// FORWARD does. It leaves a chain already in that state alone, so running it
// on a live node never opens a gap in which pod traffic is dropped or a
// denied range is reachable.
func ensureForwardRules(ipt iptablesAPI, chain, bridge string, deny []netip.Prefix, from netip.Prefix) error {
	want, err := forwardRules(bridge, deny, from)
	if err != nil {
		return fmt.Errorf("iptables: rules for %s: %w", chain, err)
	}
	if err := syncChain(ipt, filterTable, chain, want); err != nil {
		return err
	}
	// First in FORWARD: ahead of docker's and anybody else's DROPs.
	return ensureJump(ipt, filterTable, "FORWARD", chain, []string{"-j", chain})
}

// removeForwardRules undoes ensureForwardRules. Missing pieces are fine.
func removeForwardRules(ipt iptablesAPI, chain string) error {
	return removeChain(ipt, filterTable, chain, "FORWARD")
}

// ensureInputRules makes chain hold inputRules and INPUT jump to it first
// for traffic from bridge. Without denied ranges the chain holds
// localnetGuard alone, so clearing the list (--pod-deny-cidr none) takes
// effect on restart.
func ensureInputRules(ipt iptablesAPI, chain, bridge string, deny []netip.Prefix) error {
	want, err := inputRules(deny)
	if err != nil {
		return fmt.Errorf("iptables: rules for %s: %w", chain, err)
	}
	if err := syncChain(ipt, filterTable, chain, want); err != nil {
		return err
	}
	return ensureJump(ipt, filterTable, "INPUT", chain, []string{"-i", bridge, "-j", chain})
}

// removeInputRules undoes ensureInputRules. Missing pieces are fine.
func removeInputRules(ipt iptablesAPI, chain string) error {
	return removeChain(ipt, filterTable, chain, "INPUT")
}

// outputRules are the rules of the agent's OUTPUT chain for the bridge:
// the node sends pods no "port unreachable" for their DNS queries to the
// bridge address gw. The node's DNS server runs in the agent, so it is
// gone for the moment the agent restarts; a query answered by an ICMP
// error then fails at once in the pod (glibc, Go and musl resolvers give
// up on a refused server), while a query that gets nothing is asked again
// after the resolver's timeout (1 s in the resolv.conf the node writes),
// by when the new agent answers. The u32 match reads the UDP destination
// port of the query the ICMP error quotes (outer header length, 8 bytes
// of ICMP header, inner header length, then the port), so errors for
// other ports still go out.
func outputRules(gw netip.Addr) ([][]string, error) {
	if !gw.Is4() {
		return nil, fmt.Errorf("the bridge address %v must be IPv4", gw)
	}
	return [][]string{{"-s", gw.String() + "/32", "-p", "icmp", "-m", "icmp", "--icmp-type", "3/3",
		"-m", "u32", "--u32", dnsQuotedU32, "-j", "DROP"}}, nil
}

// dnsQuotedU32 is the u32 test "the ICMP error quotes a datagram to port
// 53", as iptables -S prints it.
const dnsQuotedU32 = "0x0>>0x16&0x3c@0x8>>0x16&0x3c@0x8&0xffff=0x35"

// ensureOutputRules makes chain hold outputRules and OUTPUT jump to it
// first for traffic to bridge.
func ensureOutputRules(ipt iptablesAPI, chain, bridge string, gw netip.Addr) error {
	want, err := outputRules(gw)
	if err != nil {
		return fmt.Errorf("iptables: rules for %s: %w", chain, err)
	}
	if err := syncChain(ipt, filterTable, chain, want); err != nil {
		return err
	}
	return ensureJump(ipt, filterTable, "OUTPUT", chain, []string{"-o", bridge, "-j", chain})
}

// removeOutputRules undoes ensureOutputRules. Missing pieces are fine.
func removeOutputRules(ipt iptablesAPI, chain string) error {
	return removeChain(ipt, filterTable, chain, "OUTPUT")
}

// syncChain makes chain in table exist and hold exactly want, in order.
// When it already does it changes nothing; otherwise (changed settings, a
// half-done earlier run) it puts the wanted rules first and only then
// deletes the old ones, so there is never a moment without them.
func syncChain(ipt iptablesAPI, table, chain string, want [][]string) error {
	exists, err := ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("iptables: look up %s chain %s: %w", table, chain, err)
	}
	if !exists {
		if err := ipt.NewChain(table, chain); err != nil {
			return fmt.Errorf("iptables: create %s chain %s: %w", table, chain, err)
		}
	}
	have, err := chainRules(ipt, table, chain)
	if err != nil {
		return err
	}
	if slices.EqualFunc(have, want, slices.Equal) {
		return nil
	}
	for i, rule := range want {
		if err := ipt.Insert(table, chain, i+1, rule...); err != nil {
			return fmt.Errorf("iptables: add rule %v to %s %s: %w", rule, table, chain, err)
		}
	}
	// The old rules now follow the wanted ones; delete them by number.
	for range have {
		if err := ipt.Delete(table, chain, strconv.Itoa(len(want)+1)); err != nil {
			return fmt.Errorf("iptables: delete old rule from %s %s: %w", table, chain, err)
		}
	}
	return nil
}

// ensureJump makes parent (a built-in chain) hold the rule jump, which
// jumps to chain: inserted first when missing, left where it is when
// present. Other rules of parent that jump to chain (made for an earlier
// bridge name) are deleted afterwards.
func ensureJump(ipt iptablesAPI, table, parent, chain string, jump []string) error {
	rules, err := chainRules(ipt, table, parent)
	if err != nil {
		return fmt.Errorf("jump to %s: %w", chain, err)
	}
	if !slices.ContainsFunc(rules, func(r []string) bool { return slices.Equal(r, jump) }) {
		if err := ipt.Insert(table, parent, 1, jump...); err != nil {
			return fmt.Errorf("iptables: insert jump to %s in %s %s: %w", chain, table, parent, err)
		}
	}
	for _, r := range rules {
		if iptrule.ArgAfter(r, "-j") == chain && !slices.Equal(r, jump) {
			if err := ipt.Delete(table, parent, r...); err != nil {
				return fmt.Errorf("iptables: delete old jump to %s from %s %s: %w", chain, table, parent, err)
			}
		}
	}
	return nil
}

// removeChain deletes every rule of the parents (built-in chains) that
// jumps to chain, then chain. A missing chain is fine.
func removeChain(ipt iptablesAPI, table, chain string, parents ...string) error {
	exists, err := ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("iptables: look up %s chain %s: %w", table, chain, err)
	}
	if !exists {
		return nil
	}
	for _, parent := range parents {
		// All of them: a crash between check and insert could have left
		// two, and the chain cannot be deleted while anything jumps to it.
		rules, err := chainRules(ipt, table, parent)
		if err != nil {
			return fmt.Errorf("jumps to %s: %w", chain, err)
		}
		for _, r := range rules {
			if iptrule.ArgAfter(r, "-j") != chain {
				continue
			}
			if err := ipt.Delete(table, parent, r...); err != nil {
				return fmt.Errorf("iptables: delete jump to %s from %s %s: %w", chain, table, parent, err)
			}
		}
	}
	if err := ipt.ClearAndDeleteChain(table, chain); err != nil {
		return fmt.Errorf("iptables: delete %s chain %s: %w", table, chain, err)
	}
	return nil
}

// multicastCIDR is never masqueraded (as the bridge plugin does too).
const multicastCIDR = "224.0.0.0/4"

// masqRules are the rules of the agent's nat MASQ chain: traffic from this
// node's pods to any pod of the cluster keeps its source IP (pod-to-pod
// traffic is not NATed, across nodes included); all else from the pods,
// bar multicast, leaves with the node's address.
func masqRules(podCIDR, clusterCIDR string) [][]string {
	return [][]string{
		{"-s", podCIDR, "-d", clusterCIDR, "-j", "RETURN"},
		{"-s", podCIDR, "!", "-d", multicastCIDR, "-j", "MASQUERADE"},
	}
}

// ensureMasqRules creates chain in the nat table holding exactly
// masqRules, in order, and makes it the first thing POSTROUTING does. It
// changes nothing when that is so already, and never lets traffic go
// unmasqueraded while it changes the rules (see syncChain).
func ensureMasqRules(ipt iptablesAPI, chain, podCIDR, clusterCIDR string) error {
	if err := syncChain(ipt, natTable, chain, masqRules(podCIDR, clusterCIDR)); err != nil {
		return err
	}
	return ensureJump(ipt, natTable, "POSTROUTING", chain, []string{"-j", chain})
}

// chainRules lists the rules of chain as arguments without "-A <chain>".
func chainRules(ipt iptablesAPI, table, chain string) ([][]string, error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("iptables: list %s %s: %w", table, chain, err)
	}
	var rules [][]string
	for _, line := range lines {
		args, err := iptrule.Split(line)
		if err != nil {
			return nil, fmt.Errorf("iptables: parse rule %q of %s %s: %w", line, table, chain, err)
		}
		if len(args) >= 2 && args[0] == "-A" && args[1] == chain {
			rules = append(rules, args[2:])
		}
	}
	return rules, nil
}

// removeMasqChain undoes ensureMasqRules. Missing pieces are fine.
func removeMasqChain(ipt iptablesAPI, chain string) error {
	return removeChain(ipt, natTable, chain, "POSTROUTING")
}

// masqCommentPrefix starts the comment the bridge plugin puts on each
// pod's POSTROUTING rule: `name: "<network>" id: "<container ID>"` (the
// plugins' utils.FormatComment).
func masqCommentPrefix(network string) string { return fmt.Sprintf("name: %q id: ", network) }

func masqComment(network, key string) string {
	return masqCommentPrefix(network) + fmt.Sprintf("%q", key)
}

// removeMasqRules deletes the bridge plugin's masquerade rule and chain of
// one pod, or of every pod of network when key is "". The plugin learns a
// pod's addresses from inside its netns on DEL, so when the netns went first
// it leaves them behind, and the next DEL for the key then fails because
// the chain it reuses is still referenced. Found by comment, not by the
// plugin's chain-name hash, so this keeps working across plugin versions.
func removeMasqRules(ipt iptablesAPI, network, key string) error {
	lines, err := ipt.List(natTable, "POSTROUTING")
	if err != nil {
		return fmt.Errorf("iptables: list nat POSTROUTING: %w", err)
	}
	var chains []string
	for _, line := range lines {
		args, err := iptrule.Split(line)
		if err != nil || len(args) < 3 || args[0] != "-A" || args[1] != "POSTROUTING" {
			continue
		}
		comment, target := iptrule.ArgAfter(args, "--comment"), iptrule.ArgAfter(args, "-j")
		mine := comment == masqComment(network, key)
		if key == "" {
			mine = strings.HasPrefix(comment, masqCommentPrefix(network))
		}
		if !mine || !strings.HasPrefix(target, "CNI-") {
			continue
		}
		if err := ipt.Delete(natTable, "POSTROUTING", args[2:]...); err != nil {
			return fmt.Errorf("iptables: delete masquerade rule %q: %w", line, err)
		}
		if !slices.Contains(chains, target) {
			chains = append(chains, target)
		}
	}
	for _, chain := range chains {
		if err := ipt.ClearAndDeleteChain(natTable, chain); err != nil {
			return fmt.Errorf("iptables: delete masquerade chain %s: %w", chain, err)
		}
	}
	return nil
}
