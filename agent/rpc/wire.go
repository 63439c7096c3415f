package rpc

import (
	"github.com/flotilla-io/flotilla/agent/store"
)

// Paths served by Server.
const (
	// pathWrite + a state.MessageType name ("create-deployment"): a typed
	// write forwarded to the leader. The body is the command's JSON.
	pathWrite = "/rpc/v1/write/"
	// pathWrites: several typed writes in one request (batch.go).
	pathWrites = "/rpc/v1/writes"
	pathJoin   = "/rpc/v1/join"
	pathRenew  = "/rpc/v1/renew"
	pathRaft   = "/rpc/v1/raft"
	pathPing   = "/rpc/v1/ping"
)

const (
	maxJoinBody = 64 << 10
	// maxResponse bounds what a client reads: a Reply holds at most one
	// deployment or node, which the state bounds far below this.
	maxResponse = 4 << 20
)

// writeReply answers POST /rpc/v1/write/{type}, refusals included, so the
// forwarding agent reads every outcome the same way.
type writeReply = store.Reply

type joinRequest struct {
	NodeName string `json:"node_name"`
	CSRPEM   string `json:"csr_pem"`
}

type certResponse struct {
	CertPEM string `json:"cert_pem"`
	CAPEM   string `json:"ca_pem"`
}

type renewRequest struct {
	CSRPEM string `json:"csr_pem"`
}

// RaftState answers GET /rpc/v1/raft: what a server knows of the raft
// cluster, for a server deciding whether to bootstrap one.
type RaftState struct {
	// HasState is true when the server is part of a raft cluster.
	HasState bool           `json:"has_state"`
	Servers  []store.Server `json:"servers,omitempty"`
	Leader   string         `json:"leader,omitempty"`
}

type errorResponse struct {
	Error string `json:"error"`
}

type pingResponse struct {
	NodeName string `json:"node_name"`
}
