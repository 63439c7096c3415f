package controller

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/scheduler"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// Store is the part of the replicated state the controller reads and writes.
type Store interface {
	IsLeader() bool
	Changed() <-chan struct{}
	// Changes returns the deployments whose spec or pods changed after
	// index since, or full when every deployment must be looked at.
	Changes(since uint64) (keys []string, full bool, now uint64)
	Deployment(ns, name string) (api.Deployment, bool)
	Deployments(ns string) []api.Deployment
	// NodePods returns the pods that are not stopping, by node; shared
	// with the state, read-only.
	NodePods() map[string][]api.Pod
	Pods(f state.PodFilter) []api.Pod
	Nodes() []api.Node
	PutPods(ctx context.Context, pods []api.Pod) error
	StopPods(ctx context.Context, ids []string) error
	StopPodsWithReason(ctx context.Context, ids []string, reason string) error
	// ForgetPods removes pods from the state whatever node holds them.
	ForgetPods(ctx context.Context, ids []string) error
	RemoveDeployment(ctx context.Context, ns, name string) error
	ClusterConfig() (state.ClusterConfig, bool)
}

// Config configures a Controller.
type Config struct {
	Store  Store
	Logger *slog.Logger
	// Resync bounds how long a missed change can go unnoticed.
	Resync time.Duration
	// MinInterval is the least time between two passes.
	MinInterval time.Duration
	// LeftNodeGrace is how long a node that left the fleet on purpose (its
	// agent stopped with SIGTERM, as for an upgrade) keeps its pods before
	// they are replaced; a failed node keeps them for the cluster config's
	// LostNodeGrace only. Drain a node to move its pods at once.
	LeftNodeGrace time.Duration
	Now           func() time.Time
}

// DefaultLeftNodeGrace is Kubernetes' pod eviction timeout: an agent
// restarted for an upgrade comes back well within it.
const DefaultLeftNodeGrace = 5 * time.Minute

// Controller is the leader's reconcile loop over deployments.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu            sync.Mutex
	unschedulable map[string]string // deployment key → why pods could not be placed

	// lostSince is when this leader first saw each node down or left
	// (only the Run goroutine uses it). A new leader starts the grace
	// over: it replaces pods later, never earlier.
	lostSince map[string]time.Time
	// nextExpiry is when the earliest grace still running ends (zero: none).
	nextExpiry time.Time
}

// New returns a Controller; call Run to start it.
func New(cfg Config) *Controller {
	if cfg.Resync == 0 {
		cfg.Resync = 2 * time.Second
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LeftNodeGrace == 0 {
		cfg.LeftNodeGrace = DefaultLeftNodeGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, log: cfg.Logger.With("component", "controller"), unschedulable: map[string]string{}, lostSince: map[string]time.Time{}}
}

// Run reconciles until ctx ends: after every burst of state changes, the
// deployments they touched (their spec or their pods), and every deployment
// once per Resync and whenever nodes change. Passing over every deployment
// after every write made each write cost O(deployments) on the leader.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	grace := time.NewTimer(time.Hour) // reset to when a lost node's grace ends
	grace.Stop()
	defer grace.Stop()
	var since uint64 // 0: a full pass first
	fullDue := true
	for {
		changed := c.cfg.Store.Changed()
		if c.cfg.Store.IsLeader() {
			keys, full, now := c.cfg.Store.Changes(since)
			var err error
			switch {
			case full || fullDue:
				err = c.reconcile(ctx, nil)
			case len(keys) > 0:
				err = c.reconcile(ctx, keys)
			}
			if err != nil {
				if ctx.Err() == nil {
					c.log.Warn("reconcile failed; retrying", "err", err)
				}
			} else {
				since, fullDue = now, false
			}
		}
		var graceEnds <-chan time.Time
		if !c.nextExpiry.IsZero() {
			grace.Reset(max(c.nextExpiry.Sub(c.cfg.Now()), 0))
			graceEnds = grace.C
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
			fullDue = true
		case <-graceEnds:
			// A lost node's grace ended: its pods are replaced in a full pass.
			fullDue = true
		}
		// Under a burst of writes, one pass per MinInterval covers them all
		// instead of one per entry.
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.MinInterval):
		}
	}
}

// Status computes a deployment's status with what the controller knows about
// placement failures.
func (c *Controller) Status(d api.Deployment) api.DeploymentStatus {
	pods := c.cfg.Store.Pods(state.PodFilter{Namespace: d.Namespace, Deployment: d.Name})
	c.mu.Lock()
	reason := c.unschedulable[d.Namespace+"/"+d.Name]
	c.mu.Unlock()
	return ComputeStatus(d, pods, reason)
}

