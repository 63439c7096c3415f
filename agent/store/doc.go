// Package store is the agent's raft node (hashicorp/raft on raft-boltdb),
// feeding the replicated data model of package state, as etcd's
// raftexample keeps its raft node apart from its kvstore:
//
//   - store.go: open and close, the leadership monitor (a new leader
//     applies every earlier entry, behind a barrier, before it counts as
//     ready) and RunLeaderLoop, which runs leader work only then.
//   - propose.go: Write (validate, then propose on the leader or forward
//     to it and wait until this node applied the entry) and ApplyLocal,
//     the leader's side of forwarding.
//   - writes.go: the typed writes and the reads callers use.
//   - codec.go: the error codec the API and the agents' RPC share (kinds,
//     HTTP statuses, the Reply a forwarded write gets).
//   - servers.go: the raft configuration (bootstrap, voters, non-voters,
//     removal) and who the transport may talk to.
//   - transport.go: raft over mutual TLS: only servers may connect; a dial
//     reaches only the node the configuration lists at that address;
//     revoked certificates lose their connections.
//
// A single agent (Config.Keypair nil) runs raft with an in-memory
// transport: no raft port at all. Who may send which write is package
// authz's, checked by package rpc before ApplyLocal; this package trusts
// its callers in the agent.
package store
