package clientstate

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
)

// Fakes of the seams, for tests here and in other packages.

var (
	_ Watcher = (*FakeWatcher)(nil)
	_ Writer  = (*FakeWriter)(nil)
)

// WatchStep is one scripted answer of a FakeWatcher: a response, or an
// error when Err is set.
type WatchStep struct {
	Resp rpc.WatchResponse
	Err  error
}

// WatchCall is one call a FakeWatcher saw.
type WatchCall struct {
	Addr  string
	Since uint64
	Wait  time.Duration
}

// FakeWatcher answers watches from a script per server address. A call to
// an address whose script is used up waits, as a watch with nothing new
// does, until more is scripted or its context ends.
type FakeWatcher struct {
	mu      sync.Mutex
	scripts map[string][]WatchStep
	calls   []WatchCall
	more    chan struct{}
}

// Script appends answers to the server at addr's script.
func (f *FakeWatcher) Script(addr string, steps ...WatchStep) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.scripts == nil {
		f.scripts = map[string][]WatchStep{}
	}
	f.scripts[addr] = append(f.scripts[addr], steps...)
	if f.more != nil {
		close(f.more)
		f.more = nil
	}
}

// Watch implements Watcher.
func (f *FakeWatcher) Watch(ctx context.Context, addr string, since uint64, wait time.Duration) (rpc.WatchResponse, error) {
	f.mu.Lock()
	f.calls = append(f.calls, WatchCall{Addr: addr, Since: since, Wait: wait})
	for {
		if steps := f.scripts[addr]; len(steps) > 0 {
			f.scripts[addr] = steps[1:]
			f.mu.Unlock()
			return steps[0].Resp, steps[0].Err
		}
		if f.more == nil {
			f.more = make(chan struct{})
		}
		more := f.more
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return rpc.WatchResponse{}, ctx.Err()
		case <-more:
		}
		f.mu.Lock()
	}
}

// Calls returns the calls seen so far, in order.
func (f *FakeWatcher) Calls() []WatchCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// WriteCall is one write a FakeWriter saw.
type WriteCall struct {
	Addr, Leader string
	Cmd          state.Command
	Token        string
}

// FakeWriter records writes and answers them with Answer, or with an empty
// Reply (applied) when Answer is nil. Set Answer before use.
type FakeWriter struct {
	Answer func(addr, leader string, cmd state.Command) (store.Reply, error)

	mu    sync.Mutex
	calls []WriteCall
}

// Write implements Writer.
func (f *FakeWriter) Write(ctx context.Context, addr, leader string, cmd state.Command, token string) (store.Reply, error) {
	f.mu.Lock()
	f.calls = append(f.calls, WriteCall{Addr: addr, Leader: leader, Cmd: cmd, Token: token})
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return store.Reply{}, err
	}
	if f.Answer == nil {
		return store.Reply{}, nil
	}
	return f.Answer(addr, leader, cmd)
}

// Calls returns the writes seen so far, in order.
func (f *FakeWriter) Calls() []WriteCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}
