// Package agent wires one flotilla-agent together: the supervised
// containerd, the runtime, pod networking, the raft state, the leader's
// controller, services (svcproxy's rules and clusterdns, fed by svcsync;
// the service route and the pods' resolv.conf are set up here), the node
// reconciler and the API server. It owns their start order and shutdown;
// each part's logic lives in its own package.
package agent
