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

	// NodeSelector places pods only on nodes carrying every one of these labels.
	NodeSelector map[string]string `json:"node_selector,omitempty"`
	// Placement ranks feasible nodes: PlacementSpread (the default, "")
	// spreads replicas across nodes and zones; PlacementBinPack fills the
	// most loaded nodes first.
	Placement string `json:"placement,omitempty"`
	// AntiAffinity keeps pods away from nodes (or zones) that run pods
	// with given labels.
	AntiAffinity []AntiAffinity `json:"anti_affinity,omitempty"`
	// MinReadySeconds is how long a pod without a readiness probe must have
	// run before it counts as ready; nil means DefaultMinReadySeconds.
	MinReadySeconds *int `json:"min_ready_seconds,omitempty"`
	// SelfFencing makes a node that has lost contact with the servers for
	// longer than the cluster's lost-node grace stop this deployment's pods,
	// so that a replica never runs twice. Off by default: with it on, an
	// outage of the servers alone stops every such pod in the fleet.
	SelfFencing bool `json:"self_fencing,omitempty"`

	// Set by the server.
	Generation  uint64           `json:"generation,omitempty"`
	CreateIndex uint64           `json:"create_index,omitempty"`
	ModifyIndex uint64           `json:"modify_index,omitempty"`
	Deleting    bool             `json:"deleting,omitempty"`
	Status      DeploymentStatus `json:"status"`
}

// Placement strategies.
const (
	PlacementSpread  = "spread"
	PlacementBinPack = "bin_pack"
)

// DefaultMinReadySeconds is MinReadySeconds when unset: long enough to see
// a container that exits the moment it starts, short enough not to slow a
// rollout down.
const DefaultMinReadySeconds = 1

// DefaultPidsLimit is a node's pids limit for containers that set none,
// unless its agent runs with --default-pids-limit: far more than a
// server's threads (a JVM or Go server has tens to hundreds), and an
// eighth of the 32768 PIDs a kernel has by default.
const DefaultPidsLimit = 4096

// MinReady returns the deployment's MinReadySeconds, or the default.
func (d *Deployment) MinReady() int {
	if d.MinReadySeconds == nil {
		return DefaultMinReadySeconds
	}
	return *d.MinReadySeconds
}

// TopologyZone is the node label spread and anti-affinity use for zones.
const TopologyZone = "zone"

// AntiAffinity keeps a deployment's pods off the nodes, or zones, where
// pods matching Labels run (pods of the same deployment included, when
// they match).
type AntiAffinity struct {
	// Labels select the pods to stay away from: a pod matches when it
	// carries every one of them.
	Labels map[string]string `json:"labels"`
	// Required makes the rule hard (never place there); otherwise it is a
	// preference weighed against spread.
	Required bool `json:"required,omitempty"`
	// Topology is "" (or "node") for the node, or a node label key such as
	// "zone": pods matching Labels anywhere in the same zone count.
	Topology string `json:"topology,omitempty"`
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

	// LivenessProbe failing FailureThreshold times in a row restarts the
	// container (with back-off); ReadinessProbe decides whether the pod is
	// ready. Without a readiness probe, a container with a TCP port is
	// ready when that port accepts connections, one without once it runs.
	LivenessProbe  *Probe `json:"liveness_probe,omitempty"`
	ReadinessProbe *Probe `json:"readiness_probe,omitempty"`

	// PidsLimit bounds the container's processes and threads (its pids
	// cgroup), 1 to MaxPidsLimit, so a fork bomb cannot exhaust the node's
	// PIDs; 0 takes the node's default (flotilla-agent --default-pids-limit).
	PidsLimit int64 `json:"pids_limit,omitempty"`
	// Security changes the container's sandbox; nil keeps the defaults.
	Security *Security `json:"security,omitempty"`
}

// Security is what a container may change of its sandbox. Every container
// runs with Docker's default seccomp profile, AppArmor's default profile
// where the node has AppArmor, no-new-privileges, containerd's masked and
// read-only /proc paths, a pids limit and DefaultCapabilities. There is
// no privileged mode, host mount or host namespace to ask for.
//
// New fields must be omitted from JSON when unset: a container's spec
// hash is its JSON, and a change to it replaces the container.
type Security struct {
	// RunAsUser runs the container's processes as this uid, 0 to
	// MaxUserID; nil keeps the image's user. Its primary group is the
	// uid's in the image's /etc/passwd (0 if none), unless RunAsGroup is set.
	RunAsUser *int64 `json:"run_as_user,omitempty"`
	// RunAsGroup sets the primary gid, 0 to MaxUserID.
	RunAsGroup *int64 `json:"run_as_group,omitempty"`
	// ReadOnlyRootFilesystem mounts the container's root file system
	// read-only.
	ReadOnlyRootFilesystem bool `json:"read_only_root_filesystem,omitempty"`
	// Capabilities are dropped from and added to DefaultCapabilities.
	Capabilities *Capabilities `json:"capabilities,omitempty"`
}

