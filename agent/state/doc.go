// Package state owns the cluster's desired and observed state — deployments,
// pods and nodes — and replicates it with hashicorp/raft on local disk.
//
// It reads as etcd's raftexample does, one seam per file:
//
//   - store.go: the consensus node. Write methods propose a command and return
//     once raft has committed it and the FSM has applied it; read methods read
//     the local FSM.
//   - fsm.go: the state machine fed by committed entries. Each entry is one
//     message-type byte and a JSON body (Nomad's fsm.go); Apply dispatches to
//     one small function per type. It must stay deterministic.
//   - commands.go: the message types and their bodies (the log's wire format).
//
// Change notification follows Nomad's blocking queries: Changed returns a
// channel closed at the next applied entry, and WaitIndex blocks until an
// index has been applied.
//
// The package must not decide anything: which pods to create or stop is the
// scheduler's job, and pods are started and stopped by the node. It must not
// import agent packages other than api.
package state
