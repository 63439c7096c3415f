package scheduler

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// harness plays the controller and the nodes around Reconcile, as Nomad's
// scheduler Harness does: it holds the fleet in memory, runs Reconcile for
// every deployment in turn (one pass's placements count against the next
// deployment, as in the controller), applies the plans and lets pods start
// and go away, so that tests assert where pods end up.
type harness struct {
	t           *testing.T
	nodes       []api.Node
	deployments []api.Deployment
	pods        []api.Pod
	index       uint64
	names       func() string
	// healthy says whether a new pod becomes ready; nil means all do.
	healthy func(api.Pod) bool
	// check, if set, runs after each plan is applied.
	check func(d api.Deployment, plan Plan)
}

func newHarness(t *testing.T, nodes ...api.Node) *harness {
	return &harness{t: t, nodes: nodes, names: names()}
}

// deploy adds deployments or replaces those of the same name.
func (h *harness) deploy(ds ...api.Deployment) {
	for _, d := range ds {
		h.deployments = slices.DeleteFunc(h.deployments, func(o api.Deployment) bool { return o.Name == d.Name })
		h.deployments = append(h.deployments, d)
	}
	slices.SortFunc(h.deployments, func(a, b api.Deployment) int { return cmp.Compare(a.Name, b.Name) })
}

// update changes a deployment's spec, bumping its generation when asked.
func (h *harness) update(name string, bump bool, change func(*api.Deployment)) {
	for i := range h.deployments {
		if d := &h.deployments[i]; d.Name == name {
			change(d)
			if bump {
				d.Generation++
			}
			return
		}
	}
	h.t.Fatalf("no deployment %q", name)
}

// setNode changes a node, e.g. to drain it.
func (h *harness) setNode(name string, change func(*api.Node)) {
	for i := range h.nodes {
		if h.nodes[i].Name == name {
			change(&h.nodes[i])
			return
		}
	}
	h.t.Fatalf("no node %q", name)
}

// nodePods groups the non-stopped pods by node, as the store does.
func (h *harness) nodePods() map[string][]api.Pod {
	m := map[string][]api.Pod{}
	for _, p := range h.pods {
		if !p.Stop {
			m[p.Node] = append(m[p.Node], p)
		}
	}
	return m
}

func (h *harness) podsOf(name string) []api.Pod {
	var out []api.Pod
	for _, p := range h.pods {
		if p.Deployment == name {
			out = append(out, p)
		}
	}
	return out
}

// step reconciles every deployment once and applies the plans.
func (h *harness) step() map[string]Plan {
	h.t.Helper()
	plans := map[string]Plan{}
	nodePods := h.nodePods()
	for _, d := range h.deployments {
		plan := Reconcile(Input{Deployment: d, Pods: h.podsOf(d.Name), Nodes: h.nodes, NodePods: nodePods}, h.names)
		for i := range plan.Create {
			// As the controller does: pods carry their deployment's rules.
			plan.Create[i].AntiAffinity = api.CloneAntiAffinity(d.AntiAffinity)
			nodePods[plan.Create[i].Node] = append(nodePods[plan.Create[i].Node], plan.Create[i])
		}
		for i := range h.pods {
			if p := &h.pods[i]; slices.Contains(plan.Stop, p.ID()) {
				p.Stop, p.StopReason = true, plan.StopReasons[p.ID()]
				p.Status.Phase, p.Status.Ready = api.PodTerminating, false
			}
		}
		for _, p := range plan.Create {
			h.index++
			p.CreateIndex = h.index
			h.pods = append(h.pods, p)
		}
		if h.check != nil {
			h.check(d, plan)
		}
		plans[d.Name] = plan
	}
	return plans
}

// progress is the nodes' turn: stopped pods go away, new pods start.
func (h *harness) progress() {
	h.pods = slices.DeleteFunc(h.pods, func(p api.Pod) bool { return p.Stop })
	for i, p := range h.pods {
		if p.Status.Phase == api.PodPending {
			h.pods[i].Status.Phase = api.PodRunning
			h.pods[i].Status.Ready = h.healthy == nil || h.healthy(p)
		}
	}
}

// settle steps until no plan changes anything and returns the last plans.
func (h *harness) settle() map[string]Plan {
	h.t.Helper()
	for range 100 {
		plans := h.step()
		h.progress()
		if !slices.ContainsFunc(slices.Collect(maps.Values(plans)), func(p Plan) bool { return len(p.Create)+len(p.Stop) > 0 }) {
			return plans
		}
	}
	h.t.Fatal("no fixed point after 100 steps")
	return nil
}

