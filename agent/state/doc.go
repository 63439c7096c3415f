// Package state owns the cluster's desired and observed state — deployments,
// pods, nodes and the cluster's network layout — and replicates it with
// hashicorp/raft on local disk.
//
// It reads as etcd's raftexample does, one seam per file:
//
//   - store.go: the consensus node. Write methods propose a command and return
//     once raft has committed it and the FSM has applied it; read methods read
//     the local FSM.
//   - fsm.go: the state machine fed by committed entries. Each entry is one
//     message-type byte and a JSON body (Nomad's fsm.go); Apply dispatches to
//     one small function per type. It must stay deterministic.
//   - commands.go: the message types and their bodies (the log's wire format),
//     and the checks an entry passes before it is proposed.
//   - forward.go, response.go: writes made off the leader. Every agent keeps
//     a full replica (servers as voters, client agents as non-voters); a
//     write on one that does not lead goes to the leader through a Forwarder
//     (the agent's RPC), whose ApplyRaw proposes it and answers with the
//     FSM's response encoded so that errors keep their kind.
//   - servers.go: the raft configuration: BootstrapServers (as Consul's
//     bootstrap_expect), AddVoter, AddNonvoter, RemoveServer, called by the
//     agent's membership loop.
//   - tls_transport.go: raft's stream over mutually authenticated TLS.
//   - podcidr.go: the cluster config and the allocation of node pod ranges.
//
// Change notification follows Nomad's blocking queries: Changed returns a
// channel closed at the next applied entry, and WaitIndex blocks until an
// index has been applied.
//
// The package decides nothing but what every replica must decide alike
// inside Apply: a node's pod range. Which pods to create or stop is the
// scheduler's job, and pods are started and stopped by the node; which
// agents are in raft is the membership loop's. It must not import agent
// packages other than api.
package state
