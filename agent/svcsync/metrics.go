package svcsync

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
)

// Collector exports a Syncer's Stats and, when dnsStats is set, the DNS
// server's counters, read at scrape time.
type Collector struct {
	s        *Syncer
	dnsStats func() clusterdns.Stats

	syncs, failures, duration, lastSuccess, ports, names *prometheus.Desc
	responses, forwarded, fwdFailures, fwdRefused        *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns the collector of s; dnsStats may be nil.
func NewCollector(s *Syncer, dnsStats func() clusterdns.Stats) *Collector {
	return &Collector{
		s: s, dnsStats: dnsStats,
		syncs:       prometheus.NewDesc("flotilla_service_syncs_total", "Syncs of the service rules and DNS names with the state since the agent started.", nil, nil),
		failures:    prometheus.NewDesc("flotilla_service_sync_failures_total", "Service syncs that failed (retried with backoff; the agent log says why).", nil, nil),
		duration:    prometheus.NewDesc("flotilla_service_sync_last_duration_seconds", "How long the last service sync took.", nil, nil),
		lastSuccess: prometheus.NewDesc("flotilla_service_sync_last_success_timestamp_seconds", "When the last successful service sync ended (Unix time; 0 before any).", nil, nil),
		ports:       prometheus.NewDesc("flotilla_service_ports", "Service ports programmed on this node.", nil, nil),
		names:       prometheus.NewDesc("flotilla_dns_names", "Names the node's cluster DNS serves.", nil, nil),
		responses:   prometheus.NewDesc("flotilla_dns_responses_total", "DNS responses of the node's cluster DNS, by response code.", []string{"rcode"}, nil),
		forwarded:   prometheus.NewDesc("flotilla_dns_forwarded_total", "DNS queries forwarded to the node's upstream resolvers.", nil, nil),
		fwdFailures: prometheus.NewDesc("flotilla_dns_forward_failures_total", "Forwarded DNS queries no upstream answered in time (SERVFAIL).", nil, nil),
		fwdRefused:  prometheus.NewDesc("flotilla_dns_forward_refused_total", "DNS queries refused because too many forwards were in flight.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.syncs, c.failures, c.duration, c.lastSuccess, c.ports, c.names} {
		ch <- d
	}
	if c.dnsStats != nil {
		for _, d := range []*prometheus.Desc{c.responses, c.forwarded, c.fwdFailures, c.fwdRefused} {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	var last float64
	if !st.LastSuccess.IsZero() {
		last = float64(st.LastSuccess.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(c.syncs, prometheus.CounterValue, float64(st.Syncs))
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, st.LastDuration.Seconds())
	ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(c.ports, prometheus.GaugeValue, float64(st.ServicePorts))
	ch <- prometheus.MustNewConstMetric(c.names, prometheus.GaugeValue, float64(st.DNSNames))
	if c.dnsStats == nil {
		return
	}
	ds := c.dnsStats()
	for rcode, n := range ds.Responses {
		ch <- prometheus.MustNewConstMetric(c.responses, prometheus.CounterValue, float64(n), rcode)
	}
	ch <- prometheus.MustNewConstMetric(c.forwarded, prometheus.CounterValue, float64(ds.Forwarded))
	ch <- prometheus.MustNewConstMetric(c.fwdFailures, prometheus.CounterValue, float64(ds.ForwardFailures))
	ch <- prometheus.MustNewConstMetric(c.fwdRefused, prometheus.CounterValue, float64(ds.ForwardRefused))
}
