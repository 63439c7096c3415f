package state

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"reflect"
	"slices"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// viewFSM is a cluster of two nodes with two pods on n1 and one on n2, at
// indexes: 1 cluster config, 2 node n1, 3 node n2, 4 deployment web, 5 the
// pods.
func viewFSM(t *testing.T) *FSM {
	t.Helper()
	f := NewFSM(nil)
	n1, n2 := nodeRec("n1"), nodeRec("n2")
	n2.Address = "192.0.2.11"
	applyAll(t, f,
		clusterC("10.244.0.0/16", 24),
		registerN(n1), registerN(n2),
		createD(web()),
		putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1"), pod("web-c", "web", "n2")),
	)
	return f
}

// ipStatus is a running status with ip, to tell reports apart.
func ipStatus(ip string) api.PodStatus {
	st := running()
	st.IP = ip
	return st
}

func report(node, id, ip string) Command {
	return statusesP(node, PodStatusUpdate{ID: id, Status: ipStatus(ip)})
}

// summary renders changes as "+index kind key", " deleted" added, with
// indexes relative to base, after checking that they come in index order
// and carry what their kind says. Changes of one index are sorted, since
// their order is not defined.
func summary(t *testing.T, changes []ViewChange, base uint64) []string {
	t.Helper()
	if !slices.IsSortedFunc(changes, func(a, b ViewChange) int { return cmp.Compare(a.Index, b.Index) }) {
		t.Errorf("changes are not in index order: %+v", changes)
	}
	type line struct {
		index uint64
		text  string
	}
	var lines []line
	for _, c := range changes {
		s := fmt.Sprintf("+%d %s %s", c.Index-base, c.Kind, c.Key)
		set := 0
		for _, p := range []bool{c.Pod != nil, c.Node != nil, c.Cluster != nil} {
			if p {
				set++
			}
		}
		switch {
		case c.Deleted:
			s += " deleted"
			if set != 0 {
				t.Errorf("%s carries an object", s)
			}
		case set != 1,
			c.Kind == ViewPod && (c.Pod == nil || c.Pod.ID() != c.Key),
			c.Kind == ViewNode && (c.Node == nil || c.Node.Name != c.Key),
			c.Kind == ViewCluster && (c.Cluster == nil || c.Key != "cluster"):
			t.Errorf("%s does not carry its object: %+v", s, c)
		}
		lines = append(lines, line{c.Index, s})
	}
	slices.SortStableFunc(lines, func(a, b line) int { return cmp.Or(cmp.Compare(a.index, b.index), cmp.Compare(a.text, b.text)) })
	out := []string{}
	for _, l := range lines {
		out = append(out, l.text)
	}
	return out
}

