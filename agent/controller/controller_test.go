package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// countingStore is a real single-agent store that counts full listings of
// the deployments, which is what made every write cost O(deployments).
type countingStore struct {
	*store.Store
	listings atomic.Int64
}

func (s *countingStore) Deployments(ns string) []api.Deployment {
	s.listings.Add(1)
	return s.Store.Deployments(ns)
}

func newStore(t *testing.T) *countingStore {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.NodeName, cfg.InMemory = "n1", true
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	n := api.Node{Name: "n1", Address: "127.0.0.1", PodCIDR: "10.244.0.0/24", CPUMillis: 4000, MemoryMiB: 8192, Status: api.NodeReady}
	if err := st.UpsertNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	return &countingStore{Store: st}
}

func deployment(name string, replicas int) api.Deployment {
	return api.Deployment{Namespace: "default", Name: name, Replicas: replicas,
		Containers: []api.Container{{Name: "app", Image: "demo:v1"}}}
}

func waitPods(t *testing.T, st *countingStore, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := 0
		for _, p := range st.Pods(state.PodFilter{Namespace: "default", Deployment: name}) {
			if !p.Stop {
				got++
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d pods, want %d", name, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunReconcilesWhatChanged: new deployments, scaling and deletion are
// acted on through the change journal, with full listings only at the
// start and once per Resync, however many writes come.
func TestRunReconcilesWhatChanged(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := New(Config{Store: st, Resync: time.Hour, MinInterval: time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	for i := range 50 {
		if _, err := st.CreateDeployment(ctx, deployment(name(i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateDeployment(ctx, deployment("web", 3)); err != nil {
		t.Fatal(err)
	}
	waitPods(t, st, "web", 3)
	if _, err := st.UpdateDeployment(ctx, deployment("web", 1)); err != nil {
		t.Fatal(err)
	}
	waitPods(t, st, "web", 1)
	if n := st.listings.Load(); n > 1 {
		t.Errorf("%d full listings of the deployments for 52 writes; want the first pass only", n)
	}
	if err := st.DeleteDeployment(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	// The pods stop; the node (absent here) would remove them. Remove them
	// as it would, and the controller removes the deployment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ids []string
		for _, p := range st.Pods(state.PodFilter{Namespace: "default", Deployment: "web"}) {
			if p.Stop {
				ids = append(ids, p.ID())
			}
		}
		if len(ids) > 0 {
			if err := st.RemovePods(ctx, ids); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := st.Deployment("default", "web"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("web was not removed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNodeChangeMeansFullPass: placement depends on nodes, so a node
// change makes the next pass look at every deployment.
func TestNodeChangeMeansFullPass(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if _, err := st.CreateDeployment(ctx, deployment("web", 1)); err != nil {
		t.Fatal(err)
	}
	_, full, now := st.Changes(0)
	if !full {
		t.Fatal("Changes(0) is not full")
	}
	keys, full, _ := st.Changes(now - 1)
	if full || len(keys) != 1 || keys[0] != "default/web" {
		t.Fatalf("Changes after the create = %v, full %t; want [default/web]", keys, full)
	}
	if err := st.SetNodeStatus(ctx, "n1", api.NodeDown); err != nil {
		t.Fatal(err)
	}
	if _, full, _ := st.Changes(now); !full {
		t.Error("a node change did not ask for a full pass")
	}
}

func name(i int) string { return "d" + string(rune('a'+i/26)) + string(rune('a'+i%26)) }

// TestLostNodePodsReplacedAfterGrace: a down node keeps its pods for the
// cluster's grace; then they are stopped (with the reason) and replaced on
// the nodes that are up, in one pass, never more live pods than replicas.
func TestLostNodePodsReplacedAfterGrace(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.SetClusterConfig(ctx, state.ClusterConfig{PodCIDR: "10.245.0.0/16", NodeMaskBits: 24, LostNodeGraceMillis: 2000}); err != nil {
		t.Fatal(err)
	}
	n2 := api.Node{Name: "n2", Address: "127.0.0.2", PodCIDR: "10.244.1.0/24", CPUMillis: 4000, MemoryMiB: 8192, Status: api.NodeReady}
	if err := st.UpsertNode(ctx, n2); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	c := New(Config{Store: st, Now: func() time.Time { return now }})
	if _, err := st.CreateDeployment(ctx, deployment("web", 2)); err != nil {
		t.Fatal(err)
	}
	if err := c.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	live := func() map[string]int {
		on := map[string]int{}
		for _, p := range st.Pods(state.PodFilter{Namespace: "default", Deployment: "web"}) {
			if !p.Stop {
				on[p.Node]++
			}
		}
		return on
	}
	if got := live(); got["n1"] != 1 || got["n2"] != 1 {
		t.Fatalf("placed %v, want one pod on each node", got)
	}
	if err := st.SetNodeStatus(ctx, "n2", api.NodeDown); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		after time.Duration
		want  map[string]int
	}{
		{0, map[string]int{"n1": 1, "n2": 1}},
		{1900 * time.Millisecond, map[string]int{"n1": 1, "n2": 1}},
		{200 * time.Millisecond, map[string]int{"n1": 2}},
	} {
		now = now.Add(step.after)
		if err := c.ReconcileOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if got := live(); len(got) != len(step.want) || got["n1"] != step.want["n1"] || got["n2"] != step.want["n2"] {
			t.Fatalf("after %s more: live pods per node %v, want %v", step.after, got, step.want)
		}
	}
	for _, p := range st.Pods(state.PodFilter{Node: "n2"}) {
		if !p.Stop || p.StopReason != api.StopNodeLost {
			t.Errorf("pod %s on the lost node: stop %v reason %q, want stopped for %q", p.ID(), p.Stop, p.StopReason, api.StopNodeLost)
		}
	}
}

// TestDeleteWithPodsOnLostNodes: a deployment deleted while some of its pods
// are on a lost node is removed all the same (terraform destroy must not
// wait for a node that may never return).
func TestDeleteWithPodsOnLostNodes(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	n2 := api.Node{Name: "n2", Address: "127.0.0.2", PodCIDR: "10.244.1.0/24", CPUMillis: 4000, MemoryMiB: 8192, Status: api.NodeReady}
	if err := st.UpsertNode(ctx, n2); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	c := New(Config{Store: st, Now: func() time.Time { return now }})
	if _, err := st.CreateDeployment(ctx, deployment("web", 2)); err != nil {
		t.Fatal(err)
	}
	if err := c.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.SetNodeStatus(ctx, "n2", api.NodeDown); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteDeployment(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	// n1 removes its own pod as its node loop would.
	for _, p := range st.Pods(state.PodFilter{Node: "n1"}) {
		if err := st.RemovePods(ctx, []string{p.ID()}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := c.ReconcileOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := st.Deployment("default", "web"); !ok {
		t.Fatal("removed before the grace ended")
	}
	now = now.Add(time.Minute)
	for range 3 {
		if err := c.ReconcileOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := st.Deployment("default", "web"); ok {
		t.Errorf("the deployment is still there; pods: %+v", st.Pods(state.PodFilter{}))
	}
}

// TestPlacementEvents: placed pods carry Scheduled, and replacements of a
// lost node's pods Rescheduled naming the pod and node they replace.
func TestPlacementEvents(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.SetClusterConfig(ctx, state.ClusterConfig{PodCIDR: "10.245.0.0/16", NodeMaskBits: 24, LostNodeGraceMillis: 1000}); err != nil {
		t.Fatal(err)
	}
	n2 := api.Node{Name: "n2", Address: "127.0.0.2", PodCIDR: "10.244.1.0/24", CPUMillis: 4000, MemoryMiB: 8192, Status: api.NodeReady}
	if err := st.UpsertNode(ctx, n2); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	c := New(Config{Store: st, Now: func() time.Time { return now }})
	if _, err := st.CreateDeployment(ctx, deployment("web", 2)); err != nil {
		t.Fatal(err)
	}
	if err := c.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var onN2 api.Pod
	for _, p := range st.Pods(state.PodFilter{Namespace: "default"}) {
		es := p.Status.Events
		if len(es) != 1 || es[0].Reason != api.EventScheduled || es[0].Message != "Assigned "+p.ID()+" to node "+p.Node || !es[0].Time.Equal(now) {
			t.Errorf("pod %s placed with events %+v, want one Scheduled naming its node", p.ID(), es)
		}
		if !p.CreatedAt.Equal(now) {
			t.Errorf("pod %s created at %v, want %v", p.ID(), p.CreatedAt, now)
		}
		if p.Node == "n2" {
			onN2 = p
		}
	}
	if err := st.SetNodeStatus(ctx, "n2", api.NodeDown); err != nil {
		t.Fatal(err)
	}
	for _, after := range []time.Duration{0, 2 * time.Second} { // seen down, then lost
		now = now.Add(after)
		if err := c.ReconcileOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var replacement *api.Pod
	for _, p := range st.Pods(state.PodFilter{Namespace: "default"}) {
		if !p.Stop && p.CreateIndex > onN2.CreateIndex {
			replacement = &p
		}
	}
	if replacement == nil {
		t.Fatal("the lost node's pod was not replaced")
	}
	es := replacement.Status.Events
	if len(es) != 2 || es[1].Reason != api.EventRescheduled || es[1].Type != api.EventWarning ||
		es[1].Message != "Replaces pod "+onN2.Name+": its node n2 was lost" {
		t.Errorf("replacement placed with events %+v, want Scheduled then Rescheduled naming %s", es, onN2.Name)
	}
}
