package ingress

import (
	"slices"
	"sync"

	"github.com/flotilla-io/flotilla/api"
)

// FakeSource is an in-memory Source for tests: Set replaces the state and
// wakes the Proxy.
type FakeSource struct {
	mu        sync.Mutex
	changed   chan struct{}
	ingresses []api.Ingress
	services  []api.Service
	endpoints []api.Endpoints
	version   uint64
}

var _ Source = (*FakeSource)(nil)

// NewFakeSource returns an empty FakeSource.
func NewFakeSource() *FakeSource { return &FakeSource{changed: make(chan struct{})} }

// Set replaces the whole state.
func (f *FakeSource) Set(in Input) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ingresses = slices.Clone(in.Ingresses)
	f.services = slices.Clone(in.Services)
	f.endpoints = slices.Clone(in.Endpoints)
	f.version++
	close(f.changed)
	f.changed = make(chan struct{})
}

// Changed implements Source.
func (f *FakeSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Ingresses implements Source.
func (f *FakeSource) Ingresses() []api.Ingress {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ingresses)
}

// Services implements Source.
func (f *FakeSource) Services() []api.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.services)
}

// Endpoints implements Source.
func (f *FakeSource) Endpoints() []api.Endpoints {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.endpoints)
}

// IngressesChanged implements Source: every Set changes all.
func (f *FakeSource) IngressesChanged() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version
}

// ServicesChanged implements Source.
func (f *FakeSource) ServicesChanged() uint64 { return f.IngressesChanged() }
