package podnet

import (
	"errors"
	"fmt"
	"github.com/flotilla-io/flotilla/internal/iptrule"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fakeIPTables is an in-memory filter and nat table that behaves like
// iptables where podnet relies on it: -N fails on an existing chain, -D on a
// missing rule, -X on a chain something still jumps to, -C on a missing
// chain is "no such rule" (go-iptables maps exit 1 to false), and -S quotes
// arguments with spaces the way iptables does.
type fakeIPTables struct {
	tables map[string]*fakeTable
	writes int
	failOn string // method name that returns errFakeIPT
}

type fakeTable struct {
	chains map[string][][]string // chain -> rules, each a rulespec
	order  []string              // chain creation order, for a stable dump
}

var builtinChains = map[string][]string{
	filterTable: {"INPUT", "FORWARD", "OUTPUT"},
	natTable:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

func newFakeIPTables() *fakeIPTables {
	f := &fakeIPTables{tables: map[string]*fakeTable{}}
	for table, chains := range builtinChains {
		t := &fakeTable{chains: map[string][][]string{}}
		for _, c := range chains {
			t.chains[c] = nil
			t.order = append(t.order, c)
		}
		f.tables[table] = t
	}
	return f
}

var errFakeIPT = errors.New("fake iptables failure")

func (f *fakeIPTables) table(method, table string) (*fakeTable, error) {
	if f.failOn == method {
		return nil, errFakeIPT
	}
	t, ok := f.tables[table]
	if !ok {
		return nil, fmt.Errorf("unexpected table %q", table)
	}
	return t, nil
}

// set replaces a chain's rules, creating the chain; rules are split on spaces.
func (f *fakeIPTables) set(table, chain string, rules ...string) {
	t := f.tables[table]
	if _, ok := t.chains[chain]; !ok {
		t.order = append(t.order, chain)
	}
	t.chains[chain] = nil
	for _, r := range rules {
		t.chains[chain] = append(t.chains[chain], strings.Fields(r))
	}
}

func (t *fakeTable) index(chain string, rulespec []string) int {
	return slices.IndexFunc(t.chains[chain], func(r []string) bool { return slices.Equal(r, rulespec) })
}

func (f *fakeIPTables) ChainExists(table, chain string) (bool, error) {
	t, err := f.table("ChainExists", table)
	if err != nil {
		return false, err
	}
	_, ok := t.chains[chain]
	return ok, nil
}

func (f *fakeIPTables) NewChain(table, chain string) error {
	t, err := f.table("NewChain", table)
	if err != nil {
		return err
	}
	if _, ok := t.chains[chain]; ok {
		return fmt.Errorf("iptables: Chain %s already exists", chain)
	}
	f.writes++
	t.chains[chain] = nil
	t.order = append(t.order, chain)
	return nil
}

func (f *fakeIPTables) Exists(table, chain string, rulespec ...string) (bool, error) {
	t, err := f.table("Exists", table)
	if err != nil {
		return false, err
	}
	return t.index(chain, rulespec) >= 0, nil
}

func (f *fakeIPTables) Insert(table, chain string, pos int, rulespec ...string) error {
	t, err := f.table("Insert", table)
	if err != nil {
		return err
	}
	rules, ok := t.chains[chain]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("iptables: cannot insert at %s %d", chain, pos)
	}
	f.writes++
	t.chains[chain] = slices.Insert(rules, pos-1, rulespec)
	return nil
}

func (f *fakeIPTables) Append(table, chain string, rulespec ...string) error {
	t, err := f.table("Append", table)
	if err != nil {
		return err
	}
	if _, ok := t.chains[chain]; !ok {
		return fmt.Errorf("iptables: No chain/target/match by that name (%s)", chain)
	}
	f.writes++
	t.chains[chain] = append(t.chains[chain], rulespec)
	return nil
}

func (f *fakeIPTables) Delete(table, chain string, rulespec ...string) error {
	t, err := f.table("Delete", table)
	if err != nil {
		return err
	}
	i := t.index(chain, rulespec)
	if len(rulespec) == 1 { // -D chain <rule number>
		if n, err := strconv.Atoi(rulespec[0]); err == nil {
			if n < 1 || n > len(t.chains[chain]) {
				return fmt.Errorf("iptables: Index of deletion too big")
			}
			i = n - 1
		}
	}
	if i < 0 {
		return fmt.Errorf("iptables: Bad rule (does a matching rule exist in that chain?)")
	}
	f.writes++
	t.chains[chain] = slices.Delete(t.chains[chain], i, i+1)
	return nil
}

func (f *fakeIPTables) ClearAndDeleteChain(table, chain string) error {
	t, err := f.table("ClearAndDeleteChain", table)
	if err != nil {
		return err
	}
	if _, ok := t.chains[chain]; !ok {
		return nil
	}
	for other, rules := range t.chains {
		for _, r := range rules {
			if iptrule.ArgAfter(r, "-j") == chain {
				return fmt.Errorf("iptables: Too many links (%s jumps to %s)", other, chain)
			}
		}
	}
	f.writes++
	delete(t.chains, chain)
	t.order = slices.DeleteFunc(t.order, func(c string) bool { return c == chain })
	return nil
}

func (f *fakeIPTables) List(table, chain string) ([]string, error) {
	t, err := f.table("List", table)
	if err != nil {
		return nil, err
	}
	rules, ok := t.chains[chain]
	if !ok {
		return nil, fmt.Errorf("iptables: No chain/target/match by that name (%s)", chain)
	}
	out := []string{"-P " + chain + " ACCEPT"}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+quoteArgs(r))
	}
	return out, nil
}

