package podnet

import (
	"errors"
	"fmt"
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
}

const (
	filterTable = "filter"
	natTable    = "nat"
)

// forwardRules are the rules of the agent's FORWARD chain: let everything
// into and out of the pod bridge through, whatever the FORWARD policy is
// (docker sets it to DROP) and whether or not br_netfilter makes bridged
// pod-to-pod traffic pass iptables.
func forwardRules(bridge string) [][]string {
	return [][]string{
		{"-i", bridge, "-j", "ACCEPT"},
		{"-o", bridge, "-j", "ACCEPT"},
	}
}

// ensureForwardRules creates chain with the bridge's rules and makes it the
// first thing FORWARD does. It only adds what is missing, so running it on a
// live node never opens a gap in which pod traffic is dropped.
func ensureForwardRules(ipt iptablesAPI, chain, bridge string) error {
	exists, err := ipt.ChainExists(filterTable, chain)
	if err != nil {
		return fmt.Errorf("iptables: look up chain %s: %w", chain, err)
	}
	if !exists {
		if err := ipt.NewChain(filterTable, chain); err != nil {
			return fmt.Errorf("iptables: create chain %s: %w", chain, err)
		}
	}
	for _, rule := range forwardRules(bridge) {
		ok, err := ipt.Exists(filterTable, chain, rule...)
		if err != nil {
			return fmt.Errorf("iptables: check rule %v in %s: %w", rule, chain, err)
		}
		if !ok {
			if err := ipt.Append(filterTable, chain, rule...); err != nil {
				return fmt.Errorf("iptables: add rule %v to %s: %w", rule, chain, err)
			}
		}
	}
	jump := []string{"-j", chain}
	ok, err := ipt.Exists(filterTable, "FORWARD", jump...)
	if err != nil {
		return fmt.Errorf("iptables: check jump to %s in FORWARD: %w", chain, err)
	}
	if !ok {
		// Position 1: ahead of docker's and anybody else's DROPs.
		if err := ipt.Insert(filterTable, "FORWARD", 1, jump...); err != nil {
			return fmt.Errorf("iptables: insert jump to %s in FORWARD: %w", chain, err)
		}
	}
	return nil
}

// removeForwardRules undoes ensureForwardRules. Missing pieces are fine.
func removeForwardRules(ipt iptablesAPI, chain string) error {
	exists, err := ipt.ChainExists(filterTable, chain)
	if err != nil {
		return fmt.Errorf("iptables: look up chain %s: %w", chain, err)
	}
	if !exists {
		return nil
	}
	jump := []string{"-j", chain}
	// Loop, as a crash between check and insert could have left two jumps;
	// the chain cannot be deleted while anything jumps to it.
	for range 100 {
		ok, err := ipt.Exists(filterTable, "FORWARD", jump...)
		if err != nil {
			return fmt.Errorf("iptables: check jump to %s in FORWARD: %w", chain, err)
		}
		if !ok {
			break
		}
		if err := ipt.Delete(filterTable, "FORWARD", jump...); err != nil {
			return fmt.Errorf("iptables: delete jump to %s from FORWARD: %w", chain, err)
		}
	}
	if err := ipt.ClearAndDeleteChain(filterTable, chain); err != nil {
		return fmt.Errorf("iptables: delete chain %s: %w", chain, err)
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
// masqRules, in order, and makes it the first thing POSTROUTING does. When
// the chain already holds exactly those rules it changes nothing; otherwise
// (a changed pod or cluster range, a half-done earlier run) it puts the
// wanted rules first and only then deletes the old ones, so traffic never
// goes unmasqueraded in between.
func ensureMasqRules(ipt iptablesAPI, chain, podCIDR, clusterCIDR string) error {
	exists, err := ipt.ChainExists(natTable, chain)
	if err != nil {
		return fmt.Errorf("iptables: look up nat chain %s: %w", chain, err)
	}
	if !exists {
		if err := ipt.NewChain(natTable, chain); err != nil {
			return fmt.Errorf("iptables: create nat chain %s: %w", chain, err)
		}
	}
	want := masqRules(podCIDR, clusterCIDR)
	have, err := chainRules(ipt, natTable, chain)
	if err != nil {
		return err
	}
	if !slices.EqualFunc(have, want, slices.Equal) {
		for i, rule := range want {
			if err := ipt.Insert(natTable, chain, i+1, rule...); err != nil {
				return fmt.Errorf("iptables: add rule %v to nat %s: %w", rule, chain, err)
			}
		}
		// The old rules now follow the wanted ones; delete them by number.
		for range have {
			if err := ipt.Delete(natTable, chain, strconv.Itoa(len(want)+1)); err != nil {
				return fmt.Errorf("iptables: delete old rule from nat %s: %w", chain, err)
			}
		}
	}
	jump := []string{"-j", chain}
	ok, err := ipt.Exists(natTable, "POSTROUTING", jump...)
	if err != nil {
		return fmt.Errorf("iptables: check jump to %s in nat POSTROUTING: %w", chain, err)
	}
	if !ok {
		if err := ipt.Insert(natTable, "POSTROUTING", 1, jump...); err != nil {
			return fmt.Errorf("iptables: insert jump to %s in nat POSTROUTING: %w", chain, err)
		}
	}
	return nil
}

// chainRules lists the rules of chain as arguments without "-A <chain>".
func chainRules(ipt iptablesAPI, table, chain string) ([][]string, error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("iptables: list %s %s: %w", table, chain, err)
	}
	var rules [][]string
	for _, line := range lines {
		args, err := splitRule(line)
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
	exists, err := ipt.ChainExists(natTable, chain)
	if err != nil {
		return fmt.Errorf("iptables: look up nat chain %s: %w", chain, err)
	}
	if !exists {
		return nil
	}
	jump := []string{"-j", chain}
	for range 100 {
		ok, err := ipt.Exists(natTable, "POSTROUTING", jump...)
		if err != nil {
			return fmt.Errorf("iptables: check jump to %s in nat POSTROUTING: %w", chain, err)
		}
		if !ok {
			break
		}
		if err := ipt.Delete(natTable, "POSTROUTING", jump...); err != nil {
			return fmt.Errorf("iptables: delete jump to %s from nat POSTROUTING: %w", chain, err)
		}
	}
	if err := ipt.ClearAndDeleteChain(natTable, chain); err != nil {
		return fmt.Errorf("iptables: delete nat chain %s: %w", chain, err)
	}
	return nil
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
		args, err := splitRule(line)
		if err != nil || len(args) < 3 || args[0] != "-A" || args[1] != "POSTROUTING" {
			continue
		}
		comment, target := argAfter(args, "--comment"), argAfter(args, "-j")
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

// argAfter returns the argument following flag, or "".
func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// splitRule splits a line of `iptables -S` into arguments. iptables quotes
// an argument with spaces in double quotes and escapes quotes and backslashes
// in it with a backslash.
func splitRule(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inQuote bool
		inArg   bool
	)
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case inQuote && ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQuote, inArg = !inQuote, true
		case ch == ' ' && !inQuote:
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(ch)
			inArg = true
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quote")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