// placement renders where a deployment's live pods are: "n1:2 n2:1".
func (h *harness) placement(name string) string {
	on := map[string]int{}
	for _, p := range h.podsOf(name) {
		if !p.Stop {
			on[p.Node]++
		}
	}
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(on)) {
		parts = append(parts, fmt.Sprintf("%s:%d", n, on[n]))
	}
	return strings.Join(parts, " ")
}

// readyPods counts a deployment's live, ready pods.
func (h *harness) readyPods(name string) int {
	n := 0
	for _, p := range h.podsOf(name) {
		if !p.Stop && p.Status.Ready {
			n++
		}
	}
	return n
}

// nodeOpt changes a test node.
type nodeOpt func(*api.Node)

// mkNode is a ready node with 4000m CPU and 8192 MiB.
func mkNode(name string, opts ...nodeOpt) api.Node {
	n := api.Node{Name: name, CPUMillis: 4000, MemoryMiB: 8192, Status: api.NodeReady}
	for _, o := range opts {
		o(&n)
	}
	return n
}

// fleet is n nodes n1..nN, each with opts.
func fleet(n int, opts ...nodeOpt) []api.Node {
	out := make([]api.Node, n)
	for i := range out {
		out[i] = mkNode(fmt.Sprintf("n%d", i+1), opts...)
	}
	return out
}

func label(k, v string) nodeOpt {
	return func(n *api.Node) {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[k] = v
	}
}

func zone(z string) nodeOpt { return label(api.TopologyZone, z) }
func capacity(cpu, mem int64) nodeOpt {
	return func(n *api.Node) { n.CPUMillis, n.MemoryMiB = cpu, mem }
}
func reserve(cpu, mem int64) nodeOpt {
	return func(n *api.Node) { n.ReservedCPUMillis, n.ReservedMemoryMiB = cpu, mem }
}
func status(s string) nodeOpt { return func(n *api.Node) { n.Status = s } }
func cordon(n *api.Node)      { n.Unschedulable = true }
func drain(n *api.Node)       { n.Unschedulable, n.Draining = true, true }

// depOpt changes a test deployment.
type depOpt func(*api.Deployment)

// dep is a deployment labelled app=name whose pods request 100m and 128 MiB.
func dep(name string, replicas int, opts ...depOpt) api.Deployment {
	d := api.Deployment{
		Namespace: "default", Name: name, Replicas: replicas, Generation: 1,
		Labels:     map[string]string{"app": name},
		Containers: []api.Container{{Name: name, Image: name + ":1", CPURequest: 100, MemoryRequest: 128}},
	}
	for _, o := range opts {
		o(&d)
	}
	return d
}

func request(cpu, mem int64) depOpt {
	return func(d *api.Deployment) { d.Containers[0].CPURequest, d.Containers[0].MemoryRequest = cpu, mem }
}

func hostPortOpt(port int, proto string) depOpt {
	return func(d *api.Deployment) {
		d.Containers[0].Ports = append(d.Containers[0].Ports, api.Port{ContainerPort: port, HostPort: port, Protocol: proto})
	}
}

func selector(k, v string) depOpt {
	return func(d *api.Deployment) {
		if d.NodeSelector == nil {
			d.NodeSelector = map[string]string{}
		}
		d.NodeSelector[k] = v
	}
}

func binPack(d *api.Deployment) { d.Placement = api.PlacementBinPack }

// avoid adds an anti-affinity rule against pods labelled app=app.
func avoid(app string, required bool, topology string) depOpt {
	return func(d *api.Deployment) {
		d.AntiAffinity = append(d.AntiAffinity, api.AntiAffinity{Labels: map[string]string{"app": app}, Required: required, Topology: topology})
	}
}

// podOn is a running, ready pod of d on a node.
func podOn(d api.Deployment, name, node string) api.Pod {
	return api.Pod{
		Namespace: d.Namespace, Name: name, Deployment: d.Name, Node: node, Generation: d.Generation,
		Labels: maps.Clone(d.Labels), Containers: api.CloneContainers(d.Containers),
		AntiAffinity: api.CloneAntiAffinity(d.AntiAffinity),
		Status:       api.PodStatus{Phase: api.PodRunning, Ready: true},
	}
}
