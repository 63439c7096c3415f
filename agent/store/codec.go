package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// The error codec the API and the agents' RPC share: every error a write
// can end in has a kind, which travels with its message so that errors.Is
// with the state sentinels holds on the agent that forwarded a write as on
// the leader, and maps to one HTTP status wherever it is answered.

// Error kinds on the wire. Never rename one: agents of different versions
// read each other's.
const (
	KindNotFound  = "not_found"
	KindExists    = "exists"
	KindConflict  = "conflict"
	KindNotLeader = "not_leader"
	KindInvalid   = "invalid"
	KindForbidden = "forbidden"
	KindDeadline  = "deadline"
	KindCanceled  = "canceled"
	KindInternal  = "internal"
)

// ErrorKind names the sentinel err wraps; KindInternal for none.
// ErrNotLeader comes first: it says nothing about the object, only that the
// write went to the wrong node.
func ErrorKind(err error) string {
	switch {
	case errors.Is(err, state.ErrNotLeader), errors.Is(err, errClosed):
		// A leader that closed is, to the follower, a leader that went away.
		return KindNotLeader
	case errors.Is(err, state.ErrForbidden):
		return KindForbidden
	case errors.Is(err, state.ErrInvalid):
		return KindInvalid
	case errors.Is(err, state.ErrNotFound):
		return KindNotFound
	case errors.Is(err, state.ErrExists):
		return KindExists
	case errors.Is(err, state.ErrConflict):
		return KindConflict
	case errors.Is(err, context.DeadlineExceeded):
		return KindDeadline
	case errors.Is(err, context.Canceled):
		return KindCanceled
	}
	return KindInternal
}

// KindError returns the sentinel of kind; nil for KindInternal and kinds
// this agent does not know.
func KindError(kind string) error {
	switch kind {
	case KindNotFound:
		return state.ErrNotFound
	case KindExists:
		return state.ErrExists
	case KindConflict:
		return state.ErrConflict
	case KindNotLeader:
		return state.ErrNotLeader
	case KindInvalid:
		return state.ErrInvalid
	case KindForbidden:
		return state.ErrForbidden
	case KindDeadline:
		return context.DeadlineExceeded
	case KindCanceled:
		return context.Canceled
	}
	return nil
}

// HTTPStatus is the status an error of kind is answered with, by the API
// and by the RPC alike.
func HTTPStatus(kind string) int {
	switch kind {
	case KindNotFound:
		return http.StatusNotFound
	case KindExists, KindConflict:
		return http.StatusConflict
	case KindInvalid:
		return http.StatusUnprocessableEntity
	case KindForbidden:
		return http.StatusForbidden
	case KindNotLeader, KindDeadline:
		return http.StatusServiceUnavailable
	case KindCanceled:
		return 499 // client closed the request, as nginx logs it
	}
	return http.StatusInternalServerError
}

// WireError is an error as it travels between agents: its message as the
// agent that made it wrote it, and its kind.
type WireError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// NewWireError renders err for the wire.
func NewWireError(err error) *WireError {
	return &WireError{Kind: ErrorKind(err), Message: err.Error()}
}

// Err is the inverse of NewWireError: an error with the message, for
// which errors.Is matches the kind's sentinel.
func (e *WireError) Err() error { return &remoteError{msg: e.Message, kind: KindError(e.Kind)} }

type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// Reply is the leader's answer to a forwarded write: the raft index it was
// applied at (0 when it was refused before it was proposed) and what the
// FSM answered: the written object, or an error.
type Reply struct {
	Index      uint64          `json:"index"`
	Deployment *api.Deployment `json:"deployment,omitempty"`
	Node       *api.Node       `json:"node,omitempty"`
	Service    *api.Service    `json:"service,omitempty"`
	// Ingress is redacted: the state machine answers ingresses without
	// their keys.
	Ingress *api.Ingress `json:"ingress,omitempty"`
	Error   *WireError   `json:"error,omitempty"`
}

// NewReply renders the outcome of a write: the FSM's answer fsmResp, or err
// when the write failed before or while proposing.
func NewReply(index uint64, fsmResp any, err error) Reply {
	r := Reply{Index: index}
	if err == nil {
		err, _ = fsmResp.(error)
	}
	switch v := fsmResp.(type) {
	case api.Deployment:
		r.Deployment = &v
	case api.Node:
		r.Node = &v
	case api.Service:
		r.Service = &v
	case api.Ingress:
		r.Ingress = &v
	}
	if err != nil {
		r.Error = NewWireError(err)
	}
	return r
}

// Result returns the reply as the FSM answered: the object (api.Deployment,
// api.Node or nil), or the error.
func (r Reply) Result() (any, error) {
	switch {
	case r.Error != nil:
		return nil, r.Error.Err()
	case r.Deployment != nil:
		return *r.Deployment, nil
	case r.Node != nil:
		return *r.Node, nil
	case r.Service != nil:
		return *r.Service, nil
	case r.Ingress != nil:
		return *r.Ingress, nil
	}
	return nil, nil
}

// answer returns the FSM's answer to a write as the T it must be. Only a
// forwarded write can get something else: a leader of another version.
func answer[T any](t state.MessageType, resp any) (T, error) {
	v, ok := resp.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("store: %s: the answer is a %T, not a %T; do all agents run the same version?", t, resp, zero)
	}
	return v, nil
}
