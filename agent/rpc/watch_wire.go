package rpc

import (
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// pathWatch: GET /rpc/v1/watch?since=N&wait=30s, a blocking query (as
// Nomad's) for what the calling node needs: its own pods, every node (for
// routes) and the cluster config. It answers once something in that view
// changed after index since, or when wait has passed.
const pathWatch = "/rpc/v1/watch"

// Kinds of watched objects.
const (
	WatchPod     = "pod"
	WatchNode    = "node"
	WatchCluster = "cluster"
	// Every node watches every service and its endpoints.
	WatchService   = "service"
	WatchEndpoints = "endpoints"
	// Every node watches every ingress, with its TLS keys.
	WatchIngress = "ingress"
)

// WatchResponse answers a watch: the changes to the caller's view after
// the index it asked from, up to Index. Applying Events in order to a view
// at the asked index gives the view at Index.
type WatchResponse struct {
	// Index is the raft index the view is now at: ask from it next.
	Index uint64 `json:"index"`
	// Reset means Events are the whole view at Index: the watcher drops
	// everything it holds first. It comes for since 0, and when the server
	// no longer knows what changed since then (compacted, or it restarted
	// from a snapshot).
	Reset bool `json:"reset,omitempty"`
	// Leader is the raft leader's node name, where writes go ("" unknown).
	Leader string       `json:"leader,omitempty"`
	Events []WatchEvent `json:"events,omitempty"`
}

// WatchEvent is the state of one object of the view after its last change
// up to the response's Index. Events are in the order of Index; an object
// that changed several times comes once, as it is now.
type WatchEvent struct {
	// Index is the raft index of the object's last change.
	Index uint64 `json:"index"`
	Kind  string `json:"kind"`
	// Key is the pod's ID, the node's name, "cluster", or a service's or
	// an ingress's "namespace/name" (for a service's endpoints too).
	Key       string               `json:"key"`
	Deleted   bool                 `json:"deleted,omitempty"`
	Pod       *api.Pod             `json:"pod,omitempty"`
	Node      *api.Node            `json:"node,omitempty"`
	Cluster   *state.ClusterConfig `json:"cluster,omitempty"`
	Service   *api.Service         `json:"service,omitempty"`
	Endpoints *api.Endpoints       `json:"endpoints,omitempty"`
	// Ingress carries its TLS keys: watches are served only to agents
	// holding a certificate of the cluster.
	Ingress *api.Ingress `json:"ingress,omitempty"`
}
