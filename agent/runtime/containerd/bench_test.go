package containerd_test

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
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

// BenchmarkStreamExec measures an exec of `true` from api.Client.Exec to
// its exit code (WebSocket upgrade, exec process start, wait, delete),
// beside `ctr tasks exec` of the same command in the same container.
//
//	go test -run '^$' -bench StreamExec -benchtime 20x ./agent/runtime/containerd/
func BenchmarkStreamExec(b *testing.B) {
	e := setupBare(b)
	importBusybox(b, e)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	spec := runtime.ContainerSpec{ID: "bench", Image: busyboxTag, Command: []string{"sleep", "3600"}}
	if err := e.rt.Create(ctx, spec); err != nil {
		b.Fatal(err)
	}
	if err := e.rt.Start(ctx, spec.ID); err != nil {
		b.Fatal(err)
	}
	c := execServer(b, e)
	b.Run("api.Client.Exec", func(b *testing.B) {
		for b.Loop() {
			code, err := c.Exec(ctx, "default", "pod", api.ExecOptions{Container: "bench", Command: []string{"true"}}, nil, nil, nil, nil)
			if err != nil || code != 0 {
				b.Fatalf("exec: %d, %v", code, err)
			}
		}
	})
	b.Run("ctr tasks exec", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			out, err := exec.CommandContext(ctx, "ctr", "-a", e.cfg.Address, "-n", testNamespace, "tasks", "exec", "--exec-id", fmt.Sprintf("ctr-%d", i), "bench", "true").CombinedOutput()
			if err != nil {
				b.Fatalf("ctr tasks exec: %v\n%s", err, out)
			}
		}
	})
}
