package state

import (
	"encoding/json"
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
