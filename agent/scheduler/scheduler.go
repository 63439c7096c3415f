package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/flotilla-io/flotilla/api"
)

// Input is everything Reconcile decides from.
type Input struct {
	Deployment api.Deployment
	// Pods are this deployment's pods, including ones with Stop set.
	Pods []api.Pod
	// Nodes are the cluster's nodes; only ready, schedulable ones that are
	// not draining receive pods.
	Nodes []api.Node
	// NodePods are all non-stopped pods per node name, of every deployment;
	// their requests, host ports and labels are the node's load.
	NodePods map[string][]api.Pod
}

// Plan is what Reconcile decided.
type Plan struct {
	// Create are new pods, placed on a node.
	Create []api.Pod
	// Stop are the IDs of pods to stop.
	Stop []string
	// StopReasons give, by pod ID, why a pod in Stop is stopped when it is
	// not a rollout or scale-down (api.StopDrained); nil when none is.
	StopReasons map[string]string
	// Reasons say why pods could not be placed, e.g. "cannot place 3 of 6
	// pods: 0/5 nodes available: 3 insufficient memory, 2 cordoned".
	Reasons []string
}

// Reconcile moves a deployment one step towards its spec, rolling updates
// with maxSurge 1 and maxUnavailable 0 (Kubernetes' defaults): while pods of
// an older generation remain, at most Replicas+1 pods run, and ready pods
// are never stopped if that leaves fewer than Replicas ready. Pods of an
// older generation that are not ready go at once; surplus pods of the
// current generation go not-ready first, then those on draining nodes, then
// newest first. A pod on a node whose status is not ready counts as not
// ready (its Ready flag is stale), but it is not replaced: rescheduling lost
// pods is the controller's call.
//
// Pods on a draining node are moved one availability step at a time: a
// ready one is stopped (with api.StopDrained) only while at least
// Replicas-1 ready pods remain, a not-ready one at once; the scale-up then
// places its replacement elsewhere. Until stopped they count as live.
//
// The caller applies the plan, waits for pods to change (become ready, go
// away) and calls Reconcile again.
//
// newName returns a short, random, lower-case alphanumeric suffix for a new
// pod's name; it is injected so tests are deterministic.
func Reconcile(in Input, newName func() string) Plan {
	r := newRollout(in)
	if in.Deployment.Deleting {
		for _, p := range r.live {
			r.stop(p, "")
		}
		return r.plan
	}
	r.scaleDown()
	r.replaceOld()
	r.drain()
	if n := r.missing(); n > 0 {
		place(&r.plan, in, r.stopped, n, newName)
	}
	return r.plan
}

// rollout is one Reconcile's view of the deployment's pods.
type rollout struct {
	d    api.Deployment
	plan Plan
	// live are the pods not being stopped, sorted by ID.
	live []api.Pod
	// stopped holds the names of the pods this plan stops.
	stopped map[string]bool
	// down and draining hold the names of nodes whose status is not
	// ready, and of nodes being drained.
	down, draining map[string]bool
	// available counts ready live pods that this plan does not stop.
	available int
}

func newRollout(in Input) *rollout {
	d := in.Deployment
	d.Replicas = max(d.Replicas, 0) // validated elsewhere; never panic
	r := &rollout{d: d, stopped: map[string]bool{}, down: map[string]bool{}, draining: map[string]bool{}}
	// Pods being stopped are going away and count for nothing.
	for _, p := range in.Pods {
		if !p.Stop && p.Namespace == d.Namespace && p.Deployment == d.Name {
			r.live = append(r.live, p)
		}
	}
	slices.SortFunc(r.live, func(a, b api.Pod) int { return cmp.Compare(a.ID(), b.ID()) })
	for _, n := range in.Nodes {
		// Only the few nodes that matter: this runs per deployment.
		if n.Status != api.NodeReady {
			r.down[n.Name] = true
		}
		if n.Draining {
			r.draining[n.Name] = true
		}
	}
	for _, p := range r.live {
		if r.ready(p) {
			r.available++
		}
	}
	return r
}

