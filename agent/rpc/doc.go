// Package rpc is agent-to-agent HTTPS with mutual TLS, served by servers
// (and, for container logs and exec only, by every agent):
//
//   - POST /rpc/v1/write/{type}: a typed write (a state command) that an
//     agent not leading forwards to the leader. The leader checks who sent
//     it (package authz: the sender's certificate, and the API token an
//     operator's write carries), validates it and proposes it itself, as
//     Nomad's RPC endpoints do; raw log entries are never accepted.
//   - POST /rpc/v1/join: a joining agent gets a client certificate for its
//     name and the address it connects from, with the join token.
//   - POST /rpc/v1/renew: a client agent renews its certificate with it.
//   - GET /rpc/v1/watch: a blocking query for what the calling node needs
//     (its own pods, every node, the cluster config) since a raft index:
//     how clients, which hold no raft state, read.
//   - GET /rpc/v1/raft: what a server knows of the raft cluster, for a
//     server deciding whether to bootstrap one (servers only).
//   - GET /rpc/v1/ping: the server's node name.
//   - GET /rpc/v1/logs: a container's logs, streamed, from the node that
//     runs it, to servers only (logs.go). Every agent serves it: client
//     agents on a NodeServer of their own, which serves nothing else.
//   - GET /rpc/v1/exec: a command run in a container, upgraded to a
//     WebSocket speaking api.ExecProtocol, by the node that runs it, for
//     servers only (exec.go); served where logs are.
//
// Certificates come from the cluster CA (package pki) and carry the node's
// name and role. The server accepts connections with or without a client
// certificate so that agents without one can join; every other path
// requires a certificate the CA signed and that no node removal revoked.
// The client talks only to peers holding a server certificate.
package rpc
