package state

import "github.com/flotilla-io/flotilla/api"

// Indexes and the change journals: what lets readers look at a slice of
// the state, and at what changed since they last looked, without a scan of
// every table per read. Kept under FSM.mu by the apply functions, rebuilt
// by Restore.
//
// There are two journals. The deployment journal (Changes) says which
// deployments the controller must look at again; the object journal
// (NodeView, view.go) says which pods, nodes and cluster config a node's
// watch must be sent again. They are kept apart so that the controller's
// reach back in time does not shrink with pod status traffic it does not
// read.

// journalCap bounds each change journal. A reader further behind than that
// is told to resync fully.
const journalCap = 1 << 16

// objectJournalCap bounds the object journal watches read. Every pod status
// report is an entry: at a thousand nodes the journal must cover a server
// failover's worth of them (a few MiB at most), or watchers resync fully.
const objectJournalCap = 1 << 18

// change is one deployment key an entry touched, at that entry's index.
type change struct {
	index uint64
	key   string
}

func (c change) at() uint64 { return c.index }

// objKind is the kind of object an objChange names.
type objKind uint8

const (
	kindPod objKind = iota + 1
	kindNode
	kindCluster
	kindService
	kindEndpoints
	kindIngress
)

// String is the kind's name in a ViewChange.
func (k objKind) String() string {
	switch k {
	case kindPod:
		return ViewPod
	case kindNode:
		return ViewNode
	case kindCluster:
		return ViewCluster
	case kindService:
		return ViewService
	case kindEndpoints:
		return ViewEndpoints
	case kindIngress:
		return ViewIngress
	}
	return "unknown"
}

// clusterKey is the key of the cluster config's changes.
const clusterKey = "cluster"

// objChange is one object an entry changed, at that entry's index.
type objChange struct {
	index uint64
	kind  objKind
	key   string // pod ID, node name, or clusterKey
	// node is the node a pod is placed on, or was, for a pod that was
	// removed or moved away: whose view the change belongs to.
	node string
}

func (c objChange) at() uint64 { return c.index }

// inView reports whether the change belongs to node's view: its own pods,
// every node, the cluster config.
func (c *objChange) inView(node string) bool {
	return c.kind != kindPod || c.node == node
}

type indexes struct {
	podsByDeployment map[string]map[string]struct{} // deployment key → pod IDs
	podsByNode       map[string]map[string]struct{} // node name → pod IDs
	// nodePodsChanged is, per node, the index of the last entry that
	// changed a pod placed on it.
	nodePodsChanged map[string]uint64
	// podChanged is, per pod in the state, the index of the entry that
	// last changed it, and clusterChanged the cluster config's: a whole
	// view carries them without walking the object journal (0 after a
	// Restore: not known).
	podChanged     map[string]uint64
	clusterChanged uint64
	restoredAt     uint64 // index of the last Restore: every node's pods changed

	journal []change
	// journalFrom is the first index the journal covers completely: a
	// reader that saw everything before it can read the rest here.
	journalFrom uint64
	// nodesChanged is the index of the last entry that changed a node or
	// the cluster config: placement may change for every deployment, and
	// every node's view changed.
	nodesChanged uint64

	// objects is the object journal, in index order; objectsFrom is, as
	// journalFrom, the first index it covers completely.
	objects     []objChange
	objectsFrom uint64
	// waiters are the watches of node views waiting for a change.
	waiters *viewWaiters
}

func newIndexes() indexes {
	return indexes{
		podsByDeployment: map[string]map[string]struct{}{},
		podsByNode:       map[string]map[string]struct{}{},
		nodePodsChanged:  map[string]uint64{},
		podChanged:       map[string]uint64{},
		waiters:          &viewWaiters{byNode: map[string]chan struct{}{}},
	}
}

func addTo(m map[string]map[string]struct{}, k, id string) {
	s := m[k]
	if s == nil {
		s = map[string]struct{}{}
		m[k] = s
	}
	s[id] = struct{}{}
}

