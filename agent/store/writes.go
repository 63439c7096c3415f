package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// Typed writes: each builds its command and calls Write. Reads are on
// State() and, for the callers' convenience, the methods at the end.

// CreateDeployment stores a new deployment with generation 1. It fails with
// ErrExists if one of that name exists, even one being deleted.
func (s *Store) CreateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	resp, err := s.Write(ctx, &state.CreateDeployment{Deployment: d})
	if err != nil {
		return api.Deployment{}, err
	}
	return answer[api.Deployment](state.CreateDeploymentType, resp)
}

// UpdateDeployment replaces a deployment's spec. Its generation grows only
// when the pod template (containers or labels) changes, which starts a
// rollout; a replicas-only change keeps it. It fails with ErrNotFound if
// the deployment does not exist or is being deleted.
func (s *Store) UpdateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	resp, err := s.Write(ctx, &state.UpdateDeployment{Deployment: d})
	if err != nil {
		return api.Deployment{}, err
	}
	return answer[api.Deployment](state.UpdateDeploymentType, resp)
}

// DeleteDeployment marks a deployment as being deleted; the controller stops
// its pods and then calls RemoveDeployment. Deleting it again is no error;
// a missing one is ErrNotFound.
func (s *Store) DeleteDeployment(ctx context.Context, ns, name string) error {
	_, err := s.Write(ctx, &state.DeleteDeployment{Namespace: ns, Name: name})
	return err
}

// RemoveDeployment removes a deployment that is being deleted and has no
// pods left; otherwise it fails with ErrConflict (ErrNotFound if missing).
func (s *Store) RemoveDeployment(ctx context.Context, ns, name string) error {
	_, err := s.Write(ctx, &state.RemoveDeployment{Namespace: ns, Name: name})
	return err
}

// PutPods inserts new pods: it fails with ErrExists if a pod ID is taken,
// ErrNotFound if a pod's deployment is missing and ErrConflict if it is
// being deleted. Pods go in entries of bounded size, each applied entirely
// or not at all; a failure leaves the earlier entries applied.
func (s *Store) PutPods(ctx context.Context, pods []api.Pod) error {
	for len(pods) > 0 {
		n, size := 0, 0
		for n < len(pods) && n < state.MaxIDs {
			b, err := json.Marshal(&pods[n])
			if err != nil {
				return err
			}
			if n > 0 && size+len(b) > state.MaxEntryBytes/2 {
				break
			}
			size += len(b)
			n++
		}
		if _, err := s.Write(ctx, &state.PutPods{Pods: pods[:n]}); err != nil {
			return err
		}
		pods = pods[n:]
	}
	return nil
}

// StopPods sets Stop and the terminating phase on pods; the node stops them
// and then removes them. Unknown IDs are ignored.
func (s *Store) StopPods(ctx context.Context, ids []string) error {
	return chunks(ids, state.MaxIDs, func(part []string) error {
		_, err := s.Write(ctx, &state.StopPods{IDs: part})
		return err
	})
}

// SetPodStatus records a status this node observed of one of its pods.
func (s *Store) SetPodStatus(ctx context.Context, id string, st api.PodStatus) error {
	return s.SetPodStatuses(ctx, []state.PodStatusUpdate{{ID: id, Status: st}})
}

// SetPodStatuses records statuses this node observed of its pods, in as
// few entries as the limits allow. Pods not placed on this node, and
// unknown IDs, are ignored.
func (s *Store) SetPodStatuses(ctx context.Context, updates []state.PodStatusUpdate) error {
	return chunks(updates, api.MaxPodsPerNode, func(part []state.PodStatusUpdate) error {
		_, err := s.Write(ctx, &state.SetPodStatuses{Node: string(s.localID), Updates: part})
		return err
	})
}

// RemovePods deletes pods placed on this node from the state, once the node
// stopped them. Unknown IDs, and pods of other nodes, are ignored.
func (s *Store) RemovePods(ctx context.Context, ids []string) error {
	return chunks(ids, state.MaxIDs, func(part []string) error {
		_, err := s.Write(ctx, &state.RemovePods{Node: string(s.localID), IDs: part})
		return err
	})
}

// ForgetPods removes pods from the state whatever node they are placed on:
// the leader's cleanup of pods that lost nodes will never remove.
func (s *Store) ForgetPods(ctx context.Context, ids []string) error {
	return chunks(ids, state.MaxIDs, func(part []string) error {
		_, err := s.Write(ctx, &state.RemovePods{IDs: part})
		return err
	})
}

// UpsertNode registers a node or replaces its record, PodCIDR included (a
// dev agent records its configured range so). Fleet agents use RegisterNode.
func (s *Store) UpsertNode(ctx context.Context, n api.Node) error {
	_, err := s.Write(ctx, &state.UpsertNode{Node: n})
	return err
}

