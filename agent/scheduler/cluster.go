package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/flotilla-io/flotilla/api"
)

// cluster is the fleet as the placement of one deployment's pods sees it:
// each node's load, and the pod counts that spread and anti-affinity rank
// by, built once and updated as pods are placed, so that a placement costs
// one pass over the nodes still feasible.
type cluster struct {
	cpu, mem int64      // one pod's requests
	ports    []hostPort // one pod's host ports
	binPack  bool
	nodes    []nodeState // by name
	// cand are the indexes of nodes that may still fit a pod, by name.
	// Placing only adds load, so a node that stops fitting is dropped.
	cand []int
	// zonePods counts the deployment's current pods per spread domain.
	zonePods []int
	rules    []rule
	// selfHard is set when a required anti-affinity rule matches the
	// deployment's own pods: a placement then rules out other nodes too.
	selfHard bool
	// labels are the labels of the deployment's pods; inverse maps a
	// topology key to the index in rules of the rule that counts placed
	// pods whose own required anti-affinity matches them (as Kubernetes
	// honours required anti-affinity both ways); sorted are the nodes by
	// name, to build its domains.
	labels  map[string]string
	inverse map[string]int
	sorted  []*api.Node
}

// nodeState is one node's load.
type nodeState struct {
	name               string
	static             constraint // status, cordon, drain or node selector
	allocCPU, allocMem int64
	usedCPU, usedMem   int64
	own                int // the deployment's pods of the current generation
	zone               int // spread domain (api.TopologyZone)
	port               int // index in cluster.ports of a host port held here, or -1
	// load is the requested fraction of CPU plus that of memory once one
	// more pod is placed here.
	load float64
	// fits caches check() == fits, but for anti-affinity with pods placed
	// on other nodes.
	fits bool
}

// rule is an anti-affinity rule with its matching pods counted per
// topology domain.
type rule struct {
	labels   map[string]string
	required bool
	self     bool  // the deployment's own pods match
	inverse  bool  // counts placed pods whose required rules keep this deployment's pods away
	domain   []int // per node
	count    []int // per domain
}

// newCluster builds the load of in.Nodes from in.NodePods for placing pods
// of in.Deployment. Of the deployment's own pods, the ones named in
// stopping still hold resources, host ports and hard anti-affinity but
// count for neither spread nor soft anti-affinity; ones with Stop set in
// in.Pods count for nothing; withOwn false leaves them all out.
func newCluster(in Input, stopping map[string]bool, withOwn bool) *cluster {
	d := in.Deployment
	c := &cluster{ports: hostPorts(d.Containers), binPack: d.Placement == api.PlacementBinPack, labels: d.Labels, inverse: map[string]int{}}
	c.cpu, c.mem = requests(d.Containers)

	nodes := make([]*api.Node, len(in.Nodes))
	for i := range in.Nodes {
		nodes[i] = &in.Nodes[i]
	}
	slices.SortFunc(nodes, func(a, b *api.Node) int { return cmp.Compare(a.Name, b.Name) })
	c.sorted = nodes
	c.nodes = make([]nodeState, len(nodes))
	for i, n := range nodes {
		c.nodes[i] = nodeState{
			name:     n.Name,
			static:   staticCheck(n, d.NodeSelector),
			allocCPU: n.CPUMillis - n.ReservedCPUMillis,
			allocMem: n.MemoryMiB - n.ReservedMemoryMiB,
			port:     -1,
		}
	}
	zones, nz := domains(nodes, api.TopologyZone)
	for i := range c.nodes {
		c.nodes[i].zone = zones[i]
	}
	c.zonePods = make([]int, nz)
	for _, a := range d.AntiAffinity {
		r := rule{labels: a.Labels, required: a.Required, self: matches(d.Labels, a.Labels)}
		r.domain, nz = domains(nodes, a.Topology)
		r.count = make([]int, nz)
		c.rules = append(c.rules, r)
		c.selfHard = c.selfHard || r.required && r.self
	}

	gone := map[string]bool{}
	for _, p := range in.Pods {
		if p.Stop && p.Namespace == d.Namespace && p.Deployment == d.Name {
			gone[p.Name] = true
		}
	}
	for i := range c.nodes {
		pods := in.NodePods[c.nodes[i].name]
		for k := range pods {
			p := &pods[k]
			own := p.Namespace == d.Namespace && p.Deployment == d.Name
			if own && (!withOwn || gone[p.Name]) {
				continue
			}
			c.add(i, p, own && p.Generation == d.Generation, !own || !stopping[p.Name])
		}
	}
	for i := range c.nodes {
		n := &c.nodes[i]
		n.load = c.loadAfter(n)
		n.fits = c.check(i) == fits
		if n.fits {
			c.cand = append(c.cand, i)
		}
	}
	return c
}

