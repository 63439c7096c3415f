package clientstate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// ErrBehind means a watch response is older than the view: it came from a
// server that lags behind one the view already followed. It is not applied;
// ask again, or ask another server.
var ErrBehind = errors.New("the response is older than the view")

// entry is one object of the view and the raft index of its last change.
// Stored objects are never changed in place (an update replaces the entry
// and reads copy), so a shallow copy of the tables can be encoded outside
// the lock.
type entry[T any] struct {
	index uint64
	obj   T
}

// Store is a client agent's view of the cluster state: its pods, every
// node, the cluster config, the index the view is at and the leader's name.
// It is safe for concurrent use. Reads return deep copies.
//
// The view changes only through Apply (Run calls it), one watch response at
// a time, and never moves backwards.
type Store struct {
	path string
	log  *slog.Logger

	mu      sync.RWMutex
	index   uint64
	leader  string
	pods    map[string]entry[api.Pod]
	nodes   map[string]entry[api.Node]
	cluster *entry[state.ClusterConfig]
	// services and endpoints are every service's (services.go);
	// svcChanged is the index of the response that last changed one.
	services   map[string]entry[api.Service]
	endpoints  map[string]entry[api.Endpoints]
	svcChanged uint64
	// ingresses are every ingress, with TLS keys (ingress.go); ingChanged
	// is the index of the response that last changed one.
	ingresses  map[string]entry[api.Ingress]
	ingChanged uint64
	// podsChanged is, per node, the index of the response that last
	// changed a pod placed on it.
	podsChanged map[string]uint64
	// changed is closed when the view's content changes, advanced when its
	// index does (WaitIndex).
	changed  chan struct{}
	advanced chan struct{}
	// gen counts changes of anything the cache holds.
	gen uint64

	// The watch loop's timing (watch.go); tests shorten them.
	watchWait   time.Duration
	backoffMin  time.Duration
	backoffMax  time.Duration
	minEmptyGap time.Duration
	// startAt picks the first server Run watches, of n.
	startAt func(n int) int
	// server is the address Run watched last (under mu).
	server string

	connected   atomic.Bool
	lastContact atomic.Int64 // unix nanoseconds; 0 never
	// leaderContact is when an answer from a server that knew a leader
	// was last applied (unix nanoseconds; 0 never, in this run).
	leaderContact atomic.Int64
	// retry is closed, and replaced, by Retry; retryTo is the server it
	// named ("" any).
	retryMu sync.Mutex
	retry   chan struct{}
	retryTo string
	// maxWait, if set, bounds the watch's wait (SetMaxWait).
	maxWait atomic.Pointer[func() time.Duration]

	persist persister // cache.go
}

// Open returns the view saved at path by an earlier run, or an empty view
// at index 0 (the first watch is then a full resync) when there is none or
// it cannot be read: a corrupt or unreadable cache is logged and ignored,
// never an error. The view is saved there again as it changes (atomically,
// mode 0600, at most every 200 ms; Close saves the latest). path "" keeps
// the view in memory only. The error is for a path whose directory cannot
// be made.
func Open(path string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		path:        path,
		log:         logger,
		pods:        map[string]entry[api.Pod]{},
		nodes:       map[string]entry[api.Node]{},
		services:    map[string]entry[api.Service]{},
		endpoints:   map[string]entry[api.Endpoints]{},
		ingresses:   map[string]entry[api.Ingress]{},
		podsChanged: map[string]uint64{},
		changed:     make(chan struct{}),
		advanced:    make(chan struct{}),
		watchWait:   DefaultWatchWait,
		backoffMin:  100 * time.Millisecond,
		backoffMax:  2 * time.Second,
		minEmptyGap: time.Second,
		startAt:     rand.IntN,
		retry:       make(chan struct{}),
	}
	s.persist.minInterval = minPersistInterval
	if path == "" {
		return s, nil
	}
	if err := prepareDir(path); err != nil {
		return nil, err
	}
	s.load()
	return s, nil
}

// Apply applies a watch response: with Reset, its events replace the whole
// view; otherwise each event upserts or deletes one object. An event older
// than what the view holds for its object is ignored, and an object that
// fails validation is dropped with a log line (the view keeps what it had
// for that key). The view's index becomes r.Index. A response older than
// the view is not applied at all: ErrBehind. Changed fires if the content
// changed; the cache is saved soon after.
func (s *Store) Apply(r rpc.WatchResponse) error { return s.apply(r, false) }

