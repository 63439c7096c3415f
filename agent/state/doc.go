// Package state is the cluster's replicated data model — deployments,
// pods, nodes, removed node names and the cluster's network layout — as
// etcd's raftexample keeps its kvstore apart from its raft node (package
// store here, which feeds this one).
//
//   - commands.go: the writes. Each is a typed command with its own
//     Validate (the API's rules: names are DNS labels, sizes are bounded);
//     a log entry is its type byte and JSON body (Nomad's fsm.go).
//   - fsm.go: the state machine fed by committed entries; Apply dispatches
//     to one small function per type. It is deterministic, and it never
//     panics: an entry it cannot read or apply is skipped, counted and
//     logged, the same way on every replica, also when the log is replayed.
//   - reads.go: copies of what the tables hold, and change notification in
//     the manner of Nomad's blocking queries (Watch).
//   - index.go, view.go: indexes (pods by node and deployment) and two
//     bounded change journals: deployments for the controller (Changes),
//     objects for the watches clients read (NodeView: a node's own pods,
//     every node, the cluster config, since an index).
//   - snapshot.go: every table, versioned.
//   - podcidr.go: the cluster config and the allocation of node pod ranges.
//   - services.go: services, their virtual IPs and node ports, and their
//     endpoints derived from the pods.
//   - ingress.go: ingresses, with their TLS keys (every node's view carries
//     them; the API's reads are redacted), conflicts between them, and the
//     table's bounds.
//
// The package decides nothing but what every replica must decide alike
// inside Apply: a node's pod range. Who may write what is package authz's;
// which pods to create or stop is the scheduler's. It must not import agent
// packages.
package state
