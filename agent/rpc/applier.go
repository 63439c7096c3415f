package rpc

import "context"

// Applier applies a raft log entry, as the leader's state store does.
//
// ApplyRaw must return only once the entry is committed and applied (or has
// failed), with the log index and the FSM's opaque response. It is called
// concurrently, once per forwarded write, and may block until ctx is done.
// Errors that wrap state.ErrNotFound, ErrExists, ErrConflict or ErrNotLeader
// reach the forwarding agent as the same sentinels.
type Applier interface {
	ApplyRaw(ctx context.Context, entry []byte) (index uint64, resp []byte, err error)
}

// ApplierFunc adapts a function to Applier, for tests and small wiring.
type ApplierFunc func(ctx context.Context, entry []byte) (uint64, []byte, error)

// ApplyRaw calls f.
func (f ApplierFunc) ApplyRaw(ctx context.Context, entry []byte) (uint64, []byte, error) {
	return f(ctx, entry)
}

var _ Applier = ApplierFunc(nil)
