package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// forwarderFunc is a Forwarder made of a function.
type forwarderFunc func(ctx context.Context, leaderID string, cmd state.Command) (Reply, error)

func (f forwarderFunc) Forward(ctx context.Context, leaderID string, cmd state.Command) (Reply, error) {
	return f(ctx, leaderID, cmd)
}

var sentinels = []error{state.ErrNotFound, state.ErrExists, state.ErrConflict, state.ErrNotLeader,
	state.ErrInvalid, state.ErrForbidden, context.DeadlineExceeded, context.Canceled}

// TestReplyRoundTrip: what the leader answers a forwarded write crosses
// the wire as JSON and comes out as the FSM answered it, errors keeping
// their message and their kind for errors.Is.
func TestReplyRoundTrip(t *testing.T) {
	d := web()
	d.Generation, d.CreateIndex = 3, 9
	n := api.Node{Name: "n1", Address: "192.0.2.1", PodCIDR: "10.244.3.0/24", Labels: map[string]string{"a": "b"}}
	in := api.Ingress{Namespace: "default", Name: "shop", DefaultBackend: &api.IngressBackend{Service: "web", Port: 80},
		TLS: []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: "CERT", KeySHA256: "abc"}}, CreateIndex: 4, ModifyIndex: 4}
	for _, tt := range []struct {
		name    string
		index   uint64
		fsmResp any
		err     error
		want    any
		wantIs  error
		kind    string
	}{
		{"nothing", 4, nil, nil, nil, nil, ""},
		{"deployment", 4, d, nil, d, nil, ""},
		{"node", 4, n, nil, n, nil, ""},
		{"ingress", 4, in, nil, in, nil, ""},
		{"exists", 4, fmt.Errorf("deployment default/web: %w", state.ErrExists), nil, nil, state.ErrExists, KindExists},
		{"not found", 4, fmt.Errorf("node x: %w", state.ErrNotFound), nil, nil, state.ErrNotFound, KindNotFound},
		{"conflict", 4, fmt.Errorf("remove: %w", state.ErrConflict), nil, nil, state.ErrConflict, KindConflict},
		{"skipped as invalid", 4, fmt.Errorf("state: raft entry 4 skipped: %w", fmt.Errorf("%w: bad", state.ErrInvalid)), nil, nil, state.ErrInvalid, KindInvalid},
		{"invalid", 0, nil, fmt.Errorf("%w: deployment name: bad", state.ErrInvalid), nil, state.ErrInvalid, KindInvalid},
		{"forbidden", 0, nil, fmt.Errorf("rpc: client-1 may not write about node server-1: %w", state.ErrForbidden), nil, state.ErrForbidden, KindForbidden},
		{"not leader", 0, nil, fmt.Errorf("store: x: %w", state.ErrNotLeader), nil, state.ErrNotLeader, KindNotLeader},
		{"leader closed", 0, nil, fmt.Errorf("store: x: %w", errClosed), nil, state.ErrNotLeader, KindNotLeader},
		{"not leader wins over the object's kind", 0, nil, fmt.Errorf("%w (%w)", state.ErrNotLeader, state.ErrNotFound), nil, state.ErrNotLeader, KindNotLeader},
		{"deadline", 0, nil, fmt.Errorf("store: x: %w", context.DeadlineExceeded), nil, context.DeadlineExceeded, KindDeadline},
		{"canceled", 0, nil, fmt.Errorf("store: x: %w", context.Canceled), nil, context.Canceled, KindCanceled},
		{"plain", 0, nil, errors.New("cluster config: bad"), nil, nil, KindInternal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(NewReply(tt.index, tt.fsmResp, tt.err))
			if err != nil {
				t.Fatal(err)
			}
			var reply Reply
			if err := json.Unmarshal(b, &reply); err != nil {
				t.Fatal(err)
			}
			if reply.Index != tt.index {
				t.Errorf("index %d, want %d", reply.Index, tt.index)
			}
			got, gotErr := reply.Result()
			wantErr := tt.err
			if e, ok := tt.fsmResp.(error); ok {
				wantErr = e
			}
			if wantErr == nil {
				if gotErr != nil || !reflect.DeepEqual(got, tt.want) || reply.Error != nil {
					t.Errorf("got %#v, %v; want %#v", got, gotErr, tt.want)
				}
				return
			}
			if got != nil || gotErr == nil || gotErr.Error() != wantErr.Error() {
				t.Fatalf("got %#v, %v; want the error %q", got, gotErr, wantErr)
			}
			if reply.Error.Kind != tt.kind || ErrorKind(gotErr) != tt.kind {
				t.Errorf("kind %q on the wire, %q after; want %q", reply.Error.Kind, ErrorKind(gotErr), tt.kind)
			}
			if tt.wantIs != nil && !errors.Is(gotErr, tt.wantIs) {
				t.Errorf("%v is not %v", gotErr, tt.wantIs)
			}
			for _, other := range sentinels {
				if other != tt.wantIs && errors.Is(gotErr, other) {
					t.Errorf("%v is also %v", gotErr, other)
				}
			}
		})
	}
	var r Reply
	if err := json.Unmarshal([]byte(`{"index":3,"error":{"kind":"from_the_future","message":"odd"}}`), &r); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Result(); err == nil || err.Error() != "odd" || ErrorKind(err) != KindInternal {
		t.Errorf("a kind this agent does not know: %v (kind %s)", err, ErrorKind(err))
	}
}

