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

// A registration that replaced the record without the conditions (another
// writer's) is found in the stored record and the conditions written again;
// every registration built by selfNode carries the ones held.
func TestConditionReporterRepairsTheRecord(t *testing.T) {
	var mu sync.Mutex
	var record api.Node
	writes := 0
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := Config{NodeName: "n1", conditions: &nodeConditions{}}
	r := &conditionReporter{
		self: func() api.Node { return selfNode(&cfg) },
		register: func(_ context.Context, n api.Node) (api.Node, error) {
			mu.Lock()
			defer mu.Unlock()
			record = n
			writes++
			return n, nil
		},
		stored: func() (api.Node, bool) {
			mu.Lock()
			defer mu.Unlock()
			return record, true
		},
		held: cfg.conditions,
		sources: []conditionSource{func() (api.NodeCondition, bool) {
			return api.NodeCondition{Type: api.NodeConditionDiskPressure, Since: since, Message: "91% used"}, true
		}},
		every:  time.Hour,
		settle: time.Nanosecond,
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	poke := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx, poke); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	poke <- struct{}{} // the first poll has written; this one waits for it
	if got := selfNode(&cfg).Conditions; len(got) != 1 || got[0].Type != api.NodeConditionDiskPressure {
		t.Fatalf("selfNode carries %+v, want the condition held", got)
	}
	mu.Lock()
	record.Conditions = nil // another registration, made before the condition held
	mu.Unlock()
	poke <- struct{}{}
	poke <- struct{}{} // the repair is done
	mu.Lock()
	defer mu.Unlock()
	if len(record.Conditions) != 1 || writes != 2 {
		t.Fatalf("record %+v after %d writes, want the condition back after 2", record.Conditions, writes)
	}
}
