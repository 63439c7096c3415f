package runtime

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// The guard returns at the deadline from a call that does not (one that
// ignores its context), says so with ErrTimeout, and reports the runtime
// unhealthy while a call is outstanding past UnhealthyAfter and after a
// timeout until a call answers.
func TestGuard(t *testing.T) {
	f := NewFake()
	release := make(chan struct{})
	var mu sync.Mutex
	hang := map[string]bool{"list": true}
	f.Hook = func(_ context.Context, op, _ string) error {
		mu.Lock()
		h := hang[op]
		mu.Unlock()
		if h {
			<-release
		}
		return nil
	}
	defer close(release)
	g := NewGuard(f, "containerd", Deadlines{Call: 300 * time.Millisecond, UnhealthyAfter: 100 * time.Millisecond}, nil)
	if h := g.Health(); !h.Healthy {
		t.Fatalf("new guard: %+v", h)
	}

	listed := make(chan error, 1)
	start := time.Now()
	go func() { _, err := g.List(context.Background()); listed <- err }()
	time.Sleep(150 * time.Millisecond)
	if h := g.Health(); h.Healthy || !strings.Contains(h.Message, "containerd has not answered a list for") {
		t.Errorf("while a list hangs: %+v", h)
	}
	err := <-listed
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer within 300ms") {
		t.Fatalf("hung list: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("hung list returned after %s", d)
	}
	if h := g.Health(); h.Healthy || !strings.Contains(h.Message, "did not answer a list within its deadline") {
		t.Errorf("after the timeout: %+v", h)
	}

	// A call that answers (with an error of its own) clears it.
	if err := g.Start(context.Background(), "missing"); err == nil || errors.Is(err, ErrTimeout) {
		t.Fatalf("Start of a missing container: %v", err)
	}
	if h := g.Health(); !h.Healthy {
		t.Errorf("after a call answered: %+v", h)
	}

	// The caller's own cancellation is not the runtime's fault.
	mu.Lock()
	hang["create"] = true
	mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Create(ctx, ContainerSpec{ID: "x"}); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("cancelled create: %v", err)
	}
	if h := g.Health(); !h.Healthy {
		t.Errorf("after a cancelled call: %+v", h)
	}
}

// Pulls have a deadline of their own, and do not count for health: a long
// pull is not a hung containerd.
func TestGuardPullDeadline(t *testing.T) {
	f := NewFake()
	f.Hook = func(ctx context.Context, op, _ string) error {
		if op == "pull" {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	g := NewGuard(f, "containerd", Deadlines{Pull: 200 * time.Millisecond, Call: time.Minute, UnhealthyAfter: 50 * time.Millisecond}, nil)
	done := make(chan error, 1)
	go func() { _, err := g.EnsureImage(context.Background(), "demo:v1"); done <- err }()
	time.Sleep(100 * time.Millisecond)
	if h := g.Health(); !h.Healthy {
		t.Errorf("during a long pull: %+v", h)
	}
	if err := <-done; !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "pull demo:v1") {
		t.Fatalf("pull past its deadline: %v", err)
	}
}
