// Package metrics builds the agent's Prometheus registry: Go runtime and
// process figures (RSS among them) plus a collector that reads the cluster
// state at scrape time, so no counter can drift from the state it describes.
// It owns no global registry; the API server serves what it builds.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// StateReader is the part of the state the collector reads.
type StateReader interface {
	Deployments(ns string) []api.Deployment
	Pods(f state.PodFilter) []api.Pod
	IsLeader() bool
	Index() uint64
	// Skipped returns how many raft entries the state skipped as
	// unreadable or invalid since the agent started.
	Skipped() (count uint64, last string)
}

// NewRegistry returns a registry with the runtime, process and state collectors.
func NewRegistry(st StateReader, node string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newStateCollector(st, node),
	)
	return reg
}

type stateCollector struct {
	st          StateReader
	node        string
	deployments *prometheus.Desc
	pods        *prometheus.Desc
	ready       *prometheus.Desc
	restarts    *prometheus.Desc
	leader      *prometheus.Desc
	index       *prometheus.Desc
	skipped     *prometheus.Desc
}

func newStateCollector(st StateReader, node string) *stateCollector {
	return &stateCollector{
		st:          st,
		node:        node,
		deployments: prometheus.NewDesc("flotilla_deployments", "Deployments in the cluster.", nil, nil),
		pods:        prometheus.NewDesc("flotilla_pods", "Pods by phase, on this node.", []string{"phase"}, nil),
		ready:       prometheus.NewDesc("flotilla_pods_ready", "Ready pods on this node.", nil, nil),
		restarts:    prometheus.NewDesc("flotilla_container_restarts", "Container restarts of the pods on this node, summed.", nil, nil),
		leader:      prometheus.NewDesc("flotilla_raft_leader", "1 if this agent is the raft leader.", nil, nil),
		index:       prometheus.NewDesc("flotilla_raft_applied_index", "Last raft index applied to this agent's state.", nil, nil),
		skipped:     prometheus.NewDesc("flotilla_raft_skipped_entries_total", "Raft entries this agent's state skipped as unreadable or invalid since it started (replays included); any is worth a look at the log.", nil, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.deployments, c.pods, c.ready, c.restarts, c.leader, c.index, c.skipped} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.deployments, prometheus.GaugeValue, float64(len(c.st.Deployments(""))))
	phases := map[string]int{api.PodPending: 0, api.PodRunning: 0, api.PodFailed: 0, api.PodTerminating: 0}
	ready, restarts := 0, 0
	for _, p := range c.st.Pods(state.PodFilter{Node: c.node}) {
		phases[p.Status.Phase]++
		if p.Status.Ready {
			ready++
		}
		for _, cs := range p.Status.Containers {
			restarts += cs.RestartCount
		}
	}
	for phase, n := range phases {
		if phase == "" {
			phase = api.PodPending
		}
		ch <- prometheus.MustNewConstMetric(c.pods, prometheus.GaugeValue, float64(n), phase)
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, float64(ready))
	ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.GaugeValue, float64(restarts))
	leader := 0.0
	if c.st.IsLeader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(c.index, prometheus.GaugeValue, float64(c.st.Index()))
	skipped, _ := c.st.Skipped()
	ch <- prometheus.MustNewConstMetric(c.skipped, prometheus.CounterValue, float64(skipped))
}