func (f *fakeIPTables) ListChains(table string) ([]string, error) {
	t, err := f.table("ListChains", table)
	if err != nil {
		return nil, err
	}
	return slices.Clone(t.order), nil
}

// quoteArgs joins args the way `iptables -S` prints them.
func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"\\") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// dump renders a table like `iptables -S`, without policies.
func (f *fakeIPTables) dump(table string) []string {
	t := f.tables[table]
	var out []string
	for _, c := range t.order {
		if !slices.Contains(builtinChains[table], c) {
			out = append(out, "-N "+c)
		}
	}
	for _, c := range t.order {
		for _, r := range t.chains[c] {
			out = append(out, "-A "+c+" "+quoteArgs(r))
		}
	}
	return out
}

var _ iptablesAPI = (*fakeIPTables)(nil)

// Rules as `iptables -S` prints them for bridge flotilla0 and the default
// denied range.
const (
	denyTCP   = "-d 169.254.169.254/32 -i flotilla0 -p tcp -j REJECT --reject-with tcp-reset"
	denyOther = "-d 169.254.169.254/32 -i flotilla0 -j REJECT --reject-with icmp-admin-prohibited"
	acceptIn  = "-i flotilla0 -j ACCEPT"
	// acceptOutOld is what agents before the inbound restriction let into
	// the bridge: everything.
	acceptOutOld = "-o flotilla0 -j ACCEPT"
	// localnetGuardRule is localnetGuard as `iptables -S` prints it.
	localnetGuardRule = "-d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP"
)

var (
	metadataOnly = []netip.Prefix{netip.MustParsePrefix(MetadataCIDR)}
	// testFrom is the cluster range the tests let into the bridge.
	testFrom = netip.MustParsePrefix("10.244.0.0/16")
	// inbound are the rules for what enters the bridge, as iptables -S
	// prints them.
	inbound = []string{
		"-o flotilla0 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT",
		"-s 10.244.0.0/16 -o flotilla0 -j ACCEPT",
		"-o flotilla0 -j DROP",
	}
)

// inChain prefixes rules with "-A chain ".
func inChain(chain string, rules ...string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = "-A " + chain + " " + r
	}
	return out
}