func TestNodeViewReset(t *testing.T) {
	f := viewFSM(t)
	tests := []struct {
		node string
		want []string
	}{
		// A node sees its own pods, every node and the cluster config,
		// each at the index of its last change.
		{"n1", []string{"+1 cluster cluster", "+2 node n1", "+3 node n2", "+5 pod default/web-a", "+5 pod default/web-b"}},
		{"n2", []string{"+1 cluster cluster", "+2 node n1", "+3 node n2", "+5 pod default/web-c"}},
		// A name without pods (a server, say) sees the rest.
		{"s1", []string{"+1 cluster cluster", "+2 node n1", "+3 node n2"}},
	}
	for _, tt := range tests {
		t.Run(tt.node, func(t *testing.T) {
			if !f.NodeViewChanged(tt.node, 0) {
				t.Error("NodeViewChanged(0) is false; since 0 always has something to say")
			}
			changes, reset, now := f.NodeView(tt.node, 0)
			if !reset || now != f.Index() {
				t.Errorf("reset %t now %d, want true %d", reset, now, f.Index())
			}
			if got := summary(t, changes, 0); !slices.Equal(got, tt.want) {
				t.Errorf("view\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestNodeViewChanges(t *testing.T) {
	n3 := nodeRec("n3")
	n3.Address = "192.0.2.13"
	tests := []struct {
		name string
		cmds []Command // applied at base+1, base+2, …
		node string
		want []string
		// check looks further at the changes.
		check func(t *testing.T, changes []ViewChange)
	}{
		{name: "nothing changed", node: "n1", want: []string{}},
		{name: "another node's pod never shows",
			cmds: []Command{report("n2", "default/web-c", "10.244.1.2")},
			node: "n1", want: []string{}},
		{name: "its own pod's status",
			cmds: []Command{report("n2", "default/web-c", "10.244.1.2")},
			node: "n2", want: []string{"+1 pod default/web-c"}},
		{name: "a pod changed three times comes once, as it is now",
			cmds: []Command{
				report("n1", "default/web-a", "10.244.0.1"),
				report("n1", "default/web-a", "10.244.0.2"),
				report("n1", "default/web-a", "10.244.0.3"),
			},
			node: "n1", want: []string{"+3 pod default/web-a"},
			check: func(t *testing.T, changes []ViewChange) {
				if ip := changes[0].Pod.Status.IP; ip != "10.244.0.3" {
					t.Errorf("pod IP %s, want the last report's 10.244.0.3", ip)
				}
			}},
		{name: "a stopped pod",
			cmds: []Command{stopP("default/web-b")},
			node: "n1", want: []string{"+1 pod default/web-b"},
			check: func(t *testing.T, changes []ViewChange) {
				if p := changes[0].Pod; !p.Stop || p.Status.Phase != api.PodTerminating {
					t.Errorf("pod %+v, want it stopping", p)
				}
			}},
		{name: "a removed pod",
			cmds: []Command{stopP("default/web-a"), removeOwnP("n1", "default/web-a")},
			node: "n1", want: []string{"+2 pod default/web-a deleted"}},
		{name: "a pod created and removed in between is deleted",
			cmds: []Command{putP(pod("web-d", "web", "n1")), removeOwnP("n1", "default/web-d")},
			node: "n1", want: []string{"+2 pod default/web-d deleted"}},
		{name: "a node's status",
			cmds: []Command{nodeStatus("n2", api.NodeDown)},
			node: "n1", want: []string{"+1 node n2"},
			check: func(t *testing.T, changes []ViewChange) {
				if s := changes[0].Node.Status; s != api.NodeDown {
					t.Errorf("node status %s, want down", s)
				}
			}},
		{name: "a new node, but not its pods",
			cmds: []Command{registerN(n3), putP(pod("web-d", "web", "n3"))},
			node: "n1", want: []string{"+1 node n3"},
			check: func(t *testing.T, changes []ViewChange) {
				if changes[0].Node.PodCIDR == "" {
					t.Error("the new node has no pod range in the view")
				}
			}},
		{name: "in the order of their last change",
			cmds: []Command{
				report("n1", "default/web-a", "10.244.0.1"),
				nodeStatus("n2", api.NodeDown),
				report("n1", "default/web-b", "10.244.0.2"),
				report("n2", "default/web-c", "10.244.1.2"),
				report("n1", "default/web-a", "10.244.0.3"),
			},
			node: "n1", want: []string{"+2 node n2", "+3 pod default/web-b", "+5 pod default/web-a"}},
		{name: "the node itself removed",
			cmds: []Command{removeN("n1", t1)},
			node: "n1", want: []string{"+1 node n1 deleted", "+1 pod default/web-a deleted", "+1 pod default/web-b deleted"}},
		{name: "another node removed: its pods stay out",
			cmds: []Command{removeN("n2", t1)},
			node: "n1", want: []string{"+1 node n2 deleted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := viewFSM(t)
			base := f.Index()
			applyAll(t, f, tt.cmds...)
			changes, reset, now := f.NodeView(tt.node, base)
			if reset || now != f.Index() {
				t.Errorf("reset %t now %d, want false %d", reset, now, f.Index())
			}
			got := summary(t, changes, base)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("changes\n got %q\nwant %q", got, tt.want)
			}
			if changed := f.NodeViewChanged(tt.node, base); changed != (len(tt.want) > 0) {
				t.Errorf("NodeViewChanged = %t with changes %q", changed, got)
			}
			if tt.check != nil {
				tt.check(t, changes)
			}
			// Nothing more to say from now on.
			if changes, reset, _ := f.NodeView(tt.node, now); reset || len(changes) != 0 || f.NodeViewChanged(tt.node, now) {
				t.Errorf("from now: %+v reset %t", changes, reset)
			}
		})
	}
}

// TestNodeViewReplays checks the contract with a watcher: applying every
// answer, in order, to what it held gives the view as the state has it,
// whatever index it asked from.
func TestNodeViewReplays(t *testing.T) {
	f := viewFSM(t)
	cmds := []Command{
		report("n1", "default/web-a", "10.244.0.1"),
		putP(pod("web-d", "web", "n1"), pod("web-e", "web", "n2")),
		nodeStatus("n2", api.NodeDown),
		stopP("default/web-b"),
		removeOwnP("n1", "default/web-b"),
		report("n1", "default/web-d", "10.244.0.4"),
		removeN("n2", t1),
	}
	type held map[string]ViewChange // kind/key → object
	apply := func(h held, changes []ViewChange, reset bool) held {
		if reset {
			h = held{}
		}
		for _, c := range changes {
			if c.Deleted {
				delete(h, c.Kind+"/"+c.Key)
			} else {
				c.Index = 0
				h[c.Kind+"/"+c.Key] = c
			}
		}
		return h
	}
	start := f.Index()
	watchers := map[uint64]held{} // from each index since start
	for i := uint64(0); i <= uint64(len(cmds)); i++ {
		changes, reset, _ := f.NodeView("n1", 0)
		watchers[start+i] = apply(nil, changes, reset)
		if i < uint64(len(cmds)) {
			applyAll(t, f, cmds[i])
		}
	}
	want, _, _ := f.NodeView("n1", 0)
	for since, h := range watchers {
		changes, reset, _ := f.NodeView("n1", since)
		if reset {
			t.Fatalf("from %d: reset", since)
		}
		got := apply(h, changes, false)
		if wantView := apply(nil, want, true); !reflect.DeepEqual(got, wantView) {
			t.Errorf("from %d: the watcher holds\n%v\nthe state has\n%v", since, got, wantView)
		}
	}
}

func TestNodeViewCluster(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, upsertN(api.Node{Name: "n1", Address: "192.0.2.10", PodCIDR: "10.244.0.0/24", Status: api.NodeReady}))
	base := f.Index()
	if changes, _, _ := f.NodeView("n1", 0); !slices.Equal(summary(t, changes, 0), []string{"+1 node n1"}) {
		t.Errorf("view without a cluster config: %q", summary(t, changes, 0))
	}
	applyAll(t, f, clusterC("10.244.0.0/16", 24))
	changes, reset, _ := f.NodeView("n1", base)
	if reset || !slices.Equal(summary(t, changes, base), []string{"+1 cluster cluster"}) {
		t.Fatalf("after the cluster config: %q reset %t", summary(t, changes, base), reset)
	}
	if c := changes[0].Cluster; c.PodCIDR != "10.244.0.0/16" || c.NodeMaskBits != 24 {
		t.Errorf("cluster config %+v", c)
	}
	// Setting it again changes nothing, so nothing is sent.
	now := f.Index()
	applyAll(t, f, clusterC("10.99.0.0/16", 24))
	if changes, _, _ := f.NodeView("n1", now); len(changes) != 0 {
		t.Errorf("a config that did not apply was sent: %+v", changes)
	}
}

func TestNodeViewCopies(t *testing.T) {
	f := viewFSM(t)
	changes, _, _ := f.NodeView("n1", 0)
	for _, c := range changes {
		switch {
		case c.Pod != nil:
			c.Pod.Containers[0].Env["A"] = "changed"
			c.Pod.Containers[0].Ports[0].ContainerPort = 1
		case c.Node != nil:
			c.Node.Labels = map[string]string{"x": "y"}
			c.Node.Status = "changed"
		case c.Cluster != nil:
			c.Cluster.PodCIDR = "changed"
		}
	}
	if p, _ := f.Pod("default/web-a"); p.Containers[0].Env["A"] != "1" || p.Containers[0].Ports[0].ContainerPort != 80 {
		t.Errorf("the view shares a pod with the state: %+v", p)
	}
	if n, _ := f.Node("n1"); n.Status != api.NodeReady {
		t.Errorf("the view shares a node with the state: %+v", n)
	}
	if cc, _ := f.ClusterConfig(); cc.PodCIDR != "10.244.0.0/16" {
		t.Errorf("the view shares the cluster config with the state: %+v", cc)
	}
}

// TestNodeViewMovedPod: no write moves a pod today, but putPod allows it,
// and the view must then say it left one node for the other.
func TestNodeViewMovedPod(t *testing.T) {
	f := viewFSM(t)
	base := f.Index()
	p, _ := f.Pod("default/web-a")
	p.Node = "n2"
	f.mu.Lock()
	f.putPod(base+1, p)
	f.index = base + 1
	f.mu.Unlock()
	for node, want := range map[string][]string{
		"n1": {"+1 pod default/web-a deleted"},
		"n2": {"+1 pod default/web-a"},
	} {
		changes, _, _ := f.NodeView(node, base)
		if got := summary(t, changes, base); !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", node, got, want)
		}
	}
}

func TestNodeViewCompacted(t *testing.T) {
	f := viewFSM(t)
	base := f.Index()
	// Another node's reports: they fill the journal, not n1's view.
	for i := range objectJournalCap + 10 {
		applyAll(t, f, report("n2", "default/web-c", fmt.Sprintf("10.244.%d.%d", i>>8&255, i&255)))
	}
	if n := len(f.idx.objects); n > objectJournalCap {
		t.Fatalf("the object journal holds %d changes, cap %d", n, objectJournalCap)
	}
	if !f.NodeViewChanged("n1", base) {
		t.Error("a watcher behind the journal is not told to resync")
	}
	changes, reset, _ := f.NodeView("n1", base)
	if !reset {
		t.Fatal("a watcher behind the journal gets no reset")
	}
	// The journal no longer reaches back to when the pods and the cluster
	// config changed last; the indexes still say it, so every object comes
	// at its own last change, none later than the view.
	want := []string{"+1 cluster cluster", "+2 node n1", "+3 node n2", "+5 pod default/web-a", "+5 pod default/web-b"}
	if got := summary(t, changes, 0); !slices.Equal(got, want) {
		t.Errorf("reset view %q, want %q", got, want)
	}
	recent := f.Index() - 5
	if changes, reset, _ := f.NodeView("n2", recent); reset || len(changes) != 1 || changes[0].Index != f.Index() {
		t.Errorf("recent changes of n2: %+v reset %t", changes, reset)
	}
	if changes, reset, _ := f.NodeView("n1", recent); reset || len(changes) != 0 {
		t.Errorf("recent changes of n1: %+v reset %t", changes, reset)
	}
}

func TestNodeViewAfterRestore(t *testing.T) {
	f := viewFSM(t)
	applyAll(t, f, report("n1", "default/web-a", "10.244.0.1"))
	g := NewFSM(nil)
	_, _, ch := g.WatchNodeView("n1", 1) // empty: any entry wakes it
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Error("a restore did not wake a watch")
	}
	at := g.Index()
	changes, reset, now := g.NodeView("n1", at-1)
	if !reset || now != at {
		t.Fatalf("a watcher from before the restore: reset %t now %d", reset, now)
	}
	// Nodes know their last change; the pods' and the cluster config's
	// are lost with the journal: they are the view's index.
	want := []string{"+2 node n1", "+3 node n2", "+6 cluster cluster", "+6 pod default/web-a", "+6 pod default/web-b"}
	if got := summary(t, changes, 0); !slices.Equal(got, want) {
		t.Errorf("view after restore %q, want %q", got, want)
	}
	if changes, reset, _ := g.NodeView("n1", at); reset || len(changes) != 0 || g.NodeViewChanged("n1", at) {
		t.Errorf("a watcher at the restored index: %+v reset %t", changes, reset)
	}
	// The journal goes on from there.
	applyAll(t, g, stopP("default/web-b"))
	if changes, reset, _ := g.NodeView("n1", at); reset || !slices.Equal(summary(t, changes, at), []string{"+1 pod default/web-b"}) {
		t.Errorf("after the restore: %q reset %t", summary(t, changes, at), reset)
	}

	// A watch waiting on a restoring replica wakes and resyncs.
	_, changed, ch := g.WatchNodeView("n1", g.Index())
	if changed {
		t.Fatal("changed at now")
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Error("a restore did not wake a watch of a view")
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestWatchNodeView checks what wakes a watch: a change to its view, not
// another node's pods.
func TestWatchNodeView(t *testing.T) {
	f := viewFSM(t)
	at := f.Index()

	// Behind since (a lagging replica): any entry wakes, nothing changed.
	now, changed, lag := f.WatchNodeView("n1", at+2)
	if now != at || changed || lag == nil {
		t.Fatalf("behind: now %d changed %t", now, changed)
	}
	if f.NodeViewChanged("n1", at+2) {
		t.Error("NodeViewChanged while behind since")
	}

	steps := []struct {
		name string
		cmd  Command
		wake bool
	}{
		{"another node's pod", report("n2", "default/web-c", "10.244.1.2"), false},
		{"a deployment", updateD(func() api.Deployment { d := web(); d.Replicas = 5; return d }()), false},
		{"its own pod", report("n1", "default/web-a", "10.244.0.1"), true},
		{"a node's status", nodeStatus("n2", api.NodeDown), true},
		{"a pod placed on it", putP(pod("web-d", "web", "n1")), true},
		{"another node removed", removeN("n2", t1), true},
	}
	since := f.Index()
	for i, st := range steps {
		now, changed, ch := f.WatchNodeView("n1", since)
		if changed || now < since || ch == nil {
			t.Fatalf("%s: before it, now %d changed %t", st.name, now, changed)
		}
		applyAll(t, f, st.cmd)
		if i == 0 && !closed(lag) {
			t.Error("the lagging watch did not wake on an entry")
		}
		if got := closed(ch); got != st.wake {
			t.Errorf("%s: woke %t, want %t", st.name, got, st.wake)
		}
		if _, changed, _ := f.WatchNodeView("n1", since); changed != st.wake {
			t.Errorf("%s: changed %t, want %t", st.name, changed, st.wake)
		}
		if !st.wake {
			// The watch goes on waiting from where it was.
			continue
		}
		since = f.Index()
	}
	// An empty state has nothing to say, even from 0; any entry wakes it.
	g := NewFSM(nil)
	if now, changed, ch := g.WatchNodeView("n1", 0); now != 0 || changed || ch == nil || g.NodeViewChanged("n1", 0) {
		t.Errorf("empty state: now %d changed %t", now, changed)
	}
}