// RegisterNode registers a node or updates its record (addresses,
// capacity, status, labels, …) and returns it as stored. A node that has a
// pod range keeps it; one without gets the lowest free block of
// ClusterConfig.NodeMaskBits in ClusterConfig.PodCIDR, chosen by the FSM so
// every replica agrees. n.PodCIDR is ignored. It fails with ErrConflict
// while no ClusterConfig is set or when the cluster's range is exhausted.
func (s *Store) RegisterNode(ctx context.Context, n api.Node) (api.Node, error) {
	resp, err := s.Write(ctx, &state.RegisterNode{Node: n})
	if err != nil {
		return api.Node{}, err
	}
	return answer[api.Node](state.RegisterNodeType, resp)
}

// SetNodeSchedule cordons, uncordons or drains a node and returns it as
// stored. A missing node is ErrNotFound.
func (s *Store) SetNodeSchedule(ctx context.Context, name string, sched api.NodeSchedule) (api.Node, error) {
	resp, err := s.Write(ctx, &state.SetNodeSchedule{Name: name, Schedule: sched})
	if err != nil {
		return api.Node{}, err
	}
	return answer[api.Node](state.SetNodeScheduleType, resp)
}

// StopPodsWithReason is StopPods recording why on each pod.
func (s *Store) StopPodsWithReason(ctx context.Context, ids []string, reason string) error {
	return chunks(ids, state.MaxIDs, func(part []string) error {
		_, err := s.Write(ctx, &state.StopPods{IDs: part, Reason: reason})
		return err
	})
}

// SetNodeStatus records a node's status as membership sees it:
// api.NodeReady, NodeDown or NodeLeft. A missing node is ErrNotFound.
func (s *Store) SetNodeStatus(ctx context.Context, name, status string) error {
	_, err := s.Write(ctx, &state.SetNodeStatus{Name: name, Status: status})
	return err
}

// SetClusterConfig sets the cluster's network layout unless one is set
// already: the first server whose call commits wins, and later calls (with
// the same layout or not) change nothing and return nil. Read the layout in
// force with ClusterConfig.
func (s *Store) SetClusterConfig(ctx context.Context, cc state.ClusterConfig) error {
	if _, err := s.Write(ctx, &state.SetClusterConfig{Config: cc}); err != nil {
		return err
	}
	if cur, ok := s.fsm.ClusterConfig(); ok && cur != cc {
		s.logger.Warn("the cluster config was set before, differently; keeping it", "in_force", cur, "asked", cc)
	}
	return nil
}

// RemoveNode removes a node from the fleet: its record and its pods, and
// every certificate issued for its name until now is revoked fleet-wide.
// Removing an unknown name still revokes it.
func (s *Store) RemoveNode(ctx context.Context, name string) error {
	_, err := s.Write(ctx, &state.RemoveNode{Name: name, At: time.Now().UTC()})
	return err
}

// chunks calls f on consecutive parts of at most n items of items.
func chunks[T any](items []T, n int, f func([]T) error) error {
	for len(items) > 0 {
		k := min(n, len(items))
		if err := f(items[:k]); err != nil {
			return err
		}
		items = items[k:]
	}
	return nil
}

// Reads of the local replica, for callers that take a Store.

// Deployment returns a deployment, including one being deleted.
func (s *Store) Deployment(ns, name string) (api.Deployment, bool) { return s.fsm.Deployment(ns, name) }

// Deployments returns the deployments of a namespace ("" for all), sorted.
func (s *Store) Deployments(ns string) []api.Deployment { return s.fsm.Deployments(ns) }

// Pod returns a pod by ID ("namespace/name").
func (s *Store) Pod(id string) (api.Pod, bool) { return s.fsm.Pod(id) }

// Pods returns the pods filter selects, sorted by ID.
func (s *Store) Pods(filter state.PodFilter) []api.Pod { return s.fsm.Pods(filter) }

// Node returns a node by name.
func (s *Store) Node(name string) (api.Node, bool) { return s.fsm.Node(name) }

// Nodes returns all nodes, sorted by name.
func (s *Store) Nodes() []api.Node { return s.fsm.Nodes() }

// ClusterConfig returns the cluster's network layout; false until one is set.
func (s *Store) ClusterConfig() (state.ClusterConfig, bool) { return s.fsm.ClusterConfig() }

// Revocations returns every node name removed from the fleet, with when.
func (s *Store) Revocations() map[string]time.Time { return s.fsm.Revocations() }

// PodNodes returns the node each known pod ID is placed on.
func (s *Store) PodNodes(ids []string) map[string]string { return s.fsm.PodNodes(ids) }

// Skipped returns how many raft entries the state skipped as unreadable or
// invalid since it started, and why it skipped the last one.
func (s *Store) Skipped() (uint64, string) { return s.fsm.Skipped() }

// NodeRemoved reports whether, and when, a node name was removed from the
// fleet (RemoveNode).
func (s *Store) NodeRemoved(name string) (time.Time, bool) { return s.fsm.Revoked(name) }

// Changes returns the deployments whose spec or pods changed after index
// since (see state.FSM.Changes).
func (s *Store) Changes(since uint64) ([]string, bool, uint64) { return s.fsm.Changes(since) }

