package state

import "errors"

// Sentinel errors of the write methods; test for them with errors.Is.
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
)
