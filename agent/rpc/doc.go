// Package rpc is agent-to-agent HTTPS with mutual TLS: a follower forwards
// raft log entries to the leader (POST /rpc/v1/apply), a joining agent gets
// its certificate signed by a server with the join token
// (POST /rpc/v1/join), and GET /rpc/v1/ping answers the node's name.
//
// Certificates come from the cluster CA (package pki). The server accepts
// connections with or without a client certificate so that agents without
// one can join; every other path requires a certificate the CA signed.
//
// Entries and FSM responses are opaque bytes here: the package must not
// decode them, and must not import agent packages other than pki and state
// (for its error sentinels, which survive the trip: errors.Is(err,
// state.ErrNotFound) holds on the forwarding side as on the leader).
package rpc
