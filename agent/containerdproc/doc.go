// Package containerdproc supervises a private containerd daemon the way k3s
// does: the agent writes a minimal config.toml into its data directory,
// starts containerd as a child in its own process group (so Ctrl-C to the
// agent does not reach it), records its pid, and waits until the socket
// answers.
//
// containerd deliberately outlives the agent: the next agent start finds it
// through the pid file and reuses it, and because runc shims survive even a
// containerd restart, containers keep running across agent and containerd
// restarts and are adopted through the runtime's List. A daemon that lost its
// root or state directory meanwhile (the data dir wiped under it) is not
// reused but replaced.
//
// The package owns only the daemon process, its config, pid and log files. It
// never touches containers, images or namespaces; that is runtime/containerd.
// containerdtest holds a harness that runs a throwaway daemon for tests.
package containerdproc
