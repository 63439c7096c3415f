// Package agent wires one flotilla-agent together: the supervised
// containerd, the runtime, pod networking, the raft state, the leader's
// controller, the node reconciler and the API server. It owns their start
// order and shutdown; each part's logic lives in its own package.
package agent
