package podnet

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The host port lock excludes a second holder, in this process too, and a
// waiter gives up with its context.
func TestLockPortmap(t *testing.T) {
	unlock, err := lockPortmap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := lockPortmap(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: %v, want the context's deadline", err)
	}
	unlock()
	again, err := lockPortmap(context.Background())
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again()
}
