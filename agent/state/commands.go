package state

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flotilla-io/flotilla/api"
)

// MessageType is the first byte of every raft log entry the FSM applies; the
// rest of the entry is the JSON body of that type. Values are part of the
// on-disk format: never renumber or reuse one, only append.
type MessageType uint8

// Message types. Zero is invalid so an empty entry cannot be mistaken for one.
const (
	CreateDeploymentType MessageType = iota + 1
	UpdateDeploymentType
	DeleteDeploymentType
	RemoveDeploymentType
	PutPodsType
	StopPodsType
	SetPodStatusType
	RemovePodsType
	UpsertNodeType
	SetClusterConfigType
	RegisterNodeType
	SetNodeStatusType
)

func (t MessageType) String() string {
	switch t {
	case CreateDeploymentType:
		return "create-deployment"
	case UpdateDeploymentType:
		return "update-deployment"
	case DeleteDeploymentType:
		return "delete-deployment"
	case RemoveDeploymentType:
		return "remove-deployment"
	case PutPodsType:
		return "put-pods"
	case StopPodsType:
		return "stop-pods"
	case SetPodStatusType:
		return "set-pod-status"
	case RemovePodsType:
		return "remove-pods"
	case UpsertNodeType:
		return "upsert-node"
	case SetClusterConfigType:
		return "set-cluster-config"
	case RegisterNodeType:
		return "register-node"
	case SetNodeStatusType:
		return "set-node-status"
	}
	return fmt.Sprintf("message-type-%d", uint8(t))
}

// Request bodies. Everything Apply needs that is not a pure function of the
// current state (names, timestamps) is decided by the proposer and carried
// here, so every replica applies the same entry the same way.

// DeploymentRequest creates or updates a deployment.
type DeploymentRequest struct {
	Deployment api.Deployment `json:"deployment"`
}

// DeploymentNameRequest deletes or removes a deployment.
type DeploymentNameRequest struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// PutPodsRequest inserts new pods.
type PutPodsRequest struct {
	Pods []api.Pod `json:"pods"`
}

// PodIDsRequest stops or removes pods by ID.
type PodIDsRequest struct {
	IDs []string `json:"ids"`
}

// SetPodStatusRequest records what a pod's node observed.
type SetPodStatusRequest struct {
	ID     string        `json:"id"`
	Status api.PodStatus `json:"status"`
}

// UpsertNodeRequest registers or updates a node.
type UpsertNodeRequest struct {
	Node api.Node `json:"node"`
}

// SetClusterConfigRequest sets the cluster's network layout if unset.
type SetClusterConfigRequest struct {
	Config ClusterConfig `json:"config"`
}

// RegisterNodeRequest registers or updates a node, giving it a pod range
// from the cluster's if it has none. Node.PodCIDR is ignored.
type RegisterNodeRequest struct {
	Node api.Node `json:"node"`
}

// SetNodeStatusRequest records a node's status as membership sees it.
type SetNodeStatusRequest struct {
	Name   string `json:"name"`
	Status string `json:"status"`
}

// Node statuses SetNodeStatus accepts.
const (
	NodeReady = "ready" // alive in membership
	NodeDown  = "down"  // failed: missed its health checks
	NodeLeft  = "left"  // left the cluster on purpose
)

// Checks of request bodies, made by the write methods before they propose
// and by ApplyRaw on what a follower forwarded, so an entry the FSM cannot
// apply never reaches the log.

func (r *DeploymentRequest) check() error {
	return checkName("deployment", r.Deployment.Namespace, r.Deployment.Name)
}

func (r *DeploymentNameRequest) check() error { return checkName("deployment", r.Namespace, r.Name) }

func (r *PutPodsRequest) check() error {
	for i := range r.Pods {
		if err := checkName("pod", r.Pods[i].Namespace, r.Pods[i].Name); err != nil {
			return err
		}
	}
	return nil
}

func (r *PodIDsRequest) check() error       { return nil }
func (r *SetPodStatusRequest) check() error { return nil }
func (r *UpsertNodeRequest) check() error   { return checkNodeName(r.Node.Name) }
func (r *RegisterNodeRequest) check() error { return checkNodeName(r.Node.Name) }

func (r *SetClusterConfigRequest) check() error {
	if err := r.Config.validate(); err != nil {
		return fmt.Errorf("state: cluster config: %w", err)
	}
	return nil
}

func (r *SetNodeStatusRequest) check() error {
	if err := checkNodeName(r.Name); err != nil {
		return err
	}
	switch r.Status {
	case NodeReady, NodeDown, NodeLeft:
		return nil
	}
	return fmt.Errorf("state: node %s: status %q is not one of %q, %q, %q", r.Name, r.Status, NodeReady, NodeDown, NodeLeft)
}

func checkName(kind, ns, name string) error {
	if ns == "" || name == "" {
		return fmt.Errorf("state: %s %q/%q: namespace and name must be set", kind, ns, name)
	}
	return nil
}

func checkNodeName(name string) error {
	if name == "" {
		return errors.New("state: node name must be set")
	}
	return nil
}

// checkEntry checks a whole log entry as the FSM will read it: a known type
// byte and a body that decodes into that type's request and passes its
// check. The FSM panics on an entry it cannot decode, so an entry from
// elsewhere (a forwarded write) must pass this before it is proposed.
func checkEntry(entry []byte) (MessageType, error) {
	if len(entry) == 0 {
		return 0, errors.New("state: empty raft entry")
	}
	t, body := MessageType(entry[0]), entry[1:]
	var req interface{ check() error }
	switch t {
	case CreateDeploymentType, UpdateDeploymentType:
		req = new(DeploymentRequest)
	case DeleteDeploymentType, RemoveDeploymentType:
		req = new(DeploymentNameRequest)
	case PutPodsType:
		req = new(PutPodsRequest)
	case StopPodsType, RemovePodsType:
		req = new(PodIDsRequest)
	case SetPodStatusType:
		req = new(SetPodStatusRequest)
	case UpsertNodeType:
		req = new(UpsertNodeRequest)
	case SetClusterConfigType:
		req = new(SetClusterConfigRequest)
	case RegisterNodeType:
		req = new(RegisterNodeRequest)
	case SetNodeStatusType:
		req = new(SetNodeStatusRequest)
	default:
		return t, fmt.Errorf("state: raft entry has unknown message type %d; is the sending agent newer than this leader?", uint8(t))
	}
	if err := json.Unmarshal(body, req); err != nil {
		return t, fmt.Errorf("state: %s entry does not decode: %w", t, err)
	}
	return t, req.check()
}

// encodeCommand renders a log entry: the type byte, then the JSON body.
func encodeCommand(t MessageType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", t, err)
	}
	buf := make([]byte, 0, len(b)+1)
	buf = append(buf, byte(t))
	return append(buf, b...), nil
}