// Capabilities changes a container's Linux capabilities, named as in
// Kubernetes: upper case, without the CAP_ prefix (NET_ADMIN). Drop is
// applied first, then Add. A process that does not run as uid 0 has none
// in effect whatever is added, as in Docker and Kubernetes.
type Capabilities struct {
	// Add names capabilities to add. A node runs a container that adds
	// any beyond DefaultCapabilities only if it allows them
	// (flotilla-agent --allow-capability); "ALL" is refused.
	Add []string `json:"add,omitempty"`
	// Drop names capabilities to remove from DefaultCapabilities, or
	// "ALL" for every one of them.
	Drop []string `json:"drop,omitempty"`
}

// Port is a port a container listens on inside its pod.
type Port struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int    `json:"container_port"`
	Protocol      string `json:"protocol,omitempty"` // "tcp" (default) or "udp"
	// HostPort, if set, is forwarded from the node's addresses to the pod:
	// at most one pod per node may hold a host port and protocol.
	HostPort int `json:"host_port,omitempty"`
}

// Probe checks a container, as Kubernetes' probes do: exactly one of
// HTTPGet, TCPSocket and Exec is set.
type Probe struct {
	HTTPGet   *HTTPGetProbe   `json:"http_get,omitempty"`
	TCPSocket *TCPSocketProbe `json:"tcp_socket,omitempty"`
	Exec      *ExecProbe      `json:"exec,omitempty"`

	// Zero values mean the defaults Kubernetes has: 0 s initial delay,
	// every 10 s, 1 s timeout, 1 success, 3 failures.
	InitialDelaySeconds int `json:"initial_delay_seconds,omitempty"`
	PeriodSeconds       int `json:"period_seconds,omitempty"`
	TimeoutSeconds      int `json:"timeout_seconds,omitempty"`
	SuccessThreshold    int `json:"success_threshold,omitempty"`
	FailureThreshold    int `json:"failure_threshold,omitempty"`
}

// HTTPGetProbe succeeds on a status from 200 to 399 from GET Path on the
// pod's IP and Port.
type HTTPGetProbe struct {
	Path string `json:"path,omitempty"`
	Port int    `json:"port"`
}

// TCPSocketProbe succeeds when the pod's IP accepts a connection on Port.
type TCPSocketProbe struct {
	Port int `json:"port"`
}

// ExecProbe succeeds when Command, run in the container, exits with 0.
type ExecProbe struct {
	Command []string `json:"command"`
}

// Probe defaults (Kubernetes').
const (
	DefaultProbePeriodSeconds    = 10
	DefaultProbeTimeoutSeconds   = 1
	DefaultProbeSuccessThreshold = 1
	DefaultProbeFailureThreshold = 3
)

// WithDefaults returns the probe with zero timings set to their defaults.
func (p Probe) WithDefaults() Probe {
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = DefaultProbePeriodSeconds
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = DefaultProbeTimeoutSeconds
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = DefaultProbeSuccessThreshold
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = DefaultProbeFailureThreshold
	}
	return p
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
	// ReasonOOMKilled: the kernel killed the container for going over its
	// memory limit; the message names the limit.
	ReasonOOMKilled = "OOMKilled"
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

	// MinReadySeconds, SelfFencing and AntiAffinity are the deployment's,
	// as placed: a pod's required anti-affinity also keeps pods it matches
	// off its node (or zone), as in Kubernetes.
	MinReadySeconds int            `json:"min_ready_seconds,omitempty"`
	SelfFencing     bool           `json:"self_fencing,omitempty"`
	AntiAffinity    []AntiAffinity `json:"anti_affinity,omitempty"`

	// Stop is set when the pod should be stopped and removed; the node
	// removes the pod from the state once its containers and network are gone.
	Stop bool `json:"stop,omitempty"`
	// StopReason says why the server stopped the pod, e.g. "node lost",
	// "drained"; empty for rollouts and scale-downs.
	StopReason string `json:"stop_reason,omitempty"`

	CreateIndex uint64 `json:"create_index,omitempty"`
	// CreatedAt is when the server placed the pod (by its clock); zero
	// for pods placed by agents before it was kept.
	CreatedAt time.Time `json:"created_at,omitzero"`
	Status    PodStatus `json:"status"`
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
	// Events are the pod's last events, newest last (events.go): the
	// scheduler's placement, then what its node saw.
	Events []Event `json:"events,omitempty"`
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
	// LastExitReason says why it last exited when the node knows better
	// than the exit code, e.g. ReasonOOMKilled.
	LastExitReason string `json:"last_exit_reason,omitempty"`
}