func TestForwardAndInputRules(t *testing.T) {
	deny := []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("10.96.0.0/12")}
	fwd, err := forwardRules("br0", deny, testFrom)
	if err != nil {
		t.Fatal(err)
	}
	wantFwd := [][]string{
		strings.Fields("-d 169.254.169.254/32 -i br0 -p tcp -j REJECT --reject-with tcp-reset"),
		strings.Fields("-d 169.254.169.254/32 -i br0 -j REJECT --reject-with icmp-admin-prohibited"),
		strings.Fields("-d 10.96.0.0/12 -i br0 -p tcp -j REJECT --reject-with tcp-reset"),
		strings.Fields("-d 10.96.0.0/12 -i br0 -j REJECT --reject-with icmp-admin-prohibited"),
		strings.Fields("-i br0 -j ACCEPT"),
		strings.Fields("-o br0 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT"),
		strings.Fields("-s 10.244.0.0/16 -o br0 -j ACCEPT"),
		strings.Fields("-o br0 -j DROP"),
	}
	if !reflect.DeepEqual(fwd, wantFwd) {
		t.Errorf("forwardRules:\n got %q\nwant %q", fwd, wantFwd)
	}
	in, err := inputRules(deny)
	if err != nil {
		t.Fatal(err)
	}
	// iptables prints a /32 conntrack address without the length.
	wantIn := [][]string{
		strings.Fields(localnetGuardRule),
		strings.Fields("-p tcp -m conntrack --ctorigdst 169.254.169.254 -j REJECT --reject-with tcp-reset"),
		strings.Fields("-m conntrack --ctorigdst 169.254.169.254 -j REJECT --reject-with icmp-admin-prohibited"),
		strings.Fields("-p tcp -m conntrack --ctorigdst 10.96.0.0/12 -j REJECT --reject-with tcp-reset"),
		strings.Fields("-m conntrack --ctorigdst 10.96.0.0/12 -j REJECT --reject-with icmp-admin-prohibited"),
	}
	if !reflect.DeepEqual(in, wantIn) {
		t.Errorf("inputRules:\n got %q\nwant %q", in, wantIn)
	}
	if fwd, err := forwardRules("br0", nil, testFrom); err != nil || len(fwd) != 4 {
		t.Errorf("forwardRules without denied ranges = %q, %v; want the four rules of the bridge", fwd, err)
	}
	// Without a cluster range nothing may enter: no rules at all.
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("10.244.1.0/16"), netip.MustParsePrefix("fd00::/64")} {
		if _, err := forwardRules("br0", nil, bad); err == nil {
			t.Errorf("forwardRules accepted the cluster range %v", bad)
		}
	}

	// A range that is not a masked IPv4 prefix never becomes a rule.
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("169.254.169.254/16")} {
		if _, err := forwardRules("br0", []netip.Prefix{bad}, testFrom); err == nil {
			t.Errorf("forwardRules accepted %v", bad)
		}
		if _, err := inputRules([]netip.Prefix{bad}); err == nil {
			t.Errorf("inputRules accepted %v", bad)
		}
	}
}

