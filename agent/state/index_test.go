package state

import (
	"bytes"
	"io"
	"slices"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

func named(name string) api.Deployment {
	d := web()
	d.Name = name
	return d
}

func TestChangesJournal(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, upsertN(api.Node{Name: "n1", Address: "10.0.0.1", PodCIDR: "10.244.0.0/24", Status: api.NodeReady}))
	base := f.Index()
	applyAll(t, f, createD(named("a")), createD(named("b")))
	keys, full, now := f.Changes(base)
	if full || !slices.Equal(keys, []string{"default/a", "default/b"}) || now != f.Index() {
		t.Fatalf("Changes = %v, %t, %d", keys, full, now)
	}
	if keys, full, _ := f.Changes(now); full || len(keys) != 0 {
		t.Errorf("nothing changed since now: %v %t", keys, full)
	}
	// A pod's change is its deployment's.
	p := api.Pod{Namespace: "default", Name: "a-1", Deployment: "a", Node: "n1", Containers: web().Containers}
	applyAll(t, f, &PutPods{Pods: []api.Pod{p}})
	if keys, _, _ := f.Changes(now); !slices.Equal(keys, []string{"default/a"}) {
		t.Errorf("after put pods: %v", keys)
	}
	// Nodes change placement for everyone.
	mid := f.Index()
	applyAll(t, f, nodeStatus("n1", api.NodeDown))
	if _, full, _ := f.Changes(mid); !full {
		t.Error("a node status change is not full")
	}
	// Indexes follow the pods.
	if got := f.Pods(PodFilter{Node: "n1"}); len(got) != 1 {
		t.Errorf("pods on n1: %v", got)
	}
	applyAll(t, f, &RemovePods{Node: "n1", IDs: []string{"default/a-1"}})
	if got := f.Pods(PodFilter{Namespace: "default", Deployment: "a"}); len(got) != 0 {
		t.Errorf("pods of a after removal: %v", got)
	}
}

func TestChangesJournalIsBounded(t *testing.T) {
	f := NewFSM(nil)
	base := f.Index()
	for i := range journalCap + 10 {
		applyAll(t, f, createD(named("d"+itoa(i))))
	}
	if len(f.idx.journal) > journalCap {
		t.Fatalf("journal holds %d changes, cap %d", len(f.idx.journal), journalCap)
	}
	if _, full, _ := f.Changes(base + 1); !full {
		t.Error("a reader behind the journal is not told to resync")
	}
	recent := f.Index() - 5
	if keys, full, _ := f.Changes(recent); full || len(keys) != 5 {
		t.Errorf("recent changes: %d keys, full %t", len(keys), full)
	}
}

func TestRestoreRebuildsIndexes(t *testing.T) {
	f := NewFSM(nil)
	p := api.Pod{Namespace: "default", Name: "a-1", Deployment: "a", Node: "n1", Containers: web().Containers}
	applyAll(t, f, upsertN(api.Node{Name: "n1", Address: "10.0.0.1", PodCIDR: "10.244.0.0/24"}), createD(named("a")), &PutPods{Pods: []api.Pod{p}})
	g := NewFSM(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if got := g.Pods(PodFilter{Node: "n1"}); len(got) != 1 {
		t.Errorf("restored pods on n1: %v", got)
	}
	if _, full, _ := g.Changes(g.Index()); full {
		t.Error("a reader at the restored index must not resync again")
	}
	if _, full, _ := g.Changes(g.Index() - 1); !full {
		t.Error("a reader before the restore must resync")
	}
	if got := g.NodePods()["n1"]; len(got) != 1 || got[0].Name != "a-1" {
		t.Errorf("NodePods = %v", got)
	}
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}
