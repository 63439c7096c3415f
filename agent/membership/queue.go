package membership

import (
	"log/slog"
	"sync"
)

// eventQueue carries events from memberlist's delegate callbacks, which must
// not block (they run in memberlist's packet handling), to the Events
// channel. push never blocks and nothing is dropped: events wait in memory
// until the reader takes them, and a growing backlog is logged.
type eventQueue struct {
	log *slog.Logger

	mu      sync.Mutex
	pending []Event
	warnAt  int           // backlog size that logs the next warning
	wake    chan struct{} // cap 1: something was pushed
}

// backlogWarn is the backlog at which the first warning is logged; each
// further one doubles it.
const backlogWarn = 1024

func newEventQueue(log *slog.Logger) *eventQueue {
	return &eventQueue{log: log, warnAt: backlogWarn, wake: make(chan struct{}, 1)}
}

// push adds e at the back of the queue.
func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	q.pending = append(q.pending, e)
	n := len(q.pending)
	warn := n >= q.warnAt
	if warn {
		q.warnAt *= 2
	}
	q.mu.Unlock()
	if warn {
		q.log.Warn("membership events are piling up: the reader of Events() is slow; none are dropped", "backlog", n)
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take removes and returns everything queued.
func (q *eventQueue) take() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.pending
	q.pending = nil
	if len(batch) < backlogWarn {
		q.warnAt = backlogWarn
	}
	return batch
}

// run sends queued events to out, in order, until stop is closed. What is
// still queued then is dropped with the Membership.
func (q *eventQueue) run(out chan<- Event, stop <-chan struct{}) {
	for {
		batch := q.take()
		for _, e := range batch {
			select {
			case out <- e:
			case <-stop:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-q.wake:
		case <-stop:
			return
		}
	}
}
