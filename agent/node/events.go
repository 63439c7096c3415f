package node

import (
	"fmt"
	"slices"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// Events ride the pod statuses the reconciler reports anyway: r.event adds
// one to the pod's list here, and the next report (which the event's
// change makes differ from the state) writes the list with the status. No
// event is a write of its own, and events are emitted only where the
// status changes too or where a back-off already bounds how often they
// happen (create and restart attempts), never on every pass.
//
// The list is kept here, not read back from the state on every report: a
// client node's view of its own writes lags, and a report built on a
// stale list would drop the events written just before. It starts from
// the state's list (the scheduler's Scheduled event; what the agent
// reported before a restart).

// event records an event of pod p for its next status report.
func (r *Reconciler) event(p *api.Pod, typ, reason, msg string) {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.events == nil {
		r.events = map[string][]api.Event{}
	}
	have, ok := r.events[p.ID()]
	if !ok {
		have = p.Status.Events
	}
	r.events[p.ID()] = api.AddEvent(have, api.Event{Time: now.UTC().Truncate(time.Second), Type: typ, Reason: reason, Message: msg}, now)
}

// podEvents returns the events to report with p's status.
func (r *Reconciler) podEvents(p *api.Pod) []api.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if es, ok := r.events[p.ID()]; ok {
		return slices.Clone(es)
	}
	return slices.Clone(p.Status.Events)
}

// forgetEvents drops a removed pod's events. The caller holds r.mu.
func (r *Reconciler) forgetEvents(id string) { delete(r.events, id) }

// exitEvent is the event of a container's exit: OOMKilled, with the
// limit, when the kernel killed it for memory.
func exitEvent(c api.Container, obs *runtime.ContainerState) (reason, msg string) {
	if obs.OOMKilled {
		return api.EventOOMKilled, fmt.Sprintf("Container %s %s", c.Name, oomMessage(c))
	}
	return api.EventExited, fmt.Sprintf("Container %s exited with code %d", c.Name, obs.ExitCode)
}

// failedOnce emits a pod-level warning only when the pod's reported
// status did not say it already: such failures are retried on every pass.
func (r *Reconciler) failedOnce(p *api.Pod, st api.PodStatus) {
	if st.Reason == p.Status.Reason && st.Message == p.Status.Message {
		return
	}
	reason := st.Reason
	if reason == "" {
		reason = api.EventFailed
	}
	r.event(p, api.EventWarning, reason, st.Message)
}

// normalizeEvents makes events decoded from the state comparable with
// those built here.
func normalizeEvents(es []api.Event) []api.Event {
	if len(es) == 0 {
		return nil
	}
	out := make([]api.Event, len(es))
	for i, e := range es {
		e.Time = e.Time.UTC()
		if !e.FirstTime.IsZero() {
			e.FirstTime = e.FirstTime.UTC()
		}
		out[i] = e
	}
	return out
}