// Statuses computes the status of many deployments with one read of the
// pods, for listings: calling Status for each would scan every pod per deployment.
func (c *Controller) Statuses(ds []api.Deployment) []api.DeploymentStatus {
	byDeployment := map[string][]api.Pod{}
	for _, p := range c.cfg.Store.Pods(state.PodFilter{}) {
		k := p.Namespace + "/" + p.Deployment
		byDeployment[k] = append(byDeployment[k], p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]api.DeploymentStatus, len(ds))
	for i, d := range ds {
		k := d.Namespace + "/" + d.Name
		out[i] = ComputeStatus(d, byDeployment[k], c.unschedulable[k])
	}
	return out
}

// Capacity says how many of d's replicas the fleet's free capacity holds
// now, as the scheduler would place them fresh (POST /v1/capacity).
func (c *Controller) Capacity(d api.Deployment) api.CapacityCheck {
	pods := c.cfg.Store.Pods(state.PodFilter{Namespace: d.Namespace, Deployment: d.Name})
	return scheduler.CheckCapacity(scheduler.Input{Deployment: d, Pods: pods, Nodes: c.cfg.Store.Nodes(), NodePods: c.cfg.Store.NodePods()})
}

// ReconcileOnce makes one pass over every deployment.
func (c *Controller) ReconcileOnce(ctx context.Context) error { return c.reconcile(ctx, nil) }

// reconcile makes one pass over the deployments keys names ("namespace/
// name"), or over every deployment when keys is nil.
func (c *Controller) reconcile(ctx context.Context, keys []string) error {
	var deployments []api.Deployment
	if keys == nil {
		deployments = c.cfg.Store.Deployments("")
	} else {
		slices.Sort(keys) // placements in a stable order
		for _, k := range keys {
			ns, name, _ := strings.Cut(k, "/")
			if d, ok := c.cfg.Store.Deployment(ns, name); ok {
				deployments = append(deployments, d)
			}
		}
	}
	nodes := c.cfg.Store.Nodes()
	var lost map[string]bool
	if keys == nil {
		lost = c.lostNodes(nodes)
	}
	if len(deployments) == 0 {
		return nil
	}
	nodePods := c.cfg.Store.NodePods()
	now := c.cfg.Now()
	var create []api.Pod
	var stop, stopLost, stopDrained []string
	for _, d := range deployments {
		key := d.Namespace + "/" + d.Name
		pods := c.cfg.Store.Pods(state.PodFilter{Namespace: d.Namespace, Deployment: d.Name})
		// Pods of a node lost past its grace are stopped (the node tears
		// them down if it comes back, before it starts anything) and count
		// for nothing, so the scheduler replaces them in this same pass.
		var lostPods []api.Pod // of this deployment, replaced in this pass
		for i := range pods {
			if p := &pods[i]; !p.Stop && lost[p.Node] {
				p.Stop = true
				stopLost = append(stopLost, p.ID())
				lostPods = append(lostPods, *p)
			}
		}
		if d.Deleting && len(pods) > 0 && allLost(pods, lost) {
			// Only lost nodes hold what is left: they will not tear it
			// down for us. Forgotten here, it is an orphan a node that
			// returns removes at its first pass.
			ids := make([]string, len(pods))
			for i, p := range pods {
				ids[i] = p.ID()
			}
			if err := c.cfg.Store.ForgetPods(ctx, ids); err != nil {
				return err
			}
			c.log.Warn("forgot the pods of a deleted deployment left on lost nodes", "deployment", key, "count", len(ids))
			pods = nil
		}
		if d.Deleting && len(pods) == 0 {
			if err := c.cfg.Store.RemoveDeployment(ctx, d.Namespace, d.Name); err != nil {
				return err
			}
			c.log.Info("deployment removed", "deployment", key)
			continue
		}
		plan := scheduler.Reconcile(scheduler.Input{Deployment: d, Pods: pods, Nodes: nodes, NodePods: nodePods}, randomSuffix)
		// Placements of this pass count against capacity for the next
		// deployment. (Appending to the shared lists' copies is safe: the
		// state never reads them back.)
		for i := range plan.Create {
			p := &plan.Create[i]
			p.MinReadySeconds, p.SelfFencing = d.MinReady(), d.SelfFencing
			p.AntiAffinity = api.CloneAntiAffinity(d.AntiAffinity)
			p.CreatedAt = now.UTC().Truncate(time.Second)
			p.Status.Events = placementEvents(p, lostPods, i, now)
			nodePods[p.Node] = append(nodePods[p.Node][:len(nodePods[p.Node]):len(nodePods[p.Node])], *p)
		}
		create = append(create, plan.Create...)
		for _, id := range plan.Stop {
			if plan.StopReasons[id] == api.StopDrained {
				stopDrained = append(stopDrained, id)
			} else {
				stop = append(stop, id)
			}
		}
		c.mu.Lock()
		if len(plan.Reasons) > 0 {
			if c.unschedulable[key] == "" {
				c.log.Warn("cannot place pods", "deployment", key, "reasons", plan.Reasons)
			}
			c.unschedulable[key] = strings.Join(plan.Reasons, "; ")
		} else {
			delete(c.unschedulable, key)
		}
		c.mu.Unlock()
	}
	// Lost pods are stopped before their replacements are placed: if this
	// leader fails in between, the next one sees them stopped and places
	// the replacements itself, and never sees replacements beside pods it
	// would then also replace.
	if len(stopLost) > 0 {
		if err := c.cfg.Store.StopPodsWithReason(ctx, stopLost, api.StopNodeLost); err != nil {
			return err
		}
		c.log.Warn("replacing pods of lost nodes", "count", len(stopLost))
	}
	// Stops go before placements: a pod stopped for a drain or a scale-down
	// and its replacement are never both live in the state, and a leader
	// that fails in between leaves its successor fewer pods to place
	// rather than more to stop. One raft entry for all placements and one
	// for all stops keeps a 50-replica rollout to two writes.
	if len(stop) > 0 {
		if err := c.cfg.Store.StopPods(ctx, stop); err != nil {
			return err
		}
		c.log.Info("stopping pods", "count", len(stop))
	}
	if len(stopDrained) > 0 {
		if err := c.cfg.Store.StopPodsWithReason(ctx, stopDrained, api.StopDrained); err != nil {
			return err
		}
		c.log.Info("moving pods off draining nodes", "count", len(stopDrained))
	}
	if len(create) > 0 {
		if err := c.cfg.Store.PutPods(ctx, create); err != nil {
			return err
		}
		c.log.Info("placed pods", "count", len(create))
	}
	return nil
}

