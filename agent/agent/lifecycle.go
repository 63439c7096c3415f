package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// lifecycle is the agent's one ordered list of what it started: stop
// undoes it in reverse, so everything stops before what it depends on
// (loops before the store and membership close, the store before the
// runtime, the runtime before containerd).
type lifecycle struct {
	log   *slog.Logger
	ctx   context.Context // parent of every loop
	steps []step
}

type step struct {
	name string
	stop func()
}

func newLifecycle(ctx context.Context, log *slog.Logger) *lifecycle {
	// Loops end through their own cancel, in order, not when ctx ends.
	return &lifecycle{log: log, ctx: context.WithoutCancel(ctx)}
}

// add records how to undo something just started.
func (l *lifecycle) add(name string, stop func()) {
	l.steps = append(l.steps, step{name, stop})
}

// addFinal records a stop that runs after every other, whenever it was
// added: for what must outlive the rest of the agent, as the cluster DNS,
// which answers the pods from its own copy of the names until the process
// exits, so that an agent restart interrupts it as briefly as it can.
func (l *lifecycle) addFinal(name string, stop func()) {
	l.steps = append([]step{{name, stop}}, l.steps...)
}

// loop runs f in a goroutine until stop cancels its context, and waits for
// it to return there.
func (l *lifecycle) loop(name string, f func(context.Context)) {
	ctx, cancel := context.WithCancel(l.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f(ctx)
	}()
	l.add(name, func() { cancel(); wg.Wait() })
}

// stop undoes every step, newest first.
func (l *lifecycle) stop() {
	for i := len(l.steps) - 1; i >= 0; i-- {
		s := l.steps[i]
		start := time.Now()
		s.stop()
		l.log.Debug("stopped", "part", s.name, "took", time.Since(start))
	}
	l.steps = nil
}
