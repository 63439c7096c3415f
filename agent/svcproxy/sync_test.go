package svcproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// manyServices is n Services ns/svc-<i> on 10.96.<i/256>.<i%256>:80, each
// with three endpoints; with nodePorts, Service i also has node port 30000+i.
func manyServices(n int, nodePorts bool) State {
	st := State{Endpoints: map[ServicePortKey][]EndpointAddr{}}
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		p := ServicePort{Protocol: "tcp", Port: 80}
		if nodePorts {
			p.NodePort = uint16(30000 + i)
		}
		st.Services = append(st.Services, Service{Namespace: "ns", Name: name, ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Ports: []ServicePort{p}})
		for j := range 3 {
			st.Endpoints[key("ns", name, "")] = append(st.Endpoints[key("ns", name, "")],
				EndpointAddr{IP: netip.AddrFrom4([4]byte{10, 244, byte(2 + j), byte(i)}), Port: 8080})
		}
	}
	return st
}

// clone copies st deeply enough to change one Service's endpoints.
func clone(st State) State {
	out := State{Services: slices.Clone(st.Services), Endpoints: map[ServicePortKey][]EndpointAddr{}}
	for k, v := range st.Endpoints {
		out.Endpoints[k] = slices.Clone(v)
	}
	return out
}

