package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flotilla-io/flotilla/api"
)

// response is the outcome of a write as it travels from the leader to the
// agent that forwarded it: what the FSM answered (a written object, an
// error, or nothing), or why the leader did not apply it.
type response struct {
	Deployment *api.Deployment `json:"deployment,omitempty"`
	Node       *api.Node       `json:"node,omitempty"`
	Error      *responseError  `json:"error,omitempty"`
}

// responseError carries an error as its message and kind, so that errors.Is
// with the package's sentinels works on the agent that forwarded the write.
type responseError struct {
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message"`
}

// Error kinds on the wire. Never rename one: agents of different versions
// read each other's.
const (
	kindNotFound  = "not_found"
	kindExists    = "exists"
	kindConflict  = "conflict"
	kindNotLeader = "not_leader"
	kindDeadline  = "deadline"
	kindCanceled  = "canceled"
)

// errorKind names the sentinel err wraps, or "" for none.
func errorKind(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return kindNotFound
	case errors.Is(err, ErrExists):
		return kindExists
	case errors.Is(err, ErrConflict):
		return kindConflict
	case errors.Is(err, ErrNotLeader), errors.Is(err, errClosed):
		// A leader that closed is, to the follower, a leader that went away.
		return kindNotLeader
	case errors.Is(err, context.DeadlineExceeded):
		return kindDeadline
	case errors.Is(err, context.Canceled):
		return kindCanceled
	}
	return ""
}

func kindError(kind string) error {
	switch kind {
	case kindNotFound:
		return ErrNotFound
	case kindExists:
		return ErrExists
	case kindConflict:
		return ErrConflict
	case kindNotLeader:
		return ErrNotLeader
	case kindDeadline:
		return context.DeadlineExceeded
	case kindCanceled:
		return context.Canceled
	}
	return nil
}

// remoteError is an error the leader returned: its message as the leader
// wrote it, and the sentinel of its kind, if any.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

// encodeResponse renders what the FSM answered, or err, for the wire.
func encodeResponse(fsmResp any, err error) ([]byte, error) {
	var r response
	if err == nil {
		if e, ok := fsmResp.(error); ok {
			err = e
		}
	}
	switch v := fsmResp.(type) {
	case nil, error:
	case api.Deployment:
		r.Deployment = &v
	case api.Node:
		r.Node = &v
	default:
		return nil, fmt.Errorf("state: cannot encode an FSM answer of type %T; add it to response", fsmResp)
	}
	if err != nil {
		r.Error = &responseError{Kind: errorKind(err), Message: err.Error()}
	}
	return json.Marshal(r)
}

// decodeResponse is the inverse of encodeResponse: it returns what the FSM
// answered as the FSM does (nil, an error, api.Deployment, api.Node); err
// is for an answer that does not decode.
func decodeResponse(b []byte) (fsmResp any, err error) {
	var r response
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("state: the leader's answer does not decode (is it a different flotilla-agent version?): %w", err)
	}
	switch {
	case r.Error != nil:
		return &remoteError{msg: r.Error.Message, kind: kindError(r.Error.Kind)}, nil
	case r.Deployment != nil:
		return *r.Deployment, nil
	case r.Node != nil:
		return *r.Node, nil
	}
	return nil, nil
}
