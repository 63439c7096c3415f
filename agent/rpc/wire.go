package rpc

import (
	"errors"
	"fmt"

	"github.com/flotilla-io/flotilla/agent/state"
)

// Paths served by Server.
const (
	pathApply = "/rpc/v1/apply"
	pathJoin  = "/rpc/v1/join"
	pathPing  = "/rpc/v1/ping"
)

// MaxEntrySize is the largest log entry the apply endpoint accepts.
const MaxEntrySize = 4 << 20

const (
	maxJoinBody = 64 << 10
	// maxResponse bounds what a client reads: an entry-sized FSM response,
	// base64-encoded in JSON, fits.
	maxResponse = 8 << 20
)

// Error kinds of an apply answer: each names a state sentinel error.
const (
	KindNotFound  = "not_found"
	KindExists    = "exists"
	KindConflict  = "conflict"
	KindNotLeader = "not_leader"
	KindOther     = "other"
)

// applyResponse answers POST /rpc/v1/apply. Response is opaque FSM output
// (base64 in JSON, as encoding/json does for []byte).
type applyResponse struct {
	Index    uint64 `json:"index"`
	Response []byte `json:"response,omitempty"`
	Error    string `json:"error,omitempty"`
	Kind     string `json:"kind,omitempty"`
}

type joinRequest struct {
	NodeName string `json:"node_name"`
	CSRPEM   string `json:"csr_pem"`
}

type joinResponse struct {
	CertPEM string `json:"cert_pem"`
	CAPEM   string `json:"ca_pem"`
}

type errorResponse struct {
	Error string `json:"error"`
}

type pingResponse struct {
	NodeName string `json:"node_name"`
}

// kindOf names the state sentinel err wraps. ErrNotLeader comes first: it
// says nothing about the object, only that the write went to the wrong node.
func kindOf(err error) string {
	switch {
	case errors.Is(err, state.ErrNotLeader):
		return KindNotLeader
	case errors.Is(err, state.ErrNotFound):
		return KindNotFound
	case errors.Is(err, state.ErrExists):
		return KindExists
	case errors.Is(err, state.ErrConflict):
		return KindConflict
	}
	return KindOther
}

func sentinel(kind string) error {
	switch kind {
	case KindNotLeader:
		return state.ErrNotLeader
	case KindNotFound:
		return state.ErrNotFound
	case KindExists:
		return state.ErrExists
	case KindConflict:
		return state.ErrConflict
	}
	return nil
}

// RemoteError is an error the leader answered a forwarded write with.
// errors.Is matches the state sentinel its Kind names (none for KindOther).
type RemoteError struct {
	// Addr is the RPC address of the agent that answered.
	Addr string
	// Kind is one of the Kind constants.
	Kind string
	// Message is the leader's error text.
	Message string
}

// Error is the leader's message unchanged when it names a state sentinel, so
// a user sees the same error whichever agent took the request; other errors
// say which agent they came from.
func (e *RemoteError) Error() string {
	if sentinel(e.Kind) != nil {
		return e.Message
	}
	return fmt.Sprintf("leader at %s: %s", e.Addr, e.Message)
}

// Unwrap returns the state sentinel of e.Kind, or nil.
func (e *RemoteError) Unwrap() error { return sentinel(e.Kind) }