func newTestSyncer(t *testing.T, cfg Config, app Applier) *Syncer {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := NewSyncer(cfg, app)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSync(t *testing.T, s *Syncer, st State) SyncStats {
	t.Helper()
	stats, err := s.Sync(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return stats
}

// checkConverged fails unless the fake holds exactly the chains Render
// makes of st under the prefix, and each wanted jump once, first in its
// chain.
func checkConverged(t *testing.T, f *FakeApplier, cfg Config, st State) {
	t.Helper()
	rs, err := Render(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range []*table{&rs.filter, &rs.nat} {
		out, err := f.Save(context.Background(), tb.name)
		if err != nil {
			t.Fatal(err)
		}
		have, err := parseSave(out, cfg.chainPrefix())
		if err != nil {
			t.Fatal(err)
		}
		want := stateOf(tb)
		if len(have.chains) != len(want.chains) {
			t.Errorf("%s: %d chains of ours, want %d", tb.name, len(have.chains), len(want.chains))
		}
		for name, rules := range want.chains {
			if got, ok := have.chains[name]; !ok || !slices.Equal(got, rules) {
				t.Errorf("%s chain %s = %q (exists %v), want %q", tb.name, name, got, ok, rules)
			}
		}
		for parent, j := range want.jumps {
			if got := have.jumps[parent]; !slices.Equal(got, j) {
				t.Errorf("%s %s: jumps into ours %v, want %v", tb.name, parent, got, j)
			}
		}
	}
}

// declared returns the chains a restore input declares (writes or flushes).
func declared(input []byte) []string {
	var out []string
	for _, line := range strings.Split(string(input), "\n") {
		if name, ok := strings.CutPrefix(line, ":"); ok {
			name, _, _ = strings.Cut(name, " ")
			out = append(out, name)
		}
	}
	return out
}

func TestSyncFromEmpty(t *testing.T) {
	cfg := testConfig()
	cfg.ChainsPerRestore = 40
	f := NewFakeApplier()
	s := newTestSyncer(t, cfg, f)
	st := manyServices(300, true)
	stats := mustSync(t, s, st)
	checkConverged(t, f, cfg, st)

	// 300 Service chains and 64 shards in batches of at most 40 Service
	// chains (a shard goes with the batch that holds its last one), then
	// the fixed chains and jumps.
	restores := f.Restores()
	if stats.Restores != len(restores) || stats.ServicePorts != 300 || stats.ChainsWritten != 300+64+5 || stats.ChainsDeleted != 0 || stats.JumpsFixed != 6 {
		t.Errorf("stats = %+v (%d restores)", stats, len(restores))
	}
	svcRE := regexp.MustCompile(`^` + cfg.chainPrefix() + `[A-Z2-7]{13}$`)
	for i, in := range restores[:len(restores)-1] {
		n := 0
		for _, c := range declared(in) {
			if svcRE.MatchString(c) {
				n++
			}
		}
		if n == 0 || n > cfg.ChainsPerRestore {
			t.Errorf("restore %d declares %d Service chains, want 1..%d", i, n, cfg.ChainsPerRestore)
		}
	}
	if want := (300+64+cfg.ChainsPerRestore-1)/cfg.ChainsPerRestore + 1; len(restores) != want {
		t.Errorf("%d restores, want %d", len(restores), want)
	}
	final := string(restores[len(restores)-1])
	if !strings.HasPrefix(final, "*filter\n") || !strings.Contains(final, "-I PREROUTING 1 ") || !strings.Contains(final, ":"+cfg.servicesChain()+" ") {
		t.Errorf("last restore does not hold the fixed chains and jumps:\n%s", final)
	}

	// Nothing changed: nothing written.
	f.ClearRestores()
	if stats := mustSync(t, s, st); stats.Restores != 0 || len(f.Restores()) != 0 {
		t.Fatalf("re-sync of the same state: %+v", stats)
	}
}

func TestSyncEndpointChangeRewritesOneChain(t *testing.T) {
	cfg := testConfig()
	f := NewFakeApplier()
	s := newTestSyncer(t, cfg, f)
	st := manyServices(200, false)
	mustSync(t, s, st)

	tests := []struct {
		name   string
		change func(State)
	}{
		{"endpoint added", func(st State) {
			k := key("ns", "svc-17", "")
			st.Endpoints[k] = append(st.Endpoints[k], ep("10.244.9.9:8080"))
		}},
		{"endpoint removed", func(st State) { k := key("ns", "svc-17", ""); st.Endpoints[k] = st.Endpoints[k][1:] }},
		{"last endpoint gone", func(st State) { delete(st.Endpoints, key("ns", "svc-17", "")) }},
		{"endpoints back", func(st State) {}},
	}
	rs, _ := Render(cfg, st)
	var chain string
	for _, c := range rs.nat.chains {
		if c.kind == kindService && slices.ContainsFunc(c.rules, func(r string) bool { return strings.Contains(r, "10.244.2.17:8080") }) {
			chain = c.name
		}
	}
	cur := st
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "endpoints back" {
				cur = st
			} else {
				cur = clone(cur)
				tt.change(cur)
			}
			f.ClearRestores()
			stats := mustSync(t, s, cur)
			restores := f.Restores()
			if len(restores) != 1 || stats.ChainsWritten != 1 || stats.ChainsDeleted != 0 {
				t.Fatalf("%d restores, stats %+v; want one restore writing one chain", len(restores), stats)
			}
			if got := declared(restores[0]); !slices.Equal(got, []string{chain}) {
				t.Fatalf("restore declares %v, want only %s:\n%s", got, chain, restores[0])
			}
			checkConverged(t, f, cfg, cur)
		})
	}
}

