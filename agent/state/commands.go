package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

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
	// SetPodStatusType is one pod's status; agents before the trust issue
	// wrote it. It is still applied; new agents write SetPodStatusesType.
	SetPodStatusType
	RemovePodsType
	UpsertNodeType
	SetClusterConfigType
	RegisterNodeType
	SetNodeStatusType
	SetPodStatusesType
	RemoveNodeType
	SetNodeScheduleType
	CreateServiceType
	UpdateServiceType
	DeleteServiceType
	CreateIngressType
	UpdateIngressType
	DeleteIngressType
)

var typeNames = map[MessageType]string{
	CreateDeploymentType: "create-deployment",
	UpdateDeploymentType: "update-deployment",
	DeleteDeploymentType: "delete-deployment",
	RemoveDeploymentType: "remove-deployment",
	PutPodsType:          "put-pods",
	StopPodsType:         "stop-pods",
	SetPodStatusType:     "set-pod-status",
	RemovePodsType:       "remove-pods",
	UpsertNodeType:       "upsert-node",
	SetClusterConfigType: "set-cluster-config",
	RegisterNodeType:     "register-node",
	SetNodeStatusType:    "set-node-status",
	SetPodStatusesType:   "set-pod-statuses",
	RemoveNodeType:       "remove-node",
	SetNodeScheduleType:  "set-node-schedule",
	CreateServiceType:    "create-service",
	UpdateServiceType:    "update-service",
	DeleteServiceType:    "delete-service",
	CreateIngressType:    "create-ingress",
	UpdateIngressType:    "update-ingress",
	DeleteIngressType:    "delete-ingress",
}

func (t MessageType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("message-type-%d", uint8(t))
}

// ParseMessageType is the inverse of String, for the RPC paths that name a
// command.
func ParseMessageType(s string) (MessageType, bool) {
	for t, n := range typeNames {
		if n == s {
			return t, true
		}
	}
	return 0, false
}

// Command is one write: a typed request whose JSON is the body of a log
// entry. Everything Apply needs that is not a pure function of the current
// state (names, times) is decided by the proposer and carried here, so every
// replica applies the same entry the same way.
//
// Validate checks the command on its own, with the same rules the API
// applies to users (names are DNS labels, sizes are bounded): the store runs
// it before proposing, and the leader again on what another agent sent, so
// the log only holds commands the FSM can apply. Whether the sender may
// write it is not Validate's business (see package authz).
type Command interface {
	Type() MessageType
	Validate() error
}

// Commands. Their JSON field names are the log's wire format: never rename one.

// CreateDeployment stores a new deployment with generation 1.
type CreateDeployment struct {
	Deployment api.Deployment `json:"deployment"`
}

// UpdateDeployment replaces a deployment's spec.
type UpdateDeployment struct {
	Deployment api.Deployment `json:"deployment"`
}

// DeleteDeployment marks a deployment as being deleted.
type DeleteDeployment struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// RemoveDeployment removes a deployment that is being deleted and has no pods.
type RemoveDeployment struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// PutPods inserts new pods, all or none.
type PutPods struct {
	Pods []api.Pod `json:"pods"`
}

// StopPods marks pods to be stopped by their nodes. Reason, if set, is
// recorded on each pod (api.StopNodeLost, api.StopDrained).
type StopPods struct {
	IDs    []string `json:"ids"`
	Reason string   `json:"reason,omitempty"`
}

// SetPodStatus records one pod's observed status (the format of agents
// before SetPodStatuses; still applied, not written).
type SetPodStatus struct {
	ID     string        `json:"id"`
	Status api.PodStatus `json:"status"`
}

// RemovePods deletes pods from the state. With Node set, only pods placed
// on that node are removed: what a node writes about its own pods.
type RemovePods struct {
	Node string   `json:"node,omitempty"`
	IDs  []string `json:"ids"`
}

// UpsertNode registers a node or replaces its record, PodCIDR included (a
// single dev agent only).
type UpsertNode struct {
	Node api.Node `json:"node"`
}

