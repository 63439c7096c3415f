package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/flotilla-io/flotilla/agent/execws"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// DefaultMaxExecs bounds the execs a node runs at once: each holds a
// process in a container, FIFOs and a few goroutines.
const DefaultMaxExecs = 32

// Exec runs `exec` commands in this node's containers for the API and the
// agents' RPC. It is safe for concurrent use.
type Exec struct {
	runtime runtime.StreamExecer
	mu      sync.Mutex
	running int
	max     int
}

// NewExec returns an Exec that runs at most max commands at once (0 is
// DefaultMaxExecs).
func NewExec(rt runtime.StreamExecer, max int) *Exec {
	if max <= 0 {
		max = DefaultMaxExecs
	}
	return &Exec{runtime: rt, max: max}
}

// StartExec starts opts.Command (opts.Container named) in that container
// of pod ns/pod on this node. It returns errors wrapping
// runtime.ErrContainerNotFound (no such container here),
// runtime.ErrNotRunning or execws.ErrBusy (the node runs as many execs as
// it allows).
func (e *Exec) StartExec(ctx context.Context, ns, pod string, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error) {
	// The names become a container ID: only ones a pod of this node can have.
	if api.ValidateName(ns) != nil || api.ValidateDNSLabel(pod) != nil || api.ValidateName(opts.Container) != nil {
		return nil, fmt.Errorf("container %.60q of pod %.60q/%.60q: %w", opts.Container, ns, pod, runtime.ErrContainerNotFound)
	}
	if err := opts.Validate(); err != nil {
		return nil, badRequest{err}
	}
	e.mu.Lock()
	if e.running >= e.max {
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: it runs %d already; retry when one has ended", execws.ErrBusy, e.max)
	}
	e.running++
	e.mu.Unlock()
	p := &api.Pod{Namespace: ns, Name: pod}
	proc, err := e.runtime.StartExec(ctx, containerID(p, opts.Container), runtime.StreamExec{
		Command: opts.Command, TTY: opts.TTY, IO: io,
	})
	if err != nil {
		e.release()
		return nil, fmt.Errorf("container %s of pod %s/%s: %w", opts.Container, ns, pod, err)
	}
	return &boundedExec{ExecProcess: proc, release: e.release}, nil
}

func (e *Exec) release() {
	e.mu.Lock()
	e.running--
	e.mu.Unlock()
}

// boundedExec frees its slot when it has been waited for.
type boundedExec struct {
	runtime.ExecProcess
	release func()
	once    sync.Once
}

func (b *boundedExec) Wait(ctx context.Context) (int, error) {
	defer b.once.Do(b.release)
	return b.ExecProcess.Wait(ctx)
}

// badRequest is an exec the options of which are invalid (HTTP 400).
type badRequest struct{ err error }

func (b badRequest) Error() string   { return b.err.Error() }
func (b badRequest) Unwrap() error   { return b.err }
func (b badRequest) HTTPStatus() int { return 400 }