// apply is Apply; rewind accepts a Reset older than the view: the fleet's
// state went back (restored from an older snapshot), and every server says
// so (see Run).
func (s *Store) apply(r rpc.WatchResponse, rewind bool) error {
	ops := s.validate(r)
	s.mu.Lock()
	if rewind && r.Reset && r.Index < s.index {
		s.log.Warn("the servers' state is older than this client's view (restored from a backup?); taking theirs", "view", s.index, "servers", r.Index)
		s.index = r.Index
	}
	if r.Index < s.index {
		at := s.index
		s.mu.Unlock()
		return fmt.Errorf("%w: it is at index %d, the view at %d", ErrBehind, r.Index, at)
	}
	var changed bool
	if r.Reset {
		changed = s.resetLocked(r.Index, ops)
	} else {
		for _, o := range ops {
			if s.applyLocked(r.Index, o) {
				changed = true
			}
		}
	}
	dirty := changed
	if r.Index > s.index {
		s.index = r.Index
		close(s.advanced)
		s.advanced = make(chan struct{})
		dirty = true
	}
	if r.Leader != s.leader {
		s.leader = r.Leader
		dirty = true
	}
	if changed {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	if dirty {
		s.gen++
	}
	s.mu.Unlock()
	if dirty {
		s.saveSoon()
	}
	return nil
}

// op is one validated event. Objects are owned by the store from here on.
type op struct {
	kind    string
	key     string
	index   uint64
	deleted bool
	// invalid marks an upsert that was dropped: the key is kept as it was.
	invalid   bool
	pod       api.Pod
	node      api.Node
	cluster   state.ClusterConfig
	service   api.Service
	endpoints api.Endpoints
	ingress   api.Ingress
}

// validate checks every event of r, outside the lock, and returns what to
// apply. Objects are deep-copied so the caller's response shares nothing
// with the view.
func (s *Store) validate(r rpc.WatchResponse) []op {
	ops := make([]op, 0, len(r.Events))
	for i := range r.Events {
		ev := &r.Events[i]
		o := op{kind: ev.Kind, key: ev.Key, index: ev.Index, deleted: ev.Deleted}
		if o.index == 0 || o.index > r.Index {
			// No index, or one past the response's (a server's bug): the
			// response's stands in, so the object cannot get stuck ahead of
			// the view and have later changes ignored as older.
			o.index = r.Index
		}
		if err := checkEvent(ev, &o); err != nil {
			s.log.Warn("dropping an object of the watched state that fails validation; the view keeps what it had for it",
				"kind", api.TruncateText(ev.Kind, 20), "key", api.TruncateText(ev.Key, 140), "index", ev.Index, "err", err)
			o.invalid = true
		}
		ops = append(ops, o)
	}
	return ops
}

// checkEvent validates ev and fills o's object.
func checkEvent(ev *rpc.WatchEvent, o *op) error {
	switch ev.Kind {
	case rpc.WatchPod:
		if ev.Deleted {
			return nil
		}
		if ev.Pod == nil {
			return errors.New("a pod event without a pod")
		}
		p := copyPod(*ev.Pod)
		if err := p.ValidateFields(); err != nil {
			return err
		}
		if p.ID() != ev.Key {
			return fmt.Errorf("the pod is %s, not %s", p.ID(), api.TruncateText(ev.Key, 140))
		}
		o.pod = p
	case rpc.WatchNode:
		if ev.Deleted {
			return nil
		}
		if ev.Node == nil {
			return errors.New("a node event without a node")
		}
		n := copyNode(*ev.Node)
		if err := n.Validate(); err != nil {
			return err
		}
		if n.Name != ev.Key {
			return fmt.Errorf("the node is %s, not %s", n.Name, api.TruncateText(ev.Key, 140))
		}
		o.node = n
	case rpc.WatchCluster:
		if ev.Deleted {
			return nil
		}
		if ev.Cluster == nil {
			return errors.New("a cluster event without a cluster config")
		}
		if err := ev.Cluster.Validate(); err != nil {
			return err
		}
		o.cluster = *ev.Cluster
	case rpc.WatchService, rpc.WatchEndpoints:
		return checkServiceEvent(ev, o)
	case rpc.WatchIngress:
		return checkIngressEvent(ev, o)
	default:
		return fmt.Errorf("unknown kind %q; is the server newer than this agent?", api.TruncateText(ev.Kind, 20))
	}
	return nil
}

// applyLocked applies one incremental event and reports whether the view
// changed.
func (s *Store) applyLocked(at uint64, o op) bool {
	if o.invalid {
		return false
	}
	switch o.kind {
	case rpc.WatchPod:
		cur, ok := s.pods[o.key]
		switch {
		case ok && o.index < cur.index:
			return false // never backwards
		case o.deleted:
			if !ok {
				return false
			}
			delete(s.pods, o.key)
			s.markPods(cur.obj.Node, at)
			return true
		}
		s.pods[o.key] = entry[api.Pod]{index: o.index, obj: o.pod}
		if ok && reflect.DeepEqual(cur.obj, o.pod) {
			return false
		}
		if ok {
			s.markPods(cur.obj.Node, at)
		}
		s.markPods(o.pod.Node, at)
		return true
	case rpc.WatchNode:
		cur, ok := s.nodes[o.key]
		switch {
		case ok && o.index < cur.index:
			return false
		case o.deleted:
			delete(s.nodes, o.key)
			return ok
		}
		s.nodes[o.key] = entry[api.Node]{index: o.index, obj: o.node}
		return !ok || !reflect.DeepEqual(cur.obj, o.node)
	case rpc.WatchCluster:
		cur := s.cluster
		switch {
		case cur != nil && o.index < cur.index:
			return false
		case o.deleted:
			s.cluster = nil
			return cur != nil
		}
		s.cluster = &entry[state.ClusterConfig]{index: o.index, obj: o.cluster}
		return cur == nil || cur.obj != o.cluster
	case rpc.WatchService:
		return s.markServices(at, applyEntry(s.services, o, o.service))
	case rpc.WatchEndpoints:
		return s.markServices(at, applyEntry(s.endpoints, o, o.endpoints))
	case rpc.WatchIngress:
		return s.markIngresses(at, applyEntry(s.ingresses, o, o.ingress))
	}
	return false
}

// resetLocked replaces the view with ops (a Reset response at index at) and
// reports whether it changed. A key whose event was dropped as invalid
// keeps what the view had for it.
func (s *Store) resetLocked(at uint64, ops []op) bool {
	pods := make(map[string]entry[api.Pod], len(ops))
	nodes := make(map[string]entry[api.Node], len(s.nodes))
	var cluster *entry[state.ClusterConfig]
	svcChanged := s.resetServicesLocked(at, ops)
	ingChanged := s.resetIngressesLocked(at, ops)
	for _, o := range ops {
		switch {
		case o.invalid:
			switch o.kind {
			case rpc.WatchPod:
				if cur, ok := s.pods[o.key]; ok {
					pods[o.key] = cur
				}
			case rpc.WatchNode:
				if cur, ok := s.nodes[o.key]; ok {
					nodes[o.key] = cur
				}
			case rpc.WatchCluster:
				cluster = s.cluster
			}
		case o.deleted:
			// A reset is the whole view: a deletion in it only undoes an
			// earlier event of the same response.
			switch o.kind {
			case rpc.WatchPod:
				delete(pods, o.key)
			case rpc.WatchNode:
				delete(nodes, o.key)
			case rpc.WatchCluster:
				cluster = nil
			}
		default:
			switch o.kind {
			case rpc.WatchPod:
				pods[o.key] = entry[api.Pod]{index: o.index, obj: o.pod}
			case rpc.WatchNode:
				nodes[o.key] = entry[api.Node]{index: o.index, obj: o.node}
			case rpc.WatchCluster:
				cluster = &entry[state.ClusterConfig]{index: o.index, obj: o.cluster}
			}
		}
	}
	changed := false
	for id, cur := range s.pods {
		if n, ok := pods[id]; !ok || !reflect.DeepEqual(cur.obj, n.obj) {
			s.markPods(cur.obj.Node, at)
			changed = true
		}
	}
	for id, n := range pods {
		if cur, ok := s.pods[id]; !ok || !reflect.DeepEqual(cur.obj, n.obj) {
			s.markPods(n.obj.Node, at)
			changed = true
		}
	}
	if len(nodes) != len(s.nodes) {
		changed = true
	}
	for name, n := range nodes {
		if cur, ok := s.nodes[name]; !ok || !reflect.DeepEqual(cur.obj, n.obj) {
			changed = true
		}
	}
	if (cluster == nil) != (s.cluster == nil) || (cluster != nil && cluster.obj != s.cluster.obj) {
		changed = true
	}
	s.pods, s.nodes, s.cluster = pods, nodes, cluster
	return changed || svcChanged || ingChanged
}

// markPods records that a pod placed on node changed in the response at
// index. It only grows, even for a server that sends a change without
// advancing the index, so a consumer comparing two readings sees a change.
func (s *Store) markPods(node string, index uint64) {
	s.podsChanged[node] = max(index, s.podsChanged[node]+1)
}

// Reads. Each returns a deep copy and is safe to call concurrently with
// Apply.

// Pod returns a pod of the view by ID ("namespace/name").
func (s *Store) Pod(id string) (api.Pod, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.pods[id]
	if !ok {
		return api.Pod{}, false
	}
	return copyPod(e.obj), true
}

// Pods returns the pods of the view that f selects, sorted by ID.
func (s *Store) Pods(f state.PodFilter) []api.Pod {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []api.Pod
	for _, e := range s.pods {
		p := &e.obj
		if (f.Namespace == "" || p.Namespace == f.Namespace) &&
			(f.Deployment == "" || p.Deployment == f.Deployment) &&
			(f.Node == "" || p.Node == f.Node) {
			out = append(out, copyPod(*p))
		}
	}
	slices.SortFunc(out, func(a, b api.Pod) int { return strings.Compare(a.ID(), b.ID()) })
	return out
}

// Node returns a node by name.
func (s *Store) Node(name string) (api.Node, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.nodes[name]
	if !ok {
		return api.Node{}, false
	}
	return copyNode(e.obj), true
}

// Nodes returns every node of the view, sorted by name.
func (s *Store) Nodes() []api.Node {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]api.Node, 0, len(s.nodes))
	for _, e := range s.nodes {
		out = append(out, copyNode(e.obj))
	}
	slices.SortFunc(out, func(a, b api.Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ClusterConfig returns the cluster's network layout; false until the view
// has one.
func (s *Store) ClusterConfig() (state.ClusterConfig, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cluster == nil {
		return state.ClusterConfig{}, false
	}
	return s.cluster.obj, true
}

// Index returns the raft index the view is at: the next watch asks from it.
func (s *Store) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

// Leader returns the raft leader's node name as the last response said;
// "" when unknown.
func (s *Store) Leader() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leader
}

// Changed returns a channel that is closed at the next applied response
// that changes the view's content (pods, nodes, cluster config; not the
// index or leader alone). Take it before reading, then wait on it, so a
// change between the read and the wait is not missed.
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// PodsChanged returns the index of the last change to a pod placed on node,
// so a node's reconciler passes only when its own pods changed. It only
// grows.
func (s *Store) PodsChanged(node string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.podsChanged[node]
}

// WaitIndex waits until the view is at index or later, or ctx ends.
func (s *Store) WaitIndex(ctx context.Context, index uint64) error {
	for {
		s.mu.RLock()
		at, advanced := s.index, s.advanced
		s.mu.RUnlock()
		if at >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the client's view to reach index %d (it is at %d): %w", index, at, ctx.Err())
		case <-advanced:
		}
	}
}

// Deep copies, as state's: what a read returns shares nothing with the view.

func copyPod(p api.Pod) api.Pod {
	p.Labels = maps.Clone(p.Labels)
	p.Containers = api.CloneContainers(p.Containers)
	p.AntiAffinity = api.CloneAntiAffinity(p.AntiAffinity)
	if p.Status.Containers != nil {
		cs := make([]api.ContainerStatus, len(p.Status.Containers))
		for i, c := range p.Status.Containers {
			c.LastLog = slices.Clone(c.LastLog)
			cs[i] = c
		}
		p.Status.Containers = cs
	}
	return p
}

func copyNode(n api.Node) api.Node {
	n.Labels = maps.Clone(n.Labels)
	n.Conditions = slices.Clone(n.Conditions)
	return n
}