// SetClusterConfig sets the cluster's network layout if unset.
type SetClusterConfig struct {
	Config ClusterConfig `json:"config"`
}

// RegisterNode registers or updates a node, giving it a pod range from the
// cluster's if it has none. Node.PodCIDR is ignored.
type RegisterNode struct {
	Node api.Node `json:"node"`
}

// SetNodeStatus records a node's status as membership sees it.
type SetNodeStatus struct {
	Name   string `json:"name"`
	Status string `json:"status"`
}

// SetNodeSchedule cordons, uncordons or drains a node: an operator's
// write. Draining implies Unschedulable.
type SetNodeSchedule struct {
	Name     string           `json:"name"`
	Schedule api.NodeSchedule `json:"schedule"`
}

// SetPodStatuses records what one node observed of its pods, in one entry
// per report round rather than one per pod. Updates for pods that are not
// placed on Node are ignored.
type SetPodStatuses struct {
	Node    string            `json:"node"`
	Updates []PodStatusUpdate `json:"updates"`
}

// PodStatusUpdate is one pod's status in SetPodStatuses.
type PodStatusUpdate struct {
	ID     string        `json:"id"`
	Status api.PodStatus `json:"status"`
}

// RemoveNode removes a node from the fleet: its record and its pods go, and
// every certificate issued for its name before At is revoked, fleet-wide.
type RemoveNode struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

func (*CreateDeployment) Type() MessageType { return CreateDeploymentType }
func (*UpdateDeployment) Type() MessageType { return UpdateDeploymentType }
func (*DeleteDeployment) Type() MessageType { return DeleteDeploymentType }
func (*RemoveDeployment) Type() MessageType { return RemoveDeploymentType }
func (*PutPods) Type() MessageType          { return PutPodsType }
func (*StopPods) Type() MessageType         { return StopPodsType }
func (*SetPodStatus) Type() MessageType     { return SetPodStatusType }
func (*RemovePods) Type() MessageType       { return RemovePodsType }
func (*UpsertNode) Type() MessageType       { return UpsertNodeType }
func (*SetClusterConfig) Type() MessageType { return SetClusterConfigType }
func (*RegisterNode) Type() MessageType     { return RegisterNodeType }
func (*SetNodeStatus) Type() MessageType    { return SetNodeStatusType }
func (*SetPodStatuses) Type() MessageType   { return SetPodStatusesType }
func (*RemoveNode) Type() MessageType       { return RemoveNodeType }
func (*SetNodeSchedule) Type() MessageType  { return SetNodeScheduleType }

// NewCommand returns an empty command of type t, to decode a body into;
// false for a type this agent does not know.
func NewCommand(t MessageType) (Command, bool) {
	switch t {
	case CreateDeploymentType:
		return new(CreateDeployment), true
	case UpdateDeploymentType:
		return new(UpdateDeployment), true
	case DeleteDeploymentType:
		return new(DeleteDeployment), true
	case RemoveDeploymentType:
		return new(RemoveDeployment), true
	case PutPodsType:
		return new(PutPods), true
	case StopPodsType:
		return new(StopPods), true
	case SetPodStatusType:
		return new(SetPodStatus), true
	case RemovePodsType:
		return new(RemovePods), true
	case UpsertNodeType:
		return new(UpsertNode), true
	case SetClusterConfigType:
		return new(SetClusterConfig), true
	case RegisterNodeType:
		return new(RegisterNode), true
	case SetNodeStatusType:
		return new(SetNodeStatus), true
	case SetPodStatusesType:
		return new(SetPodStatuses), true
	case RemoveNodeType:
		return new(RemoveNode), true
	case SetNodeScheduleType:
		return new(SetNodeSchedule), true
	case CreateServiceType:
		return new(CreateService), true
	case UpdateServiceType:
		return new(UpdateService), true
	case DeleteServiceType:
		return new(DeleteService), true
	case CreateIngressType:
		return new(CreateIngress), true
	case UpdateIngressType:
		return new(UpdateIngress), true
	case DeleteIngressType:
		return new(DeleteIngress), true
	}
	return nil, false
}