func TestEnsureForwardRules(t *testing.T) {
	const chain, bridge = "FLOTILLA-FWD", "flotilla0"
	wantChain := inChain("FLOTILLA-FWD", slices.Concat([]string{denyTCP, denyOther, acceptIn}, inbound)...)
	tests := []struct {
		name       string
		deny       []netip.Prefix
		setup      func(f *fakeIPTables)
		want       []string
		wantWrites int
	}{
		{
			name: "fresh table with docker's rules: jump goes first",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "FORWARD", "-j DOCKER-USER", "-o docker0 -j ACCEPT")
			},
			want: slices.Concat([]string{
				"-N FLOTILLA-FWD",
				"-A FORWARD -j FLOTILLA-FWD",
				"-A FORWARD -j DOCKER-USER",
				"-A FORWARD -o docker0 -j ACCEPT",
			}, wantChain),
			wantWrites: 8, // chain, six rules, jump
		},
		{
			name: "already in place: nothing written",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "FORWARD", "-j FLOTILLA-FWD")
				f.set(filterTable, chain, slices.Concat([]string{denyTCP, denyOther, acceptIn}, inbound)...)
			},
			want:       slices.Concat([]string{"-N FLOTILLA-FWD", "-A FORWARD -j FLOTILLA-FWD"}, wantChain),
			wantWrites: 0,
		},
		{
			name: "upgrade from an agent without deny rules: they go ahead of the ACCEPTs",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "FORWARD", "-j FLOTILLA-FWD")
				f.set(filterTable, chain, acceptIn, acceptOutOld)
			},
			want:       slices.Concat([]string{"-N FLOTILLA-FWD", "-A FORWARD -j FLOTILLA-FWD"}, wantChain),
			wantWrites: 8, // the rules after the first ACCEPT rewritten in order
		},
		{
			name: "half done: rules put in order",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, chain, acceptIn, denyTCP)
			},
			want:       slices.Concat([]string{"-N FLOTILLA-FWD", "-A FORWARD -j FLOTILLA-FWD"}, wantChain),
			wantWrites: 9, // rules rewritten in order, jump
		},
		{
			name: "jump already present further down is not duplicated",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "FORWARD", "-j DOCKER-USER", "-j FLOTILLA-FWD")
			},
			want: slices.Concat([]string{
				"-N FLOTILLA-FWD",
				"-A FORWARD -j DOCKER-USER",
				"-A FORWARD -j FLOTILLA-FWD",
			}, wantChain),
			wantWrites: 7, // chain, six rules
		},
		{
			name: "nothing denied (--pod-deny-cidr none): only the ACCEPTs, old deny rules go",
			deny: nil,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "FORWARD", "-j FLOTILLA-FWD")
				f.set(filterTable, chain, denyTCP, denyOther, acceptIn, acceptOutOld)
			},
			want: slices.Concat([]string{
				"-N FLOTILLA-FWD",
				"-A FORWARD -j FLOTILLA-FWD",
			}, inChain("FLOTILLA-FWD", append([]string{acceptIn}, inbound...)...)),
			wantWrites: 8, // deny rules and the old ACCEPT go, the inbound rules come
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIPTables()
			tt.setup(f)
			f.writes = 0
			if err := ensureForwardRules(f, chain, bridge, tt.deny, testFrom); err != nil {
				t.Fatal(err)
			}
			if got := f.dump(filterTable); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("rules:\n got %q\nwant %q", got, tt.want)
			}
			if f.writes != tt.wantWrites {
				t.Errorf("writes = %d, want %d", f.writes, tt.wantWrites)
			}
			// A second run (agent restart) changes nothing.
			before, writes := f.dump(filterTable), f.writes
			if err := ensureForwardRules(f, chain, bridge, tt.deny, testFrom); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(f.dump(filterTable), before) || f.writes != writes {
				t.Errorf("second run changed rules: %q", f.dump(filterTable))
			}
		})
	}

	t.Run("invalid range: nothing written", func(t *testing.T) {
		f := newFakeIPTables()
		err := ensureForwardRules(f, chain, bridge, []netip.Prefix{netip.MustParsePrefix("fd00::/8")}, testFrom)
		if err == nil || !strings.Contains(err.Error(), "not IPv4") || !strings.Contains(err.Error(), chain) {
			t.Fatalf("err = %v, want one naming the chain and the bad range", err)
		}
		if f.writes != 0 {
			t.Errorf("%d writes for an invalid range", f.writes)
		}
	})
}

