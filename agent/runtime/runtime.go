// Package runtime defines the seam between the node reconciler and the thing
// that runs containers, as Nomad's DriverPlugin does: create, start, stop,
// remove, and List so a restarted agent can adopt what is already running;
// Exec runs a command in a running container, for exec probes; the
// optional StreamExecer runs one with its streams connected, for `exec`.
// The containerd implementation lives in runtime/containerd; Fake, for unit
// tests of the reconciler, lives in fake.go.
package runtime

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrAlreadyExists is wrapped by the error Create returns when a container
// with the ID exists. The caller should treat the container as existing
// (List it and adopt it), not as a failure to create it.
var ErrAlreadyExists = errors.New("already exists")

// Errors that will not go away by retrying: the reconciler reports them at
// once and a rollout fails on them. Every other error of Create, Start or
// EnsureImage is taken for transient (containerd slow or restarting, a call
// interrupted by its deadline) and retried quietly a few times first.
var (
	// ErrImageNotFound: the registry does not have the image or tag.
	ErrImageNotFound = errors.New("image not found")
	// ErrImageAccessDenied: the registry refused the pull.
	ErrImageAccessDenied = errors.New("image access denied")
	// ErrInvalidSpec: the container's spec cannot run (bad image
	// reference, relative mount path, a sandbox setting the node refuses).
	ErrInvalidSpec = errors.New("invalid container spec")
)

// ErrTimeout is wrapped by the error of a call that Guarded cut off at its
// deadline; the error also wraps context.DeadlineExceeded.
var ErrTimeout = errors.New("container runtime did not answer in time")

// ErrExecTimeout is wrapped by the error Exec returns when the command ran
// longer than its timeout and was killed.
var ErrExecTimeout = errors.New("exec timed out")

// ErrContainerNotFound and ErrNotRunning are wrapped by the errors
// StartExec returns when the container does not exist or has no running
// task; ErrExecStart is wrapped by the error StartExec returns when the
// container runs but the command could not start in it (no such program,
// not executable).
var (
	ErrContainerNotFound = errors.New("container not found")
	ErrNotRunning        = errors.New("container not running")
	ErrExecStart         = errors.New("the command could not start")
)

// ExecOutputLimit is how much of an exec'd command's output (stdout and
// stderr together) Exec keeps; the rest is read and dropped.
const ExecOutputLimit = 4 << 10

// Labels the reconciler sets on every container so it can adopt them after a restart.
const (
	LabelPod       = "io.flotilla.pod"       // "namespace/name"
	LabelContainer = "io.flotilla.container" // container name within the pod
	LabelSpecHash  = "io.flotilla.spec-hash" // hash of the container's spec
)

// ContainerSpec is what a runtime needs to create one container.
type ContainerSpec struct {
	// ID is unique in the runtime; [A-Za-z0-9][A-Za-z0-9._-]*, at most 76 characters.
	ID       string
	Image    string
	Command  []string // replaces the image's entrypoint when set
	Args     []string // replaces the image's cmd when set
	Env      map[string]string
	Hostname string
	// NetNSPath is the pod's network namespace, e.g. /run/netns/flt-default_web-abc.
	NetNSPath string
	// CPULimitMillis sets a CFS quota (1000 = one core); CPURequestMillis sets
	// cpu shares. MemoryLimitBytes sets the memory cgroup limit. 0 means unset.
	CPULimitMillis   int64
	CPURequestMillis int64
	MemoryLimitBytes int64
	// LogDir is the container's log directory (package containerlog):
	// every run of the container writes its stdout and stderr there as
	// rotated files, through a log driver the shim starts, so logging
	// survives an agent restart. Empty discards the output.
	LogDir string
	// Mounts are host files or directories bind-mounted into the container,
	// as the pod's resolv.conf is.
	Mounts []Mount
	Labels map[string]string

	// The sandbox. Every container runs with Docker's default seccomp
	// profile, AppArmor's default profile where the host has AppArmor,
	// no-new-privileges, containerd's masked and read-only /proc paths and
	// its own namespaces; the fields below change only what api.Security
	// lets a user change, and the runtime checks them as the API does.
	//
	// PidsLimit > 0 bounds the container's processes and threads.
	PidsLimit int64
	// RunAsUser and RunAsGroup replace the image's uid and primary gid;
	// nil keeps them (see api.Security).
	RunAsUser, RunAsGroup *int64
	// ReadOnlyRootFS mounts the root file system read-only.
	ReadOnlyRootFS bool
	// CapAdd and CapDrop change api.DefaultCapabilities as api.Capabilities does.
	CapAdd, CapDrop []string
}