// add counts a pod already on node i: spread if it is one of the
// deployment's of the current generation (so that a rollout spreads the new
// pods evenly, whatever the old ones' places: Kubernetes' matchLabelKeys
// pod-template-hash), counted unless it is being stopped.
func (c *cluster) add(i int, p *api.Pod, spread, counted bool) {
	n := &c.nodes[i]
	cpu, mem := requests(p.Containers)
	n.usedCPU += cpu
	n.usedMem += mem
	if len(c.ports) > 0 {
		for _, h := range hostPorts(p.Containers) {
			if j, ok := slices.BinarySearchFunc(c.ports, h, hostPort.compare); ok && (n.port < 0 || j < n.port) {
				n.port = j
			}
		}
	}
	for r := range c.rules {
		if rl := &c.rules[r]; !rl.inverse && (rl.required || counted) && matches(p.Labels, rl.labels) {
			rl.count[rl.domain[i]]++
		}
	}
	for _, a := range p.AntiAffinity {
		if a.Required && len(a.Labels) > 0 && matches(c.labels, a.Labels) {
			rl := c.inverseRule(a.Topology)
			rl.count[rl.domain[i]]++
		}
	}
	if spread && counted {
		n.own++
		c.zonePods[n.zone]++
	}
}

// inverseRule returns the rule counting placed pods whose required
// anti-affinity of topology key matches this deployment's pods.
func (c *cluster) inverseRule(key string) *rule {
	if key == "" {
		key = "node"
	}
	if j, ok := c.inverse[key]; ok {
		return &c.rules[j]
	}
	r := rule{required: true, inverse: true}
	var n int
	r.domain, n = domains(c.sorted, key)
	r.count = make([]int, n)
	c.rules = append(c.rules, r)
	c.inverse[key] = len(c.rules) - 1
	return &c.rules[len(c.rules)-1]
}

// staticCheck is the part of feasibility that placing pods does not change.
func staticCheck(n *api.Node, selector map[string]string) constraint {
	switch {
	case n.Status != api.NodeReady:
		return notReady
	case n.Draining:
		return draining
	case n.Unschedulable:
		return cordoned
	case blockedByCondition(n):
		return diskPressure
	case !matches(n.Labels, selector):
		return selectorMismatch
	}
	return fits
}

// blockedByCondition reports whether the node reports a condition that
// keeps new pods off it (DiskPressure).
func blockedByCondition(n *api.Node) bool {
	for _, c := range n.Conditions {
		if c.BlocksScheduling() {
			return true
		}
	}
	return false
}

// domains gives each node the index of its topology domain for the label
// key: nodes with the same value share one; a node without the label, or
// every node for key "" or "node", is a domain of its own.
func domains(nodes []*api.Node, key string) (domain []int, count int) {
	domain = make([]int, len(nodes))
	byValue := map[string]int{}
	for i, n := range nodes {
		v, ok := n.Labels[key]
		if key == "" || key == "node" || !ok {
			domain[i] = count
			count++
			continue
		}
		d, seen := byValue[v]
		if !seen {
			d = count
			byValue[v] = d
			count++
		}
		domain[i] = d
	}
	return domain, count
}

