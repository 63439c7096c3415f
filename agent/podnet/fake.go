package podnet

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Fake is an in-memory Network for unit tests: it hands out 10.0.0.x.
type Fake struct {
	mu   sync.Mutex
	atts map[string]Attachment
	next int
}

var _ Network = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{atts: map[string]Attachment{}} }

// Init implements Network.
func (f *Fake) Init(context.Context) error { return nil }

// Setup implements Network.
func (f *Fake) Setup(_ context.Context, key string) (Attachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.atts[key]; ok {
		return a, nil
	}
	f.next++
	a := Attachment{Key: key, NetNSPath: "/run/netns/fake-" + key, IP: fmt.Sprintf("10.0.0.%d", f.next)}
	f.atts[key] = a
	return a, nil
}

// Teardown implements Network.
func (f *Fake) Teardown(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.atts, key)
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

// Cleanup implements Network.
func (f *Fake) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.atts = map[string]Attachment{}
	return nil
}
