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
// containers exit with Exit and make images unavailable with MissingImages.
type Fake struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	nextPid    uint32
	// MissingImages makes EnsureImage fail with a "not found" error.
	MissingImages map[string]bool
	// Now stamps exits; defaults to time.Now.
	Now    func() time.Time
	Starts int // number of Start calls that started a process
}

type fakeContainer struct {
	spec  ContainerSpec
	state ContainerState
}

var _ Runtime = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{containers: map[string]*fakeContainer{}, MissingImages: map[string]bool{}, nextPid: 1000, Now: time.Now}
}

// EnsureImage implements Runtime.
func (f *Fake) EnsureImage(_ context.Context, image string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.MissingImages[image] {
		return fmt.Errorf("pull %q: not found", image)
	}
	return nil
}

// Create implements Runtime.
func (f *Fake) Create(_ context.Context, spec ContainerSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[spec.ID]; ok {
		return fmt.Errorf("container %s: %w", spec.ID, ErrAlreadyExists)
	}
	f.containers[spec.ID] = &fakeContainer{spec: spec, state: ContainerState{ID: spec.ID, Labels: maps.Clone(spec.Labels)}}
	return nil
}

// Start implements Runtime.
func (f *Fake) Start(_ context.Context, id string) error {
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
func (f *Fake) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.state = ContainerState{ID: id, Labels: c.state.Labels}
	}
	return nil
}

// Remove implements Runtime.
func (f *Fake) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
	return nil
}

// List implements Runtime.
func (f *Fake) List(context.Context) ([]ContainerState, error) {
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