func TestEnsureInputRules(t *testing.T) {
	const chain, bridge = "FLOTILLA-IN", "flotilla0"
	const (
		inTCP   = "-p tcp -m conntrack --ctorigdst 169.254.169.254 -j REJECT --reject-with tcp-reset"
		inOther = "-m conntrack --ctorigdst 169.254.169.254 -j REJECT --reject-with icmp-admin-prohibited"
	)
	want := []string{
		"-N FLOTILLA-IN",
		"-A INPUT -i flotilla0 -j FLOTILLA-IN",
		"-A INPUT -i lo -j ACCEPT",
		"-A FLOTILLA-IN " + localnetGuardRule,
		"-A FLOTILLA-IN " + inTCP,
		"-A FLOTILLA-IN " + inOther,
	}
	tests := []struct {
		name       string
		deny       []netip.Prefix
		setup      func(f *fakeIPTables)
		want       []string
		wantWrites int
	}{
		{
			name:       "fresh: jump for the bridge goes first",
			deny:       metadataOnly,
			setup:      func(*fakeIPTables) {},
			want:       want,
			wantWrites: 5, // chain, three rules, jump
		},
		{
			name: "in place: nothing written",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "INPUT", "-i flotilla0 -j FLOTILLA-IN", "-i lo -j ACCEPT")
				f.set(filterTable, chain, localnetGuardRule, inTCP, inOther)
			},
			want:       want,
			wantWrites: 0,
		},
		{
			name: "upgrade from an agent without the loopback guard: it goes first",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "INPUT", "-i flotilla0 -j FLOTILLA-IN", "-i lo -j ACCEPT")
				f.set(filterTable, chain, inTCP, inOther)
			},
			want:       want,
			wantWrites: 5, // three inserts, two deletes
		},
		{
			name: "bridge renamed: the old jump goes",
			deny: metadataOnly,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "INPUT", "-i lo -j ACCEPT", "-i old0 -j FLOTILLA-IN")
				f.set(filterTable, chain, localnetGuardRule, inTCP, inOther)
			},
			want:       want,
			wantWrites: 2, // jump inserted, old one deleted
		},
		{
			name: "nothing denied: the chain keeps the loopback guard alone",
			deny: nil,
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "INPUT", "-i flotilla0 -j FLOTILLA-IN", "-i lo -j ACCEPT")
				f.set(filterTable, chain, localnetGuardRule, inTCP, inOther)
			},
			want: []string{
				"-N FLOTILLA-IN",
				"-A INPUT -i flotilla0 -j FLOTILLA-IN",
				"-A INPUT -i lo -j ACCEPT",
				"-A FLOTILLA-IN " + localnetGuardRule,
			},
			wantWrites: 4, // guard inserted, three old rules deleted
		},
		{
			name:  "nothing denied, fresh: chain with the guard and jump",
			deny:  nil,
			setup: func(*fakeIPTables) {},
			want: []string{
				"-N FLOTILLA-IN",
				"-A INPUT -i flotilla0 -j FLOTILLA-IN",
				"-A INPUT -i lo -j ACCEPT",
				"-A FLOTILLA-IN " + localnetGuardRule,
			},
			wantWrites: 3, // chain, guard, jump
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIPTables()
			f.set(filterTable, "INPUT", "-i lo -j ACCEPT")
			tt.setup(f)
			f.writes = 0
			for i := range 2 { // idempotent
				if err := ensureInputRules(f, chain, bridge, tt.deny); err != nil {
					t.Fatal(err)
				}
				if got := f.dump(filterTable); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("run %d rules:\n got %q\nwant %q", i+1, got, tt.want)
				}
				if f.writes != tt.wantWrites {
					t.Errorf("run %d: writes = %d, want %d", i+1, f.writes, tt.wantWrites)
				}
			}
			if got := f.dump(natTable); len(got) != 0 {
				t.Errorf("nat table touched: %q", got)
			}
		})
	}

	f := newFakeIPTables()
	f.set(filterTable, "INPUT", "-i lo -j ACCEPT")
	if err := ensureInputRules(f, chain, bridge, metadataOnly); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := removeInputRules(f, chain); err != nil {
			t.Fatal(err)
		}
		if got, want := f.dump(filterTable), []string{"-A INPUT -i lo -j ACCEPT"}; !reflect.DeepEqual(got, want) {
			t.Errorf("after remove:\n got %q\nwant %q", got, want)
		}
	}
}

func TestRemoveForwardRules(t *testing.T) {
	const chain = "FLOTILLA-FWD"
	tests := []struct {
		name  string
		setup func(f *fakeIPTables)
		want  []string
	}{
		{
			name: "installed by ensure",
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "FORWARD", "-j DOCKER-USER")
				if err := ensureForwardRules(f, chain, "flotilla0", metadataOnly, testFrom); err != nil {
					panic(err)
				}
			},
			want: []string{"-A FORWARD -j DOCKER-USER"},
		},
		{
			name: "duplicate jumps all go",
			setup: func(f *fakeIPTables) {
				f.set(filterTable, "FORWARD", "-j FLOTILLA-FWD", "-j OTHER", "-j FLOTILLA-FWD")
				f.set(filterTable, chain, "-i flotilla0 -j ACCEPT")
			},
			want: []string{"-A FORWARD -j OTHER"},
		},
		{
			name:  "nothing installed",
			setup: func(*fakeIPTables) {},
			want:  nil,
		},
		{
			name: "other agents' chains stay",
			setup: func(f *fakeIPTables) {
				if err := ensureForwardRules(f, "OTHER-FWD", "other0", nil, testFrom); err != nil {
					panic(err)
				}
				if err := ensureForwardRules(f, chain, "flotilla0", metadataOnly, testFrom); err != nil {
					panic(err)
				}
			},
			want: []string{
				"-N OTHER-FWD",
				"-A FORWARD -j OTHER-FWD",
				"-A OTHER-FWD -i other0 -j ACCEPT",
				"-A OTHER-FWD -o other0 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT", "-A OTHER-FWD -s 10.244.0.0/16 -o other0 -j ACCEPT", "-A OTHER-FWD -o other0 -j DROP",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIPTables()
			tt.setup(f)
			for i := range 2 { // idempotent
				if err := removeForwardRules(f, chain); err != nil {
					t.Fatalf("run %d: %v", i+1, err)
				}
				if got := f.dump(filterTable); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("run %d rules:\n got %q\nwant %q", i+1, got, tt.want)
				}
			}
		})
	}
}

