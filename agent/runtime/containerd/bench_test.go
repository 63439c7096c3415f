package containerd_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
)

// BenchmarkList measures List with 50 running containers, the load the node
// reconciler polls every second.
//
//	go test -run '^$' -bench List ./agent/runtime/containerd/
func BenchmarkList(b *testing.B) {
	e := setup(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e.importDemo(b)
	const n = 50
	for i := range n {
		id := fmt.Sprintf("bench-%02d", i)
		if err := e.rt.Create(ctx, runtime.ContainerSpec{ID: id, Image: demoTag, Env: map[string]string{"PORT": fmt.Sprint(20000 + i)}}); err != nil {
			b.Fatal(err)
		}
		if err := e.rt.Start(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		list, err := e.rt.List(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(list) != n {
			b.Fatalf("List returned %d containers, want %d", len(list), n)
		}
	}
}
