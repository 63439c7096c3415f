package agent

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// conditionSource reports one condition of the node while it holds.
type conditionSource func() (api.NodeCondition, bool)

// runtimeCondition is RuntimeUnhealthy while g's runtime leaves calls
// unanswered.
func runtimeCondition(g *runtime.Guard) conditionSource {
	return func() (api.NodeCondition, bool) {
		h := g.Health()
		if h.Healthy {
			return api.NodeCondition{}, false
		}
		return api.NodeCondition{Type: api.NodeConditionRuntimeUnhealthy, Since: h.Since, Message: h.Message}, true
	}
}

// nodeConditions holds the node's conditions as last found. Every
// registration of the node carries them (selfNode), so a registration other
// than the reporter's (a client's in the background after it started from
// its cache) does not wipe a condition that holds.
type nodeConditions struct {
	p atomic.Pointer[[]api.NodeCondition]
}

// get returns the conditions; nil (none) on a nil holder.
func (h *nodeConditions) get() []api.NodeCondition {
	if h == nil {
		return nil
	}
	if c := h.p.Load(); c != nil {
		return slices.Clone(*c)
	}
	return nil
}

func (h *nodeConditions) set(c []api.NodeCondition) {
	if h != nil {
		h.p.Store(&c)
	}
}

// conditionReporter publishes the node's conditions in its record, the way
// it registered (the store's write, or a client's forwarded one), when
// they change: a condition coming or going, not its message growing
// ("for 10s", "for 20s"), which would be a raft write every poll. It also
// writes them again when the stored record disagrees for longer than a
// view takes to catch up (a registration raced its write).
type conditionReporter struct {
	self     func() api.Node // the record as the node registers it
	register func(context.Context, api.Node) (api.Node, error)
	// stored reads the node's record from this agent's copy of the state.
	stored  func() (api.Node, bool)
	held    *nodeConditions
	sources []conditionSource
	every   time.Duration
	// settle is how long a stored record may disagree after a write
	// (conditionSettle when 0).
	settle time.Duration
	log    *slog.Logger
	// onChange, if set, is told of every set published (tests).
	onChange func([]api.NodeCondition)
}

// current gathers the conditions, ordered by type.
func (c *conditionReporter) current() []api.NodeCondition {
	var out []api.NodeCondition
	for _, s := range c.sources {
		if cond, ok := s(); ok {
			cond.Since = cond.Since.UTC().Truncate(time.Second)
			out = append(out, cond)
		}
	}
	slices.SortFunc(out, func(a, b api.NodeCondition) int { return cmp.Compare(a.Type, b.Type) })
	return out
}

// sameConditions compares types and since, not messages.
func sameConditions(a, b []api.NodeCondition) bool {
	return slices.EqualFunc(a, b, func(x, y api.NodeCondition) bool { return x.Type == y.Type && x.Since.Equal(y.Since) })
}

// conditionSettle is how long a write may take to show in this agent's
// view (a client's lingers up to a second) before a stored record that
// disagrees is written again.
const conditionSettle = 5 * time.Second

// run polls the sources every interval until ctx ends, and registers the
// node again when they change or the stored record disagrees; a failed
// write is retried at the next poll. poke, when it receives, makes it poll
// at once.
func (c *conditionReporter) run(ctx context.Context, poke <-chan struct{}) {
	var published []api.NodeCondition // the node registered with none
	var at time.Time
	settle := cmp.Or(c.settle, conditionSettle)
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		cur := c.current()
		c.held.set(cur)
		write := !sameConditions(cur, published)
		if !write && c.stored != nil && time.Since(at) > settle {
			if n, ok := c.stored(); ok && !sameConditions(cur, n.Conditions) {
				c.log.Info("the node's record lost its conditions; writing them again")
				write = true
			}
		}
		if write {
			n := c.self()
			n.Conditions = cur
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := c.register(wctx, n)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				c.log.Warn("report node conditions; will retry", "err", err)
			case err == nil:
				published, at = cur, time.Now()
				types := make([]string, len(cur))
				for i, x := range cur {
					types[i] = x.Type + ": " + x.Message
				}
				c.log.Info("node conditions reported", "conditions", types)
				if c.onChange != nil {
					c.onChange(cur)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-poke:
		}
	}
}
