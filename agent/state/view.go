package state

import (
	"cmp"
	"slices"
	"sort"
	"sync"

	"github.com/flotilla-io/flotilla/api"
)

// Node views: what a client agent reads of the state through a watch, in
// the manner of Nomad's blocking queries. A node's view is the pods placed
// on it, every node (names, addresses, pod ranges and statuses, for
// routes) and the cluster config; the object journal (index.go) says what
// in it changed after a given index, so a watcher that comes back, to this
// server or another (raft indexes are the same on every replica), gets
// what it missed and nothing else.

// Kinds of objects in a node view (ViewChange.Kind).
const (
	ViewPod     = "pod"
	ViewNode    = "node"
	ViewCluster = "cluster"
	// Every node sees every service and its endpoints: each node load
	// balances every service.
	ViewService   = "service"
	ViewEndpoints = "endpoints"
	// Every node sees every ingress, TLS keys included: each node
	// terminates TLS for every ingress.
	ViewIngress = "ingress"
)

// ViewChange is the state of one object of a node view after its last
// change. Pod, Node and Cluster are deep copies; the one Kind names is
// set unless Deleted.
type ViewChange struct {
	// Index is the raft index of the object's last change, or, when that
	// is no longer known (after a restore from a snapshot), the view's.
	Index uint64
	Kind  string
	// Key is the pod's ID, the node's name, "cluster", or a service's or
	// an ingress's "namespace/name" (for a service's endpoints too).
	Key string
	// Deleted means the object is gone from the view: a pod removed or
	// placed elsewhere, a node or service removed.
	Deleted   bool
	Pod       *api.Pod
	Node      *api.Node
	Cluster   *ClusterConfig
	Service   *api.Service
	Endpoints *api.Endpoints
	Ingress   *api.Ingress
}

// NodeView returns node's view as of the applied index now.
//
// With reset false, changes are the objects of the view that changed after
// index since, each once, as it is now (or Deleted), in the order of their
// last change: applied in order to the view at since, they give the view
// at now. With reset true, changes are the whole view: since is 0, or the
// journal no longer reaches back to it (it was trimmed, or the state was
// restored from a snapshot since), and the caller must drop what it holds
// first.
//
// An incremental answer costs the changes since since, not the view.
func (f *FSM) NodeView(node string, since uint64) (changes []ViewChange, reset bool, now uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	now = f.index
	if f.viewReset(since) {
		return f.wholeView(node, now), true, now
	}
	return f.viewChanges(node, since), false, now
}

// NodeViewChanged reports whether NodeView(node, since) has anything to
// say: something in node's view changed after since, or the caller must
// resync. It is false while the state is behind since (a server that
// lags the one the caller last read from), and for an empty state. It
// costs two map reads.
func (f *FSM) NodeViewChanged(node string, since uint64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.viewChanged(node, since)
}

// WatchNodeView is what a blocking query waits with. It returns, read
// together, the applied index now, whether node's view changed after
// since (as NodeViewChanged), and, when it did not, a channel that is
// closed when it may have: at the next change to the view (or Restore),
// or, while the state is behind since or empty, at the next applied
// entry. Wait on the channel and call it again; nothing slips between the
// two. A change to another node's pods wakes no watch of node.
func (f *FSM) WatchNodeView(node string, since uint64) (now uint64, changed bool, wake <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	now = f.index
	if now < since || now == 0 {
		return now, false, f.changed
	}
	if f.viewChanged(node, since) {
		return now, true, nil
	}
	return now, false, f.idx.waiters.wait(node)
}

// viewReset reports whether a view asked from since must be sent whole.
// Called with f.mu held.
func (f *FSM) viewReset(since uint64) bool {
	return since == 0 || since+1 < f.idx.objectsFrom
}

// viewChanged is NodeViewChanged. Called with f.mu held.
func (f *FSM) viewChanged(node string, since uint64) bool {
	if f.index < since || f.index == 0 {
		return false
	}
	if f.viewReset(since) {
		return true
	}
	// Both are set by every change the journal records for the view.
	return f.idx.nodePodsChanged[node] > since || f.idx.nodesChanged > since || f.svc.changed > since || f.ing.changed > since
}