// NodePods returns the pods that are not stopping, by node; they are shared
// with the state and must not be modified.
func (s *Store) NodePods() map[string][]api.Pod { return s.fsm.NodePods() }

// PodsChanged returns the index of the last entry that changed a pod
// placed on node.
func (s *Store) PodsChanged(node string) uint64 { return s.fsm.PodsChanged(node) }

// NodeView returns node's view (its pods, every node, the cluster config)
// as of the applied index: the changes after since, or the whole view with
// reset set (see state.FSM.NodeView).
func (s *Store) NodeView(node string, since uint64) ([]state.ViewChange, bool, uint64) {
	return s.fsm.NodeView(node, since)
}

// NodeViewChanged reports whether NodeView(node, since) has anything to say.
func (s *Store) NodeViewChanged(node string, since uint64) bool {
	return s.fsm.NodeViewChanged(node, since)
}

// WatchNodeView returns the applied index, whether node's view changed
// after since, and if not a channel closed when it may have (see
// state.FSM.WatchNodeView).
func (s *Store) WatchNodeView(node string, since uint64) (uint64, bool, <-chan struct{}) {
	return s.fsm.WatchNodeView(node, since)
}

// CreateService creates a service with its virtual IP and node ports
// assigned. A taken address or port is ErrConflict naming the holder.
func (s *Store) CreateService(ctx context.Context, svc api.Service) (api.Service, error) {
	resp, err := s.Write(ctx, &state.CreateService{Service: svc})
	if err != nil {
		return api.Service{}, err
	}
	return answer[api.Service](state.CreateServiceType, resp)
}

// UpdateService replaces a service's spec; ErrNotFound if it is missing.
func (s *Store) UpdateService(ctx context.Context, svc api.Service) (api.Service, error) {
	resp, err := s.Write(ctx, &state.UpdateService{Service: svc})
	if err != nil {
		return api.Service{}, err
	}
	return answer[api.Service](state.UpdateServiceType, resp)
}

// DeleteService removes a service; ErrNotFound if it is missing.
func (s *Store) DeleteService(ctx context.Context, ns, name string) error {
	_, err := s.Write(ctx, &state.DeleteService{Namespace: ns, Name: name})
	return err
}

// Service returns a service.
func (s *Store) Service(ns, name string) (api.Service, bool) { return s.fsm.Service(ns, name) }

// ListServices returns the services of a namespace ("" for all), sorted.
func (s *Store) ListServices(ns string) []api.Service { return s.fsm.Services(ns) }

// Services returns every service, sorted (the node's service proxy reads
// it).
func (s *Store) Services() []api.Service { return s.fsm.Services("") }

// ServiceEndpoints returns a service's endpoints.
func (s *Store) ServiceEndpoints(ns, name string) (api.Endpoints, bool) {
	return s.fsm.ServiceEndpoints(ns, name)
}

// Endpoints returns the endpoints of every service, sorted.
func (s *Store) Endpoints() []api.Endpoints { return s.fsm.AllEndpoints() }

// ServicesChanged returns the index of the last change to a service or its
// endpoints.
func (s *Store) ServicesChanged() uint64 { return s.fsm.ServicesChanged() }

// CreateIngress creates an ingress and returns it redacted. A route, TLS
// host or default backend another ingress holds is ErrConflict naming it.
// The ingress's TLS keys are checked here, before proposing, and never
// appear in an error.
func (s *Store) CreateIngress(ctx context.Context, in api.Ingress) (api.Ingress, error) {
	resp, err := s.Write(ctx, &state.CreateIngress{Ingress: in})
	if err != nil {
		return api.Ingress{}, err
	}
	return answer[api.Ingress](state.CreateIngressType, resp)
}

// UpdateIngress replaces an ingress's spec (keys included) and returns it
// redacted; ErrNotFound if it is missing.
func (s *Store) UpdateIngress(ctx context.Context, in api.Ingress) (api.Ingress, error) {
	resp, err := s.Write(ctx, &state.UpdateIngress{Ingress: in})
	if err != nil {
		return api.Ingress{}, err
	}
	return answer[api.Ingress](state.UpdateIngressType, resp)
}

// DeleteIngress removes an ingress; ErrNotFound if it is missing.
func (s *Store) DeleteIngress(ctx context.Context, ns, name string) error {
	_, err := s.Write(ctx, &state.DeleteIngress{Namespace: ns, Name: name})
	return err
}

// Ingress returns an ingress, redacted.
func (s *Store) Ingress(ns, name string) (api.Ingress, bool) { return s.fsm.Ingress(ns, name) }

// ListIngresses returns the ingresses of a namespace ("" for all), sorted
// and redacted.
func (s *Store) ListIngresses(ns string) []api.Ingress { return s.fsm.Ingresses(ns) }

// Ingresses returns every ingress with its TLS keys, sorted: for the
// ingress proxy of this agent, never for an API answer.
func (s *Store) Ingresses() []api.Ingress { return s.fsm.IngressesWithKeys() }

// IngressesChanged returns the index of the last change to an ingress.
func (s *Store) IngressesChanged() uint64 { return s.fsm.IngressesChanged() }
