package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"sync"
	"time"
)

// Fake is an in-memory Runtime for unit tests of the reconciler. Tests make
// containers exit with Exit, make images unavailable with MissingImages and
// decide what Exec returns with SetExecResult or SetExecFunc.
type Fake struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	nextPid    uint32
	exec       ExecFunc
	execs      int
	// MissingImages makes EnsureImage fail with a "not found" error.
	MissingImages map[string]bool
	// RemoteImages are images the next EnsureImage pulls (and then has).
	RemoteImages map[string]bool
	// Hook, when set, is called first by EnsureImage, Create, Start and
	// List with the operation's name and the image or container ID ("" for
	// List); an error it returns is the call's. A hook that blocks on ctx
	// plays a hung runtime. Set it before the Fake is in use.
	Hook func(ctx context.Context, op, id string) error
	// Now stamps exits; defaults to time.Now.
	Now    func() time.Time
	Starts int // number of Start calls that started a process
	// StopExitCode is the exit code Stop reports for a running container;
	// NewFake sets 137, as for a process that ignored SIGTERM.
	StopExitCode int
}

// ExecFunc decides what Fake.Exec returns. ctx carries Exec's timeout: a
// func that waits for ctx makes Exec time out.
type ExecFunc func(ctx context.Context, id string, cmd []string) (exitCode int, output []byte, err error)

type fakeContainer struct {
	spec  ContainerSpec
	state ContainerState
}

var _ Runtime = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{containers: map[string]*fakeContainer{}, MissingImages: map[string]bool{}, RemoteImages: map[string]bool{}, nextPid: 1000, Now: time.Now, StopExitCode: 137}
}

// EnsureImage implements Runtime.
func (f *Fake) EnsureImage(ctx context.Context, image string) (bool, error) {
	if err := f.hook(ctx, "pull", image); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.MissingImages[image] {
		return false, fmt.Errorf("pull %q: %w", image, ErrImageNotFound)
	}
	if f.RemoteImages[image] {
		delete(f.RemoteImages, image) // pulled: here from now on
		return true, nil
	}
	return false, nil
}

// Create implements Runtime.
func (f *Fake) Create(ctx context.Context, spec ContainerSpec) error {
	if err := f.hook(ctx, "create", spec.ID); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[spec.ID]; ok {
		return fmt.Errorf("container %s: %w", spec.ID, ErrAlreadyExists)
	}
	f.containers[spec.ID] = &fakeContainer{spec: spec, state: ContainerState{ID: spec.ID, Labels: maps.Clone(spec.Labels)}}
	return nil
}

// Start implements Runtime.
func (f *Fake) Start(ctx context.Context, id string) error {
	if err := f.hook(ctx, "start", id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return fmt.Errorf("container %s: not found", id)
	}
	if c.state.Running {
		return fmt.Errorf("container %s: already running", id)
	}
	f.nextPid++
	f.Starts++
	c.state = ContainerState{ID: id, Labels: c.state.Labels, HasTask: true, Running: true, Pid: f.nextPid}
	return nil
}

// Stop implements Runtime.
func (f *Fake) Stop(_ context.Context, id string, _ time.Duration) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok || !c.state.HasTask {
		return -1, nil
	}
	code := c.state.ExitCode
	if c.state.Running {
		code = f.StopExitCode
	}
	c.state = ContainerState{ID: id, Labels: c.state.Labels}
	return code, nil
}

// Exec implements Runtime: it returns what the ExecFunc set by
// SetExecFunc or SetExecResult returns (exit code 0 and no output by
// default), or an error wrapping ErrExecTimeout if the func outlived timeout.
func (f *Fake) Exec(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error) {
	f.mu.Lock()
	c, ok := f.containers[id]
	running := ok && c.state.Running
	fn := f.exec
	f.execs++
	f.mu.Unlock()
	if !running {
		return -1, nil, fmt.Errorf("exec in container %s: not running", id)
	}
	if len(cmd) == 0 {
		return -1, nil, fmt.Errorf("exec in container %s: empty command", id)
	}
	if fn == nil {
		return 0, nil, nil
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	code, out, err := fn(ctx, id, cmd)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return -1, out, fmt.Errorf("exec %q in container %s: %w after %s", cmd[0], id, ErrExecTimeout, timeout)
	}
	if len(out) > ExecOutputLimit {
		out = out[:ExecOutputLimit]
	}
	return code, out, err
}

// SetExecFunc makes fn decide what Exec returns.
func (f *Fake) SetExecFunc(fn ExecFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exec = fn
}

// SetExecResult makes every Exec return code, output and err.
func (f *Fake) SetExecResult(code int, output []byte, err error) {
	f.SetExecFunc(func(context.Context, string, []string) (int, []byte, error) { return code, output, err })
}

// Execs returns how many times Exec was called.
func (f *Fake) Execs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.execs
}

// Remove implements Runtime.
func (f *Fake) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
	return nil
}

// List implements Runtime.
func (f *Fake) List(ctx context.Context) ([]ContainerState, error) {
	if err := f.hook(ctx, "list", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ContainerState, 0, len(f.containers))
	for _, c := range f.containers {
		s := c.state
		s.Labels = maps.Clone(s.Labels)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ImportImages implements Runtime.
func (f *Fake) ImportImages(context.Context, io.Reader) ([]string, error) {
	return nil, errors.New("fake runtime: import not supported")
}

func (f *Fake) hook(ctx context.Context, op, id string) error {
	if f.Hook == nil {
		return nil
	}
	return f.Hook(ctx, op, id)
}

// OOMKill makes a running container exit as one the kernel killed for
// its memory limit: code 137, OOMKilled.
func (f *Fake) OOMKill(id string) error {
	if err := f.Exit(id, 137); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id].state.OOMKilled = true
	return nil
}

// Exit makes a running container's process exit with code, as a crash or an
// outside kill would.
func (f *Fake) Exit(id string, code int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok || !c.state.Running {
		return fmt.Errorf("container %s is not running", id)
	}
	c.state.Running, c.state.Pid, c.state.ExitCode, c.state.ExitedAt = false, 0, code, f.Now()
	return nil
}

// Spec returns the spec a container was created with.
func (f *Fake) Spec(id string) (ContainerSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return ContainerSpec{}, false
	}
	return c.spec, true
}