func TestErrorKinds(t *testing.T) {
	for _, tt := range []struct {
		kind     string
		sentinel error
		status   int
	}{
		{KindNotFound, state.ErrNotFound, http.StatusNotFound},
		{KindExists, state.ErrExists, http.StatusConflict},
		{KindConflict, state.ErrConflict, http.StatusConflict},
		{KindNotLeader, state.ErrNotLeader, http.StatusServiceUnavailable},
		{KindInvalid, state.ErrInvalid, http.StatusUnprocessableEntity},
		{KindForbidden, state.ErrForbidden, http.StatusForbidden},
		{KindDeadline, context.DeadlineExceeded, http.StatusServiceUnavailable},
		{KindCanceled, context.Canceled, 499},
		{KindInternal, nil, http.StatusInternalServerError},
		{"from_the_future", nil, http.StatusInternalServerError},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			if got := HTTPStatus(tt.kind); got != tt.status {
				t.Errorf("HTTPStatus = %d, want %d", got, tt.status)
			}
			if got := KindError(tt.kind); got != tt.sentinel {
				t.Errorf("KindError = %v, want %v", got, tt.sentinel)
			}
			if tt.sentinel != nil {
				if got := ErrorKind(fmt.Errorf("wrapped: %w", tt.sentinel)); got != tt.kind {
					t.Errorf("ErrorKind(%v) = %q", tt.sentinel, got)
				}
				if w := NewWireError(fmt.Errorf("x: %w", tt.sentinel)); w.Kind != tt.kind || !errors.Is(w.Err(), tt.sentinel) || w.Err().Error() != "x: "+tt.sentinel.Error() {
					t.Errorf("wire error %+v -> %v", w, w.Err())
				}
			}
		})
	}
}

