package containerd_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
)

// A container that allocates past its memory limit is killed by the
// kernel and listed as OOMKilled; one killed by a signal is not.
func TestOOMKilledContainer(t *testing.T) {
	e := setupBare(t)
	importBusybox(t, e)
	// Command substitution keeps the whole output in the shell's memory:
	// 200 MiB against a limit of 32.
	shell(t, e, runtime.ContainerSpec{ID: "oom", MemoryLimitBytes: 32 << 20},
		`x=$(head -c 200m /dev/zero | tr '\0' a); echo survived`)
	st := waitFor(t, e.rt, "oom", "exited", func(s runtime.ContainerState) bool { return s.HasTask && !s.Running })
	if st.ExitCode != 137 || !st.OOMKilled {
		t.Fatalf("state = %+v, want exit code 137 and OOMKilled", st)
	}

	shell(t, e, runtime.ContainerSpec{ID: "killed", MemoryLimitBytes: 32 << 20}, `sleep 60`)
	waitFor(t, e.rt, "killed", "running", func(s runtime.ContainerState) bool { return s.Running })
	killTask(t, e.rt, "killed", syscall.SIGKILL)
	st = waitFor(t, e.rt, "killed", "exited", func(s runtime.ContainerState) bool { return s.HasTask && !s.Running })
	if st.ExitCode != 137 || st.OOMKilled {
		t.Fatalf("state = %+v, want exit code 137 and not OOMKilled", st)
	}
}

// A containerd stopped with SIGSTOP does not answer: a call through the
// Guard returns at its deadline (the caller is not stuck), the guard
// reports the runtime unhealthy while it is stopped, and once it is
// continued, calls answer again, a new container is created and started,
// and the guard is healthy.
func TestGuardWithPausedContainerd(t *testing.T) {
	e := setupBare(t)
	importBusybox(t, e)
	g := runtime.NewGuard(e.rt, "containerd", runtime.Deadlines{Call: 2 * time.Second, UnhealthyAfter: time.Second}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.List(ctx); err != nil {
		t.Fatal(err)
	}

	pid := e.daemon.Process.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	cont := func() {
		if !continued {
			continued = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT containerd: %v", err)
			}
		}
	}
	t.Cleanup(cont) // before the daemon's cleanup, which needs it to answer

	// A list hangs: while it does the guard reports it, and it returns at
	// its deadline.
	listed := make(chan error, 1)
	start := time.Now()
	go func() { _, err := g.List(ctx); listed <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for h := g.Health(); h.Healthy; h = g.Health() {
		if time.Now().After(deadline) {
			t.Fatal("the guard still reports containerd healthy while it is stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := g.Health(); !strings.Contains(h.Message, "has not answered a list for") {
		t.Errorf("health = %+v", h)
	}
	select {
	case err := <-listed:
		if !errors.Is(err, runtime.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("List of a stopped containerd: %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("List returned after %s; its deadline was 2s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("List of a stopped containerd did not return at its deadline")
	}
	if h := g.Health(); h.Healthy {
		t.Error("healthy after a timed-out call with none answered since")
	}

	cont()
	spec := runtime.ContainerSpec{ID: "after", Image: busyboxTag, Command: []string{"sleep", "60"}}
	// The first calls after SIGCONT may still meet a backlog.
	var err error
	for i := 0; i < 5; i++ {
		if err = g.Create(ctx, spec); err == nil || errors.Is(err, runtime.ErrAlreadyExists) {
			err = nil
			break
		}
	}
	if err != nil {
		t.Fatalf("Create after SIGCONT: %v", err)
	}
	if err := g.Start(ctx, "after"); err != nil {
		t.Fatalf("Start after SIGCONT: %v", err)
	}
	waitFor(t, e.rt, "after", "running", func(s runtime.ContainerState) bool { return s.Running })
	if h := g.Health(); !h.Healthy {
		t.Errorf("health = %+v, want healthy once containerd answers", h)
	}
}
