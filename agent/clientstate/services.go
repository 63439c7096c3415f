package clientstate

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

// Services and endpoints in the view: every node holds every service and
// its endpoints, to load balance them and answer their names.

// checkServiceEvent validates a service or endpoints event and fills o.
func checkServiceEvent(ev *rpc.WatchEvent, o *op) error {
	if ev.Deleted {
		return nil
	}
	switch ev.Kind {
	case rpc.WatchService:
		if ev.Service == nil {
			return errors.New("a service event without a service")
		}
		s := ev.Service.Clone()
		if err := s.ValidateFields(); err != nil {
			return err
		}
		if s.ID() != ev.Key {
			return fmt.Errorf("the service is %s, not %s", s.ID(), api.TruncateText(ev.Key, 140))
		}
		o.service = s
	case rpc.WatchEndpoints:
		if ev.Endpoints == nil {
			return errors.New("an endpoints event without endpoints")
		}
		e := ev.Endpoints.Clone()
		if err := e.ValidateFields(); err != nil {
			return err
		}
		if k := e.Namespace + "/" + e.Name; k != ev.Key {
			return fmt.Errorf("the endpoints are %s's, not %s's", k, api.TruncateText(ev.Key, 140))
		}
		o.endpoints = e
	}
	return nil
}

// applyEntry applies one incremental event to m and reports whether the
// view changed.
func applyEntry[T any](m map[string]entry[T], o op, obj T) bool {
	cur, ok := m[o.key]
	switch {
	case ok && o.index < cur.index:
		return false // never backwards
	case o.deleted:
		delete(m, o.key)
		return ok
	}
	m[o.key] = entry[T]{index: o.index, obj: obj}
	return !ok || !reflect.DeepEqual(cur.obj, obj)
}

// markServices records that the response at index changed a service or
// endpoints, when changed. It only grows, as markPods.
func (s *Store) markServices(index uint64, changed bool) bool {
	if changed {
		s.svcChanged = max(index, s.svcChanged+1)
	}
	return changed
}

// resetServicesLocked replaces the services and endpoints with a Reset's and
// reports whether they changed. An invalid event keeps what the view had.
func (s *Store) resetServicesLocked(at uint64, ops []op) bool {
	services := make(map[string]entry[api.Service], len(s.services))
	endpoints := make(map[string]entry[api.Endpoints], len(s.endpoints))
	for _, o := range ops {
		switch o.kind {
		case rpc.WatchService:
			resetOne(services, s.services, o, o.service)
		case rpc.WatchEndpoints:
			resetOne(endpoints, s.endpoints, o, o.endpoints)
		}
	}
	changed := !maps.EqualFunc(services, s.services, sameEntry) || !maps.EqualFunc(endpoints, s.endpoints, sameEntry)
	s.services, s.endpoints = services, endpoints
	return s.markServices(at, changed)
}

func resetOne[T any](next, cur map[string]entry[T], o op, obj T) {
	switch {
	case o.invalid:
		if c, ok := cur[o.key]; ok {
			next[o.key] = c
		}
	case o.deleted:
		delete(next, o.key)
	default:
		next[o.key] = entry[T]{index: o.index, obj: obj}
	}
}

func sameEntry[T any](a, b entry[T]) bool { return reflect.DeepEqual(a.obj, b.obj) }

// Services returns every service of the view, sorted by namespace and name.
func (s *Store) Services() []api.Service {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedObjects(s.services, api.Service.Clone, func(o *api.Service) (string, string) { return o.Namespace, o.Name })
}

// Endpoints returns every service's endpoints, sorted by namespace and
// name.
func (s *Store) Endpoints() []api.Endpoints {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sortedObjects(s.endpoints, api.Endpoints.Clone, func(o *api.Endpoints) (string, string) { return o.Namespace, o.Name })
}

// ServicesChanged returns the index of the last response that changed a
// service or endpoints. It only grows.
func (s *Store) ServicesChanged() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svcChanged
}

// sortedObjects copies every object of m with clone, in namespace and name
// order (the map's "namespace/name" keys would not sort so: '-' < '/').
func sortedObjects[T any](m map[string]entry[T], clone func(T) T, id func(*T) (ns, name string)) []T {
	out := make([]T, 0, len(m))
	for _, e := range m {
		out = append(out, clone(e.obj))
	}
	slices.SortFunc(out, func(a, b T) int {
		ans, an := id(&a)
		bns, bn := id(&b)
		return cmp.Or(cmp.Compare(ans, bns), cmp.Compare(an, bn))
	})
	return out
}
