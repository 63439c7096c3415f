package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/api"
)

// fsm is the state machine raft feeds with committed entries: three tables
// and the cluster config in memory, guarded by mu.
//
// Apply must be deterministic: every replica applies the same entries in the
// same order and must end in the same state, so nothing in here reads the
// clock, draws random numbers or iterates a map where order shows. Indexes
// come from the raft log entry.
//
// Values in the tables are never modified in place: a write replaces the
// table entry with a new value. That is what lets Snapshot copy just the
// maps and Persist encode them while Apply goes on.
type fsm struct {
	mu          sync.RWMutex
	index       uint64 // raft index of the last entry applied to the tables
	deployments map[string]api.Deployment
	pods        map[string]api.Pod
	nodes       map[string]api.Node
	// clusterConfig is nil until the first SetClusterConfig; the value it
	// points to is never modified.
	clusterConfig *ClusterConfig
	// changed is closed, and replaced, by every applied entry.
	changed chan struct{}
}

var _ raft.FSM = (*fsm)(nil)

func newFSM() *fsm {
	return &fsm{
		deployments: map[string]api.Deployment{},
		pods:        map[string]api.Pod{},
		nodes:       map[string]api.Node{},
		changed:     make(chan struct{}),
	}
}

func deploymentKey(ns, name string) string { return ns + "/" + name }

// Apply applies one committed entry. It returns nil, an error the proposer
// surfaces to its caller, or the written object (api.Deployment, api.Node):
// the values encodeResponse can carry to a follower that forwarded the
// write. An entry it cannot decode
// or whose type it does not know panics, as in Nomad: skipping it would let
// this replica silently diverge from the others.
func (f *fsm) Apply(l *raft.Log) any {
	if len(l.Data) == 0 {
		panic(fmt.Sprintf("state: raft entry %d is empty", l.Index))
	}
	t, body := MessageType(l.Data[0]), l.Data[1:]

	f.mu.Lock()
	defer f.mu.Unlock()

	var resp any
	switch t {
	case CreateDeploymentType:
		resp = f.applyCreateDeployment(l.Index, body)
	case UpdateDeploymentType:
		resp = f.applyUpdateDeployment(l.Index, body)
	case DeleteDeploymentType:
		resp = f.applyDeleteDeployment(l.Index, body)
	case RemoveDeploymentType:
		resp = f.applyRemoveDeployment(l.Index, body)
	case PutPodsType:
		resp = f.applyPutPods(l.Index, body)
	case StopPodsType:
		resp = f.applyStopPods(l.Index, body)
	case SetPodStatusType:
		resp = f.applySetPodStatus(l.Index, body)
	case RemovePodsType:
		resp = f.applyRemovePods(l.Index, body)
	case UpsertNodeType:
		resp = f.applyUpsertNode(l.Index, body)
	case SetClusterConfigType:
		resp = f.applySetClusterConfig(l.Index, body)
	case RegisterNodeType:
		resp = f.applyRegisterNode(l.Index, body)
	case SetNodeStatusType:
		resp = f.applySetNodeStatus(l.Index, body)
	default:
		panic(fmt.Sprintf("state: raft entry %d has unknown message type %d; was it written by a newer flotilla-agent?", l.Index, t))
	}
	f.index = l.Index
	close(f.changed)
	f.changed = make(chan struct{})
	return resp
}

func decode(t MessageType, index uint64, body []byte, v any) {
	if err := json.Unmarshal(body, v); err != nil {
		panic(fmt.Sprintf("state: decode %s entry %d: %v", t, index, err))
	}
}

func (f *fsm) applyCreateDeployment(index uint64, body []byte) any {
	var req DeploymentRequest
	decode(CreateDeploymentType, index, body, &req)
	d := req.Deployment
	key := deploymentKey(d.Namespace, d.Name)
	if _, ok := f.deployments[key]; ok {
		return fmt.Errorf("deployment %s: %w", key, ErrExists)
	}
	d.Generation = 1
	d.CreateIndex, d.ModifyIndex = index, index
	d.Deleting = false
	d.Status = api.DeploymentStatus{}
	f.deployments[key] = d
	return copyDeployment(d)
}

