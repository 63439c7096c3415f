package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Deadlines bound calls into a Runtime (see Guard).
type Deadlines struct {
	// Pull bounds EnsureImage (a pull of a large image over a slow link)
	// and ImportImages.
	Pull time.Duration
	// Call bounds every other call; Stop gets its timeout on top, and
	// Exec its own timeout.
	Call time.Duration
	// UnhealthyAfter is how long a call (other than pulls, imports, Stop
	// and Exec, which may rightly take long) may go unanswered before the
	// runtime is reported unhealthy.
	UnhealthyAfter time.Duration
}

// DefaultDeadlines are two minutes for pulls, 30 s for other calls, and
// unhealthy after 10 s without an answer.
func DefaultDeadlines() Deadlines {
	return Deadlines{Pull: 2 * time.Minute, Call: 30 * time.Second, UnhealthyAfter: 10 * time.Second}
}

// stopSlack is what Stop may take beyond its timeout: SIGKILL, waiting for
// the exit (the containerd runtime waits up to 10 s) and deleting the task.
const stopSlack = 15 * time.Second

// Health is what Guard knows of the runtime's answers.
type Health struct {
	// Healthy is false while a call has gone unanswered for longer than
	// UnhealthyAfter, or the last call that ended was cut off at its
	// deadline and none has answered since.
	Healthy bool
	// Since is when the runtime last changed between healthy and not.
	Since time.Time
	// Message says what is wrong, e.g. "containerd has not answered a
	// List for 40s".
	Message string
}

// Guard is a Runtime that gives every call a deadline, returns when it
// passes even if the runtime underneath has not (a call into a hung
// containerd then blocks only the goroutine that made it, not the pod's
// sync that waits for it), and keeps track of whether the runtime answers.
// It is safe for concurrent use.
type Guard struct {
	rt   Runtime
	d    Deadlines
	name string
	now  func() time.Time

	mu       sync.Mutex
	next     uint64
	inflight map[uint64]guardCall // calls that count for health
	timedOut string               // last call cut off, "" once one answered
	healthy  bool
	since    time.Time
}

type guardCall struct {
	op    string
	start time.Time
}

var _ Runtime = (*Guard)(nil)

// NewGuard wraps rt. name says what the runtime is in messages
// ("containerd"); zero fields of d take DefaultDeadlines'; now may be nil.
func NewGuard(rt Runtime, name string, d Deadlines, now func() time.Time) *Guard {
	def := DefaultDeadlines()
	if d.Pull <= 0 {
		d.Pull = def.Pull
	}
	if d.Call <= 0 {
		d.Call = def.Call
	}
	if d.UnhealthyAfter <= 0 {
		d.UnhealthyAfter = def.UnhealthyAfter
	}
	if now == nil {
		now = time.Now
	}
	return &Guard{rt: rt, d: d, name: name, now: now, inflight: map[uint64]guardCall{}, healthy: true, since: now()}
}

// Unwrap returns the guarded runtime.
func (g *Guard) Unwrap() Runtime { return g.rt }

// Health reports whether the runtime answers; it is cheap and may be
// polled.
func (g *Guard) Health() Health {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	msg := ""
	var oldest guardCall
	for _, c := range g.inflight {
		if oldest.start.IsZero() || c.start.Before(oldest.start) {
			oldest = c
		}
	}
	if !oldest.start.IsZero() && now.Sub(oldest.start) >= g.d.UnhealthyAfter {
		msg = fmt.Sprintf("%s has not answered a %s for %s", g.name, oldest.op, now.Sub(oldest.start).Round(time.Second))
	} else if g.timedOut != "" {
		msg = fmt.Sprintf("%s did not answer a %s within its deadline, and has answered no call since", g.name, g.timedOut)
	}
	if healthy := msg == ""; healthy != g.healthy {
		g.healthy, g.since = healthy, now
	}
	return Health{Healthy: g.healthy, Since: g.since, Message: msg}
}