// Node is a machine running flotilla-agent.
type Node struct {
	Name      string            `json:"name"`
	Address   string            `json:"address"`
	PodCIDR   string            `json:"pod_cidr"`
	CPUMillis int64             `json:"cpu_millis"`
	MemoryMiB int64             `json:"memory_mib"`
	Labels    map[string]string `json:"labels,omitempty"`
	Status    string            `json:"status"` // NodeReady, NodeDown or NodeLeft
	Server    bool              `json:"server"`
	// ReservedCPUMillis and ReservedMemoryMiB are kept for the system (the
	// agent, containerd, the OS): allocatable is capacity minus these.
	ReservedCPUMillis int64 `json:"reserved_cpu_millis,omitempty"`
	ReservedMemoryMiB int64 `json:"reserved_memory_mib,omitempty"`
	// Unschedulable (cordoned) nodes get no new pods; Draining ones also
	// have their pods moved off, one availability step at a time. Only an
	// operator sets them; a node's own registration keeps them.
	Unschedulable bool   `json:"unschedulable,omitempty"`
	Draining      bool   `json:"draining,omitempty"`
	Version       string `json:"version"`
	// Conditions are what the node reports wrong with itself; the
	// scheduler places no new pods on a node with a condition that
	// BlocksScheduling.
	Conditions  []NodeCondition `json:"conditions,omitempty"`
	ModifyIndex uint64          `json:"modify_index,omitempty"`
}

// NodeCondition is something wrong with a node, as the node sees it.
type NodeCondition struct {
	// Type is one of the NodeCondition… constants.
	Type string `json:"type"`
	// Since is when the node first saw it.
	Since time.Time `json:"since"`
	// Message says what is wrong, e.g. "containerd has not answered a
	// list for 40s".
	Message string `json:"message"`
}

// Node condition types.
const (
	// NodeConditionRuntimeUnhealthy: the container runtime (containerd)
	// does not answer calls in time. Pods keep running; their reconcile
	// waits for it.
	NodeConditionRuntimeUnhealthy = "RuntimeUnhealthy"
	// NodeConditionDiskPressure: the data directory's file system is
	// fuller than the node's threshold. The node takes no new pods until
	// pruning brings it under its low watermark.
	NodeConditionDiskPressure = "DiskPressure"
)

// MaxNodeConditions bounds Node.Conditions.
const MaxNodeConditions = 8

// BlocksScheduling reports whether the scheduler must place no new pods on
// a node with this condition.
func (c NodeCondition) BlocksScheduling() bool { return c.Type == NodeConditionDiskPressure }

// Condition returns the node's condition of type t, if it has it.
func (n *Node) Condition(t string) (NodeCondition, bool) {
	for _, c := range n.Conditions {
		if c.Type == t {
			return c, true
		}
	}
	return NodeCondition{}, false
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

// NodeSchedule is what an operator sets on a node: PUT /v1/nodes/{name}/schedule.
type NodeSchedule struct {
	// Unschedulable (cordon) keeps new pods off the node.
	Unschedulable bool `json:"unschedulable"`
	// Draining moves the node's pods to other nodes, one availability step
	// per deployment at a time; it implies Unschedulable.
	Draining bool `json:"draining"`
}

// CapacityCheck answers POST /v1/capacity: how many of a deployment's
// replicas fit the fleet's free capacity, and if not all, why.
type CapacityCheck struct {
	Replicas  int `json:"replicas"`
	Placeable int `json:"placeable"`
	// Reason is the scheduler's account when Placeable < Replicas, e.g.
	// "0/5 nodes available: 3 insufficient memory, 2 cordoned".
	Reason string `json:"reason,omitempty"`
}

// Pod stop reasons.
const (
	StopNodeLost = "node lost"
	StopDrained  = "node drained"
	StopFenced   = "fenced"
)
