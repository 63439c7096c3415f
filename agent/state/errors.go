package state

import "errors"

// Sentinel errors of writes; test for them with errors.Is. Each has a kind
// on the wire (package store's codec) so that it survives forwarding.
var (
	// ErrNotFound means the object named by a write does not exist (or, for a
	// deployment, is being deleted).
	ErrNotFound = errors.New("not found")
	// ErrExists means a create named an object that exists already.
	ErrExists = errors.New("already exists")
	// ErrConflict means the write contradicts the current state, e.g. removing
	// a deployment that still has pods.
	ErrConflict = errors.New("conflicts with the current state")
	// ErrNotLeader means this node cannot accept writes; the error it wraps
	// names the leader's address when one is known.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrInvalid means a command fails validation: a bad name, a value out
	// of bounds. Nothing was written.
	ErrInvalid = errors.New("invalid")
	// ErrForbidden means the sender may not make this write (a client
	// agent writing about another node, say). Nothing was written.
	ErrForbidden = errors.New("forbidden")
)
