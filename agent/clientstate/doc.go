// Package clientstate is a client agent's view of the cluster state, now
// that clients are not raft members: the pods placed on this node, every
// node (for routes), the cluster config, every service with its endpoints
// and every ingress with its TLS keys, as the servers' watch endpoint
// (rpc.Client.Watch) serves them.
//
//   - store.go: Store, the view. Reads have the signatures the agent's
//     consumers already use on store.Store (node.Reconciler, route sync), so
//     a client hands them this instead.
//   - watch.go: Store.Run, the watch loop: it follows any server from the
//     index the view is at, fails over to another one with backoff, and never
//     moves the view backwards.
//   - cache.go: the view on disk, so a client restarts from it and keeps its
//     pods, routes and rules while no server is reachable. It holds TLS
//     keys: mode 0600.
//   - services.go, ingress.go: services, endpoints and ingresses, and the
//     counters (ServicesChanged, IngressesChanged) their consumers wait on.
//   - writes.go: Writes, this node's writes (pod status, pod removal, node
//     registration) sent to the leader as typed writes over mTLS.
//   - testing.go: FakeWatcher and FakeWriter, for tests here and elsewhere.
//
// Everything that arrives is validated before it is stored; what fails is
// dropped with a log line. The servers decide what a client may see and
// write; this package holds no raft state and must not import agent/agent.
package clientstate
