package api

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Event is something that happened to a pod: placed, started, exited,
// failed a probe, killed. Events are kept in the pod's status, the last
// MaxEvents of them for at most EventTTL, as Nomad keeps task events per
// allocation; a repeat of the last event with the same type, reason and
// message counts up instead of taking a place, as Kubernetes' events do.
type Event struct {
	// Time is when the event last happened; FirstTime, when it happened
	// more than once (Count > 1), when it first did.
	Time      time.Time `json:"time"`
	FirstTime time.Time `json:"first_time,omitzero"`
	// Type is EventNormal or EventWarning.
	Type string `json:"type"`
	// Reason is a short CamelCase word (Scheduled, Started, BackOff).
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
	// Count is how many times it happened; 0 reads as 1.
	Count int `json:"count,omitempty"`
}

// Event types, as Kubernetes has them.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// Event reasons.
const (
	EventScheduled   = "Scheduled"
	EventRescheduled = "Rescheduled"
	EventPulled      = "Pulled"
	EventStarted     = "Started"
	EventExited      = "Exited"
	EventOOMKilled   = "OOMKilled"
	EventBackOff     = "BackOff"
	EventUnhealthy   = "Unhealthy"
	EventKilling     = "Killing"
	EventFailed      = "Failed"
	EventPullFailed  = "ErrImagePull"
	EventNetworkFail = "NetworkSetupError"
)

// Bounds on a pod's events (see limits.go: they may only grow).
const (
	// MaxEvents is how many events a pod's status keeps.
	MaxEvents = 20
	// MaxEventReasonLen bounds an event's reason, MaxEventMessageLen its
	// message.
	MaxEventReasonLen  = 64
	MaxEventMessageLen = 1 << 10
	// MaxEventCount bounds an event's count.
	MaxEventCount = 1 << 30
)

// EventTTL is how long an event is kept: older ones are dropped when a
// pod's events are written and are not listed.
const EventTTL = time.Hour

// Times an event may carry: JSON cannot encode years past 9999, and a
// zero time is a time not set.
var (
	minEventTime = time.Unix(0, 0).UTC()
	maxEventTime = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Times returns the event's count, at least 1.
func (e *Event) Times() int { return max(e.Count, 1) }

// First returns when the event first happened.
func (e *Event) First() time.Time {
	if e.FirstTime.IsZero() {
		return e.Time
	}
	return e.FirstTime
}

// Validate bounds an event as a node reports it.
func (e *Event) Validate() error {
	var errs []error
	e.validate(fieldErrors(&errs))
	return errors.Join(errs...)
}

func (e *Event) validate(field func(string, error)) {
	switch e.Type {
	case EventNormal, EventWarning:
	default:
		field("type", fmt.Errorf("%q is not %q or %q", e.Type, EventNormal, EventWarning))
	}
	if e.Reason == "" || len(e.Reason) > MaxEventReasonLen || strings.ContainsFunc(e.Reason, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) {
		field("reason", fmt.Errorf("%q must be 1 to %d letters or digits", TruncateText(e.Reason, 80), MaxEventReasonLen))
	}
	field("message", checkText(e.Message, MaxEventMessageLen))
	if e.Time.Before(minEventTime) || e.Time.After(maxEventTime) {
		field("time", fmt.Errorf("%s is not a time an event can have", e.Time.UTC().Format(time.RFC3339)))
	}
	if !e.FirstTime.IsZero() && (e.FirstTime.Before(minEventTime) || e.FirstTime.After(e.Time)) {
		field("first_time", fmt.Errorf("%s is not between 1970 and the event's time", e.FirstTime.UTC().Format(time.RFC3339)))
	}
	if e.Count < 0 || e.Count > MaxEventCount {
		field("count", fmt.Errorf("%d is out of range 0..%d", e.Count, MaxEventCount))
	}
}

// validateEvents checks a pod status's events.
func validateEvents(events []Event, field func(string, error)) {
	if len(events) > MaxEvents {
		field("events", fmt.Errorf("%d events; at most %d", len(events), MaxEvents))
		return
	}
	for i := range events {
		p := fmt.Sprintf("events[%d].", i)
		events[i].validate(func(f string, err error) { field(p+f, err) })
	}
}

// boundEvent shortens an event's text to the limits Validate checks.
func boundEvent(e *Event) {
	e.Reason = TruncateText(e.Reason, MaxEventReasonLen)
	e.Message = TruncateText(e.Message, MaxEventMessageLen)
	e.Count = min(max(e.Count, 0), MaxEventCount)
}

// AddEvent returns events with e added at the end (newest last): a repeat
// of an event of the same type, reason and message counts up and moves to
// the end instead. Events older than EventTTL at now are dropped, then the
// oldest beyond MaxEvents. events is not modified.
func AddEvent(events []Event, e Event, now time.Time) []Event {
	boundEvent(&e)
	e.Time = e.Time.UTC()
	if e.Time.IsZero() {
		e.Time = now.UTC().Truncate(time.Second)
	}
	out := make([]Event, 0, len(events)+1)
	cutoff := now.Add(-EventTTL)
	for _, old := range events {
		if old.Time.Before(cutoff) {
			continue
		}
		if old.Type == e.Type && old.Reason == e.Reason && old.Message == e.Message {
			e.FirstTime = old.First()
			e.Count = min(old.Times()+e.Times(), MaxEventCount)
			continue
		}
		out = append(out, old)
	}
	out = append(out, e)
	if len(out) > MaxEvents {
		out = out[len(out)-MaxEvents:]
	}
	return out
}

// RecentEvents returns the events not older than EventTTL at now, in a
// new slice.
func RecentEvents(events []Event, now time.Time) []Event {
	cutoff := now.Add(-EventTTL)
	return slices.DeleteFunc(slices.Clone(events), func(e Event) bool { return e.Time.Before(cutoff) })
}

// ObjectEvent is an event with the object it is about, as GET
// /v1/namespaces/{ns}/events lists them.
type ObjectEvent struct {
	// Object is KIND/NAME, e.g. pod/web-7f9c2.
	Object string `json:"object"`
	// Node is the node the pod is placed on.
	Node string `json:"node,omitempty"`
	Event
}