// check returns the first constraint node i fails for one more pod.
func (c *cluster) check(i int) constraint {
	n := &c.nodes[i]
	switch {
	case n.static != fits:
		return n.static
	case c.cpu > 0 && c.cpu > n.allocCPU-n.usedCPU:
		return insufficientCPU
	case c.mem > 0 && c.mem > n.allocMem-n.usedMem:
		return insufficientMemory
	case n.port >= 0:
		return hostPortInUse
	}
	for r := range c.rules {
		if rl := &c.rules[r]; rl.required && rl.count[rl.domain[i]] > 0 {
			return antiAffinity
		}
	}
	return fits
}

// best returns the index of the best node for one more pod, or -1 if none fits.
func (c *cluster) best() int {
	best := -1
	keep := c.cand[:0]
	for _, i := range c.cand {
		if !c.nodes[i].fits || c.selfHard && c.check(i) != fits {
			continue
		}
		keep = append(keep, i)
		if best < 0 || c.better(i, best) {
			best = i
		}
	}
	c.cand = keep
	return best
}

// better reports whether node i ranks strictly above node j; i comes later
// by name, so ties go to the first name.
func (c *cluster) better(i, j int) bool {
	a, b := &c.nodes[i], &c.nodes[j]
	if c.binPack {
		if sa, sb := c.soft(i), c.soft(j); sa != sb {
			return sa < sb
		}
		return a.load > b.load
	}
	if za, zb := c.zonePods[a.zone], c.zonePods[b.zone]; za != zb {
		return za < zb
	}
	if a.own != b.own {
		return a.own < b.own
	}
	if sa, sb := c.soft(i), c.soft(j); sa != sb {
		return sa < sb
	}
	return a.load < b.load
}

// soft counts the pods matching the soft anti-affinity rules in node i's domains.
func (c *cluster) soft(i int) int {
	s := 0
	for r := range c.rules {
		if rl := &c.rules[r]; !rl.required {
			s += rl.count[rl.domain[i]]
		}
	}
	return s
}

// commit places one pod on node i.
func (c *cluster) commit(i int) {
	n := &c.nodes[i]
	n.usedCPU += c.cpu
	n.usedMem += c.mem
	n.own++
	if len(c.ports) > 0 {
		n.port = 0
	}
	c.zonePods[n.zone]++
	for r := range c.rules {
		if rl := &c.rules[r]; rl.self {
			rl.count[rl.domain[i]]++
		}
	}
	n.load = c.loadAfter(n)
	n.fits = c.check(i) == fits
}

func (c *cluster) loadAfter(n *nodeState) float64 {
	return fraction(n.usedCPU+c.cpu, n.allocCPU) + fraction(n.usedMem+c.mem, n.allocMem)
}

// fraction is used/alloc; a node with nothing allocatable counts as full.
func fraction(used, alloc int64) float64 {
	if alloc <= 0 {
		return 1
	}
	return float64(used) / float64(alloc)
}

// why says, as Kubernetes does, why no node fits one more pod: each node
// counted once, under the first constraint it fails, e.g.
// "0/5 nodes available: 3 insufficient memory, 2 cordoned".
func (c *cluster) why() string {
	if len(c.nodes) == 0 {
		return "0/0 nodes available: the fleet has no nodes"
	}
	count := map[string]int{}
	fit := 0
	for i := range c.nodes {
		switch k := c.check(i); k {
		case fits:
			fit++
		case hostPortInUse:
			count["host port "+c.ports[c.nodes[i].port].String()+" in use"]++
		default:
			count[k.String()]++
		}
	}
	type part struct {
		phrase string
		n      int
	}
	var parts []part
	for p, n := range count {
		parts = append(parts, part{p, n})
	}
	slices.SortFunc(parts, func(a, b part) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.phrase, b.phrase)) })
	s := make([]string, len(parts))
	for i, p := range parts {
		s[i] = fmt.Sprintf("%d %s", p.n, p.phrase)
	}
	return fmt.Sprintf("%d/%d nodes available: %s", fit, len(c.nodes), strings.Join(s, ", "))
}