// viewChanges returns the changes to node's view after since, from the
// object journal. Called with f.mu held.
func (f *FSM) viewChanges(node string, since uint64) []ViewChange {
	j := f.idx.objects
	lo := sort.Search(len(j), func(i int) bool { return j[i].index > since })
	type objKey struct {
		kind objKind
		key  string
	}
	seen := map[objKey]bool{}
	var out []ViewChange
	// Newest first: the first time an object comes is its last change.
	for i := len(j) - 1; i >= lo; i-- {
		c := &j[i]
		if !c.inView(node) {
			continue
		}
		k := objKey{c.kind, c.key}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, f.viewObject(node, c.kind, c.key, c.index))
	}
	slices.Reverse(out)
	return out
}

// viewObject returns an object of node's view as it is now, or Deleted.
// Called with f.mu held.
func (f *FSM) viewObject(node string, kind objKind, key string, index uint64) ViewChange {
	vc := ViewChange{Index: index, Kind: kind.String(), Key: key}
	switch kind {
	case kindPod:
		if p, ok := f.pods[key]; ok && p.Node == node {
			p = copyPod(p)
			vc.Pod = &p
		}
	case kindNode:
		if n, ok := f.nodes[key]; ok {
			n = copyNode(n)
			vc.Node = &n
		}
	case kindCluster:
		if f.clusterConfig != nil {
			cc := *f.clusterConfig
			vc.Cluster = &cc
		}
	case kindService:
		if s, ok := f.services[key]; ok {
			s = s.Clone()
			vc.Service = &s
		}
	case kindEndpoints:
		if e, ok := f.svc.endpoints[key]; ok {
			e = e.Clone()
			vc.Endpoints = &e
		}
	case kindIngress:
		if in, ok := f.ingresses[key]; ok {
			in = in.Clone()
			vc.Ingress = &in
		}
	}
	vc.Deleted = vc.Pod == nil && vc.Node == nil && vc.Cluster == nil && vc.Service == nil && vc.Endpoints == nil && vc.Ingress == nil
	return vc
}

// wholeView returns node's view at now, each object with the index of its
// last change where the indexes know it (else now), in index order. Called
// with f.mu held.
func (f *FSM) wholeView(node string, now uint64) []ViewChange {
	pods := f.idx.podsByNode[node]
	known := func(i uint64) uint64 {
		if i == 0 || i > now {
			return now
		}
		return i
	}

	out := make([]ViewChange, 0, len(pods)+len(f.nodes)+1+len(f.services)+len(f.svc.endpoints)+len(f.ingresses))
	for id := range pods {
		out = append(out, f.viewObject(node, kindPod, id, known(f.idx.podChanged[id])))
	}
	for name, n := range f.nodes {
		out = append(out, f.viewObject(node, kindNode, name, known(n.ModifyIndex)))
	}
	if f.clusterConfig != nil {
		out = append(out, f.viewObject(node, kindCluster, clusterKey, known(f.idx.clusterChanged)))
	}
	for key, s := range f.services {
		out = append(out, f.viewObject(node, kindService, key, known(s.ModifyIndex)))
	}
	for key, e := range f.svc.endpoints {
		out = append(out, f.viewObject(node, kindEndpoints, key, known(e.ModifyIndex)))
	}
	for key, in := range f.ingresses {
		out = append(out, f.viewObject(node, kindIngress, key, known(in.ModifyIndex)))
	}
	slices.SortFunc(out, func(a, b ViewChange) int {
		return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// viewWaiters holds a channel per node whose view a watch waits on; a
// change to the view closes it and the next waiter makes a new one. Only
// the watches of a node whose pods changed wake, so a pod status report
// wakes one watch, not every one in the fleet; a node or cluster change
// wakes them all.
//
// wait is called with FSM.mu read-locked, wake and wakeAll with it
// write-locked: a change cannot fall between a watch's check of the view
// and its taking the channel. mu orders the readers among themselves.
type viewWaiters struct {
	mu     sync.Mutex
	byNode map[string]chan struct{}
}

// wait returns the channel the next change to node's view closes.
func (w *viewWaiters) wait(node string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.byNode[node]
	if ch == nil {
		ch = make(chan struct{})
		w.byNode[node] = ch
	}
	return ch
}

// wake wakes the watches of node's view.
func (w *viewWaiters) wake(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch := w.byNode[node]; ch != nil {
		close(ch)
		delete(w.byNode, node)
	}
}

// wakeAll wakes every watch.
func (w *viewWaiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for node, ch := range w.byNode {
		close(ch)
		delete(w.byNode, node)
	}
}
