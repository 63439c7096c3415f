// Package svcsync keeps a node's service data path in step with the
// cluster state: it turns the services and endpoints of the state (a
// server's store or a client's watched view, through Source) into the
// iptables rules of agent/svcproxy and the names of agent/clusterdns, on
// start and whenever a service or its endpoints change.
//
// Syncer.Run wakes on every state change but works only when the index of
// the last service change (or, for DNS, of this node's pods) moved, and at
// most once per Config.MinInterval, so a burst of endpoint changes costs
// one sync and a change is in force on the node within MinInterval plus
// the sync itself. A failed sync is logged and retried with backoff; the
// rules and names stay as they were meanwhile. The first sync waits for
// Config.Ready, so a restarting agent never replaces good rules with an
// empty view it has not loaded yet; svcproxy then finds its chains
// unchanged and writes nothing, so a restart has no gap.
//
// What each part gets:
//
//   - svcproxy: every service with a cluster IP and its ports (node ports
//     for node_port services), and per service port the endpoints that are
//     Ready and have an IP, at the port the state resolved for that pod
//     (named target ports included).
//   - clusterdns: every service with its ports and ready addresses, and as
//     pods every address of every Endpoints object (ready or not, on any
//     node) plus this node's own pods that have an IP. So
//     <pod>.<namespace>.pod.<domain> names the pods behind services and the
//     pods on the same node, as Kubernetes names pods only behind headless
//     services: a node holds no other node's pods in its view.
//
// It owns no kernel state itself: routes, sysctls, the DNS sockets and the
// pods' resolv.conf are the agent's (agent/agent), rules are svcproxy's.
package svcsync
