package containerd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/flotilla-io/flotilla/agent/runtime"
)

var _ runtime.StreamExecer = (*Runtime)(nil)

// StartExec starts e as an exec process of the container's task, its
// streams connected through FIFOs (cio, as ctr does). The process spec
// is the container's own with other arguments, so the command runs as the
// container's user, with its environment, working directory,
// capabilities, no-new-privileges and AppArmor profile; runc applies the
// container's seccomp profile, namespaces and cgroup (its pids limit
// among them) to every process it execs.
func (r *Runtime) StartExec(ctx context.Context, id string, e runtime.StreamExec) (runtime.ExecProcess, error) {
	if len(e.Command) == 0 {
		return nil, fmt.Errorf("exec in container %s: empty command", id)
	}
	ctx = r.nsCtx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("exec in container %s: %w", id, runtime.ErrContainerNotFound)
		}
		return nil, fmt.Errorf("exec in container %s: %w", id, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("exec in container %s: %w (it has no task)", id, runtime.ErrNotRunning)
		}
		return nil, fmt.Errorf("exec in container %s: load task: %w", id, err)
	}
	if st, err := task.Status(ctx); err != nil {
		return nil, fmt.Errorf("exec in container %s: task status: %w", id, err)
	} else if st.Status != containerd.Running {
		return nil, fmt.Errorf("exec in container %s: %w (%s)", id, runtime.ErrNotRunning, st.Status)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: read spec: %w", id, err)
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("exec in container %s: spec has no process", id)
	}
	pspec := execProcessSpec(spec.Process, e)

	stdin := &stdinEOF{started: make(chan struct{})}
	var in io.Reader
	if e.IO.Stdin != nil {
		stdin.r, in = e.IO.Stdin, stdin
	}
	stdout, stderr := e.IO.Stdout, e.IO.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil || e.TTY {
		stderr = io.Discard
	}
	opts := []cio.Opt{cio.WithStreams(in, stdout, stderr)}
	if e.TTY {
		opts = append(opts, cio.WithTerminal)
	}
	execID := "exec-" + rand.Text()
	proc, err := task.Exec(ctx, execID, pspec, cio.NewCreator(opts...))
	if err != nil {
		close(stdin.started)
		return nil, fmt.Errorf("exec %q in container %s: %w", e.Command[0], id, err)
	}
	p := &execProcess{r: r, proc: proc, id: id, execID: execID}
	// The process outlives this call: it waits on a context of its own.
	bg := context.WithoutCancel(ctx)
	waitCtx, cancelWait := context.WithCancel(bg)
	p.cancelWait = cancelWait
	if p.exitC, err = proc.Wait(waitCtx); err != nil {
		cancelWait()
		close(stdin.started)
		p.delete(bg)
		return nil, fmt.Errorf("exec %q in container %s: wait: %w", e.Command[0], id, err)
	}
	if err := proc.Start(ctx); err != nil {
		cancelWait()
		close(stdin.started)
		p.delete(bg)
		// runc execs the program here: a missing one fails the start.
		return nil, fmt.Errorf("exec %q in container %s: %w: %w", e.Command[0], id, runtime.ErrExecStart, err)
	}
	stdin.proc, stdin.ctx = proc, bg
	close(stdin.started)
	return p, nil
}

// execProcessSpec is the container's process spec running e instead.
func execProcessSpec(base *specs.Process, e runtime.StreamExec) *specs.Process {
	p := *base
	p.Args = slices.Clone(e.Command)
	p.Env = slices.Clone(base.Env)
	p.Terminal = e.TTY
	p.ConsoleSize = nil
	if e.TTY {
		if e.Width > 0 && e.Height > 0 {
			p.ConsoleSize = &specs.Box{Width: uint(e.Width), Height: uint(e.Height)}
		}
		// As docker exec -t: programs on a terminal want to know its kind.
		if !slices.ContainsFunc(p.Env, func(kv string) bool { return strings.HasPrefix(kv, "TERM=") }) {
			p.Env = append(p.Env, "TERM=xterm")
		}
	}
	return &p
}

// stdinEOF closes the process's stdin when its reader ends. The shim
// holds the stdin FIFO open for an exec until told (CloseIO), so the
// command would otherwise never read EOF; what was written before stays
// in the FIFO and is read first.
type stdinEOF struct {
	r       io.Reader
	started chan struct{} // closed once proc and ctx are set, or the start failed
	proc    containerd.Process
	ctx     context.Context
	once    sync.Once
}

func (s *stdinEOF) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if errors.Is(err, io.EOF) {
		s.once.Do(func() {
			// CloseIO before the process started would be lost.
			<-s.started
			if s.proc == nil {
				return
			}
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			defer cancel()
			_ = s.proc.CloseIO(ctx, containerd.WithStdinCloser)
		})
	}
	return n, err
}

// execProcess is a started StartExec.
type execProcess struct {
	r          *Runtime
	proc       containerd.Process
	id, execID string
	exitC      <-chan containerd.ExitStatus
	cancelWait context.CancelFunc
}

// Resize implements runtime.ExecProcess.
func (p *execProcess) Resize(ctx context.Context, width, height uint16) error {
	if err := p.proc.Resize(p.r.nsCtx(ctx), uint32(width), uint32(height)); err != nil {
		return fmt.Errorf("resize the terminal of exec %s in container %s: %w", p.execID, p.id, err)
	}
	return nil
}

// Wait implements runtime.ExecProcess.
func (p *execProcess) Wait(ctx context.Context) (int, error) {
	defer p.cancelWait()
	// Cleanup must happen even when ctx has ended; it is bounded on its own.
	cleanupCtx, cancel := context.WithTimeout(p.r.nsCtx(context.WithoutCancel(ctx)), killWait+5*time.Second)
	defer cancel()
	defer p.delete(cleanupCtx)
	select {
	case es := <-p.exitC:
		code, _, err := es.Result()
		if err != nil {
			return -1, fmt.Errorf("exec %s in container %s: wait: %w", p.execID, p.id, err)
		}
		drainIO(p.proc.IO(), ioDrainWait)
		return int(code), nil
	case <-ctx.Done():
		p.r.killExec(cleanupCtx, p.proc, p.exitC, p.id, p.execID)
		return -1, fmt.Errorf("exec %s in container %s: %w", p.execID, p.id, ctx.Err())
	}
}

// delete removes the exec process (killing it if it still runs) and
// closes its FIFOs.
func (p *execProcess) delete(ctx context.Context) {
	if _, err := p.proc.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		p.r.log.Warn("deleting exec process", "id", p.id, "exec_id", p.execID, "err", err)
	}
}