func TestSyncAddRemoveService(t *testing.T) {
	cfg := testConfig()
	f := NewFakeApplier()
	s := newTestSyncer(t, cfg, f)
	st := manyServices(100, false)
	mustSync(t, s, st)

	// 10.96.0.5 falls in shard 5 with 10.96.0.69.
	added := clone(st)
	added.Services = append(added.Services, Service{Namespace: "ns", Name: "new", ClusterIP: ip("10.96.1.5"), Ports: []ServicePort{{Port: 443, NodePort: 30443}}})
	added.Endpoints[key("ns", "new", "")] = eps("10.244.1.20:8443")
	rs, _ := Render(cfg, added)
	var newChain string
	for _, c := range rs.nat.chains {
		if c.kind == kindService && slices.ContainsFunc(c.rules, func(r string) bool { return strings.Contains(r, "10.244.1.20:8443") }) {
			newChain = c.name
		}
	}

	f.ClearRestores()
	stats := mustSync(t, s, added)
	checkConverged(t, f, cfg, added)
	restores := f.Restores()
	if len(restores) != 2 {
		t.Fatalf("%d restores, want the new chain with its shard, then the node ports and hairpin: %q", len(restores), restores)
	}
	if got, want := declared(restores[0]), []string{newChain, cfg.shardChain(5)}; !slices.Equal(got, want) {
		t.Errorf("first restore declares %v, want %v", got, want)
	}
	if got, want := declared(restores[1]), []string{cfg.nodePortsChain(), cfg.hairpinChain()}; !slices.Equal(got, want) {
		t.Errorf("second restore declares %v, want %v", got, want)
	}
	if stats.ChainsWritten != 4 || stats.ChainsDeleted != 0 {
		t.Errorf("stats = %+v", stats)
	}

	f.ClearRestores()
	stats = mustSync(t, s, st)
	checkConverged(t, f, cfg, st)
	restores = f.Restores()
	if len(restores) != 2 || stats.ChainsWritten != 3 || stats.ChainsDeleted != 1 {
		t.Fatalf("removal: %d restores, stats %+v", len(restores), stats)
	}
	if got, want := declared(restores[0]), []string{cfg.shardChain(5)}; !slices.Equal(got, want) {
		t.Errorf("first restore declares %v, want %v", got, want)
	}
	if !strings.Contains(string(restores[1]), "-X "+newChain+"\n") {
		t.Errorf("second restore does not delete %s:\n%s", newChain, restores[1])
	}

	// A Service in a shard of its own (10.96.9.50: shard 0x32, empty with
	// 40 Services) adds the shard to the top-level chain.
	small := manyServices(40, false)
	f = NewFakeApplier()
	s = newTestSyncer(t, cfg, f)
	mustSync(t, s, small)
	f.ClearRestores()
	alone := clone(small)
	alone.Services = append(alone.Services, Service{Namespace: "ns", Name: "alone", ClusterIP: ip("10.96.9.50"), Ports: []ServicePort{{Port: 80}}})
	mustSync(t, s, alone)
	checkConverged(t, f, cfg, alone)
	restores = f.Restores()
	if len(restores) != 2 || !slices.Contains(declared(restores[0]), cfg.shardChain(0x32)) || !slices.Contains(declared(restores[1]), cfg.servicesChain()) {
		t.Errorf("new shard: restores %q", restores)
	}
}

func TestSyncRestartAdoptsChains(t *testing.T) {
	cfg := testConfig()
	f := NewFakeApplier()
	st := manyServices(150, true)
	mustSync(t, newTestSyncer(t, cfg, f), st)

	// A new Syncer (the agent restarted) finds everything in place.
	f.ClearRestores()
	s := newTestSyncer(t, cfg, f)
	if stats := mustSync(t, s, st); stats.Restores != 0 || len(f.Restores()) != 0 {
		t.Fatalf("restart re-sync wrote: %+v %q", stats, f.Restores())
	}

	// Restarted while a Service lost an endpoint: that chain only.
	f.ClearRestores()
	changed := clone(st)
	k := key("ns", "svc-42", "")
	changed.Endpoints[k] = changed.Endpoints[k][:2]
	s = newTestSyncer(t, cfg, f)
	if stats := mustSync(t, s, changed); stats.Restores != 1 || stats.ChainsWritten != 1 {
		t.Fatalf("restart with one change: %+v %q", stats, f.Restores())
	}
	checkConverged(t, f, cfg, changed)
}

