package clientstate

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// servers of the write tests: s1 at a, s2 at b, s3 at c.
var serverAddrs = map[string]string{"s1": "a:4648", "s2": "b:4648", "s3": "c:4648"}

func notLeader(addr string) store.Reply {
	return store.NewReply(0, nil, fmt.Errorf("store: set-pod-statuses: server at %s: %w", addr, state.ErrNotLeader))
}

// newWrites returns Writes of node n1 whose view names leader, and the
// fake that answers for the servers: answer per address (nil: applied).
func newWrites(t *testing.T, leader string, answer map[string]func() (store.Reply, error)) (*Writes, *FakeWriter) {
	t.Helper()
	s := memStore(t)
	if err := s.Apply(rpc.WatchResponse{Index: 1, Leader: leader}); err != nil {
		t.Fatal(err)
	}
	fw := &FakeWriter{Answer: func(addr, _ string, _ state.Command) (store.Reply, error) {
		if a := answer[addr]; a != nil {
			return a()
		}
		return store.Reply{Index: 2}, nil
	}}
	w := &Writes{
		Node:    "n1",
		Store:   s,
		Client:  fw,
		RPCAddr: func(name string) string { return serverAddrs[name] },
		Servers: fixed("a:4648", "b:4648", "c:4648"),
	}
	return w, fw
}

func addrsOf(calls []WriteCall) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Addr)
	}
	return out
}

