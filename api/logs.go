package api

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// MaxLogTail bounds LogOptions.Tail.
const MaxLogTail = 100_000

// LogOptions selects what GET /v1/namespaces/{ns}/pods/{pod}/logs returns:
// a container's output as plain lines (stdout and stderr together, in the
// order written). Each node keeps a container's current run and the one
// before it, each up to its --container-log-max-files ×
// --container-log-max-size.
type LogOptions struct {
	// Container names the container; it may be empty for a pod with one.
	Container string
	// Follow keeps the answer open and streams output as it is written,
	// through restarts of the container, until the client goes away or the
	// pod is removed.
	Follow bool
	// Previous returns the run before the current one: what the container
	// wrote before its last restart. It does not follow.
	Previous bool
	// Tail, when set, returns only the last *Tail lines (0 to MaxLogTail);
	// nil returns every line kept.
	Tail *int
	// Since leaves out lines written longer ago than Since (on the node's
	// clock); SinceTime leaves out lines written before it. At most one
	// may be set.
	Since     time.Duration
	SinceTime time.Time
	// Timestamps starts each line with the time it was written (RFC 3339,
	// nanoseconds).
	Timestamps bool
}

// Lines returns n as a LogOptions.Tail.
func Lines(n int) *int { return &n }

// Validate checks the options as the API does.
func (o LogOptions) Validate() error {
	var errs []error
	if o.Container != "" {
		if err := ValidateName(o.Container); err != nil {
			errs = append(errs, fmt.Errorf("container: %w", err))
		}
	}
	if o.Tail != nil && (*o.Tail < 0 || *o.Tail > MaxLogTail) {
		errs = append(errs, fmt.Errorf("tail: %d lines; ask for 0 to %d", *o.Tail, MaxLogTail))
	}
	if o.Since < 0 {
		errs = append(errs, fmt.Errorf("since: %s is negative; give how long ago, e.g. 10m", o.Since))
	}
	if o.Since != 0 && !o.SinceTime.IsZero() {
		errs = append(errs, errors.New("since: give a duration or a time, not both"))
	}
	return errors.Join(errs...)
}

// Query encodes the options as the route's query parameters.
func (o LogOptions) Query() url.Values {
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Follow {
		q.Set("follow", "true")
	}
	if o.Previous {
		q.Set("previous", "true")
	}
	if o.Tail != nil {
		q.Set("tail", strconv.Itoa(*o.Tail))
	}
	switch {
	case o.Since != 0:
		q.Set("since", o.Since.String())
	case !o.SinceTime.IsZero():
		q.Set("since", o.SinceTime.UTC().Format(time.RFC3339Nano))
	}
	if o.Timestamps {
		q.Set("timestamps", "true")
	}
	return q
}

// ParseLogOptions reads the route's query parameters: container, follow,
// previous, tail (lines), since (a duration such as 10m, or an RFC 3339
// time) and timestamps. A flag given without a value (?follow) is true.
func ParseLogOptions(q url.Values) (LogOptions, error) {
	var o LogOptions
	r := queryReader{q: q}
	r.only("container, follow, previous, tail, since and timestamps", "container", "follow", "previous", "tail", "since", "timestamps")
	o.Container = q.Get("container")
	r.flag("follow", &o.Follow)
	r.flag("previous", &o.Previous)
	r.flag("timestamps", &o.Timestamps)
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			r.add(fmt.Errorf("tail: %q is not a number of lines", TruncateText(v, 40)))
		} else {
			o.Tail = &n
		}
	}
	if v := q.Get("since"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			o.Since = d
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			o.SinceTime = t
		} else {
			r.add(fmt.Errorf("since: %q is neither a duration (10m, 1h30m) nor an RFC 3339 time (2024-05-01T10:00:00Z)", TruncateText(v, 40)))
		}
	}
	if err := r.err(); err != nil {
		return o, err
	}
	return o, o.Validate()
}
