package agent

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// The reporter registers the node again when a condition comes or goes,
// not when only its message changes, and retries a failed write.
func TestConditionReporter(t *testing.T) {
	var mu sync.Mutex
	cond := api.NodeCondition{}
	on := false
	fail := true
	var writes [][]api.NodeCondition
	published := make(chan []api.NodeCondition, 10)
	r := &conditionReporter{
		self: func() api.Node { return api.Node{Name: "n1"} },
		register: func(_ context.Context, n api.Node) (api.Node, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				fail = false
				return api.Node{}, context.DeadlineExceeded
			}
			writes = append(writes, n.Conditions)
			return n, nil
		},
		sources: []conditionSource{func() (api.NodeCondition, bool) {
			mu.Lock()
			defer mu.Unlock()
			return cond, on
		}},
		every:    time.Hour,
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		onChange: func(c []api.NodeCondition) { published <- c },
	}
	poke := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx, poke); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	set := func(o bool, msg string) {
		mu.Lock()
		on, cond = o, api.NodeCondition{Type: api.NodeConditionRuntimeUnhealthy, Since: since, Message: msg}
		mu.Unlock()
		poke <- struct{}{}
	}
	set(true, "containerd has not answered a list for 10s") // fails once
	set(true, "containerd has not answered a list for 11s") // retried
	if got := <-published; len(got) != 1 || got[0].Type != api.NodeConditionRuntimeUnhealthy {
		t.Fatalf("published %+v", got)
	}
	set(true, "containerd has not answered a list for 12s") // same condition: no write
	set(false, "")
	if got := <-published; len(got) != 0 {
		t.Fatalf("published %+v, want none", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 2 {
		t.Errorf("%d writes, want 2: %+v", len(writes), writes)
	}
}
