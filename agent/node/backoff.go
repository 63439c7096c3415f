package node

import "time"

// Backoff is the kubelet's crash-loop backoff: Initial after the first exit,
// doubling up to Max; a container that ran for Reset is forgiven its past.
type Backoff struct {
	Initial, Max, Reset time.Duration
}

// DefaultBackoff restarts quickly at first (a container killed once is back
// within a second) and backs off to a minute.
func DefaultBackoff() Backoff {
	return Backoff{Initial: 500 * time.Millisecond, Max: time.Minute, Reset: 5 * time.Minute}
}

// Delay is how long to wait before restart number n (1-based).
func (b Backoff) Delay(n int) time.Duration {
	if n <= 1 {
		return b.Initial
	}
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}
