package state

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/flotilla-io/flotilla/api"
)

// Ingresses. Only operators write them (package authz). Every node reads
// every ingress through its watch, TLS keys included: every agent
// terminates TLS for every ingress. The API answers them redacted.
//
// A backend may name a service that does not exist (yet), as Kubernetes
// allows: the data plane answers 503 for it until it does.

// Bounds of the ingress table, so that every node's whole view (which
// carries every ingress with its keys) stays well inside a watch answer.
const (
	MaxIngresses = 10000
	// MaxIngressTableBytes bounds the encoded size of all ingresses.
	MaxIngressTableBytes = 16 << 20
)

// CreateIngress stores a new ingress.
type CreateIngress struct {
	Ingress api.Ingress `json:"ingress"`
}

// UpdateIngress replaces an ingress's spec.
type UpdateIngress struct {
	Ingress api.Ingress `json:"ingress"`
}

// DeleteIngress removes an ingress.
type DeleteIngress struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (*CreateIngress) Type() MessageType { return CreateIngressType }
func (*UpdateIngress) Type() MessageType { return UpdateIngressType }
func (*DeleteIngress) Type() MessageType { return DeleteIngressType }

func (c *CreateIngress) Validate() error       { return validateIngress(&c.Ingress, true) }
func (c *UpdateIngress) Validate() error       { return validateIngress(&c.Ingress, true) }
func (c *CreateIngress) validateFields() error { return validateIngress(&c.Ingress, false) }
func (c *UpdateIngress) validateFields() error { return validateIngress(&c.Ingress, false) }
func (c *DeleteIngress) Validate() error {
	if err := api.ValidateName(c.Namespace); err != nil {
		return invalid("ingress namespace: %s", err)
	}
	if err := api.ValidateName(c.Name); err != nil {
		return invalid("ingress name: %s", err)
	}
	return nil
}

// validateIngress checks an ingress with its keys. The full check (size
// and key pairs, which costs parsing them) runs before proposing; the
// state machine checks the fields and that every TLS entry has its key.
// No error quotes a key.
func validateIngress(in *api.Ingress, full bool) error {
	check := in.ValidateFields
	if full {
		check = in.Validate
	}
	if err := check(); err != nil {
		return invalid("ingress %s/%s: %s", in.Namespace, in.Name, err)
	}
	for i, t := range in.TLS {
		if t.Key == "" {
			return invalid("ingress %s/%s: tls[%d].key: is required", in.Namespace, in.Name, i)
		}
	}
	return nil
}

// ingressIndex is what the FSM keeps beside the ingresses table: who holds
// each route, TLS host and the default backend, and the table's size.
type ingressIndex struct {
	claims map[string]string // ingressClaims key → ingress key
	bytes  map[string]int    // ingress key → encoded size
	total  int
	// changed is the index of the last entry that changed an ingress:
	// every node's view changed.
	changed uint64
}

func newIngressIndex() ingressIndex {
	return ingressIndex{claims: map[string]string{}, bytes: map[string]int{}}
}

// ingressClaims lists what an ingress holds exclusively, in a stable order:
// its default backend, each host and path with its match, each TLS host.
// They are the clashes api.IngressConflict describes.
func ingressClaims(in *api.Ingress) []string {
	var out []string
	if in.DefaultBackend != nil {
		out = append(out, "default")
	}
	for _, r := range in.Rules {
		for _, p := range r.Paths {
			out = append(out, "route "+r.Host+" "+p.MatchType()+" "+p.Path)
		}
	}
	for _, t := range in.TLS {
		for _, h := range t.Hosts {
			out = append(out, "tls "+h)
		}
	}
	return out
}

func (f *FSM) applyCreateIngress(index uint64, c *CreateIngress) any {
	in := c.Ingress
	key := in.ID()
	if _, ok := f.ingresses[key]; ok {
		return fmt.Errorf("ingress %s: %w", key, ErrExists)
	}
	if len(f.ingresses) >= MaxIngresses {
		return fmt.Errorf("ingress %s: the cluster has %d ingresses, the most it holds; delete ones you no longer need or merge their rules: %w", key, len(f.ingresses), ErrConflict)
	}
	in.CreateIndex, in.ModifyIndex = index, index
	return f.putIngress(index, in)
}

func (f *FSM) applyUpdateIngress(index uint64, c *UpdateIngress) any {
	in := c.Ingress
	key := in.ID()
	cur, ok := f.ingresses[key]
	if !ok {
		return fmt.Errorf("ingress %s: %w", key, ErrNotFound)
	}
	in.CreateIndex, in.ModifyIndex = cur.CreateIndex, index
	return f.putIngress(index, in)
}