// Limits on one command, so one entry stays well under raft's and the
// RPC's size limits however it was built.
const (
	// MaxIDs bounds the pod IDs of one StopPods or RemovePods.
	MaxIDs = 4096
	// MaxEntryBytes bounds an encoded log entry. PutPods batches bigger
	// than it are split by the store.
	MaxEntryBytes = 1 << 20
)

func (c *CreateDeployment) Validate() error { return validateDeployment(&c.Deployment, true) }
func (c *UpdateDeployment) Validate() error { return validateDeployment(&c.Deployment, true) }

func (c *CreateDeployment) validateFields() error { return validateDeployment(&c.Deployment, false) }
func (c *UpdateDeployment) validateFields() error { return validateDeployment(&c.Deployment, false) }

func validateDeployment(d *api.Deployment, size bool) error {
	check := d.ValidateFields
	if size {
		check = d.Validate
	}
	if err := check(); err != nil {
		return invalid("deployment %s/%s: %s", d.Namespace, d.Name, err)
	}
	return nil
}

// fieldValidator is a command whose Validate also bounds the encoded size
// of what it carries, at the cost of encoding it: the state machine, which
// bounds the whole entry instead, calls validateFields.
type fieldValidator interface {
	validateFields() error
}

// ValidateEntry is Validate for a command about to become, or read from,
// one log entry of at most MaxEntryBytes: the entry's bound stands in for
// the per-object size bounds, which would cost encoding the command again.
func ValidateEntry(cmd Command) error {
	if v, ok := cmd.(fieldValidator); ok {
		return v.validateFields()
	}
	return cmd.Validate()
}

func (c *DeleteDeployment) Validate() error { return validateDeploymentName(c.Namespace, c.Name) }
func (c *RemoveDeployment) Validate() error { return validateDeploymentName(c.Namespace, c.Name) }

func validateDeploymentName(ns, name string) error {
	if err := api.ValidateName(ns); err != nil {
		return invalid("deployment namespace: %s", err)
	}
	if err := api.ValidateName(name); err != nil {
		return invalid("deployment name: %s", err)
	}
	return nil
}

func (c *PutPods) Validate() error       { return c.validate(true) }
func (c *PutPods) validateFields() error { return c.validate(false) }

func (c *PutPods) validate(size bool) error {
	if len(c.Pods) == 0 {
		return invalid("put pods: no pods")
	}
	if len(c.Pods) > MaxIDs {
		return invalid("put pods: %d pods in one write; at most %d", len(c.Pods), MaxIDs)
	}
	for i := range c.Pods {
		check := c.Pods[i].ValidateFields
		if size {
			check = c.Pods[i].Validate
		}
		if err := check(); err != nil {
			return invalid("put pods: %s", err)
		}
	}
	return nil
}

func (c *StopPods) Validate() error {
	if len(c.Reason) > 128 || strings.ContainsFunc(c.Reason, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return invalid("stop pods: the reason must be at most 128 printable characters")
	}
	return validateIDs("stop pods", c.IDs)
}

func (c *SetNodeSchedule) Validate() error {
	if err := api.ValidateNodeName(c.Name); err != nil {
		return invalid("node schedule: name: %s", err)
	}
	return nil
}

func (c *SetPodStatus) Validate() error {
	if err := ValidatePodID(c.ID); err != nil {
		return invalid("pod status: %s", err)
	}
	if err := c.Status.Validate(); err != nil {
		return invalid("pod %s status: %s", c.ID, err)
	}
	return nil
}

func (c *RemovePods) Validate() error {
	if c.Node != "" {
		if err := api.ValidateNodeName(c.Node); err != nil {
			return invalid("remove pods: node: %s", err)
		}
	}
	return validateIDs("remove pods", c.IDs)
}

