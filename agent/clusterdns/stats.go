package clusterdns

import (
	"sync/atomic"

	"github.com/miekg/dns"
)

// Stats are the server's counters since it was made, for the agent to export
// (as Prometheus counters, say). Read them with Server.Stats.
type Stats struct {
	// Responses counts the responses sent, by RCODE name ("NOERROR",
	// "NXDOMAIN", "SERVFAIL", "REFUSED", ...).
	Responses map[string]uint64
	// Forwarded counts the queries sent upstream, answered or not.
	Forwarded uint64
	// ForwardFailures counts the forwarded queries no upstream answered in
	// time (each got SERVFAIL).
	ForwardFailures uint64
	// ForwardRefused counts the queries refused because MaxForwards were
	// already in flight.
	ForwardRefused uint64
	// Invalid counts the datagrams dropped unanswered: unreadable, or
	// responses rather than queries.
	Invalid uint64
}

// counters are one reader's counters. Each UDP reader has its own, so that
// cores do not share a cache line per query; Stats adds them up.
type counters struct {
	rcodes    [24]atomic.Uint64 // RCODE 0..23; the extended ones only over EDNS
	forwarded atomic.Uint64
	fwdFailed atomic.Uint64
	refused   atomic.Uint64
	invalid   atomic.Uint64
	_         [64]byte // keep the next reader's counters off this cache line
}

func (c *counters) response(rcode int) {
	if rcode >= 0 && rcode < len(c.rcodes) {
		c.rcodes[rcode].Add(1)
	}
}

func (c *counters) addTo(s *Stats) {
	for rc := range c.rcodes {
		if v := c.rcodes[rc].Load(); v > 0 {
			name, ok := dns.RcodeToString[rc]
			if !ok {
				name = "RCODE" + string(rune('0'+rc/10)) + string(rune('0'+rc%10))
			}
			s.Responses[name] += v
		}
	}
	s.Forwarded += c.forwarded.Load()
	s.ForwardFailures += c.fwdFailed.Load()
	s.ForwardRefused += c.refused.Load()
	s.Invalid += c.invalid.Load()
}