func TestSyncRestartRepairs(t *testing.T) {
	cfg := testConfig()
	st := manyServices(20, true)
	tests := []struct {
		name string
		// mess changes the tables behind the Syncer's back.
		mess        string
		wantDeleted []string
		wantFixed   int
	}{
		{
			name: "jump no longer first",
			mess: "*filter\n:FLOTILLA-FWD - [0:0]\n-A FLOTILLA-FWD -j ACCEPT\n-I FORWARD 1 -j FLOTILLA-FWD\nCOMMIT\n",
			// The jump moves back in front of FLOTILLA-FWD.
			wantFixed: 1,
		},
		{
			name:      "jump doubled and one missing",
			mess:      "*nat\n-I PREROUTING 1 -m comment --comment \"flotilla services\" -j FLOTILLA-SVC-SERVICES\n-D OUTPUT -m comment --comment \"flotilla services\" -j FLOTILLA-SVC-SERVICES\nCOMMIT\n",
			wantFixed: 2,
		},
		{
			name:        "orphan chain of ours",
			mess:        "*nat\n:FLOTILLA-SVC-ORPHAN7ORPHAN - [0:0]\n-A FLOTILLA-SVC-ORPHAN7ORPHAN -j DNAT --to-destination 10.244.9.9:80\nCOMMIT\n",
			wantDeleted: []string{"FLOTILLA-SVC-ORPHAN7ORPHAN"},
		},
		{
			name: "chain flushed by hand",
			mess: "*nat\n:FLOTILLA-SVC-D05 - [0:0]\nCOMMIT\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFakeApplier()
			mustSync(t, newTestSyncer(t, cfg, f), st)
			if err := f.Restore(context.Background(), []byte(tt.mess)); err != nil {
				t.Fatal(err)
			}
			foreign, _ := f.Save(context.Background(), filterTable)
			f.ClearRestores()
			stats := mustSync(t, newTestSyncer(t, cfg, f), st)
			checkConverged(t, f, cfg, st)
			if stats.JumpsFixed != tt.wantFixed || stats.ChainsDeleted != len(tt.wantDeleted) {
				t.Errorf("stats = %+v, want %d jumps fixed and %v deleted", stats, tt.wantFixed, tt.wantDeleted)
			}
			if strings.Contains(string(foreign), "FLOTILLA-FWD") {
				out, _ := f.Save(context.Background(), filterTable)
				if !strings.Contains(string(out), "-A FORWARD -m mark --mark 0x8000/0x8000 -m comment --comment \"flotilla service rejects\" -j FLOTILLA-SVC-REJECT\n-A FORWARD -j FLOTILLA-FWD\n") {
					t.Errorf("FORWARD is not ours first, then the pod network's:\n%s", out)
				}
			}
		})
	}
}

func TestSyncShardsChangedOnRestart(t *testing.T) {
	cfg := testConfig()
	f := NewFakeApplier()
	st := manyServices(100, false)
	mustSync(t, newTestSyncer(t, cfg, f), st)

	cfg.Shards = 4
	f.ClearRestores()
	stats := mustSync(t, newTestSyncer(t, cfg, f), st)
	checkConverged(t, f, cfg, st)
	// Service chains are unchanged; shards 00..03 are refilled with a
	// quarter of the Services each, the top-level chain is rewritten, the
	// 60 other shards go.
	if stats.ChainsWritten != 5 || stats.ChainsDeleted != 60 {
		t.Errorf("stats = %+v", stats)
	}
}

func TestSyncFailedRestoreRereads(t *testing.T) {
	cfg := testConfig()
	cfg.ChainsPerRestore = 10
	f := NewFakeApplier()
	s := newTestSyncer(t, cfg, f)
	st := manyServices(50, false)
	calls := 0
	errBoom := errors.New("boom")
	f.FailRestore = func([]byte) error {
		calls++
		if calls == 3 {
			return errBoom
		}
		return nil
	}
	if _, err := s.Sync(context.Background(), st); !errors.Is(err, errBoom) {
		t.Fatalf("Sync = %v, want %v", err, errBoom)
	}
	f.FailRestore = nil
	f.ClearRestores()
	stats := mustSync(t, s, st)
	checkConverged(t, f, cfg, st)
	// The two batches that went through are not written again.
	if stats.ChainsWritten >= 50+64+5-20 {
		t.Errorf("after a failure the Syncer rewrote %d chains; it should have read what was there", stats.ChainsWritten)
	}
}

