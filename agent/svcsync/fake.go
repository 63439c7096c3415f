package svcsync

import (
	"maps"
	"slices"
	"sync"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

var _ Source = (*FakeSource)(nil)

// FakeSource is an in-memory Source for tests of code that syncs
// services. Every change advances its index and closes the Changed
// channel; Touch does so without changing a service, as a write about
// something else does.
type FakeSource struct {
	mu        sync.Mutex
	index     uint64
	svcIndex  uint64
	podsIndex map[string]uint64
	services  map[string]api.Service
	endpoints map[string]api.Endpoints
	pods      map[string]api.Pod
	changed   chan struct{}
	reads     int
}

// NewFakeSource returns an empty source at index 0.
func NewFakeSource() *FakeSource {
	return &FakeSource{
		podsIndex: map[string]uint64{},
		services:  map[string]api.Service{},
		endpoints: map[string]api.Endpoints{},
		pods:      map[string]api.Pod{},
		changed:   make(chan struct{}),
	}
}

// bump advances the index and wakes the waiters. f.mu is held.
func (f *FakeSource) bump() uint64 {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
	return f.index
}

// SetService creates or replaces a service.
func (f *FakeSource) SetService(s api.Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services[s.ID()] = s
	f.svcIndex = f.bump()
}

// DeleteService removes a service and its endpoints.
func (f *FakeSource) DeleteService(ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, ns+"/"+name)
	delete(f.endpoints, ns+"/"+name)
	f.svcIndex = f.bump()
}

// SetEndpoints creates or replaces a service's endpoints.
func (f *FakeSource) SetEndpoints(e api.Endpoints) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endpoints[e.Namespace+"/"+e.Name] = e
	f.svcIndex = f.bump()
}

// SetPod creates or replaces a pod.
func (f *FakeSource) SetPod(p api.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[p.ID()] = p
	f.podsIndex[p.Node] = f.bump()
}

// Touch advances the index without changing a service or pod.
func (f *FakeSource) Touch() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bump()
}

// Reads counts the calls to Services, how often the state was read.
func (f *FakeSource) Reads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// Changed implements Source.
func (f *FakeSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// ServicesChanged implements Source.
func (f *FakeSource) ServicesChanged() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.svcIndex
}

// PodsChanged implements Source.
func (f *FakeSource) PodsChanged(node string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.podsIndex[node]
}

// Services implements Source.
func (f *FakeSource) Services() []api.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	out := make([]api.Service, 0, len(f.services))
	for _, k := range slices.Sorted(maps.Keys(f.services)) {
		s := f.services[k]
		s.Ports = slices.Clone(s.Ports)
		out = append(out, s)
	}
	return out
}

// Endpoints implements Source.
func (f *FakeSource) Endpoints() []api.Endpoints {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]api.Endpoints, 0, len(f.endpoints))
	for _, k := range slices.Sorted(maps.Keys(f.endpoints)) {
		e := f.endpoints[k]
		e.Addresses = slices.Clone(e.Addresses)
		out = append(out, e)
	}
	return out
}

// Pods implements Source, for the node filter only.
func (f *FakeSource) Pods(filter state.PodFilter) []api.Pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Pod
	for _, k := range slices.Sorted(maps.Keys(f.pods)) {
		if p := f.pods[k]; filter.Node == "" || p.Node == filter.Node {
			out = append(out, p)
		}
	}
	return out
}