// ready reports whether p serves: a pod's Ready flag is stale when its
// node is known to be down.
func (r *rollout) ready(p api.Pod) bool { return p.Status.Ready && !r.down[p.Node] }

func (r *rollout) stop(p api.Pod, reason string) {
	r.plan.Stop = append(r.plan.Stop, p.ID())
	r.stopped[p.Name] = true
	if reason != "" {
		if r.plan.StopReasons == nil {
			r.plan.StopReasons = map[string]string{}
		}
		r.plan.StopReasons[p.ID()] = reason
	}
	if r.ready(p) {
		r.available--
	}
}

// byStopOrder says which pods go first: not-ready ones, then those on
// draining nodes (they must move anyway), then the newest.
func (r *rollout) byStopOrder(a, b api.Pod) int {
	if ra, rb := r.ready(a), r.ready(b); ra != rb {
		if rb {
			return -1
		}
		return 1
	}
	if da, db := r.draining[a.Node], r.draining[b.Node]; da != db {
		if da {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(b.CreateIndex, a.CreateIndex); c != 0 {
		return c
	}
	return cmp.Compare(a.ID(), b.ID())
}

// pods returns the live pods this plan does not stop that match keep.
func (r *rollout) pods(keep func(api.Pod) bool) []api.Pod {
	var out []api.Pod
	for _, p := range r.live {
		if !r.stopped[p.Name] && keep(p) {
			out = append(out, p)
		}
	}
	return out
}

func (r *rollout) current(p api.Pod) bool { return p.Generation == r.d.Generation }
func (r *rollout) old(p api.Pod) bool     { return p.Generation != r.d.Generation }

// scaleDown stops current pods beyond Replicas.
func (r *rollout) scaleDown() {
	current := r.pods(r.current)
	if extra := len(current) - r.d.Replicas; extra > 0 {
		slices.SortStableFunc(current, r.byStopOrder)
		for _, p := range current[:extra] {
			r.stop(p, "")
		}
	}
}

// replaceOld stops old pods that serve nothing at once, and ready ones
// only as long as Replicas ready pods remain.
func (r *rollout) replaceOld() {
	var oldReady []api.Pod
	for _, p := range r.pods(r.old) {
		if r.ready(p) {
			oldReady = append(oldReady, p)
		} else {
			r.stop(p, "")
		}
	}
	slices.SortStableFunc(oldReady, r.byStopOrder)
	for _, p := range oldReady {
		if r.available-1 < r.d.Replicas {
			return
		}
		r.stop(p, "")
	}
}

// drain stops pods on draining nodes: not-ready ones at once, ready ones
// while Replicas-1 ready pods remain, so that a second one waits until the
// first one's replacement is ready.
func (r *rollout) drain() {
	pods := r.pods(func(p api.Pod) bool { return r.draining[p.Node] })
	slices.SortStableFunc(pods, r.byStopOrder) // not-ready first
	for _, p := range pods {
		if r.ready(p) && r.available-1 < r.d.Replicas-1 {
			return
		}
		r.stop(p, api.StopDrained)
	}
}

// missing is how many current pods to create: up to Replicas, surging by
// one while old pods remain.
func (r *rollout) missing() int {
	current := len(r.pods(r.current))
	left := len(r.pods(func(api.Pod) bool { return true }))
	maxLive := r.d.Replicas
	if left > current { // old pods remain
		maxLive++
	}
	return min(r.d.Replicas-current, maxLive-left)
}

// String renders a plan for logs and test failures.
func (p Plan) String() string {
	var b strings.Builder
	for _, c := range p.Create {
		fmt.Fprintf(&b, "create %s on %s (generation %d); ", c.Name, c.Node, c.Generation)
	}
	for _, id := range p.Stop {
		if why := p.StopReasons[id]; why != "" {
			fmt.Fprintf(&b, "stop %s (%s); ", id, why)
		} else {
			fmt.Fprintf(&b, "stop %s; ", id)
		}
	}
	for _, r := range p.Reasons {
		fmt.Fprintf(&b, "reason %q; ", r)
	}
	if b.Len() == 0 {
		return "nothing to do"
	}
	return strings.TrimSuffix(b.String(), "; ")
}
