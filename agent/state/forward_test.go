package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// forwarderFunc is a Forwarder made of a function.
type forwarderFunc func(ctx context.Context, leaderID string, entry []byte) (uint64, []byte, error)

func (f forwarderFunc) Forward(ctx context.Context, leaderID string, entry []byte) (uint64, []byte, error) {
	return f(ctx, leaderID, entry)
}

func TestResponseRoundTrip(t *testing.T) {
	d := web()
	d.Generation, d.CreateIndex = 3, 9
	n := api.Node{Name: "n1", PodCIDR: "10.244.3.0/24", Labels: map[string]string{"a": "b"}}
	for _, tt := range []struct {
		name    string
		fsmResp any
		err     error
		want    any
		wantIs  error
	}{
		{"nothing", nil, nil, nil, nil},
		{"deployment", d, nil, d, nil},
		{"node", n, nil, n, nil},
		{"exists", fmt.Errorf("deployment default/web: %w", ErrExists), nil, nil, ErrExists},
		{"not found", fmt.Errorf("node x: %w", ErrNotFound), nil, nil, ErrNotFound},
		{"conflict", fmt.Errorf("remove: %w", ErrConflict), nil, nil, ErrConflict},
		{"not leader", nil, fmt.Errorf("state: x: %w", ErrNotLeader), nil, ErrNotLeader},
		{"leader closed", nil, fmt.Errorf("state: x: %w", errClosed), nil, ErrNotLeader},
		{"deadline", nil, fmt.Errorf("state: x: %w", context.DeadlineExceeded), nil, context.DeadlineExceeded},
		{"plain", errors.New("cluster config: bad"), nil, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeResponse(tt.fsmResp, tt.err)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeResponse(b)
			if err != nil {
				t.Fatal(err)
			}
			wantErr := tt.err
			if e, ok := tt.fsmResp.(error); ok {
				wantErr = e
			}
			if wantErr == nil {
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %#v, want %#v", got, tt.want)
				}
				return
			}
			gotErr, ok := got.(error)
			if !ok || gotErr.Error() != wantErr.Error() {
				t.Fatalf("got %#v, want the error %q", got, wantErr)
			}
			if tt.wantIs != nil && !errors.Is(gotErr, tt.wantIs) {
				t.Errorf("%v is not %v", gotErr, tt.wantIs)
			}
			for _, other := range []error{ErrNotFound, ErrExists, ErrConflict, ErrNotLeader} {
				if other != tt.wantIs && errors.Is(gotErr, other) {
					t.Errorf("%v is also %v", gotErr, other)
				}
			}
		})
	}
	if _, err := encodeResponse(42, nil); err == nil {
		t.Error("encoded an answer of an unknown type")
	}
	if _, err := decodeResponse([]byte("{")); err == nil {
		t.Error("decoded garbage")
	}
}

func TestForwardWithoutLeader(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = false
	cfg.Forwarder = forwarderFunc(func(context.Context, string, []byte) (uint64, []byte, error) {
		t.Error("Forward called with no leader known")
		return 0, nil, errors.New("no")
	})
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	start := time.Now()
	_, err = s.CreateDeployment(context.Background(), web())
	took := time.Since(start)
	if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "no raft leader is reachable from this agent: it may be cut off from the majority of servers; retry, or send the request to another agent") {
		t.Errorf("write with no leader: %v", err)
	}
	if wait := 2 * cfg.ElectionTimeout; took < wait || took > wait+time.Second {
		t.Errorf("gave up after %s; want about %s", took, wait)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := s.SetPodStatus(ctx, "default/x", api.PodStatus{}); !errors.Is(err, ErrNotLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("write with a short deadline: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the deadline did not bound the wait: %s", took)
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
	var mode atomic.Value // func(...) for the next Forward
	client := c.open("client-1", true, func(cfg *Config) {
		cfg.Forwarder = forwarderFunc(func(ctx context.Context, id string, entry []byte) (uint64, []byte, error) {
			return mode.Load().(forwarderFunc)(ctx, id, entry)
		})
	})
	if err := leader.AddNonvoter(ctx, client.LocalID(), string(client.localAddr)); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t, leader, client)

	// A transport that rebuilds the leader's error as one of our sentinels
	// and drops resp.
	asSentinel := forwarderFunc(func(ctx context.Context, id string, entry []byte) (uint64, []byte, error) {
		i, resp, err := c.Forward(ctx, id, entry)
		if ans, _ := decodeResponse(resp); err != nil && ans != nil {
			err = fmt.Errorf("rpc: %w", errors.Unwrap(ans.(error)))
		}
		return i, nil, err
	})
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
		{"the leader is unreachable", func(context.Context, string, []byte) (uint64, []byte, error) {
			return 0, nil, errors.New("dial tcp: connection refused")
		}, "x", []error{ErrNotLeader}, "forwarding to leader server-"},
		{"a transport that keeps our sentinels", asSentinel, "dup", []error{ErrExists}, "rpc: already exists"},
		{"an answer from another version", func(ctx context.Context, id string, entry []byte) (uint64, []byte, error) {
			return 1, []byte("[1,2]"), nil
		}, "x", nil, "does not decode"},
		{"a committed write this agent never applies", func(ctx context.Context, id string, entry []byte) (uint64, []byte, error) {
			b, _ := encodeResponse(nil, nil)
			return leader.Index() + 1000, b, nil
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
}