func (f *fsm) applyUpdateDeployment(index uint64, body []byte) any {
	var req DeploymentRequest
	decode(UpdateDeploymentType, index, body, &req)
	d := req.Deployment
	key := deploymentKey(d.Namespace, d.Name)
	cur, ok := f.deployments[key]
	if !ok || cur.Deleting {
		return fmt.Errorf("deployment %s: %w", key, ErrNotFound)
	}
	// Generation versions the pod template: only a change of what runs in
	// the pods starts a rollout; a replicas-only change does not.
	d.Generation = cur.Generation
	if !sameTemplate(cur, d) {
		d.Generation++
	}
	d.CreateIndex, d.ModifyIndex = cur.CreateIndex, index
	d.Deleting = false
	d.Status = cur.Status
	f.deployments[key] = d
	return copyDeployment(d)
}

// sameTemplate reports whether a and b describe the same pods. Containers are
// compared by their JSON form, which is what the log carries, so a field added
// to api.Container is compared without changing this, and nil and empty
// slices or maps (which JSON does not tell apart) compare equal.
func sameTemplate(a, b api.Deployment) bool {
	if !maps.Equal(a.Labels, b.Labels) {
		return false
	}
	if len(a.Containers) == 0 || len(b.Containers) == 0 {
		return len(a.Containers) == len(b.Containers)
	}
	ja, errA := json.Marshal(a.Containers)
	jb, errB := json.Marshal(b.Containers)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

func (f *fsm) applyDeleteDeployment(index uint64, body []byte) any {
	var req DeploymentNameRequest
	decode(DeleteDeploymentType, index, body, &req)
	key := deploymentKey(req.Namespace, req.Name)
	d, ok := f.deployments[key]
	if !ok {
		return fmt.Errorf("deployment %s: %w", key, ErrNotFound)
	}
	if !d.Deleting { // deleting twice is not an error
		d.Deleting = true
		d.ModifyIndex = index
		f.deployments[key] = d
	}
	return nil
}

func (f *fsm) applyRemoveDeployment(index uint64, body []byte) any {
	var req DeploymentNameRequest
	decode(RemoveDeploymentType, index, body, &req)
	key := deploymentKey(req.Namespace, req.Name)
	d, ok := f.deployments[key]
	if !ok {
		return fmt.Errorf("deployment %s: %w", key, ErrNotFound)
	}
	// Both checks guard against a stale controller: removing a deployment
	// that was deleted and created again, or one whose pods are still there
	// and would be left without an owner.
	if !d.Deleting {
		return fmt.Errorf("remove deployment %s: it is not being deleted; delete it first: %w", key, ErrConflict)
	}
	n := 0
	for _, p := range f.pods {
		if p.Namespace == d.Namespace && p.Deployment == d.Name {
			n++
		}
	}
	if n > 0 {
		return fmt.Errorf("remove deployment %s: %d pods remain; stop and remove them first: %w", key, n, ErrConflict)
	}
	delete(f.deployments, key)
	return nil
}

func (f *fsm) applyPutPods(index uint64, body []byte) any {
	var req PutPodsRequest
	decode(PutPodsType, index, body, &req)
	// Check every pod first: the entry applies entirely or not at all.
	seen := make(map[string]bool, len(req.Pods))
	for i := range req.Pods {
		p := &req.Pods[i]
		id := p.ID()
		if _, ok := f.pods[id]; ok || seen[id] {
			return fmt.Errorf("pod %s: %w", id, ErrExists)
		}
		seen[id] = true
		if p.Deployment == "" {
			continue
		}
		key := deploymentKey(p.Namespace, p.Deployment)
		d, ok := f.deployments[key]
		if !ok {
			return fmt.Errorf("pod %s: deployment %s: %w", id, key, ErrNotFound)
		}
		if d.Deleting {
			return fmt.Errorf("pod %s: deployment %s is being deleted: %w", id, key, ErrConflict)
		}
	}
	for _, p := range req.Pods {
		p.CreateIndex = index
		f.pods[p.ID()] = p
	}
	return nil
}

func (f *fsm) applyStopPods(index uint64, body []byte) any {
	var req PodIDsRequest
	decode(StopPodsType, index, body, &req)
	for _, id := range req.IDs {
		p, ok := f.pods[id]
		if !ok || p.Stop {
			continue // removed already, or stopping: nothing to do
		}
		p.Stop = true
		p.Status.Phase = api.PodTerminating
		p.Status.Ready = false // a stopping pod takes no new traffic
		f.pods[id] = p
	}
	return nil
}

func (f *fsm) applySetPodStatus(index uint64, body []byte) any {
	var req SetPodStatusRequest
	decode(SetPodStatusType, index, body, &req)
	p, ok := f.pods[req.ID]
	if !ok {
		return nil // the pod was removed while its node reported on it
	}
	st := req.Status
	if p.Stop {
		// A report may race with the stop; the pod stays terminating.
		st.Phase = api.PodTerminating
		st.Ready = false
	}
	p.Status = st
	f.pods[req.ID] = p
	return nil
}

func (f *fsm) applyRemovePods(index uint64, body []byte) any {
	var req PodIDsRequest
	decode(RemovePodsType, index, body, &req)
	for _, id := range req.IDs {
		delete(f.pods, id)
	}
	return nil
}

func (f *fsm) applyUpsertNode(index uint64, body []byte) any {
	var req UpsertNodeRequest
	decode(UpsertNodeType, index, body, &req)
	n := req.Node
	n.ModifyIndex = index
	f.nodes[n.Name] = n
	return nil
}

// applySetClusterConfig sets the cluster config unless one is set: the
// first server to commit it wins, and the others' entries change nothing.
func (f *fsm) applySetClusterConfig(index uint64, body []byte) any {
	var req SetClusterConfigRequest
	decode(SetClusterConfigType, index, body, &req)
	if f.clusterConfig != nil {
		return nil
	}
	if err := req.Config.validate(); err != nil {
		return fmt.Errorf("cluster config: %w", err)
	}
	cc := req.Config
	f.clusterConfig = &cc
	return nil
}

// applyRegisterNode stores a node as UpsertNode does, except for its pod
// range: a node that has one keeps it, and one without gets the lowest free
// block of the cluster's range. What the entry says of PodCIDR is ignored.
func (f *fsm) applyRegisterNode(index uint64, body []byte) any {
	var req RegisterNodeRequest
	decode(RegisterNodeType, index, body, &req)
	n := req.Node
	if n.Name == "" {
		return fmt.Errorf("register node: the name is empty")
	}
	n.PodCIDR = ""
	if cur, ok := f.nodes[n.Name]; ok {
		n.PodCIDR = cur.PodCIDR
	}
	if n.PodCIDR == "" {
		p, err := allocatePodCIDR(f.clusterConfig, f.nodes)
		if err != nil {
			return fmt.Errorf("register node %s: %w", n.Name, err)
		}
		n.PodCIDR = p.String()
	}
	n.ModifyIndex = index
	f.nodes[n.Name] = n
	return copyNode(n)
}

func (f *fsm) applySetNodeStatus(index uint64, body []byte) any {
	var req SetNodeStatusRequest
	decode(SetNodeStatusType, index, body, &req)
	n, ok := f.nodes[req.Name]
	if !ok {
		return fmt.Errorf("node %s: %w", req.Name, ErrNotFound)
	}
	if n.Status != req.Status {
		n.Status = req.Status
		n.ModifyIndex = index
		f.nodes[req.Name] = n
	}
	return nil
}

// Reads. Each returns a deep copy, so callers cannot change the tables.

func (f *fsm) deployment(ns, name string) (api.Deployment, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, ok := f.deployments[deploymentKey(ns, name)]
	if !ok {
		return api.Deployment{}, false
	}
	return copyDeployment(d), true
}

func (f *fsm) listDeployments(ns string) []api.Deployment {
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

func (f *fsm) pod(id string) (api.Pod, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok := f.pods[id]
	if !ok {
		return api.Pod{}, false
	}
	return copyPod(p), true
}

func (f *fsm) listPods(filter PodFilter) []api.Pod {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []api.Pod
	for _, p := range f.pods {
		if filter.match(&p) {
			out = append(out, copyPod(p))
		}
	}
	slices.SortFunc(out, func(a, b api.Pod) int { return strings.Compare(a.ID(), b.ID()) })
	return out
}

func (f *fsm) node(name string) (api.Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.nodes[name]
	if !ok {
		return api.Node{}, false
	}
	return copyNode(n), true
}

func (f *fsm) listNodes() []api.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Node, 0, len(f.nodes))
	for _, n := range f.nodes {
		out = append(out, copyNode(n))
	}
	slices.SortFunc(out, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (f *fsm) getClusterConfig() (ClusterConfig, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.clusterConfig == nil {
		return ClusterConfig{}, false
	}
	return *f.clusterConfig, true
}

// watch returns the applied index and the channel the next entry closes,
// read together so no entry can slip between them.
func (f *fsm) watch() (uint64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index, f.changed
}

// snapshotVersion is the format of the snapshot body Persist writes.
// Version 2 added the cluster config; Restore reads 1 and 2 and refuses
// others, and an older agent refuses 2 rather than drop the new table.
const snapshotVersion = 2

// snapshotData is what a snapshot holds: every table, as sorted lists so the
// same state always encodes to the same bytes.
type snapshotData struct {
	Version     int              `json:"version"`
	Index       uint64           `json:"index"`
	Deployments []api.Deployment `json:"deployments"`
	Pods        []api.Pod        `json:"pods"`
	Nodes       []api.Node       `json:"nodes"`
	// ClusterConfig is absent until one is set (and in version 1).
	ClusterConfig *ClusterConfig `json:"cluster_config,omitempty"`
}

// Snapshot captures the tables. Copying the maps is enough because their
// values are never modified in place (see fsm).
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{
		index:         f.index,
		deployments:   maps.Clone(f.deployments),
		pods:          maps.Clone(f.pods),
		nodes:         maps.Clone(f.nodes),
		clusterConfig: f.clusterConfig,
	}, nil
}

// Restore replaces all state with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var data snapshotData
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("state: decode snapshot: %w", err)
	}
	if data.Version != 1 && data.Version != snapshotVersion {
		return fmt.Errorf("state: snapshot has format version %d; this agent reads versions 1 to %d: was it written by a newer flotilla-agent?", data.Version, snapshotVersion)
	}
	deployments := make(map[string]api.Deployment, len(data.Deployments))
	for _, d := range data.Deployments {
		deployments[deploymentKey(d.Namespace, d.Name)] = d
	}
	pods := make(map[string]api.Pod, len(data.Pods))
	for _, p := range data.Pods {
		pods[p.ID()] = p
	}
	nodes := make(map[string]api.Node, len(data.Nodes))
	for _, n := range data.Nodes {
		nodes[n.Name] = n
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.deployments, f.pods, f.nodes = deployments, pods, nodes
	f.clusterConfig = data.ClusterConfig
	f.index = data.Index
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

type fsmSnapshot struct {
	index         uint64
	deployments   map[string]api.Deployment
	pods          map[string]api.Pod
	nodes         map[string]api.Node
	clusterConfig *ClusterConfig
}

func (s *fsmSnapshot) data() snapshotData {
	data := snapshotData{
		Version:     snapshotVersion,
		Index:       s.index,
		Deployments: make([]api.Deployment, 0, len(s.deployments)),
		Pods:        make([]api.Pod, 0, len(s.pods)),
		Nodes:       make([]api.Node, 0, len(s.nodes)),
		// The pointed-to value is never modified (see fsm).
		ClusterConfig: s.clusterConfig,
	}
	for _, k := range slices.Sorted(maps.Keys(s.deployments)) {
		data.Deployments = append(data.Deployments, s.deployments[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.pods)) {
		data.Pods = append(data.Pods, s.pods[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.nodes)) {
		data.Nodes = append(data.Nodes, s.nodes[k])
	}
	return data
}

// Persist writes the snapshot; raft calls it concurrently with Apply.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.data()); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("state: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