func removeFrom(m map[string]map[string]struct{}, k, id string) {
	if s := m[k]; s != nil {
		delete(s, id)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

// putPod stores a pod and indexes it. Called with f.mu held.
func (f *FSM) putPod(index uint64, p api.Pod) {
	id := p.ID()
	old, had := f.pods[id]
	if had && (old.Node != p.Node || old.Deployment != p.Deployment) {
		f.dropPod(index, id)
		had = false
	}
	f.pods[id] = p
	if had {
		f.podChangedForServices(id, &old, &p)
	} else {
		f.podChangedForServices(id, nil, &p)
	}
	addTo(f.idx.podsByDeployment, deploymentKey(p.Namespace, p.Deployment), id)
	addTo(f.idx.podsByNode, p.Node, id)
	f.idx.podChanged[id] = index
	f.podTouched(index, id, p.Node)
	f.touch(index, deploymentKey(p.Namespace, p.Deployment))
}

// dropPod removes a pod and its index entries. Called with f.mu held.
func (f *FSM) dropPod(index uint64, id string) {
	p, ok := f.pods[id]
	if !ok {
		return
	}
	delete(f.pods, id)
	delete(f.idx.podChanged, id)
	f.podChangedForServices(id, &p, nil)
	key := deploymentKey(p.Namespace, p.Deployment)
	removeFrom(f.idx.podsByDeployment, key, id)
	removeFrom(f.idx.podsByNode, p.Node, id)
	f.podTouched(index, id, p.Node)
	f.touch(index, key)
}

// touch records that the entry at index changed the deployment key (its
// spec or its pods). Called with f.mu held.
func (f *FSM) touch(index uint64, key string) {
	j := f.idx.journal
	if n := len(j); n > 0 && j[n-1].index == index && j[n-1].key == key {
		return
	}
	if len(j) >= journalCap {
		j, f.idx.journalFrom = trimJournal(j)
	}
	f.idx.journal = append(j, change{index, key})
}

// podTouched records that the entry at index changed pod id, placed on
// node (or removed from it), and wakes that node's watches. Called with
// f.mu held.
func (f *FSM) podTouched(index uint64, id, node string) {
	f.idx.nodePodsChanged[node] = index
	f.record(objChange{index: index, kind: kindPod, key: id, node: node})
	f.idx.waiters.wake(node)
}

// nodeTouched records that the entry at index changed (or removed) node
// name. Called with f.mu held.
func (f *FSM) nodeTouched(index uint64, name string) {
	f.idx.nodesChanged = index
	f.record(objChange{index: index, kind: kindNode, key: name})
	f.idx.waiters.wakeAll()
	f.nodeChangedForServices(name)
}

// clusterTouched records that the entry at index set the cluster config.
// Called with f.mu held.
func (f *FSM) clusterTouched(index uint64) {
	f.idx.nodesChanged = index
	f.idx.clusterChanged = index
	f.record(objChange{index: index, kind: kindCluster, key: clusterKey})
	f.idx.waiters.wakeAll()
}

// record appends c to the object journal. Called with f.mu held.
func (f *FSM) record(c objChange) {
	j := f.idx.objects
	if n := len(j); n > 0 && j[n-1] == c {
		return
	}
	if len(j) >= objectJournalCap {
		j, f.idx.objectsFrom = trimJournal(j)
	}
	f.idx.objects = append(j, c)
}

// trimJournal drops the oldest half of a full journal, keeping whole
// entries (all the changes of one index or none), and returns what is left
// and the first index it covers completely. Dropping half at once makes
// appending amortized O(1).
func trimJournal[C interface{ at() uint64 }](j []C) ([]C, uint64) {
	cut := len(j) / 2
	for cut < len(j) && j[cut].at() == j[cut-1].at() {
		cut++
	}
	from := j[cut-1].at() + 1
	return append(j[:0], j[cut:]...), from
}

// rebuildIndexes recomputes the indexes from the tables (after Restore).
// The journal starts afresh: readers resync fully. Called with f.mu held.
func (f *FSM) rebuildIndexes(index uint64) {
	// Every watch must come back and resync.
	f.idx.waiters.wakeAll()
	f.idx = newIndexes()
	for id, p := range f.pods {
		addTo(f.idx.podsByDeployment, deploymentKey(p.Namespace, p.Deployment), id)
		addTo(f.idx.podsByNode, p.Node, id)
	}
	f.idx.journalFrom = index + 1
	f.idx.objectsFrom = index + 1
	f.idx.nodesChanged = index
	f.idx.restoredAt = index
	f.rebuildServices(index)
	f.rebuildIngresses(index)
}

// PodsChanged returns the index of the last entry that changed a pod
// placed on node (or restored the state): a node agent passes over its
// pods only when it moved.
func (f *FSM) PodsChanged(node string) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return max(f.idx.nodePodsChanged[node], f.idx.restoredAt)
}

// Changes returns the keys ("namespace/name") of the deployments whose
// spec or pods changed after index since, up to the returned index now.
// full is true when the caller must look at every deployment instead: a
// node or the cluster config changed, the state was restored from a
// snapshot, or the journal no longer reaches back to since. since 0 is
// always full.
func (f *FSM) Changes(since uint64) (keys []string, full bool, now uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	now = f.index
	if since == 0 || since+1 < f.idx.journalFrom || f.idx.nodesChanged > since {
		return nil, true, now
	}
	seen := map[string]bool{}
	j := f.idx.journal
	// The journal is in index order: skip what the caller has seen.
	lo, hi := 0, len(j)
	for lo < hi {
		mid := (lo + hi) / 2
		if j[mid].index <= since {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for _, c := range j[lo:] {
		if !seen[c.key] {
			seen[c.key] = true
			keys = append(keys, c.key)
		}
	}
	return keys, false, now
}

// NodePods returns the pods that are not stopping, by node, for placement.
// The pods share their slices and maps with the tables (values there are
// never modified in place): callers must not modify them.
func (f *FSM) NodePods() map[string][]api.Pod {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string][]api.Pod, len(f.idx.podsByNode))
	for node, ids := range f.idx.podsByNode {
		for id := range ids {
			if p := f.pods[id]; !p.Stop {
				out[node] = append(out[node], p)
			}
		}
	}
	return out
}
