package state

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// Reads. Each returns a deep copy, so callers cannot change the tables, and
// is safe to call concurrently with Apply.

// PodFilter selects pods; empty fields match any pod.
type PodFilter struct {
	Namespace  string
	Deployment string
	Node       string
}

func (f PodFilter) match(p *api.Pod) bool {
	return (f.Namespace == "" || p.Namespace == f.Namespace) &&
		(f.Deployment == "" || p.Deployment == f.Deployment) &&
		(f.Node == "" || p.Node == f.Node)
}

// Deployment returns a deployment, including one being deleted.
func (f *FSM) Deployment(ns, name string) (api.Deployment, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, ok := f.deployments[deploymentKey(ns, name)]
	if !ok {
		return api.Deployment{}, false
	}
	return copyDeployment(d), true
}

// Deployments returns the deployments of a namespace ("" for all), sorted by
// namespace and name.
func (f *FSM) Deployments(ns string) []api.Deployment {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Deployment, 0, len(f.deployments))
	for _, d := range f.deployments {
		if ns == "" || d.Namespace == ns {
			out = append(out, copyDeployment(d))
		}
	}
	slices.SortFunc(out, func(a, b api.Deployment) int {
		return strings.Compare(deploymentKey(a.Namespace, a.Name), deploymentKey(b.Namespace, b.Name))
	})
	return out
}

// Pod returns a pod by ID ("namespace/name").
func (f *FSM) Pod(id string) (api.Pod, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok := f.pods[id]
	if !ok {
		return api.Pod{}, false
	}
	return copyPod(p), true
}

// Pods returns the pods filter selects, sorted by ID. A filter naming a
// deployment or a node reads only its pods.
func (f *FSM) Pods(filter PodFilter) []api.Pod {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var ids map[string]struct{}
	switch {
	case filter.Deployment != "" && filter.Namespace != "":
		ids = f.idx.podsByDeployment[deploymentKey(filter.Namespace, filter.Deployment)]
	case filter.Node != "":
		ids = f.idx.podsByNode[filter.Node]
	}
	var out []api.Pod
	add := func(p *api.Pod) {
		if filter.match(p) {
			out = append(out, copyPod(*p))
		}
	}
	if ids != nil || filter.Node != "" || (filter.Deployment != "" && filter.Namespace != "") {
		for id := range ids {
			p := f.pods[id]
			add(&p)
		}
	} else {
		for _, p := range f.pods {
			add(&p)
		}
	}
	slices.SortFunc(out, func(a, b api.Pod) int { return strings.Compare(a.ID(), b.ID()) })
	return out
}

// PodNodes returns the node each of ids is placed on; unknown IDs are left
// out. It is what authorizing a node's writes about pods needs, without
// copying the pods.
func (f *FSM) PodNodes(ids []string) map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		if p, ok := f.pods[id]; ok {
			out[id] = p.Node
		}
	}
	return out
}

// Node returns a node by name.
func (f *FSM) Node(name string) (api.Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.nodes[name]
	if !ok {
		return api.Node{}, false
	}
	return copyNode(n), true
}

// Nodes returns all nodes, sorted by name.
func (f *FSM) Nodes() []api.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Node, 0, len(f.nodes))
	for _, n := range f.nodes {
		out = append(out, copyNode(n))
	}
	slices.SortFunc(out, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ClusterConfig returns the cluster's network layout; false until one is set.
func (f *FSM) ClusterConfig() (ClusterConfig, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.clusterConfig == nil {
		return ClusterConfig{}, false
	}
	return *f.clusterConfig, true
}

// Revoked returns when the node name was removed from the fleet: every
// certificate issued for it before then is revoked. False if it never was.
func (f *FSM) Revoked(name string) (time.Time, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	at, ok := f.revoked[name]
	return at, ok
}

// Revocations returns every removed node name and its removal time.
func (f *FSM) Revocations() map[string]time.Time {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.revoked)
}

// Index returns the raft index of the last entry applied (or skipped).
// Raft's own entries (configuration, no-ops) do not advance it.
func (f *FSM) Index() uint64 {
	i, _ := f.Watch()
	return i
}

// Watch returns the applied index and a channel the next applied entry
// closes, read together so no entry can slip between them. Take the channel
// before reading the state, then wait on it, so a change between the read
// and the wait is not missed (Nomad's blocking queries work so).
func (f *FSM) Watch() (uint64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index, f.changed
}

// Skipped returns how many entries the FSM skipped since it started
// (replays included) and why it skipped the last one.
func (f *FSM) Skipped() (count uint64, last string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.skipped, f.lastSkip
}
