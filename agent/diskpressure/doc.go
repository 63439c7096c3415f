// Package diskpressure watches the file system of a node's data directory
// (raft, container logs, containerd's images and snapshots) and reports
// api.NodeConditionDiskPressure when it is fuller than a threshold, as the
// kubelet's eviction manager does for nodefs: first it frees what it can
// (rotated container logs, unused images: steps the caller supplies), and
// the condition holds until usage is under a lower watermark, so the node
// does not flap around one value.
//
// It reads usage through a Statfs seam (a fake in unit tests) and knows
// nothing of containerd or the scheduler: the agent wires the steps and
// publishes the condition in the node's record, and the scheduler places
// no new pods on a node that has it.
package diskpressure
