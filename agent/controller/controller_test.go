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
