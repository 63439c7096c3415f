package svcproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/flotilla-io/flotilla/internal/iptrule"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// FakeApplier is an in-memory filter and nat table for tests of code that
// uses a Syncer: it records every Restore input and applies it with
// iptables-restore --noflush's rules where the Syncer relies on them, and
// strictly: a declared chain is flushed; a jump to a chain that does not
// exist, -D of a missing rule, -X of a chain that is built in, not empty or
// still jumped to all fail the whole input, which then changes nothing.
// Rules are kept as written, so Save prints them back verbatim.
type FakeApplier struct {
	mu       sync.Mutex
	tables   map[string]*fakeTable
	restores [][]byte
	// FailRestore, when set, is called with each Restore input before it is
	// applied; an error it returns fails that Restore, which changes nothing.
	FailRestore func(input []byte) error
}

type fakeTable struct {
	builtin []string
	chains  map[string][]string // chain -> rules, without "-A <chain> "
}

var fakeBuiltins = map[string][]string{
	filterTable: {"INPUT", "FORWARD", "OUTPUT"},
	natTable:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// fakeTargets are the targets the fake knows are not chains.
var fakeTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "REJECT": true, "DNAT": true, "SNAT": true,
	"MASQUERADE": true, "MARK": true, "CONNMARK": true, "LOG": true, "REDIRECT": true,
}

// NewFakeApplier returns empty filter and nat tables.
func NewFakeApplier() *FakeApplier {
	f := &FakeApplier{tables: map[string]*fakeTable{}}
	for name, builtin := range fakeBuiltins {
		t := &fakeTable{builtin: builtin, chains: map[string][]string{}}
		for _, c := range builtin {
			t.chains[c] = nil
		}
		f.tables[name] = t
	}
	return f
}

// Restores returns a copy of every input given to Restore, in order,
// including those that failed.
func (f *FakeApplier) Restores() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.restores)
}

// ClearRestores forgets the recorded inputs.
func (f *FakeApplier) ClearRestores() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores = nil
}

// Restore implements Applier.
func (f *FakeApplier) Restore(_ context.Context, input []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores = append(f.restores, bytes.Clone(input))
	if f.FailRestore != nil {
		if err := f.FailRestore(input); err != nil {
			return err
		}
	}
	staged := map[string]*fakeTable{}
	var (
		cur    *fakeTable
		curNam string
	)
	sc := bufio.NewScanner(bytes.NewReader(input))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		fail := func(format string, a ...any) error {
			return fmt.Errorf("fake iptables-restore: line %d failed (%q): %s", n, line, fmt.Sprintf(format, a...))
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			if cur != nil {
				return fail("table %s not committed", curNam)
			}
			curNam = line[1:]
			base, ok := staged[curNam]
			if !ok {
				if base, ok = f.tables[curNam]; !ok {
					return fail("no table %q", curNam)
				}
			}
			cur = &fakeTable{builtin: base.builtin, chains: maps.Clone(base.chains)}
		case line == "COMMIT":
			if cur == nil {
				return fail("COMMIT outside a table")
			}
			staged[curNam] = cur
			cur = nil
		case cur == nil:
			return fail("outside a table")
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if !slices.Contains(cur.builtin, name) {
				cur.chains[name] = nil // created or flushed
			}
		default:
			if err := cur.apply(line); err != nil {
				return fail("%v", err)
			}
		}
	}
	if cur != nil {
		return fmt.Errorf("fake iptables-restore: table %s not committed", curNam)
	}
	maps.Copy(f.tables, staged)
	return nil
}

// apply runs one command line (-A, -I, -D, -X, -F, -N) on t.
func (t *fakeTable) apply(line string) error {
	cmd, rest, _ := strings.Cut(line, " ")
	name, rule, _ := strings.Cut(rest, " ")
	rules, exists := t.chains[name]
	if !exists {
		if cmd == "-N" {
			t.chains[name] = nil
			return nil
		}
		return fmt.Errorf("no chain %q", name)
	}
	checkTarget := func(rule string) error {
		args, err := iptrule.Split(rule)
		if err != nil {
			return err
		}
		for _, flag := range []string{"-j", "-g"} {
			if target := iptrule.ArgAfter(args, flag); target != "" && !fakeTargets[target] {
				if _, ok := t.chains[target]; !ok || slices.Contains(t.builtin, target) {
					return fmt.Errorf("no chain/target %q", target)
				}
			}
		}
		return nil
	}
	switch cmd {
	case "-A":
		if err := checkTarget(rule); err != nil {
			return err
		}
		t.chains[name] = append(slices.Clip(rules), rule)
	case "-I":
		pos := 1
		if num, r, ok := strings.Cut(rule, " "); ok {
			if p, err := strconv.Atoi(num); err == nil {
				pos, rule = p, r
			}
		}
		if pos < 1 || pos > len(rules)+1 {
			return fmt.Errorf("index %d out of range", pos)
		}
		if err := checkTarget(rule); err != nil {
			return err
		}
		t.chains[name] = slices.Insert(slices.Clone(rules), pos-1, rule)
	case "-D":
		i := slices.Index(rules, rule)
		if p, err := strconv.Atoi(rule); err == nil {
			i = p - 1
		}
		if i < 0 || i >= len(rules) {
			return fmt.Errorf("no rule %q in %s", rule, name)
		}
		t.chains[name] = slices.Delete(slices.Clone(rules), i, i+1)
	case "-F":
		t.chains[name] = nil
	case "-N":
		return fmt.Errorf("chain %q exists", name)
	case "-X":
		switch {
		case slices.Contains(t.builtin, name):
			return fmt.Errorf("cannot delete built-in chain %s", name)
		case len(rules) > 0:
			return fmt.Errorf("chain %s is not empty", name)
		}
		for other, rs := range t.chains {
			for _, r := range rs {
				if args, _ := iptrule.Split(r); iptrule.ArgAfter(args, "-j") == name || iptrule.ArgAfter(args, "-g") == name {
					return fmt.Errorf("chain %s is jumped to from %s", name, other)
				}
			}
		}
		delete(t.chains, name)
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

// Save implements Applier, in iptables-save's layout: built-in chains
// first, then the others by name.
func (f *FakeApplier) Save(_ context.Context, table string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return nil, fmt.Errorf("fake iptables-save: no table %q", table)
	}
	var b bytes.Buffer
	b.WriteString("# Generated by FakeApplier\n*" + table + "\n")
	var user []string
	for name := range t.chains {
		if !slices.Contains(t.builtin, name) {
			user = append(user, name)
		}
	}
	slices.Sort(user)
	for _, c := range t.builtin {
		b.WriteString(":" + c + " ACCEPT [0:0]\n")
	}
	for _, c := range user {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range append(slices.Clone(t.builtin), user...) {
		for _, r := range t.chains[c] {
			b.WriteString("-A " + c + " " + r + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes(), nil
}