// allLost reports whether every pod is stopping on a lost node.
func allLost(pods []api.Pod, lost map[string]bool) bool {
	for _, p := range pods {
		if !p.Stop || !lost[p.Node] {
			return false
		}
	}
	return true
}

// lostNodes returns the nodes whose pods are to be replaced: down for longer
// than the cluster's lost-node grace, or left for longer than
// LeftNodeGrace. It notes when the earliest running grace ends.
func (c *Controller) lostNodes(nodes []api.Node) map[string]bool {
	grace := state.DefaultLostNodeGrace
	if cc, ok := c.cfg.Store.ClusterConfig(); ok {
		grace = cc.LostNodeGrace()
	}
	now := c.cfg.Now()
	lost := map[string]bool{}
	seen := map[string]bool{}
	c.nextExpiry = time.Time{}
	for _, n := range nodes {
		g := grace
		switch n.Status {
		case api.NodeDown:
		case api.NodeLeft:
			g = c.cfg.LeftNodeGrace
		default:
			continue
		}
		seen[n.Name] = true
		since, ok := c.lostSince[n.Name]
		if !ok {
			since = now
			c.lostSince[n.Name] = now
			c.log.Warn("node lost; its pods are replaced unless it returns in time", "node", n.Name, "status", n.Status, "grace", g)
		}
		if ends := since.Add(g); now.Before(ends) {
			if c.nextExpiry.IsZero() || ends.Before(c.nextExpiry) {
				c.nextExpiry = ends
			}
			continue
		}
		lost[n.Name] = true
	}
	for name := range c.lostSince {
		if !seen[name] {
			delete(c.lostSince, name)
		}
	}
	return lost
}

// randomSuffix names pods like Kubernetes does: 5 lower-case alphanumerics
// without vowels, so names never spell words.
func randomSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// placementEvents are the events a pod is placed with: Scheduled, and
// Rescheduled when it replaces a pod of a lost node (the i-th placement of
// a pass replaces the i-th lost pod: the scheduler places lost pods'
// replacements in the pass that stops them).
func placementEvents(p *api.Pod, lost []api.Pod, i int, now time.Time) []api.Event {
	at := now.UTC().Truncate(time.Second)
	es := []api.Event{{Time: at, Type: api.EventNormal, Reason: api.EventScheduled,
		Message: fmt.Sprintf("Assigned %s to node %s", p.ID(), p.Node)}}
	if i < len(lost) {
		es = append(es, api.Event{Time: at, Type: api.EventWarning, Reason: api.EventRescheduled,
			Message: fmt.Sprintf("Replaces pod %s: its node %s was lost", lost[i].Name, lost[i].Node)})
	}
	return es
}
