package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/api"
)

// FSM is the state machine raft feeds with committed entries: the tables in
// memory, guarded by mu. Create it with NewFSM and hand it to the raft node;
// read it through its read methods (reads.go).
//
// Apply must be deterministic: every replica applies the same entries in the
// same order and must end in the same state, so nothing in here reads the
// clock, draws random numbers or iterates a map where order shows. Indexes
// come from the raft log entry, times from the command.
//
// Apply never panics. An entry it cannot decode, of a type it does not
// know, or that fails validation is skipped: counted, logged, and answered
// with an error, while the FSM goes on with the next one. Every replica
// skips the same entries (decoding and validation depend on the bytes
// only), so they do not diverge, and a bad entry in the log cannot keep an
// agent from starting, as a panic would at every replay.
//
// Values in the tables are never modified in place: a write replaces the
// table entry with a new value. That is what lets Snapshot copy just the
// maps and Persist encode them while Apply goes on.
type FSM struct {
	log *slog.Logger

	mu          sync.RWMutex
	index       uint64 // raft index of the last entry applied to the tables
	deployments map[string]api.Deployment
	pods        map[string]api.Pod
	nodes       map[string]api.Node
	// revoked maps a removed node's name to the time it was removed:
	// certificates for that name issued before it are refused.
	revoked map[string]time.Time
	// services holds every service; svc its indexes and derived endpoints
	// (services.go).
	services map[string]api.Service
	svc      serviceIndex
	// ingresses holds every ingress with its TLS keys; ing its index
	// (ingress.go).
	ingresses map[string]api.Ingress
	ing       ingressIndex
	// clusterConfig is nil until the first SetClusterConfig; the value it
	// points to is never modified.
	clusterConfig *ClusterConfig
	// changed is closed, and replaced, by every applied entry.
	changed chan struct{}
	idx     indexes

	skipped  uint64 // entries skipped since start (replays included)
	lastSkip string
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an empty state machine. logger receives a line for every
// skipped entry; nil discards them.
func NewFSM(logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FSM{
		log:         logger.With("component", "fsm"),
		deployments: map[string]api.Deployment{},
		pods:        map[string]api.Pod{},
		nodes:       map[string]api.Node{},
		revoked:     map[string]time.Time{},
		services:    map[string]api.Service{},
		svc:         newServiceIndex(),
		ingresses:   map[string]api.Ingress{},
		ing:         newIngressIndex(),
		changed:     make(chan struct{}),
		idx:         newIndexes(),
	}
}

func deploymentKey(ns, name string) string { return ns + "/" + name }

// Apply applies one committed entry. It returns nil, an error the proposer
// surfaces to its caller, or the written object (api.Deployment, api.Node).
func (f *FSM) Apply(l *raft.Log) (resp any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() {
		// Every entry advances the index, skipped or not, so that waiting
		// for an index never hangs on a bad entry.
		f.flushEndpoints(l.Index)
		f.index = l.Index
		close(f.changed)
		f.changed = make(chan struct{})
	}()
	defer func() {
		// A bug in an apply function must not take every replica down at
		// every replay. The functions check before they write, so a panic
		// leaves the tables as they were.
		if r := recover(); r != nil {
			resp = f.skip(l.Index, fmt.Errorf("apply panicked: %v", r))
		}
	}()
	if len(l.Data) > MaxEntryBytes {
		return f.skip(l.Index, fmt.Errorf("the entry is %d bytes, more than %d", len(l.Data), MaxEntryBytes))
	}
	cmd, err := Decode(l.Data)
	if err != nil {
		return f.skip(l.Index, err)
	}
	if err := ValidateEntry(cmd); err != nil {
		return f.skip(l.Index, fmt.Errorf("%s entry: %w", cmd.Type(), err))
	}
	switch c := cmd.(type) {
	case *CreateDeployment:
		return f.applyCreateDeployment(l.Index, c)
	case *UpdateDeployment:
		return f.applyUpdateDeployment(l.Index, c)
	case *DeleteDeployment:
		return f.applyDeleteDeployment(l.Index, c)
	case *RemoveDeployment:
		return f.applyRemoveDeployment(l.Index, c)
	case *PutPods:
		return f.applyPutPods(l.Index, c)
	case *StopPods:
		return f.applyStopPods(l.Index, c)
	case *SetPodStatus:
		f.setPodStatus(l.Index, "", c.ID, c.Status)
		return nil
	case *SetPodStatuses:
		for _, u := range c.Updates {
			f.setPodStatus(l.Index, c.Node, u.ID, u.Status)
		}
		return nil
	case *RemovePods:
		return f.applyRemovePods(l.Index, c)
	case *UpsertNode:
		n := c.Node
		keepSchedule(&n, f.nodes)
		n.ModifyIndex = l.Index
		f.nodes[n.Name] = n
		f.nodeTouched(l.Index, n.Name)
		return nil
	case *SetClusterConfig:
		return f.applySetClusterConfig(l.Index, c)
	case *RegisterNode:
		return f.applyRegisterNode(l.Index, c)
	case *SetNodeStatus:
		return f.applySetNodeStatus(l.Index, c)
	case *RemoveNode:
		return f.applyRemoveNode(l.Index, c)
	case *SetNodeSchedule:
		return f.applySetNodeSchedule(l.Index, c)
	case *CreateService:
		return f.applyCreateService(l.Index, c)
	case *UpdateService:
		return f.applyUpdateService(l.Index, c)
	case *DeleteService:
		return f.applyDeleteService(l.Index, c)
	case *CreateIngress:
		return f.applyCreateIngress(l.Index, c)
	case *UpdateIngress:
		return f.applyUpdateIngress(l.Index, c)
	case *DeleteIngress:
		return f.applyDeleteIngress(l.Index, c)
	}
	return f.skip(l.Index, fmt.Errorf("%s entry: no apply function; this is a bug", cmd.Type()))
}

// skip records an entry that is not applied and returns the error its
// proposer gets.
func (f *FSM) skip(index uint64, err error) error {
	f.skipped++
	f.lastSkip = fmt.Sprintf("entry %d: %v", index, err)
	f.log.Error("skipped a raft entry the state cannot apply; the state goes on without it", "index", index, "err", err)
	return fmt.Errorf("state: raft entry %d skipped: %w", index, err)
}

func (f *FSM) applyCreateDeployment(index uint64, c *CreateDeployment) any {
	d := c.Deployment
	key := deploymentKey(d.Namespace, d.Name)
	if _, ok := f.deployments[key]; ok {
		return fmt.Errorf("deployment %s: %w", key, ErrExists)
	}
	d.Generation = 1
	d.CreateIndex, d.ModifyIndex = index, index
	d.Deleting = false
	d.Status = api.DeploymentStatus{}
	f.deployments[key] = d
	f.touch(index, key)
	return copyDeployment(d)
}

func (f *FSM) applyUpdateDeployment(index uint64, c *UpdateDeployment) any {
	d := c.Deployment
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
	f.touch(index, key)
	return copyDeployment(d)
}

// sameTemplate reports whether a and b describe the same pods. Containers are
// compared by their JSON form, which is what the log carries, so a field added
// to api.Container is compared without changing this, and nil and empty
// slices or maps (which JSON does not tell apart) compare equal.
func sameTemplate(a, b api.Deployment) bool {
	// What pods carry, or where they may run, is the template: changing it
	// rolls the pods, as Kubernetes does for its pod template. Placement
	// (spread or bin-pack) only ranks nodes for new pods.
	if !maps.Equal(a.Labels, b.Labels) || !maps.Equal(a.NodeSelector, b.NodeSelector) ||
		a.MinReady() != b.MinReady() || a.SelfFencing != b.SelfFencing {
		return false
	}
	if len(a.AntiAffinity) != 0 || len(b.AntiAffinity) != 0 {
		ja, errA := json.Marshal(a.AntiAffinity)
		jb, errB := json.Marshal(b.AntiAffinity)
		if errA != nil || errB != nil || !bytes.Equal(ja, jb) {
			return false
		}
	}
	if len(a.Containers) == 0 || len(b.Containers) == 0 {
		return len(a.Containers) == len(b.Containers)
	}
	ja, errA := json.Marshal(a.Containers)
	jb, errB := json.Marshal(b.Containers)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

func (f *FSM) applyDeleteDeployment(index uint64, c *DeleteDeployment) any {
	key := deploymentKey(c.Namespace, c.Name)
	d, ok := f.deployments[key]
	if !ok {
		return fmt.Errorf("deployment %s: %w", key, ErrNotFound)
	}
	if !d.Deleting { // deleting twice is not an error
		d.Deleting = true
		d.ModifyIndex = index
		f.deployments[key] = d
		f.touch(index, key)
	}
	return nil
}

func (f *FSM) applyRemoveDeployment(index uint64, c *RemoveDeployment) any {
	key := deploymentKey(c.Namespace, c.Name)
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
	if n := len(f.idx.podsByDeployment[key]); n > 0 {
		return fmt.Errorf("remove deployment %s: %d pods remain; stop and remove them first: %w", key, n, ErrConflict)
	}
	delete(f.deployments, key)
	f.touch(index, key)
	return nil
}

func (f *FSM) applyPutPods(index uint64, c *PutPods) any {
	// Check every pod first: the entry applies entirely or not at all.
	seen := make(map[string]bool, len(c.Pods))
	for i := range c.Pods {
		p := &c.Pods[i]
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
	for _, p := range c.Pods {
		p.CreateIndex = index
		f.putPod(index, p)
	}
	return nil
}

func (f *FSM) applyStopPods(index uint64, c *StopPods) any {
	for _, id := range c.IDs {
		p, ok := f.pods[id]
		if !ok || p.Stop {
			continue // removed already, or stopping: nothing to do
		}
		p.Stop = true
		p.StopReason = c.Reason
		p.Status.Phase = api.PodTerminating
		p.Status.Ready = false // a stopping pod takes no new traffic
		f.putPod(index, p)
	}
	return nil
}

// setPodStatus records a pod's status. With node set, a pod placed on
// another node is left alone: a node reports on its own pods only (the RPC
// layer refuses the rest; this holds even for an entry that got past it).
// An unknown ID is ignored: the pod may have been removed while its node
// reported on it.
func (f *FSM) setPodStatus(index uint64, node, id string, st api.PodStatus) {
	p, ok := f.pods[id]
	if !ok || (node != "" && p.Node != node) {
		return
	}
	if p.Stop {
		// A report may race with the stop; the pod stays terminating.
		st.Phase = api.PodTerminating
		st.Ready = false
	}
	p.Status = st
	f.putPod(index, p)
}

func (f *FSM) applyRemovePods(index uint64, c *RemovePods) any {
	for _, id := range c.IDs {
		if p, ok := f.pods[id]; ok && (c.Node == "" || p.Node == c.Node) {
			f.dropPod(index, id)
		}
	}
	return nil
}

// applySetClusterConfig sets the cluster config unless one is set: the
// first server to commit it wins, and the others' entries change nothing.
func (f *FSM) applySetClusterConfig(index uint64, c *SetClusterConfig) any {
	if f.clusterConfig != nil {
		return nil
	}
	cc := c.Config
	f.clusterConfig = &cc
	f.clusterTouched(index)
	return nil
}

// applyRegisterNode stores a node as UpsertNode does, except for its pod
// range: a node that has one keeps it, and one without gets the lowest free
// block of the cluster's range. What the entry says of PodCIDR is ignored.
func (f *FSM) applyRegisterNode(index uint64, c *RegisterNode) any {
	n := c.Node
	n.PodCIDR = ""
	keepSchedule(&n, f.nodes)
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
	f.nodeTouched(index, n.Name)
	return copyNode(n)
}

// keepSchedule carries what an operator set on a node (cordon, drain) over
// a node's own registration, which cannot set it.
func keepSchedule(n *api.Node, nodes map[string]api.Node) {
	n.Unschedulable, n.Draining = false, false
	if cur, ok := nodes[n.Name]; ok {
		n.Unschedulable, n.Draining = cur.Unschedulable, cur.Draining
	}
}

func (f *FSM) applySetNodeSchedule(index uint64, c *SetNodeSchedule) any {
	n, ok := f.nodes[c.Name]
	if !ok {
		return fmt.Errorf("node %s: %w", c.Name, ErrNotFound)
	}
	n.Unschedulable = c.Schedule.Unschedulable || c.Schedule.Draining
	n.Draining = c.Schedule.Draining
	n.ModifyIndex = index
	f.nodes[c.Name] = n
	f.nodeTouched(index, c.Name)
	return copyNode(n)
}

func (f *FSM) applySetNodeStatus(index uint64, c *SetNodeStatus) any {
	n, ok := f.nodes[c.Name]
	if !ok {
		return fmt.Errorf("node %s: %w", c.Name, ErrNotFound)
	}
	if n.Status != c.Status {
		n.Status = c.Status
		n.ModifyIndex = index
		f.nodes[c.Name] = n
		f.nodeTouched(index, c.Name)
	}
	return nil
}

// applyRemoveNode removes a node's record and its pods and revokes its
// certificates. Removing a node that is not registered still revokes: its
// name may hold a certificate that never registered.
func (f *FSM) applyRemoveNode(index uint64, c *RemoveNode) any {
	delete(f.nodes, c.Name)
	for id := range f.idx.podsByNode[c.Name] {
		f.dropPod(index, id)
	}
	f.nodeTouched(index, c.Name)
	if at, ok := f.revoked[c.Name]; !ok || c.At.After(at) {
		f.revoked[c.Name] = c.At
	}
	return nil
}
