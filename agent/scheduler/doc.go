// Package scheduler decides, for one deployment, which pods to create (and
// on which node) and which to stop. Like Nomad's scheduler it is a pure
// function of its input — no I/O, no clock, no randomness of its own (the
// caller injects pod-name suffixes) — so it is tested with plain values.
//
// It must not read or write the state store, talk to nodes or import other
// agent packages: the controller gathers the Input from the store and
// applies the Plan through it.
//
// # Feasibility
//
// A node takes one more pod of a deployment when it passes, in this order
// (a node that fails several is reported under the first):
//
//  1. "not ready": its status is api.NodeReady;
//  2. "draining": it is not being drained (checked before cordoned, as a
//     draining node is cordoned too);
//  3. "cordoned": it is not Unschedulable;
//     "disk pressure": it reports no api.NodeConditionDiskPressure (a
//     condition whose BlocksScheduling is true);
//  4. "node selector mismatch": it carries every NodeSelector label;
//  5. "insufficient cpu", "insufficient memory": the pod's requests fit
//     capacity minus Reserved* minus the requests of the pods on it and of
//     those the plan places there (a request of 0 always fits);
//  6. "host port 8080/tcp in use": no pod there holds one of the pod's
//     host ports with the same protocol;
//  7. "anti-affinity": for every Required rule, no pod matching its Labels
//     runs in the node's topology domain: the node, or for a Topology label
//     key all nodes with the node's value (a node without it is a domain of
//     its own); and, both ways as in Kubernetes, no pod placed there carries
//     a Required rule (Pod.AntiAffinity, its deployment's as placed) whose
//     Labels the new pod has.
//
// Pods the plan stops still hold their resources, host ports and required
// anti-affinity until gone. When no node fits, the reason reads as
// Kubernetes' does: "cannot place 3 of 6 pods: 0/5 nodes available: 3
// insufficient memory, 2 cordoned" (parts by count, then phrase).
//
// # Ranking
//
// Among feasible nodes, spread (the default) prefers the fewest current
// pods of the deployment in the node's zone (label api.TopologyZone), then
// on the node, then the fewest pods matching soft anti-affinity rules in
// their domains, then the least requested fraction of CPU plus memory
// (with the pod), then the first name. Bin-pack prefers the fewest soft
// anti-affinity matches, then the most requested fraction, then the first
// name. Spread counts only the current generation, not pods being stopped,
// so a rollout or drain spreads the new pods evenly.
//
// # Availability
//
// Rollouts surge by one and keep Replicas ready (maxSurge 1, maxUnavailable
// 0); drains take one step: a ready pod on a draining node is stopped only
// while Replicas-1 others stay ready, and is replaced elsewhere.
package scheduler
