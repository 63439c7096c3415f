package podnet

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// Fake is an in-memory Network for unit tests: it hands out 10.0.0.x and
// records each pod's host ports (PortMappings).
type Fake struct {
	mu    sync.Mutex
	atts  map[string]Attachment
	ports map[string][]PortMapping
	next  int
}

var _ Network = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{atts: map[string]Attachment{}, ports: map[string][]PortMapping{}}
}

// Init implements Network.
func (f *Fake) Init(context.Context) error { return nil }

// Setup implements Network. It checks the port mappings as the real
// network does and records them normalized (protocol defaulted to "tcp",
// duplicates dropped, sorted), replacing those of an earlier Setup.
func (f *Fake) Setup(_ context.Context, key string, opts ...SetupOption) (Attachment, error) {
	pms, err := normalizePortMappings(applySetupOptions(opts).portMappings)
	if err != nil {
		return Attachment{}, fmt.Errorf("set up network for pod %q: %w", key, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if pms != nil {
		f.ports[key] = pms
	} else {
		delete(f.ports, key)
	}
	if a, ok := f.atts[key]; ok {
		return a, nil
	}
	f.next++
	a := Attachment{Key: key, NetNSPath: "/run/netns/fake-" + key, IP: fmt.Sprintf("10.0.0.%d", f.next)}
	f.atts[key] = a
	return a, nil
}

// PortMappings returns the host ports the pod's last Setup asked for, nil
// for none or once it is torn down.
func (f *Fake) PortMappings(key string) []PortMapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ports[key])
}

// Teardown implements Network.
func (f *Fake) Teardown(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.atts, key)
	delete(f.ports, key)
	return nil
}

// List implements Network.
func (f *Fake) List(context.Context) ([]Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Attachment, 0, len(f.atts))
	for _, a := range f.atts {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Keys implements Network.
func (f *Fake) Keys(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.atts))
	for k := range f.atts {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// Cleanup implements Network.
func (f *Fake) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.atts = map[string]Attachment{}
	f.ports = map[string][]PortMapping{}
	return nil
}