func TestForwardWithoutLeader(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = false
	cfg.Forwarder = forwarderFunc(func(context.Context, string, state.Command) (Reply, error) {
		t.Error("Forward called with no leader known")
		return Reply{}, errors.New("no")
	})
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	start := time.Now()
	_, err = s.CreateDeployment(context.Background(), web())
	took := time.Since(start)
	if !errors.Is(err, state.ErrNotLeader) || !strings.Contains(err.Error(), "no raft leader is reachable from this agent: it may be cut off from the majority of servers; retry, or send the request to another agent") {
		t.Errorf("write with no leader: %v", err)
	}
	if wait := 2 * cfg.ElectionTimeout; took < wait || took > wait+time.Second {
		t.Errorf("gave up after %s; want about %s", took, wait)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := s.SetPodStatus(ctx, "default/x", api.PodStatus{}); !errors.Is(err, state.ErrNotLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("write with a short deadline: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the deadline did not bound the wait: %s", took)
	}
	// An invalid write fails before any of that.
	start = time.Now()
	if err := s.UpsertNode(context.Background(), api.Node{Name: "x"}); !errors.Is(err, state.ErrInvalid) || time.Since(start) > 50*time.Millisecond {
		t.Errorf("invalid write with no leader: %v after %s", err, time.Since(start))
	}
}

// TestForwardOutcomes drives a client's writes through Forwarders that
// fail in the ways a network and an RPC layer can.
func TestForwardOutcomes(t *testing.T) {
	ctx := testCtx(t)
	c := newTestCluster(t)
	// So long that only the leader's nudge (see nudgeFollowers) can make a
	// forwarded write return quickly.
	const commitTimeout = 10 * time.Second
	c.mods = append(c.mods, func(cfg *Config) { cfg.CommitTimeout = commitTimeout })
	servers := c.startServers(3)
	leader := waitLeader(t, servers...)
	var mode atomic.Value // forwarderFunc for the next Forward
	client := c.open("client-1", true, func(cfg *Config) {
		cfg.Forwarder = forwarderFunc(func(ctx context.Context, id string, cmd state.Command) (Reply, error) {
			return mode.Load().(forwarderFunc)(ctx, id, cmd)
		})
	})
	if err := leader.AddNonvoter(ctx, client.LocalID(), string(client.localAddr)); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t, leader, client)

	dup := web()
	dup.Name = "dup"
	if _, err := leader.CreateDeployment(ctx, dup); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		fwd     forwarderFunc
		create  string
		wantIs  []error
		wantMsg string
	}{
		{"through", c.Forward, "through", nil, ""},
		{"refused by the leader's FSM", c.Forward, "dup", []error{state.ErrExists}, "already exists"},
		{"refused by the leader's RPC before proposing", func(context.Context, string, state.Command) (Reply, error) {
			return NewReply(0, nil, fmt.Errorf("rpc: client-1 may not write deployments: %w", state.ErrForbidden)), nil
		}, "x", []error{state.ErrForbidden}, "may not write deployments"},
		{"the leader is unreachable", func(context.Context, string, state.Command) (Reply, error) {
			return Reply{}, errors.New("dial tcp: connection refused")
		}, "x", []error{state.ErrNotLeader}, "forwarding to leader server-"},
		{"a transport error of a known kind", func(context.Context, string, state.Command) (Reply, error) {
			return Reply{}, fmt.Errorf("leader not in membership yet: %w", state.ErrNotLeader)
		}, "x", []error{state.ErrNotLeader}, "forwarded to leader server-"},
		{"the leader stepped down meanwhile", func(ctx context.Context, id string, cmd state.Command) (Reply, error) {
			return viaWire(ctx, cmd, followersOf(leader, servers)[0].ApplyLocal)
		}, "x", []error{state.ErrNotLeader}, "not the raft leader"},
		{"an answer from another version", func(context.Context, string, state.Command) (Reply, error) {
			return Reply{Index: leader.Index(), Node: &api.Node{Name: "n1"}}, nil
		}, "x", nil, "do all agents run the same version"},
		{"an answer without an index or an error", func(context.Context, string, state.Command) (Reply, error) {
			return Reply{}, nil
		}, "x", nil, "without a raft index"},
		{"a committed write this agent never applies", func(context.Context, string, state.Command) (Reply, error) {
			return Reply{Index: leader.Index() + 1000}, nil
		}, "x", []error{context.DeadlineExceeded}, "committed the write at index"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mode.Store(tt.fwd)
			d := web()
			d.Name = tt.create
			wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			got, err := client.CreateDeployment(wctx, d)
			if tt.wantIs == nil && tt.wantMsg == "" {
				if err != nil || got.Name != d.Name {
					t.Fatalf("got %+v, %v (after %s; CommitTimeout is %s)", got, err, time.Since(start), commitTimeout)
				}
				// Visible here as soon as the write returns.
				if local, ok := client.Deployment("default", d.Name); !ok || !reflect.DeepEqual(local, got) {
					t.Errorf("read after the write: %+v, %v", local, ok)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantMsg)
			}
			for _, want := range tt.wantIs {
				if !errors.Is(err, want) {
					t.Errorf("%v is not %v", err, want)
				}
			}
		})
	}
	// Nothing refused reached the log: only "through" was created.
	mode.Store(forwarderFunc(c.Forward))
	if _, ok := leader.Deployment("default", "x"); ok {
		t.Error("a refused write was applied")
	}
}

// TestForwardSendsWhatTheWriteSays: the leader gets the typed command the
// agent built, valid, with this agent's name where a node writes about
// itself.
func TestForwardSendsWhatTheWriteSays(t *testing.T) {
	ctx := testCtx(t)
	c := newTestCluster(t)
	sent := make(chan state.Command, 10)
	recorder := forwarderFunc(func(ctx context.Context, id string, cmd state.Command) (Reply, error) {
		sent <- cmd
		return c.Forward(ctx, id, cmd)
	})
	c.mods = append(c.mods, func(cfg *Config) { cfg.Forwarder = recorder })
	servers := c.startServers(3)
	leader := waitLeader(t, servers...)
	f := followersOf(leader, servers)[0]
	if err := f.SetPodStatus(ctx, "default/web-a", api.PodStatus{Phase: api.PodRunning}); err != nil {
		t.Fatal(err)
	}
	if err := f.RemovePods(ctx, []string{"default/web-a"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []state.Command{
		&state.SetPodStatuses{Node: f.LocalID(), Updates: []state.PodStatusUpdate{{ID: "default/web-a", Status: api.PodStatus{Phase: api.PodRunning}}}},
		&state.RemovePods{Node: f.LocalID(), IDs: []string{"default/web-a"}},
	} {
		select {
		case got := <-sent:
			if !reflect.DeepEqual(got, want) {
				t.Errorf("forwarded %#v, want %#v", got, want)
			}
		default:
			t.Fatalf("%s not forwarded", want.Type())
		}
	}
}