// Mount is a bind mount of a host path into a container.
type Mount struct {
	// Source is the absolute host path; Destination the absolute path in
	// the container, created if the image lacks it.
	Source, Destination string
	ReadOnly            bool
}

// ContainerState is a container as the runtime sees it.
type ContainerState struct {
	ID     string
	Labels map[string]string
	// HasTask is false for a container created but never started, or whose
	// task was deleted.
	HasTask  bool
	Running  bool
	Pid      uint32
	ExitCode int
	ExitedAt time.Time
	// OOMKilled is set on an exited container that the kernel killed for
	// going over its memory limit (its cgroup counted an OOM kill).
	OOMKilled bool
}

// Runtime runs containers. Implementations must be safe for concurrent use.
type Runtime interface {
	// EnsureImage makes image available locally, pulling it if missing, and
	// says whether it pulled (false: the image was here). A missing image or
	// registry error is returned with the image named and what to check.
	EnsureImage(ctx context.Context, image string) (pulled bool, err error)
	// Create creates a container (without starting it). If a container with
	// the ID exists, it leaves that container alone and returns an error
	// wrapping ErrAlreadyExists.
	Create(ctx context.Context, spec ContainerSpec) error
	// Start starts the container's process, deleting an exited task first, so
	// it also restarts a container that exited.
	Start(ctx context.Context, id string) error
	// Stop sends SIGTERM, waits up to timeout, then SIGKILL, and deletes the
	// task. It returns the exit code of the task it deleted (e.g. 137 after
	// SIGKILL), or -1 when there was none: stopping a container without a
	// task, or a missing container, is not an error.
	Stop(ctx context.Context, id string, timeout time.Duration) (exitCode int, err error)
	// Exec runs cmd in the running container's task, with the container's
	// environment, working directory and user, and returns its exit code and
	// up to ExecOutputLimit bytes of its stdout and stderr. A command still
	// running after timeout (<= 0: no limit but ctx) is killed; the error
	// then wraps ErrExecTimeout. An error means the command did not run to
	// an exit (not running, not found, timed out), not that it failed.
	Exec(ctx context.Context, id string, cmd []string, timeout time.Duration) (exitCode int, output []byte, err error)
	// Remove deletes the container and its snapshot (stopping it first if
	// needed). Removing a missing container is not an error.
	Remove(ctx context.Context, id string) error
	// List returns every container this runtime manages, with task state.
	List(ctx context.Context) ([]ContainerState, error)
	// ImportImages imports an image archive (OCI layout or docker-save tar)
	// and returns the names of the images it held.
	ImportImages(ctx context.Context, archive io.Reader) ([]string, error)
}

// ExecIO connects a streamed exec's process. Stdin nil gives it an empty
// stdin; a Stdin that returns io.EOF closes the process's stdin. Stdout
// and Stderr must keep being read: the process blocks when they are not.
// With a terminal, Stdout carries both and Stderr is unused.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// StreamExec is a command to run in a container with its streams
// connected, as `kubectl exec` does.
type StreamExec struct {
	Command []string
	// TTY runs the command on a terminal; Width and Height, when both are
	// set, are its first size.
	TTY           bool
	Width, Height uint16
	IO            ExecIO
}

// ExecProcess is a started StreamExec.
type ExecProcess interface {
	// Resize changes the size of the command's terminal (TTY only).
	Resize(ctx context.Context, width, height uint16) error
	// Wait returns the command's exit code once it has exited and its
	// output has been written (bounded: a child that keeps the output
	// open is not waited for), or kills it when ctx ends first. Either
	// way the process is gone from the runtime when Wait returns. Call it
	// once.
	Wait(ctx context.Context) (exitCode int, err error)
}

// StreamExecer runs commands with streams in running containers. It is
// optional: a runtime without it serves no `exec`.
type StreamExecer interface {
	// StartExec starts e in container id's running task with the
	// container's own process settings (user, environment, working
	// directory, capabilities, seccomp and AppArmor profiles, cgroup), so
	// an exec has no more privilege than the container. It returns an
	// error wrapping ErrContainerNotFound or ErrNotRunning when there is
	// no such running container.
	StartExec(ctx context.Context, id string, e StreamExec) (ExecProcess, error)
}