func TestWritesRouting(t *testing.T) {
	refused := func(addr string) func() (store.Reply, error) {
		return func() (store.Reply, error) { return notLeader(addr), nil }
	}
	unreachable := func() (store.Reply, error) { return store.Reply{}, errors.New("dial tcp: connection refused") }
	tests := []struct {
		name      string
		leader    string
		answer    map[string]func() (store.Reply, error)
		wantAddrs []string
		wantErr   error // nil: applied, unless noReply
		noReply   bool  // an error without a Reply, not a not-leader one
	}{
		{"the leader takes it", "s2", nil, []string{"b:4648"}, nil, false},
		{"a former leader says not-leader: the others are tried once each", "s1",
			map[string]func() (store.Reply, error){"a:4648": refused("a"), "b:4648": refused("b")},
			[]string{"a:4648", "b:4648", "c:4648"}, nil, false},
		{"no leader known: every server until one takes it", "",
			map[string]func() (store.Reply, error){"a:4648": refused("a")},
			[]string{"a:4648", "b:4648"}, nil, false},
		{"the leader's address is unknown", "s9", nil, []string{"a:4648"}, nil, false},
		{"everyone says not-leader", "s1",
			map[string]func() (store.Reply, error){"a:4648": refused("a"), "b:4648": refused("b"), "c:4648": refused("c")},
			[]string{"a:4648", "b:4648", "c:4648"}, state.ErrNotLeader, false},
		{"a follower that does not answer is passed over", "",
			map[string]func() (store.Reply, error){"a:4648": unreachable},
			[]string{"a:4648", "b:4648"}, nil, false},
		{"an unreachable leader is the caller's to retry", "s1",
			map[string]func() (store.Reply, error){"a:4648": unreachable},
			[]string{"a:4648"}, nil, true},
		{"the leader forbids it: no other server is asked", "s1",
			map[string]func() (store.Reply, error){"a:4648": func() (store.Reply, error) {
				return store.NewReply(0, nil, fmt.Errorf("rpc: n1 may not write about pod default/x of n2: %w", state.ErrForbidden)), nil
			}},
			[]string{"a:4648"}, state.ErrForbidden, false},
		{"the leader finds it invalid", "s1",
			map[string]func() (store.Reply, error){"a:4648": func() (store.Reply, error) {
				return store.NewReply(0, nil, fmt.Errorf("%w: pod statuses: bad", state.ErrInvalid)), nil
			}},
			[]string{"a:4648"}, state.ErrInvalid, false},
		{"the state refuses it", "s1",
			map[string]func() (store.Reply, error){"a:4648": func() (store.Reply, error) {
				return store.NewReply(7, state.ErrNotFound, nil), nil
			}},
			[]string{"a:4648"}, state.ErrNotFound, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, fw := newWrites(t, tt.leader, tt.answer)
			err := w.SetPodStatus(context.Background(), "default/web-a", api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.244.1.5"})
			switch {
			case tt.noReply:
				if err == nil || errors.Is(err, state.ErrNotLeader) {
					t.Fatalf("err = %v, want the transport error", err)
				}
			case tt.wantErr == nil && err != nil:
				t.Fatalf("err = %v, want applied", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			calls := fw.Calls()
			if got := addrsOf(calls); !reflect.DeepEqual(got, tt.wantAddrs) {
				t.Fatalf("writes went to %v, want %v", got, tt.wantAddrs)
			}
			want := &state.SetPodStatuses{Node: "n1", Updates: []state.PodStatusUpdate{{ID: "default/web-a", Status: api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.244.1.5"}}}}
			for i, c := range calls {
				// The first try may go to the leader the view names; the
				// others go to whoever is at each server's address.
				okLeader := c.Leader == "" || (i == 0 && c.Leader == tt.leader)
				if !reflect.DeepEqual(c.Cmd, want) || c.Token != "" || !okLeader {
					t.Fatalf("write %d = %+v, want %+v without a token, to leader %q or whoever answers", i, c, want, tt.leader)
				}
			}
		})
	}
}

func TestWritesValidateFirst(t *testing.T) {
	w, fw := newWrites(t, "s1", nil)
	ctx := context.Background()
	if err := w.RemovePods(ctx, nil); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("RemovePods(nil) = %v, want ErrInvalid", err)
	}
	if err := w.SetPodStatus(ctx, "no-slash", api.PodStatus{}); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("SetPodStatus(bad ID) = %v, want ErrInvalid", err)
	}
	if _, err := w.RegisterNode(ctx, api.Node{Name: "n1", Address: "not an address"}); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("RegisterNode(bad address) = %v, want ErrInvalid", err)
	}
	if calls := fw.Calls(); len(calls) != 0 {
		t.Fatalf("invalid writes were sent: %+v", calls)
	}
}

func TestRemovePods(t *testing.T) {
	w, fw := newWrites(t, "s3", nil)
	if err := w.RemovePods(context.Background(), []string{"default/web-a", "default/web-b"}); err != nil {
		t.Fatal(err)
	}
	calls := fw.Calls()
	want := &state.RemovePods{Node: "n1", IDs: []string{"default/web-a", "default/web-b"}}
	if len(calls) != 1 || calls[0].Addr != "c:4648" || calls[0].Leader != "s3" || !reflect.DeepEqual(calls[0].Cmd, want) {
		t.Fatalf("writes = %+v, want %+v to s3 at c:4648", calls, want)
	}
}

func TestRegisterNode(t *testing.T) {
	n := testNode("n1", "192.168.1.11", "")
	stored := n
	stored.PodCIDR, stored.ModifyIndex = "10.244.1.0/24", 12
	w, fw := newWrites(t, "s1", map[string]func() (store.Reply, error){
		"a:4648": func() (store.Reply, error) { return store.NewReply(12, stored, nil), nil },
	})
	got, err := w.RegisterNode(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, stored) {
		t.Fatalf("RegisterNode = %+v, want %+v", got, stored)
	}
	if calls := fw.Calls(); len(calls) != 1 || !reflect.DeepEqual(calls[0].Cmd, &state.RegisterNode{Node: n}) {
		t.Fatalf("writes = %+v", calls)
	}

	// A leader of another version answering without the record.
	w, _ = newWrites(t, "s1", nil)
	if _, err := w.RegisterNode(context.Background(), n); err == nil {
		t.Fatal("RegisterNode with no node in the answer succeeded")
	}
}

func TestWritesStopWithTheContext(t *testing.T) {
	w, fw := newWrites(t, "", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.RemovePods(ctx, []string{"default/web-a"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if calls := fw.Calls(); len(calls) != 0 {
		t.Fatalf("writes after the context ended: %+v", calls)
	}
}
