package clientstate

import (
	"context"
	"errors"
	"fmt"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// Writer sends a typed write to the server named leader at addr (host:port
// of its RPC server) and returns its Reply (rpc.Client). An error means no
// Reply came back: the write may or may not have been applied.
type Writer interface {
	Write(ctx context.Context, addr, leader string, cmd state.Command, token string) (store.Reply, error)
}

var _ Writer = (*rpc.Client)(nil)

// Writes are this client node's writes: what its reconciler reports and how
// it registers. Each goes to the leader the view names, as a typed write
// the leader authorizes (a client may write only about itself and its
// pods). Nothing waits for the write to show in the view: the watch brings
// it. The fields are set once, before use; the methods are safe for
// concurrent use.
type Writes struct {
	// Node is this node's name.
	Node string
	// Store is this node's view; its Leader says where writes go.
	Store *Store
	// Client sends the writes.
	Client Writer
	// RPCAddr returns the RPC address of the server named nodeName, from
	// membership; "" when unknown.
	RPCAddr func(nodeName string) string
	// Servers returns every server's RPC address.
	Servers func() []string
}

// SetPodStatus records what this node observed of one of its pods.
func (w *Writes) SetPodStatus(ctx context.Context, id string, st api.PodStatus) error {
	_, err := w.write(ctx, &state.SetPodStatuses{Node: w.Node, Updates: []state.PodStatusUpdate{{ID: id, Status: st}}})
	return err
}

// RemovePods removes pods of this node from the state once their containers
// and network are gone.
func (w *Writes) RemovePods(ctx context.Context, ids []string) error {
	_, err := w.write(ctx, &state.RemovePods{Node: w.Node, IDs: ids})
	return err
}

// RegisterNode registers this node, or updates its record, and returns the
// record as the leader stored it, pod range included.
func (w *Writes) RegisterNode(ctx context.Context, n api.Node) (api.Node, error) {
	cmd := &state.RegisterNode{Node: n}
	reply, err := w.write(ctx, cmd)
	if err != nil {
		return api.Node{}, err
	}
	if reply.Node == nil {
		return api.Node{}, fmt.Errorf("%s %s: the leader's answer holds no node record; do all agents run the same version?", cmd.Type(), n.Name)
	}
	return *reply.Node, nil
}

// write validates cmd and sends it to the leader. When no leader is known,
// or the one the view names answers that it no longer leads, every other
// server is tried once: the leader applies the write, followers answer
// not-leader. The Reply's error is returned as it came, so its kind
// (state.ErrForbidden, ErrInvalid, ...) survives for errors.Is.
func (w *Writes) write(ctx context.Context, cmd state.Command) (store.Reply, error) {
	t := cmd.Type()
	if err := cmd.Validate(); err != nil {
		return store.Reply{}, fmt.Errorf("%s: %w", t, err)
	}
	leader := w.Store.Leader()
	tried := map[string]bool{}
	var errs []error
	if leader != "" {
		addr := w.RPCAddr(leader)
		if addr != "" {
			tried[addr] = true
			reply, err := w.Client.Write(ctx, addr, leader, cmd, "")
			if err == nil {
				_, err = reply.Result()
				if !errors.Is(err, state.ErrNotLeader) {
					return reply, err
				}
			} else if !errors.Is(err, state.ErrNotLeader) {
				// No answer from the leader: the watch will name a new one
				// if it changed; the caller retries.
				return store.Reply{}, err
			}
			errs = append(errs, err)
		} else {
			errs = append(errs, fmt.Errorf("%s: the RPC address of leader %s is not known yet: %w", t, leader, state.ErrNotLeader))
		}
	} else {
		errs = append(errs, fmt.Errorf("%s: no leader is known: %w", t, state.ErrNotLeader))
	}
	for _, addr := range w.Servers() {
		if addr == "" || tried[addr] {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		tried[addr] = true
		// Whoever is there: the leader this agent knows may have moved.
		reply, err := w.Client.Write(ctx, addr, "", cmd, "")
		if err == nil {
			_, err = reply.Result()
			if !errors.Is(err, state.ErrNotLeader) {
				return reply, err
			}
		}
		// A follower, or a server that did not answer: one of the others
		// may be the leader.
		errs = append(errs, err)
	}
	return store.Reply{}, fmt.Errorf("%s: no server took the write (tried %d); retry once a leader is elected: %w", t, len(tried), errors.Join(errs...))
}