func TestForwardRulesErrors(t *testing.T) {
	for _, method := range []string{"ChainExists", "NewChain", "List", "Insert", "Delete"} {
		t.Run("ensure/"+method, func(t *testing.T) {
			f := newFakeIPTables()
			f.set(filterTable, "FORWARD", "-j FLOTILLA-FWD")
			if method != "NewChain" {
				// An older agent's chain, so the old rule must be deleted.
				f.set(filterTable, "FLOTILLA-FWD", acceptIn)
			}
			f.failOn = method
			err := ensureForwardRules(f, "FLOTILLA-FWD", "flotilla0", metadataOnly, testFrom)
			if !errors.Is(err, errFakeIPT) || !strings.Contains(err.Error(), "FLOTILLA-FWD") {
				t.Fatalf("want wrapped error naming the chain, got %v", err)
			}
		})
	}
	for _, method := range []string{"ChainExists", "NewChain", "List", "Insert"} {
		t.Run("ensure-input/"+method, func(t *testing.T) {
			f := newFakeIPTables()
			f.failOn = method
			err := ensureInputRules(f, "FLOTILLA-IN", "flotilla0", metadataOnly)
			if !errors.Is(err, errFakeIPT) || !strings.Contains(err.Error(), "FLOTILLA-IN") {
				t.Fatalf("want wrapped error naming the chain, got %v", err)
			}
		})
	}
	for _, method := range []string{"ChainExists", "List", "Delete", "ClearAndDeleteChain"} {
		t.Run("remove/"+method, func(t *testing.T) {
			f := newFakeIPTables()
			if err := ensureForwardRules(f, "FLOTILLA-FWD", "flotilla0", metadataOnly, testFrom); err != nil {
				t.Fatal(err)
			}
			f.failOn = method
			err := removeForwardRules(f, "FLOTILLA-FWD")
			if !errors.Is(err, errFakeIPT) || !strings.Contains(err.Error(), "FLOTILLA-FWD") {
				t.Fatalf("want wrapped error naming the chain, got %v", err)
			}
		})
	}
}

