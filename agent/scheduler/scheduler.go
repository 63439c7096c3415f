package scheduler

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/flotilla-io/flotilla/api"
)

// Input is everything Reconcile decides from.
type Input struct {
	Deployment api.Deployment
	// Pods are this deployment's pods, including ones with Stop set.
	Pods []api.Pod
	// Nodes are the cluster's nodes; only ready ones receive pods.
	Nodes []api.Node
	// NodePods are all non-stopped pods per node name, of every deployment;
	// their requests are the node's load.
	NodePods map[string][]api.Pod
}

// Plan is what Reconcile decided.
type Plan struct {
	// Create are new pods, placed on a node.
	Create []api.Pod
	// Stop are the IDs of pods to stop.
	Stop []string
	// Reasons say why pods could not be placed, e.g. "no node has 2000m CPU free".
	Reasons []string
}

// Reconcile moves a deployment one step towards its spec, rolling updates
// with maxSurge 1 and maxUnavailable 0 (Kubernetes' defaults): while pods of
// an older generation remain, at most Replicas+1 pods run, and ready pods
// are never stopped if that leaves fewer than Replicas ready. Pods of an
// older generation that are not ready go at once; surplus pods of the
// current generation go not-ready first, then newest first. A pod on a node
// whose status is not ready counts as not ready (its Ready flag is stale),
// but it is not replaced: rescheduling lost pods is the controller's call.
//
// The caller applies the plan, waits for pods to change (become ready, go
// away) and calls Reconcile again.
//
// newName returns a short, random, lower-case alphanumeric suffix for a new
// pod's name; it is injected so tests are deterministic.
func Reconcile(in Input, newName func() string) Plan {
	d := in.Deployment
	var plan Plan

	// Pods being stopped are going away and count for nothing.
	var live []api.Pod
	for _, p := range in.Pods {
		if !p.Stop && p.Namespace == d.Namespace && p.Deployment == d.Name {
			live = append(live, p)
		}
	}
	slices.SortFunc(live, func(a, b api.Pod) int { return cmp.Compare(a.ID(), b.ID()) })

	if d.Deleting {
		for _, p := range live {
			plan.Stop = append(plan.Stop, p.ID())
		}
		return plan
	}

	// A pod's Ready flag is stale when its node is known to be down.
	nodeDown := map[string]bool{}
	for _, n := range in.Nodes {
		nodeDown[n.Name] = n.Status != api.NodeReady
	}
	ready := func(p api.Pod) bool { return p.Status.Ready && !nodeDown[p.Node] }

	var current, old []api.Pod
	available := 0
	for _, p := range live {
		if p.Generation == d.Generation {
			current = append(current, p)
		} else {
			old = append(old, p)
		}
		if ready(p) {
			available++
		}
	}
	stop := func(p api.Pod) {
		plan.Stop = append(plan.Stop, p.ID())
		if ready(p) {
			available--
		}
	}
	// Which pods go first: not-ready ones, then the newest.
	byStopOrder := func(a, b api.Pod) int {
		if ra, rb := ready(a), ready(b); ra != rb {
			if rb {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.CreateIndex, a.CreateIndex); c != 0 {
			return c
		}
		return cmp.Compare(a.ID(), b.ID())
	}

	// Scale down: current pods beyond Replicas.
	if extra := len(current) - d.Replicas; extra > 0 {
		slices.SortStableFunc(current, byStopOrder)
		for _, p := range current[:extra] {
			stop(p)
		}
		current = current[extra:]
	}

	// Old pods that serve nothing go at once; ready ones only as long as
	// Replicas ready pods remain.
	var oldReady []api.Pod
	for _, p := range old {
		if ready(p) {
			oldReady = append(oldReady, p)
		} else {
			stop(p)
		}
	}
	slices.SortStableFunc(oldReady, byStopOrder)
	oldLeft := len(oldReady)
	for _, p := range oldReady {
		if available-1 < d.Replicas {
			break
		}
		stop(p)
		oldLeft--
	}

	// Create current pods up to Replicas, surging by one while old pods remain.
	maxLive := d.Replicas
	if oldLeft > 0 {
		maxLive++
	}
	n := min(d.Replicas-len(current), maxLive-(len(live)-len(plan.Stop)))
	if n > 0 {
		place(&plan, in, n, newName)
	}
	return plan
}

// nodeLoad is a ready node with what is placed on it.
type nodeLoad struct {
	name    string
	freeCPU int64 // millicores
	freeMem int64 // MiB
	usedCPU int64
	ownPods int // pods of the deployment being placed
}

// place creates n pods of in.Deployment on the best feasible nodes.
func place(plan *Plan, in Input, n int, newName func() string) {
	d := in.Deployment
	cpu, mem := requests(d.Containers)
	stopping := map[string]bool{}
	for _, id := range plan.Stop {
		stopping[id] = true
	}

	var loads []*nodeLoad
	for _, node := range in.Nodes {
		if node.Status != api.NodeReady {
			continue
		}
		l := &nodeLoad{name: node.Name, freeCPU: node.CPUMillis, freeMem: node.MemoryMiB}
		for _, p := range in.NodePods[node.Name] {
			c, m := requests(p.Containers)
			l.freeCPU -= c
			l.freeMem -= m
			l.usedCPU += c
			// Pods this plan stops still hold their resources for a while
			// but should not skew the spread of their replacements.
			if p.Namespace == d.Namespace && p.Deployment == d.Name && !stopping[p.ID()] {
				l.ownPods++
			}
		}
		loads = append(loads, l)
	}
	slices.SortFunc(loads, func(a, b *nodeLoad) int { return cmp.Compare(a.name, b.name) })

	taken := map[string]bool{}
	for _, p := range in.Pods {
		taken[p.Name] = true
	}

	for i := range n {
		// Spread first, then the least requested CPU, then the name.
		var best *nodeLoad
		for _, l := range loads {
			if l.freeCPU < cpu || l.freeMem < mem {
				continue
			}
			if best == nil || l.ownPods < best.ownPods || (l.ownPods == best.ownPods && l.usedCPU < best.usedCPU) {
				best = l
			}
		}
		if best == nil {
			plan.Reasons = append(plan.Reasons, fmt.Sprintf("cannot place %d of %d pods: %s", n-i, n, whyNoNode(loads, cpu, mem)))
			return
		}
		name, ok := uniqueName(d.Name, newName, taken)
		if !ok {
			plan.Reasons = append(plan.Reasons, fmt.Sprintf("cannot place %d of %d pods: no unused pod name after 10 tries", n-i, n))
			return
		}
		taken[name] = true
		best.freeCPU -= cpu
		best.freeMem -= mem
		best.usedCPU += cpu
		best.ownPods++
		plan.Create = append(plan.Create, api.Pod{
			Namespace:  d.Namespace,
			Name:       name,
			Deployment: d.Name,
			Node:       best.name,
			Generation: d.Generation,
			Labels:     maps.Clone(d.Labels),
			Containers: api.CloneContainers(d.Containers),
			Status:     api.PodStatus{Phase: api.PodPending},
		})
	}
}

func uniqueName(prefix string, newName func() string, taken map[string]bool) (string, bool) {
	for range 10 {
		if name := prefix + "-" + newName(); !taken[name] {
			return name, true
		}
	}
	return "", false
}

// whyNoNode names the resource no ready node has enough of.
func whyNoNode(loads []*nodeLoad, cpu, mem int64) string {
	if len(loads) == 0 {
		return "no node is ready"
	}
	var mostCPU, mostMem *nodeLoad
	for _, l := range loads {
		if mostCPU == nil || l.freeCPU > mostCPU.freeCPU {
			mostCPU = l
		}
		if mostMem == nil || l.freeMem > mostMem.freeMem {
			mostMem = l
		}
	}
	cpuShort, memShort := mostCPU.freeCPU < cpu, mostMem.freeMem < mem
	switch {
	case cpuShort && memShort:
		return fmt.Sprintf("no node has %dm CPU and %d MiB memory free (most CPU: %dm on %s; most memory: %d MiB on %s)",
			cpu, mem, max(mostCPU.freeCPU, 0), mostCPU.name, max(mostMem.freeMem, 0), mostMem.name)
	case cpuShort:
		return fmt.Sprintf("no node has %dm CPU free (most: %dm on %s)", cpu, max(mostCPU.freeCPU, 0), mostCPU.name)
	case memShort:
		return fmt.Sprintf("no node has %d MiB memory free (most: %d MiB on %s)", mem, max(mostMem.freeMem, 0), mostMem.name)
	}
	return fmt.Sprintf("no node has %dm CPU and %d MiB memory free at the same time", cpu, mem)
}

// requests sums a pod's CPU (millicores) and memory (MiB) requests.
func requests(cs []api.Container) (cpu, mem int64) {
	for _, c := range cs {
		cpu += c.CPURequest
		mem += c.MemoryRequest
	}
	return cpu, mem
}

// String renders a plan for logs and test failures.
func (p Plan) String() string {
	var b strings.Builder
	for _, c := range p.Create {
		fmt.Fprintf(&b, "create %s on %s (generation %d); ", c.Name, c.Node, c.Generation)
	}
	for _, id := range p.Stop {
		fmt.Fprintf(&b, "stop %s; ", id)
	}
	for _, r := range p.Reasons {
		fmt.Fprintf(&b, "reason %q; ", r)
	}
	if b.Len() == 0 {
		return "nothing to do"
	}
	return strings.TrimSuffix(b.String(), "; ")
}
