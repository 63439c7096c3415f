package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/flotilla-io/flotilla/agent/clientstate"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// fence decides when a client node stops its self-fencing pods: once it
// has heard from no server that knows a leader for longer than the
// cluster's lost-node grace. The leader replaces a lost node's pods only
// that same grace after gossip marked the node failed, which is itself
// after the node's last contact, so the fenced pods are down before their
// replacements start: a replica never runs twice.
//
// While the node holds such pods its watch answers at least every third
// of the grace (a heartbeat). A node that just started has heard from no
// one yet: its self-fencing pods wait for the first answer, which says
// whether they were replaced while it was away.
type fence struct {
	cs   fenceState
	node string
	now  func() time.Time
	log  *slog.Logger
}

// fenceState is where a node learns of its contact with the control
// plane: a client's watch cache, or a server's own store (raft's contact
// with the leader).
type fenceState interface {
	LeaderContact() time.Time
	ClusterConfig() (state.ClusterConfig, bool)
	Pods(f state.PodFilter) []api.Pod
}

func newFence(cs fenceState, node string, log *slog.Logger) *fence {
	f := &fence{cs: cs, node: node, now: time.Now, log: log}
	if w, ok := cs.(*clientstate.Store); ok {
		w.SetMaxWait(func() time.Duration {
			if !f.armed() {
				return 0
			}
			return f.grace() / 3
		})
	}
	return f
}

func (f *fence) grace() time.Duration {
	if cc, ok := f.cs.ClusterConfig(); ok {
		return cc.LostNodeGrace()
	}
	return state.DefaultLostNodeGrace
}

// armed reports whether the node runs a pod that fences itself.
func (f *fence) armed() bool {
	for _, p := range f.cs.Pods(state.PodFilter{Node: f.node}) {
		if p.SelfFencing && !p.Stop {
			return true
		}
	}
	return false
}

// Fenced reports whether self-fencing pods must be down now.
func (f *fence) Fenced() bool {
	last := f.cs.LeaderContact()
	return last.IsZero() || f.now().Sub(last) > f.grace()
}

// watch wakes the node loop whenever Fenced changes, so fencing does not
// wait for the loop's next pass, and logs the change.
func (f *fence) watch(ctx context.Context, wake func()) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	was := f.Fenced()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := f.Fenced(); now != was {
			was = now
			if now && f.armed() {
				f.log.Warn("no contact with the servers for longer than the lost-node grace; stopping self-fencing pods", "grace", f.grace(), "last_contact", f.cs.LeaderContact())
			} else if !now {
				f.log.Info("in contact with the servers again; self-fencing pods follow the cluster state")
			}
			wake()
		}
	}
}

// freshBound is how long a client that starts waits for the servers before
// it reconciles from its cached view.
const freshBound = 10 * time.Second

// waitFresh waits until the watch has applied an answer in this run, or
// bound passed: the node's first pass then works from what the servers say
// now, and stops the pods replaced while it was away before it starts
// anything. While no server answers, it goes on from the cached view.
func waitFresh(ctx context.Context, cs *clientstate.Store, bound time.Duration, log *slog.Logger) {
	deadline := time.Now().Add(bound)
	for cs.LastContact().IsZero() {
		if time.Now().After(deadline) {
			log.Warn("no server answered the watch yet; reconciling from the cached view", "waited", bound)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-cs.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
