package clientstate

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// The cache is the view as one Reset watch response would carry it, so
// loading it goes through the same checks as what a server sends. It holds
// the ingresses' TLS keys: it is written with mode 0600 in a 0700
// directory.
const (
	cacheVersion = 1
	// minPersistInterval bounds how often the cache is written under a
	// burst of responses; the latest view is always written in the end.
	minPersistInterval = 200 * time.Millisecond
	// maxCacheBytes bounds what Open reads: far above a real view (its own
	// pods and a few thousand node records).
	maxCacheBytes = 256 << 20
)

// cacheFile is the cache's format. Field names are the on-disk format.
type cacheFile struct {
	Version int              `json:"version"`
	Index   uint64           `json:"index"`
	Leader  string           `json:"leader,omitempty"`
	Events  []rpc.WatchEvent `json:"events"`
}

// persister writes the cache at most every minInterval, the latest view
// last.
type persister struct {
	minInterval time.Duration

	mu        sync.Mutex
	timer     *time.Timer // a write is scheduled
	lastStart time.Time
	closed    bool

	// writeMu serializes writes; savedGen and failing belong to it.
	writeMu  sync.Mutex
	savedGen uint64
	failing  bool
}

func prepareDir(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("client state cache %s: make its directory: %w; check the data directory's permissions", path, err)
	}
	// Temporary files of a write a crash interrupted.
	stale, _ := filepath.Glob(filepath.Join(dir, filepath.Base(path)) + ".tmp-*")
	for _, f := range stale {
		_ = os.Remove(f)
	}
	return nil
}

// load fills an empty view from the cache. Anything wrong with it leaves
// the view empty at index 0: the first watch is then a full resync, which
// costs one large response, never correctness.
func (s *Store) load() {
	cf, err := readCache(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.log.Info("no client state cache yet; the first watch is a full resync", "path", s.path)
		return
	case err != nil:
		s.log.Warn("ignoring the client state cache; the first watch is a full resync", "path", s.path, "err", err)
		return
	}
	s.index, s.leader = cf.Index, cf.Leader
	for i := range cf.Events {
		ev := &cf.Events[i]
		switch ev.Kind {
		case rpc.WatchPod:
			s.pods[ev.Key] = entry[api.Pod]{index: ev.Index, obj: *ev.Pod}
		case rpc.WatchNode:
			s.nodes[ev.Key] = entry[api.Node]{index: ev.Index, obj: *ev.Node}
		case rpc.WatchCluster:
			s.cluster = &entry[state.ClusterConfig]{index: ev.Index, obj: *ev.Cluster}
		case rpc.WatchService:
			s.services[ev.Key] = entry[api.Service]{index: ev.Index, obj: *ev.Service}
		case rpc.WatchEndpoints:
			s.endpoints[ev.Key] = entry[api.Endpoints]{index: ev.Index, obj: *ev.Endpoints}
		case rpc.WatchIngress:
			s.ingresses[ev.Key] = entry[api.Ingress]{index: ev.Index, obj: *ev.Ingress}
			s.ingChanged = max(s.ingChanged, ev.Index)
		}
		if ev.Kind == rpc.WatchService || ev.Kind == rpc.WatchEndpoints {
			s.svcChanged = max(s.svcChanged, ev.Index)
		}
	}
	s.log.Info("client state loaded from the cache", "path", s.path, "index", s.index, "pods", len(s.pods), "nodes", len(s.nodes))
}

// readCache reads and checks the whole cache: one object that fails the
// checks discards it all, since the index it was saved at says the view
// holds everything up to there.
func readCache(path string) (*cacheFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCacheBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCacheBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxCacheBytes)
	}
	var cf cacheFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("does not decode: %w", err)
	}
	if cf.Version != cacheVersion {
		return nil, fmt.Errorf("format version %d; this agent reads %d", cf.Version, cacheVersion)
	}
	seen := map[string]bool{}
	for i := range cf.Events {
		ev := &cf.Events[i]
		var o op
		if ev.Deleted {
			return nil, fmt.Errorf("%s %s: a deletion in a saved view", ev.Kind, ev.Key)
		}
		if err := checkEvent(ev, &o); err != nil {
			return nil, fmt.Errorf("%s %s: %w", api.TruncateText(ev.Kind, 20), api.TruncateText(ev.Key, 140), err)
		}
		if ev.Index > cf.Index {
			return nil, fmt.Errorf("%s %s: changed at index %d, after the view's %d", ev.Kind, ev.Key, ev.Index, cf.Index)
		}
		if k := ev.Kind + "\x00" + ev.Key; seen[k] {
			return nil, fmt.Errorf("%s %s: saved twice", ev.Kind, ev.Key)
		} else {
			seen[k] = true
		}
		// Keep the checked copies checkEvent made.
		switch ev.Kind {
		case rpc.WatchPod:
			ev.Pod = &o.pod
		case rpc.WatchNode:
			ev.Node = &o.node
		case rpc.WatchCluster:
			ev.Cluster = &o.cluster
		case rpc.WatchService:
			ev.Service = &o.service
		case rpc.WatchEndpoints:
			ev.Endpoints = &o.endpoints
		case rpc.WatchIngress:
			ev.Ingress = &o.ingress
		}
	}
	return &cf, nil
}

