// Package containerd implements runtime.Runtime on a containerd daemon through
// its Go client (v1.7 line, which works against the 1.6 daemon Debian ships).
//
// Every container lives in one containerd namespace owned by the agent
// (Config.Namespace); the package never touches other namespaces. A
// container's stdout/stderr go from the shim to a log driver process the
// shim itself starts and owns (containerd's binary:// logging; the driver is
// flotilla-agent's hidden log-driver command, package containerlog), which
// writes rotated files; its exit status is read back through the task
// service. So nothing in the agent holds per-container goroutines or
// streams: an agent restart loses nothing, and List adopts whatever is
// running. Exec (probes) is the exception while it runs: it reads the
// command's output through FIFOs into memory.
//
// Every container is sandboxed (sandbox.go): Docker's default seccomp
// profile, AppArmor's default profile where the host has AppArmor,
// no-new-privileges, Docker's default capabilities, containerd's masked and
// read-only /proc paths, and what the ContainerSpec narrows (user, read-only
// root, capabilities, pids limit). No spec field can ask for a privileged
// container, a host mount or a host namespace.
//
// The daemon itself is supervised by agent/containerdproc; networking (the
// pod's netns) is prepared by the caller and passed in as NetNSPath.
package containerd