// call runs f with a deadline of d. tracked calls count for health.
func call[T any](g *Guard, ctx context.Context, op, id string, d time.Duration, tracked bool, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var key uint64
	if tracked {
		g.mu.Lock()
		g.next++
		key = g.next
		g.inflight[key] = guardCall{op: op, start: g.now()}
		g.mu.Unlock()
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f(ctx)
		done <- result{v, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		// The runtime may not honour ctx (a call stuck before its
		// deadline is looked at): give up on it here; its goroutine
		// ends when the call does.
		res.err = ctx.Err()
	}
	cut := errors.Is(ctx.Err(), context.DeadlineExceeded) && (res.err == nil || errors.Is(res.err, context.DeadlineExceeded))
	if tracked {
		g.mu.Lock()
		delete(g.inflight, key)
		if cut {
			g.timedOut = op
		} else if res.err == nil || ctx.Err() == nil {
			g.timedOut = ""
		}
		g.mu.Unlock()
	}
	if cut && res.err == nil {
		// Finished as the deadline fired: an answer is an answer.
		return res.v, nil
	}
	if cut {
		var zero T
		what := op
		if id != "" {
			what += " " + id
		}
		return zero, fmt.Errorf("%s: %s did not answer within %s; it may be overloaded or hung, and the call will be retried: %w",
			what, g.name, d, errors.Join(ErrTimeout, context.DeadlineExceeded))
	}
	return res.v, res.err
}

func noValue(f func(context.Context) error) func(context.Context) (struct{}, error) {
	return func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) }
}

// EnsureImage implements Runtime with the Pull deadline.
func (g *Guard) EnsureImage(ctx context.Context, image string) (bool, error) {
	return call(g, ctx, "pull", image, g.d.Pull, false, func(ctx context.Context) (bool, error) { return g.rt.EnsureImage(ctx, image) })
}

// Create implements Runtime.
func (g *Guard) Create(ctx context.Context, spec ContainerSpec) error {
	_, err := call(g, ctx, "create", spec.ID, g.d.Call, true, noValue(func(ctx context.Context) error { return g.rt.Create(ctx, spec) }))
	return err
}

// Start implements Runtime.
func (g *Guard) Start(ctx context.Context, id string) error {
	_, err := call(g, ctx, "start", id, g.d.Call, true, noValue(func(ctx context.Context) error { return g.rt.Start(ctx, id) }))
	return err
}

// Stop implements Runtime, with the Call deadline beyond timeout and the
// time a SIGKILL takes.
func (g *Guard) Stop(ctx context.Context, id string, timeout time.Duration) (int, error) {
	code, err := call(g, ctx, "stop", id, max(timeout, 0)+stopSlack+g.d.Call, false, func(ctx context.Context) (int, error) { return g.rt.Stop(ctx, id, timeout) })
	if err != nil && errors.Is(err, ErrTimeout) {
		return -1, err
	}
	return code, err
}

type execResult struct {
	code int
	out  []byte
}

// Exec implements Runtime, with the Call deadline beyond timeout.
func (g *Guard) Exec(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error) {
	r, err := call(g, ctx, "exec", id, max(timeout, 0)+g.d.Call, false, func(ctx context.Context) (execResult, error) {
		code, out, err := g.rt.Exec(ctx, id, cmd, timeout)
		return execResult{code, out}, err
	})
	if errors.Is(err, ErrTimeout) {
		return -1, nil, err
	}
	return r.code, r.out, err
}

// Remove implements Runtime.
func (g *Guard) Remove(ctx context.Context, id string) error {
	_, err := call(g, ctx, "remove", id, stopSlack+g.d.Call, true, noValue(func(ctx context.Context) error { return g.rt.Remove(ctx, id) }))
	return err
}

// List implements Runtime.
func (g *Guard) List(ctx context.Context) ([]ContainerState, error) {
	return call(g, ctx, "list", "", g.d.Call, true, g.rt.List)
}

// ImportImages implements Runtime with the Pull deadline.
func (g *Guard) ImportImages(ctx context.Context, archive io.Reader) ([]string, error) {
	return call(g, ctx, "import", "", g.d.Pull, false, func(ctx context.Context) ([]string, error) { return g.rt.ImportImages(ctx, archive) })
}
