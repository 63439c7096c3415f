// Package node runs on every agent: it makes the containers and pod networks
// on this machine match the pods the state assigns to this node, reports
// what it observes (phase, IP, readiness, exits, restarts) back to the state,
// and adopts what is already running after an agent restart. Crashed
// containers restart with exponential backoff, like the kubelet.
//
// Probes work as the kubelet's (prober.go): a worker goroutine per probe of
// a running container probes it from the host's network namespace (HTTP
// GET, TCP connect) or inside it (exec, through runtime.Runtime.Exec). A
// failed liveness probe stops the container, which restarts with the
// crash-loop backoff; a readiness probe decides whether the container is
// ready. A pod without readiness probes is ready once its containers have
// all run for the pod's MinReadySeconds.
//
// While Config.Fenced says the node has lost the servers, the containers of
// self-fencing pods are stopped and stay stopped, so a replica the servers
// replace elsewhere never runs twice.
//
// Each container logs to its own directory under Config.LogDir (logs.go:
// <namespace>_<pod>/<container>/, package containerlog's layout); the
// status of a container that exited shows its last lines, and Logs reads
// a container's logs for the API and the agents' RPC. Exec (exec.go) runs
// `exec` commands in this node's containers for both, bounded per node.
//
// What happens to a pod (started, exited with a code, image not pulled,
// probe failed, killed) is also an event in its status (events.go), sent
// with the status reports it makes anyway.
//
// It talks to containers only through runtime.Runtime and to networks only
// through podnet.Network; it never schedules.
package node