func (c *UpsertNode) Validate() error {
	if err := c.Node.Validate(); err != nil {
		return invalid("node %q: %s", c.Node.Name, err)
	}
	return nil
}

func (c *RegisterNode) Validate() error {
	if err := c.Node.Validate(); err != nil {
		return invalid("node %q: %s", c.Node.Name, err)
	}
	return nil
}

func (c *SetClusterConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return invalid("cluster config: %s", err)
	}
	return nil
}

func (c *SetNodeStatus) Validate() error {
	if err := api.ValidateNodeName(c.Name); err != nil {
		return invalid("node status: name: %s", err)
	}
	switch c.Status {
	case api.NodeReady, api.NodeDown, api.NodeLeft:
		return nil
	}
	return invalid("node %s: status %q is not one of %q, %q, %q", c.Name, c.Status, api.NodeReady, api.NodeDown, api.NodeLeft)
}

func (c *SetPodStatuses) Validate() error {
	if err := api.ValidateNodeName(c.Node); err != nil {
		return invalid("pod statuses: node: %s", err)
	}
	if len(c.Updates) == 0 || len(c.Updates) > api.MaxPodsPerNode {
		return invalid("pod statuses of %s: %d updates; send 1 to %d", c.Node, len(c.Updates), api.MaxPodsPerNode)
	}
	for i := range c.Updates {
		u := &c.Updates[i]
		if err := ValidatePodID(u.ID); err != nil {
			return invalid("pod statuses of %s: %s", c.Node, err)
		}
		if err := u.Status.Validate(); err != nil {
			return invalid("pod %s status: %s", u.ID, err)
		}
	}
	return nil
}

func (c *RemoveNode) Validate() error {
	if err := api.ValidateNodeName(c.Name); err != nil {
		return invalid("remove node: %s", err)
	}
	if c.At.IsZero() {
		return invalid("remove node %s: the removal time is not set", c.Name)
	}
	return nil
}

func validateIDs(what string, ids []string) error {
	if len(ids) == 0 {
		return invalid("%s: no pod IDs", what)
	}
	if len(ids) > MaxIDs {
		return invalid("%s: %d pod IDs in one write; at most %d", what, len(ids), MaxIDs)
	}
	for _, id := range ids {
		if err := ValidatePodID(id); err != nil {
			return invalid("%s: %s", what, err)
		}
	}
	return nil
}

// ValidatePodID checks a pod ID: "<namespace>/<pod name>", both DNS labels.
func ValidatePodID(id string) error {
	ns, name, ok := strings.Cut(id, "/")
	if !ok {
		return fmt.Errorf("pod ID %q is not <namespace>/<name>", api.TruncateText(id, 140))
	}
	if err := api.ValidateName(ns); err != nil {
		return fmt.Errorf("pod ID %q: namespace: %w", api.TruncateText(id, 140), err)
	}
	if err := api.ValidateDNSLabelLen(name, 63); err != nil {
		return fmt.Errorf("pod ID %q: name: %w", api.TruncateText(id, 140), err)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Encode renders cmd as a log entry: the type byte, then the JSON body.
func Encode(cmd Command) ([]byte, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", cmd.Type(), err)
	}
	buf := make([]byte, 0, len(b)+1)
	buf = append(buf, byte(cmd.Type()))
	return append(buf, b...), nil
}

// Decode is the inverse of Encode. It never panics: an empty entry, an
// unknown type or a body that does not decode is an error.
func Decode(entry []byte) (Command, error) {
	if len(entry) == 0 {
		return nil, errors.New("empty raft entry")
	}
	t := MessageType(entry[0])
	cmd, ok := NewCommand(t)
	if !ok {
		return nil, fmt.Errorf("unknown message type %d; was it written by a newer flotilla-agent?", uint8(t))
	}
	if err := json.Unmarshal(entry[1:], cmd); err != nil {
		return nil, fmt.Errorf("%s entry does not decode: %w", t, err)
	}
	return cmd, nil
}