// putIngress checks in against the other ingresses and the table's bound,
// then stores and indexes it and returns it redacted. Called with f.mu
// held; nothing is written when it fails.
func (f *FSM) putIngress(index uint64, in api.Ingress) any {
	key := in.ID()
	in = in.Clone()
	for i := range in.TLS {
		in.TLS[i].KeySHA256 = api.KeyDigest(in.TLS[i].Key)
	}
	claims := ingressClaims(&in)
	for _, c := range claims {
		holder, ok := f.ing.claims[c]
		if !ok || holder == key {
			continue
		}
		other := f.ingresses[holder]
		msg, clash := api.IngressConflict(&other, &in)
		if !clash {
			msg = "both claim " + c // the index and IngressConflict disagree: still refuse
		}
		return fmt.Errorf("ingress %s: %s as ingress %s does; change or delete one of them: %w", key, msg, holder, ErrConflict)
	}
	b, err := json.Marshal(&in)
	if err != nil {
		return fmt.Errorf("ingress %s: does not encode: %v: %w", key, err, ErrInvalid)
	}
	if total := f.ing.total - f.ing.bytes[key] + len(b); total > MaxIngressTableBytes {
		return fmt.Errorf("ingress %s: all ingresses would take %d bytes encoded, more than the %d the cluster holds (every node receives every ingress); delete ingresses or certificates you no longer need: %w", key, total, MaxIngressTableBytes, ErrConflict)
	}
	if cur, ok := f.ingresses[key]; ok {
		f.dropIngressIndex(&cur)
	}
	f.ingresses[key] = in
	f.indexIngress(&in, len(b))
	f.ingressTouched(index, key)
	return *in.Redacted()
}

func (f *FSM) applyDeleteIngress(index uint64, c *DeleteIngress) any {
	key := deploymentKey(c.Namespace, c.Name)
	cur, ok := f.ingresses[key]
	if !ok {
		return fmt.Errorf("ingress %s: %w", key, ErrNotFound)
	}
	delete(f.ingresses, key)
	f.dropIngressIndex(&cur)
	f.ingressTouched(index, key)
	return nil
}

func (f *FSM) indexIngress(in *api.Ingress, size int) {
	key := in.ID()
	for _, c := range ingressClaims(in) {
		f.ing.claims[c] = key
	}
	f.ing.bytes[key] = size
	f.ing.total += size
}

func (f *FSM) dropIngressIndex(in *api.Ingress) {
	key := in.ID()
	for _, c := range ingressClaims(in) {
		if f.ing.claims[c] == key {
			delete(f.ing.claims, c)
		}
	}
	f.ing.total -= f.ing.bytes[key]
	delete(f.ing.bytes, key)
}

// ingressTouched records a change to an ingress and wakes every watch.
// Called with f.mu held.
func (f *FSM) ingressTouched(index uint64, key string) {
	f.ing.changed = index
	f.record(objChange{index: index, kind: kindIngress, key: key})
	f.idx.waiters.wakeAll()
}

// rebuildIngresses recomputes the ingress index from the table (after
// Restore). Called with f.mu held.
func (f *FSM) rebuildIngresses(index uint64) {
	f.ing = newIngressIndex()
	for _, key := range slices.Sorted(maps.Keys(f.ingresses)) {
		in := f.ingresses[key]
		b, err := json.Marshal(&in)
		if err != nil {
			continue // cannot happen: it encoded into the snapshot
		}
		f.indexIngress(&in, len(b))
	}
	f.ing.changed = index
}

// Ingresses returns every ingress (ns "") or a namespace's, sorted by key,
// redacted: the API's reads.
func (f *FSM) Ingresses(ns string) []api.Ingress {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Ingress, 0, len(f.ingresses))
	for _, in := range f.ingresses {
		if ns == "" || in.Namespace == ns {
			out = append(out, *in.Redacted())
		}
	}
	slices.SortFunc(out, func(a, b api.Ingress) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Ingress returns one ingress, redacted.
func (f *FSM) Ingress(ns, name string) (api.Ingress, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	in, ok := f.ingresses[deploymentKey(ns, name)]
	if !ok {
		return api.Ingress{}, false
	}
	return *in.Redacted(), true
}

// IngressesWithKeys returns every ingress with its TLS keys, sorted by key:
// for the ingress proxy of a server's own agent, never for the API.
func (f *FSM) IngressesWithKeys() []api.Ingress {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Ingress, 0, len(f.ingresses))
	for _, key := range slices.Sorted(maps.Keys(f.ingresses)) {
		out = append(out, f.ingresses[key].Clone())
	}
	return out
}

// IngressesChanged returns the index of the last entry that changed an
// ingress (or restored the state).
func (f *FSM) IngressesChanged() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ing.changed
}
