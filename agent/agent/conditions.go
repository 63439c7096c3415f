package agent

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
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

// conditionReporter publishes the node's conditions in its record, the way
// it registered (the store's write, or a client's forwarded one), when
// they change: a condition coming or going, not its message growing
// ("for 10s", "for 20s"), which would be a raft write every poll.
type conditionReporter struct {
	self     func() api.Node // the record as the node registers it
	register func(context.Context, api.Node) (api.Node, error)
	sources  []conditionSource
	every    time.Duration
	log      *slog.Logger
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

// conditionRefresh is how often conditions that hold are written again.
const conditionRefresh = time.Minute

// run polls the sources every interval until ctx ends, and registers the
// node again when they change; a failed write is retried at the next poll.
// poke, when it receives, makes it poll at once.
func (c *conditionReporter) run(ctx context.Context, poke <-chan struct{}) {
	var published []api.NodeCondition // the node registered with none
	var at time.Time
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		// A condition is also written again now and then: another
		// registration of the node (a client's in the background after
		// it started from its cache) replaces the record without it.
		cur := c.current()
		if !sameConditions(cur, published) || (len(cur) > 0 && time.Since(at) > conditionRefresh) {
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