func TestSyncSkippedEntries(t *testing.T) {
	cfg := testConfig()
	f := NewFakeApplier()
	s := newTestSyncer(t, cfg, f)
	st := web("10.244.2.7:8080", "10.244.2.8:0")
	st.Services = append(st.Services, Service{Namespace: "default", Name: "v6", ClusterIP: ip("fd00::1"), Ports: []ServicePort{{Port: 80}}})
	stats := mustSync(t, s, st)
	if stats.Skipped != 2 || stats.ServicePorts != 1 {
		t.Fatalf("stats = %+v, want 2 skipped, 1 Service port", stats)
	}
	checkConverged(t, f, cfg, st)
}

func TestCleanup(t *testing.T) {
	cfg := testConfig()
	f := NewFakeApplier()
	ctx := context.Background()
	// The pod network's chains share the prefix and must stay.
	podnet := "*filter\n:FLOTILLA-FWD - [0:0]\n-A FLOTILLA-FWD -i flotilla0 -j ACCEPT\n-I FORWARD 1 -j FLOTILLA-FWD\nCOMMIT\n" +
		"*nat\n:FLOTILLA-MASQ - [0:0]\n-A FLOTILLA-MASQ -s 10.244.1.0/24 -j MASQUERADE\n-I POSTROUTING 1 -j FLOTILLA-MASQ\nCOMMIT\n"
	if err := f.Restore(ctx, []byte(podnet)); err != nil {
		t.Fatal(err)
	}
	var before [2][]byte
	for i, tb := range []string{filterTable, natTable} {
		before[i], _ = f.Save(ctx, tb)
	}
	s := newTestSyncer(t, cfg, f)
	mustSync(t, s, manyServices(30, true))
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for i, tb := range []string{filterTable, natTable} {
		after, _ := f.Save(ctx, tb)
		if string(after) != string(before[i]) {
			t.Errorf("%s after Cleanup:\n%s\nwant:\n%s", tb, after, before[i])
		}
	}
	// Again: nothing to do. Then a Sync rebuilds everything.
	f.ClearRestores()
	if err := s.Cleanup(ctx); err != nil || len(f.Restores()) != 0 {
		t.Fatalf("second Cleanup = %v, %d restores", err, len(f.Restores()))
	}
	mustSync(t, s, manyServices(30, true))
	checkConverged(t, f, cfg, manyServices(30, true))
}

func TestNewSyncerChecks(t *testing.T) {
	if _, err := NewSyncer(Config{}, NewFakeApplier()); err == nil {
		t.Error("zero Config accepted")
	}
	if _, err := NewSyncer(DefaultConfig(), nil); err == nil {
		t.Error("nil Applier accepted")
	}
}

func TestFakeApplierIsStrict(t *testing.T) {
	ctx := context.Background()
	for _, in := range []string{
		"*nat\n-A PREROUTING -j NOPE\nCOMMIT\n",                      // no such chain
		"*nat\n:A - [0:0]\n-A A -j RETURN\n-X A\nCOMMIT\n",           // not empty
		"*nat\n:A - [0:0]\n-A PREROUTING -j A\n-X A\nCOMMIT\n",       // jumped to
		"*nat\n-D PREROUTING -j RETURN\nCOMMIT\n",                    // no such rule
		"*nat\n:A - [0:0]\nCOMMIT\n*filter\n-A INPUT -j B\nCOMMIT\n", // all or nothing
		"*nat\n:A - [0:0]\n",                                         // no COMMIT
	} {
		f := NewFakeApplier()
		if err := f.Restore(ctx, []byte(in)); err == nil {
			t.Errorf("accepted %q", in)
		}
		if out, _ := f.Save(ctx, natTable); strings.Contains(string(out), ":A ") {
			t.Errorf("%q left chain A behind", in)
		}
	}
}

// stateOf is what a table holds once t is applied.
func stateOf(t *table) *tableState {
	st := &tableState{chains: make(map[string][]string, len(t.chains)), jumps: map[string][]foundJump{}}
	for _, c := range t.chains {
		st.chains[c.name] = c.rules
	}
	for _, j := range t.jumps {
		st.jumps[j.parent] = []foundJump{{index: 0, rule: j.rule}}
	}
	return st
}
