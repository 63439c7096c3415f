package scheduler

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/flotilla-io/flotilla/api"
)

// place creates n pods of in.Deployment on the best feasible nodes. stopped
// holds the names of the deployment's pods this plan stops. A reason says
// how many pods were left out of Replicas ("3 of 6"), so that it reads the
// same on every pass until something changes.
func place(plan *Plan, in Input, stopped map[string]bool, n int, newName func() string) {
	d := in.Deployment
	c := newCluster(in, stopped, true)
	taken := make(map[string]bool, len(in.Pods)+n)
	for _, p := range in.Pods {
		taken[p.Name] = true
	}
	for i := range n {
		best := c.best()
		if best < 0 {
			plan.Reasons = append(plan.Reasons, fmt.Sprintf("cannot place %d of %d pods: %s", n-i, d.Replicas, c.why()))
			return
		}
		name, ok := uniqueName(d.Name, newName, taken)
		if !ok {
			plan.Reasons = append(plan.Reasons, fmt.Sprintf("cannot place %d of %d pods: no unused pod name after 10 tries", n-i, d.Replicas))
			return
		}
		taken[name] = true
		c.commit(best)
		plan.Create = append(plan.Create, api.Pod{
			Namespace:  d.Namespace,
			Name:       name,
			Deployment: d.Name,
			Node:       c.nodes[best].name,
			Generation: d.Generation,
			Labels:     maps.Clone(d.Labels),
			Containers: api.CloneContainers(d.Containers),
			Status:     api.PodStatus{Phase: api.PodPending},
		})
	}
}

// CheckCapacity says how many of in.Deployment's replicas fit the fleet
// now, placed fresh as Reconcile would place them, and if not all, why
// ("0/5 nodes available: ..."). The deployment's own pods are left out of
// the load: a rollout replaces or keeps them.
func CheckCapacity(in Input) api.CapacityCheck {
	out := api.CapacityCheck{Replicas: in.Deployment.Replicas}
	c := newCluster(in, nil, false)
	for out.Placeable < out.Replicas {
		best := c.best()
		if best < 0 {
			out.Reason = c.why()
			break
		}
		c.commit(best)
		out.Placeable++
	}
	return out
}

func uniqueName(prefix string, newName func() string, taken map[string]bool) (string, bool) {
	for range 10 {
		if name := prefix + "-" + newName(); !taken[name] {
			return name, true
		}
	}
	return "", false
}

// requests sums a pod's CPU (millicores) and memory (MiB) requests.
func requests(cs []api.Container) (cpu, mem int64) {
	for _, c := range cs {
		cpu += c.CPURequest
		mem += c.MemoryRequest
	}
	return cpu, mem
}

// constraint is a feasibility check, in the order they are made: a node
// that fails several is reported under the first.
type constraint uint8

const (
	fits constraint = iota
	notReady
	draining // before cordoned: draining nodes are cordoned too
	cordoned
	diskPressure
	selectorMismatch
	insufficientCPU
	insufficientMemory
	hostPortInUse
	antiAffinity
)

func (c constraint) String() string {
	switch c {
	case fits:
		return "fits"
	case notReady:
		return "not ready"
	case draining:
		return "draining"
	case cordoned:
		return "cordoned"
	case diskPressure:
		return "disk pressure"
	case selectorMismatch:
		return "node selector mismatch"
	case insufficientCPU:
		return "insufficient cpu"
	case insufficientMemory:
		return "insufficient memory"
	case hostPortInUse:
		return "host port in use"
	case antiAffinity:
		return "anti-affinity"
	}
	return "constraint " + strconv.Itoa(int(c))
}

// hostPort is a port and protocol a pod holds on its node.
type hostPort struct {
	port  int
	proto string
}

func (h hostPort) String() string { return strconv.Itoa(h.port) + "/" + h.proto }

func (h hostPort) compare(o hostPort) int {
	return cmp.Or(cmp.Compare(h.port, o.port), cmp.Compare(h.proto, o.proto))
}

// hostPorts returns the host ports the containers hold, deduplicated and sorted.
func hostPorts(cs []api.Container) []hostPort {
	var out []hostPort
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			proto := strings.ToLower(p.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			out = append(out, hostPort{p.HostPort, proto})
		}
	}
	slices.SortFunc(out, hostPort.compare)
	return slices.Compact(out)
}

// matches reports whether labels carry every one of sel.
func matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if w, ok := labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}
