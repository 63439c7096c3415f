package api

import "time"

// DefaultNamespace is used when a deployment names none.
const DefaultNamespace = "default"

// Deployment is the desired state of a replicated set of pods.
type Deployment struct {
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	Replicas   int               `json:"replicas"`
	Labels     map[string]string `json:"labels,omitempty"`
	Containers []Container       `json:"containers"`

	// Set by the server.
	Generation  uint64           `json:"generation,omitempty"`
	CreateIndex uint64           `json:"create_index,omitempty"`
	ModifyIndex uint64           `json:"modify_index,omitempty"`
	Deleting    bool             `json:"deleting,omitempty"`
	Status      DeploymentStatus `json:"status"`
}

// Container is one process of a pod. All containers of a pod share its
// network namespace and IP.
type Container struct {
	Name    string            `json:"name"`
	Image   string            `json:"image"`
	Command []string          `json:"command,omitempty"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Ports   []Port            `json:"ports,omitempty"`

	// CPU in millicores (1000 = one core), memory in MiB; 0 means unset.
	CPURequest    int64 `json:"cpu_request,omitempty"`
	CPULimit      int64 `json:"cpu_limit,omitempty"`
	MemoryRequest int64 `json:"memory_request,omitempty"`
	MemoryLimit   int64 `json:"memory_limit,omitempty"`
}

// Port is a port a container listens on inside its pod.
type Port struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int    `json:"container_port"`
	Protocol      string `json:"protocol,omitempty"` // "tcp" (default) or "udp"
}

// DeploymentStatus is computed by the server from the deployment's pods.
type DeploymentStatus struct {
	// Replicas counts all pods of the deployment, UpdatedReplicas those of
	// the current generation, ReadyReplicas the ready ones of any generation
	// and UpdatedReadyReplicas the ready ones of the current generation.
	Replicas             int `json:"replicas"`
	UpdatedReplicas      int `json:"updated_replicas"`
	ReadyReplicas        int `json:"ready_replicas"`
	UpdatedReadyReplicas int `json:"updated_ready_replicas"`

	// Complete is true when every desired replica runs the current spec and
	// is ready, and no pod of an older spec is left.
	Complete bool `json:"complete"`

	// Failure says why the rollout cannot progress on its own (image not
	// found, crash loop), with the pod, exit code and last log lines. Empty
	// while the rollout is healthy.
	Failure string `json:"failure,omitempty"`
}

// Pod phases.
const (
	PodPending     = "pending"
	PodRunning     = "running"
	PodFailed      = "failed"
	PodTerminating = "terminating"
)

// Reasons a pod or container is not running.
const (
	ReasonContainerCreating = "ContainerCreating"
	ReasonErrImagePull      = "ErrImagePull"
	ReasonCrashLoopBackOff  = "CrashLoopBackOff"
	ReasonCreateError       = "CreateContainerError"
	ReasonNetworkError      = "NetworkSetupError"
)

// Pod is one scheduled instance of a deployment's containers on a node.
type Pod struct {
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	Deployment string            `json:"deployment"`
	Node       string            `json:"node"`
	Generation uint64            `json:"generation"`
	Labels     map[string]string `json:"labels,omitempty"`
	Containers []Container       `json:"containers"`

	// Stop is set when the pod should be stopped and removed; the node
	// removes the pod from the state once its containers and network are gone.
	Stop bool `json:"stop,omitempty"`

	CreateIndex uint64    `json:"create_index,omitempty"`
	Status      PodStatus `json:"status"`
}

// ID is the pod's key, unique in the cluster.
func (p *Pod) ID() string { return p.Namespace + "/" + p.Name }

// PodStatus is what the pod's node observed.
type PodStatus struct {
	Phase      string            `json:"phase"`
	Ready      bool              `json:"ready"`
	IP         string            `json:"ip,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Message    string            `json:"message,omitempty"`
	StartedAt  time.Time         `json:"started_at,omitempty"`
	Containers []ContainerStatus `json:"containers,omitempty"`
}

// Container states.
const (
	ContainerWaiting = "waiting"
	ContainerRunning = "running"
	ContainerExited  = "exited"
)

// ContainerStatus is the observed state of one container of a pod.
type ContainerStatus struct {
	Name         string `json:"name"`
	State        string `json:"state"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restart_count"`
	Reason       string `json:"reason,omitempty"`
	Message      string `json:"message,omitempty"`
	// LastExitCode and LastLog describe the last time the container exited.
	LastExitCode int      `json:"last_exit_code,omitempty"`
	LastLog      []string `json:"last_log,omitempty"`
}

// Node is a machine running flotilla-agent.
type Node struct {
	Name        string            `json:"name"`
	Address     string            `json:"address"`
	PodCIDR     string            `json:"pod_cidr"`
	CPUMillis   int64             `json:"cpu_millis"`
	MemoryMiB   int64             `json:"memory_mib"`
	Labels      map[string]string `json:"labels,omitempty"`
	Status      string            `json:"status"` // NodeReady, NodeDown or NodeLeft
	Server      bool              `json:"server"`
	Version     string            `json:"version"`
	ModifyIndex uint64            `json:"modify_index,omitempty"`
}

// Node statuses, as membership sees the node.
const (
	NodeReady = "ready" // alive in membership
	NodeDown  = "down"  // failed: missed its health checks
	NodeLeft  = "left"  // left the fleet on purpose
)

// Roles of an agent in a fleet. A server holds the cluster state (a raft
// voter) and the CA key; a client runs pods. Certificates carry the role.
const (
	RoleServer = "server"
	RoleClient = "client"
)

// Role returns the node's role.
func (n *Node) Role() string {
	if n.Server {
		return RoleServer
	}
	return RoleClient
}

// Member is an agent as gossip (memberlist) sees it: GET /v1/members.
// Members are what agents say of themselves; a node is in the state (GET
// /v1/nodes) once the leader verified and registered it.
type Member struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Role    string `json:"role"`
	// Status is "alive", "failed" or "left".
	Status string `json:"status"`
}

// RaftPeer is a member of the raft configuration: GET /v1/raft/peers.
type RaftPeer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

// AgentStatus answers GET /v1/status.
type AgentStatus struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	Leader  string `json:"leader"`
	Index   uint64 `json:"index"`
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// ImageImportResult answers POST /v1/images.
type ImageImportResult struct {
	Images []string `json:"images"`
}