func TestSplitRule(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{"-A FORWARD -j FLOTILLA-FWD", []string{"-A", "FORWARD", "-j", "FLOTILLA-FWD"}},
		{
			`-A POSTROUTING -s 10.244.0.4/32 -m comment --comment "name: \"flotilla0\" id: \"pod-c\"" -j CNI-c3bcb7047448f313a6a6f247`,
			[]string{"-A", "POSTROUTING", "-s", "10.244.0.4/32", "-m", "comment", "--comment", `name: "flotilla0" id: "pod-c"`, "-j", "CNI-c3bcb7047448f313a6a6f247"},
		},
		{`-A X -m comment --comment "back\\slash"`, []string{"-A", "X", "-m", "comment", "--comment", `back\slash`}},
		{"  -A  X  ", []string{"-A", "X"}},
		{`-A X --comment ""`, []string{"-A", "X", "--comment", ""}},
	}
	for _, tt := range tests {
		got, err := iptrule.Split(tt.line)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("iptrule.Split(%q) = %q, %v; want %q", tt.line, got, err, tt.want)
		}
	}
	if _, err := iptrule.Split(`-A X --comment "open`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestRemoveMasqRules(t *testing.T) {
	// What the bridge plugin installs per pod, as SetupIPMasq does it.
	masq := func(f *fakeIPTables, network, key, ip, chain string) {
		f.set(natTable, chain, "-d 10.244.0.0/24 -j ACCEPT", "! -d 224.0.0.0/4 -j MASQUERADE")
		t := f.tables[natTable]
		t.chains["POSTROUTING"] = append(t.chains["POSTROUTING"],
			[]string{"-s", ip + "/32", "-m", "comment", "--comment", masqComment(network, key), "-j", chain})
	}
	setup := func() *fakeIPTables {
		f := newFakeIPTables()
		f.set(natTable, "POSTROUTING", "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
		masq(f, "flotilla0", "pod-a", "10.244.0.2", "CNI-aaaa")
		masq(f, "flotilla0", "pod-b", "10.244.0.3", "CNI-bbbb")
		masq(f, "flotilla0", "pod-b", "10.244.0.9", "CNI-bbbb") // a stale second address
		masq(f, "other0", "pod-a", "10.9.0.2", "CNI-cccc")      // another agent's pod, same key
		return f
	}
	const (
		ruleA     = `-A POSTROUTING -s 10.244.0.2/32 -m comment --comment "name: \"flotilla0\" id: \"pod-a\"" -j CNI-aaaa`
		ruleOther = `-A POSTROUTING -s 10.9.0.2/32 -m comment --comment "name: \"other0\" id: \"pod-a\"" -j CNI-cccc`
		docker    = "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
	)
	tests := []struct {
		name string
		key  string
		want []string
	}{
		{
			name: "one pod, both its addresses",
			key:  "pod-b",
			want: []string{
				"-N CNI-aaaa",
				"-N CNI-cccc",
				docker,
				ruleA,
				ruleOther,
				"-A CNI-aaaa -d 10.244.0.0/24 -j ACCEPT",
				"-A CNI-aaaa ! -d 224.0.0.0/4 -j MASQUERADE",
				"-A CNI-cccc -d 10.244.0.0/24 -j ACCEPT",
				"-A CNI-cccc ! -d 224.0.0.0/4 -j MASQUERADE",
			},
		},
		{
			name: "every pod of the network",
			key:  "",
			want: []string{
				"-N CNI-cccc",
				docker,
				ruleOther,
				"-A CNI-cccc -d 10.244.0.0/24 -j ACCEPT",
				"-A CNI-cccc ! -d 224.0.0.0/4 -j MASQUERADE",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup()
			for i := range 2 { // idempotent
				if err := removeMasqRules(f, "flotilla0", tt.key); err != nil {
					t.Fatalf("run %d: %v", i+1, err)
				}
			}
			if got := f.dump(natTable); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("nat table:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestMasqRules(t *testing.T) {
	got := masqRules("10.244.1.0/24", "10.244.0.0/16")
	want := [][]string{
		{"-s", "10.244.1.0/24", "-d", "10.244.0.0/16", "-j", "RETURN"},
		{"-s", "10.244.1.0/24", "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("masqRules = %q, want %q", got, want)
	}
}

func TestEnsureMasqRules(t *testing.T) {
	const chain = "FLT-MASQ"
	wantNat := []string{
		"-N FLT-MASQ",
		"-A POSTROUTING -j FLT-MASQ",
		"-A FLT-MASQ -s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN",
		"-A FLT-MASQ -s 10.244.1.0/24 ! -d 224.0.0.0/4 -j MASQUERADE",
	}
	tests := []struct {
		name       string
		setup      func(f *fakeIPTables)
		want       []string
		wantWrites int
	}{
		{
			name:       "fresh",
			setup:      func(*fakeIPTables) {},
			want:       wantNat,
			wantWrites: 4, // chain, two rules, jump
		},
		{
			name: "already there",
			setup: func(f *fakeIPTables) {
				f.set(natTable, "POSTROUTING", "-j FLT-MASQ")
				f.set(natTable, chain,
					"-s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN",
					"-s 10.244.1.0/24 ! -d 224.0.0.0/4 -j MASQUERADE")
			},
			want:       []string{"-N FLT-MASQ", "-A POSTROUTING -j FLT-MASQ", wantNat[2], wantNat[3]},
			wantWrites: 0,
		},
		{
			name: "jump goes first, others' rules kept",
			setup: func(f *fakeIPTables) {
				f.set(natTable, "POSTROUTING", "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
			},
			want: []string{
				"-N FLT-MASQ",
				"-A POSTROUTING -j FLT-MASQ",
				"-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
				wantNat[2], wantNat[3],
			},
			wantWrites: 4,
		},
		{
			name: "only MASQUERADE (half-done run): RETURN goes before it",
			setup: func(f *fakeIPTables) {
				f.set(natTable, chain, "-s 10.244.1.0/24 ! -d 224.0.0.0/4 -j MASQUERADE")
			},
			want:       wantNat,
			wantWrites: 4, // two inserts, one delete, jump
		},
		{
			name: "stale rules of another pod range are replaced",
			setup: func(f *fakeIPTables) {
				f.set(natTable, "POSTROUTING", "-j FLT-MASQ")
				f.set(natTable, chain,
					"-s 10.244.9.0/24 -d 10.244.0.0/16 -j RETURN",
					"-s 10.244.9.0/24 ! -d 224.0.0.0/4 -j MASQUERADE")
			},
			want:       []string{"-N FLT-MASQ", "-A POSTROUTING -j FLT-MASQ", wantNat[2], wantNat[3]},
			wantWrites: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIPTables()
			tt.setup(f)
			f.writes = 0
			if err := ensureMasqRules(f, chain, "10.244.1.0/24", "10.244.0.0/16"); err != nil {
				t.Fatal(err)
			}
			if got := f.dump(natTable); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("nat table:\n got %q\nwant %q", got, tt.want)
			}
			if f.writes != tt.wantWrites {
				t.Errorf("writes = %d, want %d", f.writes, tt.wantWrites)
			}
			// Idempotent: a second run changes nothing.
			f.writes = 0
			if err := ensureMasqRules(f, chain, "10.244.1.0/24", "10.244.0.0/16"); err != nil {
				t.Fatal(err)
			}
			if f.writes != 0 {
				t.Errorf("second run made %d writes", f.writes)
			}
			if got := f.dump(natTable); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("nat table after second run:\n got %q\nwant %q", got, tt.want)
			}
			if got := f.dump(filterTable); len(got) != 0 {
				t.Errorf("filter table touched: %q", got)
			}
		})
	}
}

func TestRemoveMasqChain(t *testing.T) {
	const chain = "FLT-MASQ"
	f := newFakeIPTables()
	f.set(natTable, "POSTROUTING", "-j FLT-MASQ", "-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE", "-j FLT-MASQ")
	f.set(natTable, "OTHER-MASQ", "-j MASQUERADE")
	if err := ensureMasqRules(f, chain, "10.244.1.0/24", "10.244.0.0/16"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent: a second run finds nothing to do
		if err := removeMasqChain(f, chain); err != nil {
			t.Fatal(err)
		}
		want := []string{"-N OTHER-MASQ", "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE", "-A OTHER-MASQ -j MASQUERADE"}
		if got := f.dump(natTable); !reflect.DeepEqual(got, want) {
			t.Fatalf("nat table:\n got %q\nwant %q", got, want)
		}
	}
}

func TestMasqRulesErrors(t *testing.T) {
	for _, method := range []string{"ChainExists", "NewChain", "List", "Insert"} {
		f := newFakeIPTables()
		f.failOn = method
		if err := ensureMasqRules(f, "FLT-MASQ", "10.244.1.0/24", "10.244.0.0/16"); !errors.Is(err, errFakeIPT) {
			t.Errorf("ensure with %s failing: err = %v", method, err)
		}
	}
	for _, method := range []string{"ChainExists", "List", "Delete", "ClearAndDeleteChain"} {
		f := newFakeIPTables()
		f.set(natTable, "POSTROUTING", "-j FLT-MASQ")
		f.set(natTable, "FLT-MASQ")
		f.failOn = method
		if err := removeMasqChain(f, "FLT-MASQ"); !errors.Is(err, errFakeIPT) {
			t.Errorf("remove with %s failing: err = %v", method, err)
		}
	}
}

func TestOutputRules(t *testing.T) {
	got, err := outputRules(netip.MustParseAddr("10.244.1.1"))
	want := [][]string{strings.Fields("-s 10.244.1.1/32 -p icmp -m icmp --icmp-type 3/3 -m u32 --u32 " + dnsQuotedU32 + " -j DROP")}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("outputRules = %q, %v; want %q", got, err, want)
	}
	for _, bad := range []netip.Addr{{}, netip.MustParseAddr("fd00::1")} {
		if _, err := outputRules(bad); err == nil {
			t.Errorf("outputRules(%v) accepted", bad)
		}
	}
}
