// Package fleet is what makes an agent one of a fleet, on top of
// membership (gossip), the raft store and the agents' RPC:
//
//   - identity.go: this agent's certificate. Servers issue their own with
//     the CA key; clients join with the join token and get a client
//     certificate for their name and address. Both renew it before it
//     expires, without a restart.
//   - policy.go: membership → raft. Servers bootstrap once enough of them
//     are alive and none knows of a cluster already; the leader adds
//     members to raft only after it verified the certificate at their raft
//     address (verify.go), records node statuses, and removes servers that
//     left, failed for too long or were removed from the fleet.
//   - forward.go: writes off the leader go to the leader's RPC.
//   - routes.go: host-gw routes to other nodes' pod ranges, each checked
//     before it is programmed.
//
// Every seam is an interface with the real implementation elsewhere
// (store.Store, membership.Membership, rpc.Client, routes.Manager), so the
// policies are tested on fakes. The package must not import agent/agent.
package fleet
