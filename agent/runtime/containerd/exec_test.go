package containerd_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
)

// The demo image holds nothing but /app, so the tests exec /app itself. It
// inherits the container's environment: where the container's own /app
// listens on PORT=8080, a second one fails at once (exit code 1, "address
// already in use" on stderr); where PORT=0, it listens too and runs until
// killed, which is how a command that hangs is made here.
func TestExec(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.importDemo(t)

	start := func(id, port string) {
		t.Helper()
		spec := runtime.ContainerSpec{ID: id, Image: demoTag, Env: map[string]string{"PORT": port, "VERSION": "v1-exec"},
			LogDir: filepath.Join(e.logDir, id)}
		if err := e.rt.Create(ctx, spec); err != nil {
			t.Fatalf("Create %s: %v", id, err)
		}
		if err := e.rt.Start(ctx, id); err != nil {
			t.Fatalf("Start %s: %v", id, err)
		}
		waitFile(t, spec.LogDir, "listening on :"+port)
	}
	start("busy", "8080")
	start("idle", "0")

	t.Run("exit code and output", func(t *testing.T) {
		code, out, err := e.rt.Exec(ctx, "busy", []string{"/app"}, 10*time.Second)
		if err != nil || code != 1 || !bytes.Contains(out, []byte("address already in use")) {
			t.Fatalf("Exec = %d, %q, %v; want exit code 1 and the bind error on stderr", code, out, err)
		}
		checkOnlyInit(t, e, "busy")
	})
	t.Run("concurrent", func(t *testing.T) {
		const n = 4
		codes, errs := make([]int, n), make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], _, errs[i] = e.rt.Exec(ctx, "busy", []string{"/app"}, 10*time.Second)
			}()
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || codes[i] != 1 {
				t.Errorf("Exec %d = %d, %v; want exit code 1", i, codes[i], errs[i])
			}
		}
		checkOnlyInit(t, e, "busy")
	})
	t.Run("missing command", func(t *testing.T) {
		code, _, err := e.rt.Exec(ctx, "busy", []string{"/nope"}, 10*time.Second)
		if err == nil || code != -1 {
			t.Fatalf("Exec of a missing binary = %d, %v; want -1 and an error", code, err)
		}
		if _, _, err := e.rt.Exec(ctx, "busy", nil, time.Second); err == nil {
			t.Error("Exec of an empty command: no error")
		}
		checkOnlyInit(t, e, "busy")
	})
	t.Run("timeout kills the command", func(t *testing.T) {
		begin := time.Now()
		code, out, err := e.rt.Exec(ctx, "idle", []string{"/app"}, time.Second)
		if !errors.Is(err, runtime.ErrExecTimeout) || code != -1 {
			t.Fatalf("Exec = %d, %v; want -1 and an error wrapping ErrExecTimeout", code, err)
		}
		if d := time.Since(begin); d > 8*time.Second {
			t.Errorf("Exec with a 1s timeout took %s", d)
		}
		// The container's environment reached the command.
		if !strings.Contains(string(out), "version=v1-exec listening on :0") {
			t.Errorf("output = %q, want the demo's start line with the container's VERSION", out)
		}
		checkOnlyInit(t, e, "idle")
	})
	t.Run("cancelled context kills the command", func(t *testing.T) {
		cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer ccancel()
		_, _, err := e.rt.Exec(cctx, "idle", []string{"/app"}, time.Minute)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, runtime.ErrExecTimeout) {
			t.Fatalf("Exec = %v; want the context's error", err)
		}
		checkOnlyInit(t, e, "idle")
	})
	t.Run("not running", func(t *testing.T) {
		if _, err := e.rt.Stop(ctx, "idle", time.Second); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.rt.Exec(ctx, "idle", []string{"/app"}, time.Second); err == nil || !strings.Contains(err.Error(), "not running") {
			t.Errorf("Exec in a stopped container: %v, want a 'not running' error", err)
		}
		if _, _, err := e.rt.Exec(ctx, "nope", []string{"/app"}, time.Second); err == nil {
			t.Error("Exec in a missing container: no error")
		}
	})

	for _, id := range []string{"busy", "idle"} {
		if err := e.rt.Remove(ctx, id); err != nil {
			t.Fatalf("Remove %s: %v", id, err)
		}
	}
	assertEmpty(t, e.rt, e.cfg.Snapshotter)
}

// checkOnlyInit checks that the container's task runs its own process only:
// Exec left no process behind.
func checkOnlyInit(t *testing.T, e *env, id string) {
	t.Helper()
	ctx := nsCtx(context.Background())
	c, err := e.rt.Client().LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := task.Pids(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == 1 && pids[0].Pid == task.Pid() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s runs %d processes after Exec, want only its own (pid %d): %+v", id, len(pids), task.Pid(), pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
