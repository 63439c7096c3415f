package clientstate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

func testPod(name, node string) api.Pod {
	return api.Pod{Namespace: "default", Name: name, Deployment: "web", Node: node, Generation: 1,
		Labels:     map[string]string{"app": "web"},
		Containers: []api.Container{{Name: "app", Image: "demo:v1", Ports: []api.Port{{ContainerPort: 8080}}}},
		Status:     api.PodStatus{Phase: api.PodPending}}
}

func testNode(name, addr, cidr string) api.Node {
	return api.Node{Name: name, Address: addr, PodCIDR: cidr, Status: api.NodeReady, CPUMillis: 1000, MemoryMiB: 512}
}

var testCluster = state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24}

func podEv(index uint64, p api.Pod) rpc.WatchEvent {
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchPod, Key: p.ID(), Pod: &p}
}

func podDel(index uint64, id string) rpc.WatchEvent {
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchPod, Key: id, Deleted: true}
}

func nodeEv(index uint64, n api.Node) rpc.WatchEvent {
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchNode, Key: n.Name, Node: &n}
}

func nodeDel(index uint64, name string) rpc.WatchEvent {
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchNode, Key: name, Deleted: true}
}

func clusterEv(index uint64, c state.ClusterConfig) rpc.WatchEvent {
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchCluster, Key: rpc.WatchCluster, Cluster: &c}
}

// fullView is a reset at index 5: two pods of n1, nodes n1 and n2, the
// cluster config.
func fullView() rpc.WatchResponse {
	return rpc.WatchResponse{Index: 5, Reset: true, Leader: "s1", Events: []rpc.WatchEvent{
		clusterEv(1, testCluster),
		nodeEv(2, testNode("n1", "192.168.1.11", "10.244.1.0/24")),
		nodeEv(3, testNode("n2", "192.168.1.12", "10.244.2.0/24")),
		podEv(4, testPod("web-a", "n1")),
		podEv(5, testPod("web-b", "n1")),
	}}
}

func memStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open("", nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// view is what a test compares: pod IDs with their phase, node names with
// their address, whether a cluster config is set, index and leader.
type view struct {
	Pods    map[string]string
	Nodes   map[string]string
	Cluster bool
	Index   uint64
	Leader  string
}

func viewOf(s *Store) view {
	v := view{Pods: map[string]string{}, Nodes: map[string]string{}, Index: s.Index(), Leader: s.Leader()}
	for _, p := range s.Pods(state.PodFilter{}) {
		v.Pods[p.ID()] = p.Status.Phase
	}
	for _, n := range s.Nodes() {
		v.Nodes[n.Name] = n.Address
	}
	_, v.Cluster = s.ClusterConfig()
	return v
}

func TestApply(t *testing.T) {
	running := testPod("web-a", "n1")
	running.Status.Phase = api.PodRunning
	badImage := testPod("web-a", "n1")
	badImage.Containers[0].Image = "bad image"
	badAddr := testNode("n2", "224.0.0.1", "10.244.2.0/24")
	wrongKey := podEv(6, testPod("web-c", "n1"))
	wrongKey.Key = "default/other"

	full := view{
		Pods:    map[string]string{"default/web-a": api.PodPending, "default/web-b": api.PodPending},
		Nodes:   map[string]string{"n1": "192.168.1.11", "n2": "192.168.1.12"},
		Cluster: true, Index: 5, Leader: "s1",
	}
	tests := []struct {
		name    string
		resps   []rpc.WatchResponse
		want    view
		wantErr error // of the last response
	}{
		{"reset fills the view", []rpc.WatchResponse{fullView()}, full, nil},
		{"upsert adds and updates", []rpc.WatchResponse{fullView(), {Index: 7, Leader: "s2", Events: []rpc.WatchEvent{
			podEv(6, running), podEv(7, testPod("web-c", "n1")), nodeEv(7, testNode("n3", "192.168.1.13", "10.244.3.0/24")),
		}}}, view{
			Pods:    map[string]string{"default/web-a": api.PodRunning, "default/web-b": api.PodPending, "default/web-c": api.PodPending},
			Nodes:   map[string]string{"n1": "192.168.1.11", "n2": "192.168.1.12", "n3": "192.168.1.13"},
			Cluster: true, Index: 7, Leader: "s2",
		}, nil},
		{"delete pod, node and cluster config", []rpc.WatchResponse{fullView(), {Index: 8, Leader: "s1", Events: []rpc.WatchEvent{
			podDel(6, "default/web-b"), nodeDel(7, "n2"), {Index: 8, Kind: rpc.WatchCluster, Key: "cluster", Deleted: true},
			podDel(8, "default/unknown"),
		}}}, view{
			Pods:  map[string]string{"default/web-a": api.PodPending},
			Nodes: map[string]string{"n1": "192.168.1.11"}, Index: 8, Leader: "s1",
		}, nil},
		{"reset replaces everything", []rpc.WatchResponse{fullView(), {Index: 9, Reset: true, Leader: "s3", Events: []rpc.WatchEvent{
			nodeEv(9, testNode("n9", "192.168.1.19", "10.244.9.0/24")), podEv(9, testPod("web-z", "n1")),
		}}}, view{
			Pods: map[string]string{"default/web-z": api.PodPending}, Nodes: map[string]string{"n9": "192.168.1.19"}, Index: 9, Leader: "s3",
		}, nil},
		{"an event older than the object is ignored", []rpc.WatchResponse{fullView(), {Index: 6, Leader: "s1", Events: []rpc.WatchEvent{
			podEv(3, running), podDel(4, "default/web-b"), nodeDel(1, "n1"),
		}}}, func() view { v := full; v.Index = 6; return v }(), nil},
		{"an event index past the response's does not block later changes", []rpc.WatchResponse{fullView(),
			{Index: 6, Leader: "s1", Events: []rpc.WatchEvent{podEv(100, testPod("web-b", "n2"))}},
			{Index: 7, Leader: "s1", Events: []rpc.WatchEvent{podEv(7, running)}},
			{Index: 8, Leader: "s1", Events: []rpc.WatchEvent{podDel(8, "default/web-b")}},
		}, func() view {
			v := full
			v.Index = 8
			v.Pods = map[string]string{"default/web-a": api.PodRunning}
			return v
		}(), nil},
		{"a response older than the view is refused", []rpc.WatchResponse{fullView(), {Index: 4, Reset: true, Leader: "s9"}}, full, ErrBehind},
		{"invalid objects are dropped, the view keeps what it had", []rpc.WatchResponse{fullView(), {Index: 6, Leader: "s1", Events: []rpc.WatchEvent{
			podEv(6, badImage), nodeEv(6, badAddr), wrongKey, {Index: 6, Kind: "deployment", Key: "default/web"},
			{Index: 6, Kind: rpc.WatchPod, Key: "default/web-b"}, clusterEv(6, state.ClusterConfig{PodCIDR: "nonsense"}),
		}}}, func() view { v := full; v.Index = 6; return v }(), nil},
		{"invalid objects in a reset keep what the view had", []rpc.WatchResponse{fullView(), {Index: 6, Reset: true, Leader: "s1", Events: []rpc.WatchEvent{
			podEv(6, badImage), nodeEv(6, badAddr), podEv(6, testPod("web-b", "n1")),
		}}}, view{
			Pods:  map[string]string{"default/web-a": api.PodPending, "default/web-b": api.PodPending},
			Nodes: map[string]string{"n2": "192.168.1.12"}, Index: 6, Leader: "s1",
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := memStore(t)
			var err error
			for _, r := range tt.resps {
				err = s.Apply(r)
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Apply = %v, want %v", err, tt.wantErr)
			}
			if got := viewOf(s); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("view =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestReadsShareNothing(t *testing.T) {
	s := memStore(t)
	r := fullView()
	if err := s.Apply(r); err != nil {
		t.Fatal(err)
	}
	// Changing what was applied, or what a read returned, leaves the view.
	r.Events[3].Pod.Labels["app"] = "changed"
	r.Events[1].Node.Address = "192.168.9.9"
	p, _ := s.Pod("default/web-a")
	p.Labels["app"] = "changed"
	p.Containers[0].Ports[0].ContainerPort = 1
	n, _ := s.Node("n1")
	n.Address = "192.168.9.9"

	p, ok := s.Pod("default/web-a")
	if !ok || p.Labels["app"] != "web" || p.Containers[0].Ports[0].ContainerPort != 8080 {
		t.Fatalf("pod = %+v, ok %v; the view changed through a copy", p, ok)
	}
	if n, _ := s.Node("n1"); n.Address != "192.168.1.11" {
		t.Fatalf("node address = %s; the view changed through a copy", n.Address)
	}
	if got := s.Pods(state.PodFilter{Node: "n2"}); len(got) != 0 {
		t.Fatalf("pods of n2 = %v, want none", got)
	}
	if got := s.Pods(state.PodFilter{Namespace: "default", Deployment: "web", Node: "n1"}); len(got) != 2 || got[0].Name != "web-a" || got[1].Name != "web-b" {
		t.Fatalf("pods of n1 = %v, want web-a, web-b in order", got)
	}
	if cc, ok := s.ClusterConfig(); !ok || cc != testCluster {
		t.Fatalf("cluster config = %+v, %v", cc, ok)
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

func TestChangedFiresOnlyOnChange(t *testing.T) {
	s := memStore(t)
	ch := s.Changed()
	if err := s.Apply(fullView()); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Fatal("Changed did not fire for the first view")
	}

	steps := []struct {
		name   string
		resp   rpc.WatchResponse
		change bool
	}{
		{"a wait that timed out", rpc.WatchResponse{Index: 5, Leader: "s1"}, false},
		{"the index alone advances", rpc.WatchResponse{Index: 6, Leader: "s1"}, false},
		{"a new leader alone", rpc.WatchResponse{Index: 6, Leader: "s2"}, false},
		{"the same pod again", rpc.WatchResponse{Index: 7, Leader: "s2", Events: []rpc.WatchEvent{podEv(7, testPod("web-a", "n1"))}}, false},
		{"the same view as a reset", func() rpc.WatchResponse { r := fullView(); r.Index = 8; r.Leader = "s2"; return r }(), false},
		{"deleting what is not there", rpc.WatchResponse{Index: 9, Leader: "s2", Events: []rpc.WatchEvent{podDel(9, "default/nope"), nodeDel(9, "nope")}}, false},
		{"a pod changes", rpc.WatchResponse{Index: 10, Leader: "s2", Events: []rpc.WatchEvent{podEv(10, testPod("web-a", "n2"))}}, true},
		{"a node changes", rpc.WatchResponse{Index: 11, Leader: "s2", Events: []rpc.WatchEvent{nodeEv(11, testNode("n2", "192.168.1.99", "10.244.2.0/24"))}}, true},
		{"the cluster config goes", rpc.WatchResponse{Index: 12, Leader: "s2", Events: []rpc.WatchEvent{{Index: 12, Kind: rpc.WatchCluster, Key: "cluster", Deleted: true}}}, true},
		{"a refused older response", rpc.WatchResponse{Index: 3, Reset: true}, false},
	}
	for _, st := range steps {
		ch := s.Changed()
		_ = s.Apply(st.resp)
		if got := closed(ch); got != st.change {
			t.Fatalf("%s: Changed fired = %v, want %v", st.name, got, st.change)
		}
	}
}

func TestPodsChanged(t *testing.T) {
	s := memStore(t)
	if err := s.Apply(fullView()); err != nil {
		t.Fatal(err)
	}
	type reading struct{ n1, n2 uint64 }
	read := func() reading { return reading{s.PodsChanged("n1"), s.PodsChanged("n2")} }
	if got := read(); got.n1 == 0 || got.n2 != 0 {
		t.Fatalf("after the first view: %+v, want n1 set, n2 0", got)
	}
	moved := testPod("web-b", "n2")
	steps := []struct {
		name           string
		resp           rpc.WatchResponse
		wantN1, wantN2 bool // whether each node's reading grows
	}{
		{"a node changes", rpc.WatchResponse{Index: 6, Events: []rpc.WatchEvent{nodeEv(6, testNode("n2", "192.168.1.99", "10.244.2.0/24"))}}, false, false},
		{"the same pod again", rpc.WatchResponse{Index: 7, Events: []rpc.WatchEvent{podEv(7, testPod("web-a", "n1"))}}, false, false},
		{"a pod moves from n1 to n2", rpc.WatchResponse{Index: 8, Events: []rpc.WatchEvent{podEv(8, moved)}}, true, true},
		{"a pod of n2 is deleted", rpc.WatchResponse{Index: 9, Events: []rpc.WatchEvent{podDel(9, moved.ID())}}, false, true},
		{"a reset without n1's pod", rpc.WatchResponse{Index: 10, Reset: true}, true, false},
		{"a pod of n1 is added", rpc.WatchResponse{Index: 11, Events: []rpc.WatchEvent{podEv(11, testPod("web-c", "n1"))}}, true, false},
		{"a change that does not advance the index", rpc.WatchResponse{Index: 11, Events: []rpc.WatchEvent{podEv(11, testPod("web-c", "n2"))}}, true, true},
	}
	for _, st := range steps {
		before := read()
		if err := s.Apply(st.resp); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		after := read()
		if after.n1 < before.n1 || after.n2 < before.n2 {
			t.Fatalf("%s: went backwards: %+v → %+v", st.name, before, after)
		}
		if (after.n1 > before.n1) != st.wantN1 || (after.n2 > before.n2) != st.wantN2 {
			t.Fatalf("%s: %+v → %+v, want n1 grows %v, n2 grows %v", st.name, before, after, st.wantN1, st.wantN2)
		}
	}
}

func TestWaitIndex(t *testing.T) {
	s := memStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.WaitIndex(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIndex before any response = %v, want the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitIndex(context.Background(), 7) }()
	if err := s.Apply(rpc.WatchResponse{Index: 3}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitIndex(7) returned %v at index 3", err)
	default:
	}
	if err := s.Apply(rpc.WatchResponse{Index: 7}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitIndex(7) did not return at index 7")
	}
}

func TestCacheSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "client-state.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(fullView()); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(rpc.WatchResponse{Index: 9, Leader: "s2", Events: []rpc.WatchEvent{podDel(6, "default/web-b"), podEv(9, testPod("web-c", "n1"))}}); err != nil {
		t.Fatal(err)
	}
	want := viewOf(s)
	wantPods := s.Pods(state.PodFilter{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode = %v, want 0600", fi.Mode().Perm())
	}

	again, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Close() })
	if got := viewOf(again); !reflect.DeepEqual(got, want) {
		t.Fatalf("view after a restart =\n%+v\nwant\n%+v", got, want)
	}
	if got := again.Pods(state.PodFilter{}); !reflect.DeepEqual(got, wantPods) {
		t.Fatalf("pods after a restart =\n%+v\nwant\n%+v", got, wantPods)
	}
	// Per-object indexes survive too: an event older than web-c is ignored.
	stale := testPod("web-c", "n2")
	if err := again.Apply(rpc.WatchResponse{Index: 10, Events: []rpc.WatchEvent{podEv(8, stale)}}); err != nil {
		t.Fatal(err)
	}
	if p, _ := again.Pod("default/web-c"); p.Node != "n1" {
		t.Fatalf("an event older than the cached pod moved it to %s", p.Node)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if tmp, _ := filepath.Glob(path + ".tmp-*"); len(tmp) > 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
}

// TestCacheWritesAreRateLimited: the first change is written at once, later
// ones no sooner than the interval, and the latest one in the end.
func TestCacheWritesAreRateLimited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client-state.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.persist.minInterval = time.Hour
	if err := s.Apply(fullView()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first write", func() bool { cf, err := readCache(path); return err == nil && cf.Index == 5 })
	for i := uint64(6); i <= 20; i++ {
		if err := s.Apply(rpc.WatchResponse{Index: i, Leader: "s1"}); err != nil {
			t.Fatal(err)
		}
	}
	if cf, err := readCache(path); err != nil || cf.Index != 5 {
		t.Fatalf("cache within the interval: %+v, %v; want still index 5", cf, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if cf, err := readCache(path); err != nil || cf.Index != 20 {
		t.Fatalf("cache after Close: %+v, %v; want index 20", cf, err)
	}
}

// TestCacheIsWrittenEventually: a burst ends with the latest view on disk
// without Close.
func TestCacheIsWrittenEventually(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client-state.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.persist.minInterval = 20 * time.Millisecond
	if err := s.Apply(fullView()); err != nil {
		t.Fatal(err)
	}
	for i := uint64(6); i <= 200; i++ {
		if err := s.Apply(rpc.WatchResponse{Index: i, Leader: "s1", Events: []rpc.WatchEvent{podEv(i, testPod("web-c", "n1"))}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the latest view on disk", func() bool { cf, err := readCache(path); return err == nil && cf.Index == 200 })
}

func TestCorruptCacheIsAFullResync(t *testing.T) {
	valid := func(edit func(*cacheFile)) []byte {
		s := memStore(t)
		if err := s.Apply(fullView()); err != nil {
			t.Fatal(err)
		}
		_, cf := s.snapshot()
		edit(cf)
		dir := t.TempDir()
		if err := writeCache(filepath.Join(dir, "c"), cf); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "c"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		content []byte
		dir     bool
	}{
		{"garbage", []byte("\x00\xff{not json"), false},
		{"empty", nil, false},
		{"truncated", valid(func(*cacheFile) {})[:40], false},
		{"another format version", valid(func(cf *cacheFile) { cf.Version = 99 }), false},
		{"an invalid pod", valid(func(cf *cacheFile) { cf.Events[4].Pod.Containers = nil }), false},
		{"an object newer than the view", valid(func(cf *cacheFile) { cf.Index = 2 }), false},
		{"a deletion", valid(func(cf *cacheFile) { cf.Events[4].Deleted = true }), false},
		{"an object twice", valid(func(cf *cacheFile) { cf.Events = append(cf.Events, cf.Events[4]) }), false},
		{"an event without its object", valid(func(cf *cacheFile) { cf.Events[1].Node = nil }), false},
		{"a directory", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "client-state.json")
			var err error
			if tt.dir {
				err = os.Mkdir(path, 0o700)
			} else {
				err = os.WriteFile(path, tt.content, 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, nil)
			if err != nil {
				t.Fatalf("Open = %v, want a full resync", err)
			}
			if got := viewOf(s); !reflect.DeepEqual(got, view{Pods: map[string]string{}, Nodes: map[string]string{}}) {
				t.Fatalf("view = %+v, want empty at index 0", got)
			}
			if tt.dir {
				return
			}
			// The next save replaces the bad file.
			if err := s.Apply(fullView()); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			again, err := Open(path, nil)
			if err != nil || again.Index() != 5 {
				t.Fatalf("after a save: index %d, %v; want 5", again.Index(), err)
			}
		})
	}
}

// TestValidCacheLoads guards TestCorruptCacheIsAFullResync's helper: the
// unedited file loads.
func TestValidCacheLoads(t *testing.T) {
	s := memStore(t)
	if err := s.Apply(fullView()); err != nil {
		t.Fatal(err)
	}
	_, cf := s.snapshot()
	path := filepath.Join(t.TempDir(), "c")
	if err := writeCache(path, cf); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := viewOf(again), viewOf(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("view = %+v, want %+v", got, want)
	}
	if got, want := again.Pods(state.PodFilter{}), s.Pods(state.PodFilter{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("pods = %+v, want %+v", got, want)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
