package containerd

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"

	"github.com/flotilla-io/flotilla/agent/runtime"
)

// ioDrainWait bounds how long Exec waits, after the command exited, for
// its output to arrive: a child it left behind may hold the pipes open.
const ioDrainWait = time.Second

// Exec runs cmd in the container's running task as an exec process with the
// container's environment, working directory, user and capabilities (its
// OCI process spec with other arguments), as the CRI plugin does. Output is
// read through FIFOs into memory, bounded to runtime.ExecOutputLimit. A
// command that outlives timeout, or ctx, is killed; the exec process is
// deleted in every case.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error) {
	if len(cmd) == 0 {
		return -1, nil, fmt.Errorf("exec in container %s: empty command", id)
	}
	ctx = r.nsCtx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return -1, nil, fmt.Errorf("exec in container %s: %w", id, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return -1, nil, fmt.Errorf("exec in container %s: not running", id)
		}
		return -1, nil, fmt.Errorf("exec in container %s: load task: %w", id, err)
	}
	if st, err := task.Status(ctx); err != nil {
		return -1, nil, fmt.Errorf("exec in container %s: task status: %w", id, err)
	} else if st.Status != containerd.Running {
		return -1, nil, fmt.Errorf("exec in container %s: not running (%s)", id, st.Status)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return -1, nil, fmt.Errorf("exec in container %s: read spec: %w", id, err)
	}
	if spec.Process == nil {
		return -1, nil, fmt.Errorf("exec in container %s: spec has no process", id)
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = false
	pspec.ConsoleSize = nil

	out := &boundedBuffer{max: runtime.ExecOutputLimit}
	execID := "exec-" + rand.Text()
	proc, err := task.Exec(ctx, execID, &pspec, cio.NewCreator(cio.WithStreams(nil, out, out)))
	if err != nil {
		return -1, nil, fmt.Errorf("exec %q in container %s: %w", cmd[0], id, err)
	}
	// Cleanup must happen even when ctx has ended; it is bounded on its own.
	cleanupCtx, cancelCleanup := context.WithTimeout(context.WithoutCancel(ctx), killWait+5*time.Second)
	defer cancelCleanup()
	defer func() {
		if _, err := proc.Delete(cleanupCtx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			r.log.Warn("deleting exec process", "id", id, "exec_id", execID, "err", err)
		}
	}()
	// Waiting on a context of its own: a cancelled ctx must not end the
	// wait before the kill below has taken effect.
	waitCtx, cancelWait := context.WithCancel(cleanupCtx)
	defer cancelWait()
	exitC, err := proc.Wait(waitCtx)
	if err != nil {
		return -1, nil, fmt.Errorf("exec %q in container %s: wait: %w", cmd[0], id, err)
	}
	if err := proc.Start(ctx); err != nil {
		return -1, nil, fmt.Errorf("exec %q in container %s: %w", cmd[0], id, err)
	}

	var timeoutC <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timeoutC = t.C
	}
	select {
	case es := <-exitC:
		code, _, err := es.Result()
		if err != nil {
			return -1, out.Bytes(), fmt.Errorf("exec %q in container %s: wait: %w", cmd[0], id, err)
		}
		drainIO(proc.IO(), ioDrainWait)
		return int(code), out.Bytes(), nil
	case <-timeoutC:
		r.killExec(cleanupCtx, proc, exitC, id, execID)
		return -1, out.Bytes(), fmt.Errorf("exec %q in container %s: %w after %s", cmd[0], id, runtime.ErrExecTimeout, timeout)
	case <-ctx.Done():
		r.killExec(cleanupCtx, proc, exitC, id, execID)
		return -1, out.Bytes(), fmt.Errorf("exec %q in container %s: %w", cmd[0], id, ctx.Err())
	}
}

// killExec SIGKILLs an exec process and waits, bounded, for it to exit.
func (r *Runtime) killExec(ctx context.Context, proc containerd.Process, exitC <-chan containerd.ExitStatus, id, execID string) {
	if err := proc.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		r.log.Warn("killing exec process", "id", id, "exec_id", execID, "err", err)
		return
	}
	if !waitExit(ctx, exitC, killWait) {
		r.log.Warn("exec process did not exit after SIGKILL", "id", id, "exec_id", execID, "waited", killWait)
	}
}

// drainIO waits up to d for the process's output to be copied.
func drainIO(io cio.IO, d time.Duration) {
	if io == nil {
		return
	}
	done := make(chan struct{})
	// Ends at the latest when the process is deleted, which closes the pipes.
	go func() {
		io.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// boundedBuffer keeps the first max bytes written to it and drops the
// rest, so a chatty command cannot grow the agent. stdout and stderr are
// copied into it from two goroutines.
type boundedBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// Write implements io.Writer; it never fails, so the copy drains the pipe.
func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Bytes returns a copy of what was kept.
func (b *boundedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}
