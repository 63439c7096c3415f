package clientstate

import (
	"errors"
	"fmt"
	"maps"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

// Ingresses in the view: every node holds every ingress with its TLS keys,
// to terminate TLS for it. The keys are kept in memory and in the cache
// file (mode 0600 in a 0700 directory), and never logged: a log line or an
// error names an ingress, never its TLS entries' contents.

// checkIngressEvent validates an ingress event and fills o.
func checkIngressEvent(ev *rpc.WatchEvent, o *op) error {
	if ev.Deleted {
		return nil
	}
	if ev.Ingress == nil {
		return errors.New("an ingress event without an ingress")
	}
	in := ev.Ingress.Clone()
	if err := in.ValidateFields(); err != nil {
		return err
	}
	for i, t := range in.TLS {
		if t.Key == "" {
			return fmt.Errorf("tls[%d].key: missing; a node needs the key to terminate TLS", i)
		}
	}
	if in.ID() != ev.Key {
		return fmt.Errorf("the ingress is %s, not %s", in.ID(), api.TruncateText(ev.Key, 140))
	}
	o.ingress = in
	return nil
}

// markIngresses records that the response at index changed an ingress,
// when changed. It only grows, as markPods.
func (s *Store) markIngresses(index uint64, changed bool) bool {
	if changed {
		s.ingChanged = max(index, s.ingChanged+1)
	}
	return changed
}

// resetIngressesLocked replaces the ingresses with a Reset's and reports
// whether they changed. An invalid event keeps what the view had.
func (s *Store) resetIngressesLocked(at uint64, ops []op) bool {
	ingresses := make(map[string]entry[api.Ingress], len(s.ingresses))
	for _, o := range ops {
		if o.kind == rpc.WatchIngress {
			resetOne(ingresses, s.ingresses, o, o.ingress)
		}
	}
	changed := !maps.EqualFunc(ingresses, s.ingresses, sameEntry)
	s.ingresses = ingresses
	return s.markIngresses(at, changed)
}

// Ingresses returns every ingress of the view with its TLS keys, sorted by
// namespace and name: for the node's ingress proxy.
func (s *Store) Ingresses() []api.Ingress {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedObjects(s.ingresses, api.Ingress.Clone, func(o *api.Ingress) (string, string) { return o.Namespace, o.Name })
}

// IngressesChanged returns the index of the last response that changed an
// ingress. It only grows: the ingress proxy waits for it to move.
func (s *Store) IngressesChanged() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ingChanged
}