// saveSoon schedules a write of the cache: now, or minInterval after the
// last one started. A write already scheduled will write the latest view.
func (s *Store) saveSoon() {
	if s.path == "" {
		return
	}
	p := &s.persist
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.timer != nil {
		return
	}
	wait := max(p.minInterval-time.Since(p.lastStart), 0)
	p.timer = time.AfterFunc(wait, func() {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return // Close writes the latest view itself
		}
		p.timer = nil
		p.lastStart = time.Now()
		p.mu.Unlock()
		_ = s.save()
	})
}

// Close stops scheduled cache writes and writes the latest view. Call it
// once Run has returned; the view stays readable, and Apply still works,
// in memory only.
func (s *Store) Close() error {
	if s.path == "" {
		return nil
	}
	p := &s.persist
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.mu.Unlock()
	return s.save()
}

// save writes the view to the cache if it changed since the last write.
// Failures are logged when they start and stop, not at every write.
func (s *Store) save() error {
	p := &s.persist
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	gen, cf := s.snapshot()
	if gen == p.savedGen {
		return nil
	}
	err := writeCache(s.path, cf)
	switch {
	case err != nil && !p.failing:
		s.log.Warn("cannot save the client state cache; the agent keeps running, but a restart will resync from a server", "path", s.path, "err", err)
	case err == nil && p.failing:
		s.log.Info("client state cache saved again", "path", s.path)
	}
	p.failing = err != nil
	if err != nil {
		return err
	}
	p.savedGen = gen
	return nil
}

// snapshot returns the view as a cacheFile. Stored objects are never
// changed in place, so it shares them and is encoded outside the lock.
func (s *Store) snapshot() (uint64, *cacheFile) {
	s.mu.RLock()
	cf := &cacheFile{Version: cacheVersion, Index: s.index, Leader: s.leader,
		Events: make([]rpc.WatchEvent, 0, len(s.pods)+len(s.nodes)+1+len(s.services)+len(s.endpoints)+len(s.ingresses))}
	for id, e := range s.pods {
		cf.Events = append(cf.Events, rpc.WatchEvent{Index: e.index, Kind: rpc.WatchPod, Key: id, Pod: &e.obj})
	}
	for name, e := range s.nodes {
		cf.Events = append(cf.Events, rpc.WatchEvent{Index: e.index, Kind: rpc.WatchNode, Key: name, Node: &e.obj})
	}
	if s.cluster != nil {
		c := s.cluster.obj
		cf.Events = append(cf.Events, rpc.WatchEvent{Index: s.cluster.index, Kind: rpc.WatchCluster, Key: rpc.WatchCluster, Cluster: &c})
	}
	for key, e := range s.services {
		cf.Events = append(cf.Events, rpc.WatchEvent{Index: e.index, Kind: rpc.WatchService, Key: key, Service: &e.obj})
	}
	for key, e := range s.endpoints {
		cf.Events = append(cf.Events, rpc.WatchEvent{Index: e.index, Kind: rpc.WatchEndpoints, Key: key, Endpoints: &e.obj})
	}
	for key, e := range s.ingresses {
		cf.Events = append(cf.Events, rpc.WatchEvent{Index: e.index, Kind: rpc.WatchIngress, Key: key, Ingress: &e.obj})
	}
	gen := s.gen
	s.mu.RUnlock()
	slices.SortFunc(cf.Events, func(a, b rpc.WatchEvent) int {
		return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Key, b.Key))
	})
	return gen, cf
}

// writeCache replaces the file at path atomically: a temporary file in the
// same directory, synced, renamed over it, and the directory synced, so a
// crash leaves the old cache or the new one, never a mix.
func writeCache(path string, cf *cacheFile) (err error) {
	b, err := json.Marshal(cf)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	// The rename is durable once the directory is.
	d, derr := os.Open(dir)
	if derr != nil {
		return nil
	}
	defer d.Close()
	_ = d.Sync()
	return nil
}
