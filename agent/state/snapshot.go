package state

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/api"
)

// snapshotVersion is the format of the snapshot body Persist writes.
// Version 2 added the cluster config, 3 the revoked node names, 4 the
// services, 5 the ingresses (with their TLS keys: snapshots are as secret
// as the raft log). Restore reads 1 to 5 and refuses others, and an older
// agent refuses a newer version rather than drop the new table.
const snapshotVersion = 5

// snapshotData is what a snapshot holds: every table, as sorted lists so the
// same state always encodes to the same bytes.
type snapshotData struct {
	Version     int              `json:"version"`
	Index       uint64           `json:"index"`
	Deployments []api.Deployment `json:"deployments"`
	Pods        []api.Pod        `json:"pods"`
	Nodes       []api.Node       `json:"nodes"`
	// ClusterConfig is absent until one is set (and in version 1).
	ClusterConfig *ClusterConfig `json:"cluster_config,omitempty"`
	Revoked       []revocation   `json:"revoked,omitempty"`
	Services      []api.Service  `json:"services,omitempty"`
	Ingresses     []api.Ingress  `json:"ingresses,omitempty"`
}

type revocation struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// Snapshot captures the tables. Copying the maps is enough because their
// values are never modified in place (see FSM).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{
		index:         f.index,
		deployments:   maps.Clone(f.deployments),
		pods:          maps.Clone(f.pods),
		nodes:         maps.Clone(f.nodes),
		revoked:       maps.Clone(f.revoked),
		services:      maps.Clone(f.services),
		ingresses:     maps.Clone(f.ingresses),
		clusterConfig: f.clusterConfig,
	}, nil
}

// Restore replaces all state with a snapshot's. Raft hands it snapshots it
// wrote or received from a leader; one that does not decode is an error
// raft reports, never a panic.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var data snapshotData
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("state: decode snapshot: %w", err)
	}
	if data.Version < 1 || data.Version > snapshotVersion {
		return fmt.Errorf("state: snapshot has format version %d; this agent reads versions 1 to %d: was it written by a newer flotilla-agent?", data.Version, snapshotVersion)
	}
	deployments := make(map[string]api.Deployment, len(data.Deployments))
	for _, d := range data.Deployments {
		deployments[deploymentKey(d.Namespace, d.Name)] = d
	}
	pods := make(map[string]api.Pod, len(data.Pods))
	for _, p := range data.Pods {
		pods[p.ID()] = p
	}
	nodes := make(map[string]api.Node, len(data.Nodes))
	for _, n := range data.Nodes {
		nodes[n.Name] = n
	}
	revoked := make(map[string]time.Time, len(data.Revoked))
	for _, r := range data.Revoked {
		revoked[r.Name] = r.At
	}

	services := make(map[string]api.Service, len(data.Services))
	for _, s := range data.Services {
		services[s.ID()] = s
	}

	ingresses := make(map[string]api.Ingress, len(data.Ingresses))
	for _, in := range data.Ingresses {
		ingresses[in.ID()] = in
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.deployments, f.pods, f.nodes, f.revoked, f.services = deployments, pods, nodes, revoked, services
	f.ingresses = ingresses
	f.clusterConfig = data.ClusterConfig
	f.index = data.Index
	f.rebuildIndexes(data.Index)
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

type fsmSnapshot struct {
	index         uint64
	deployments   map[string]api.Deployment
	pods          map[string]api.Pod
	nodes         map[string]api.Node
	revoked       map[string]time.Time
	services      map[string]api.Service
	ingresses     map[string]api.Ingress
	clusterConfig *ClusterConfig
}

func (s *fsmSnapshot) data() snapshotData {
	data := snapshotData{
		Version:     snapshotVersion,
		Index:       s.index,
		Deployments: make([]api.Deployment, 0, len(s.deployments)),
		Pods:        make([]api.Pod, 0, len(s.pods)),
		Nodes:       make([]api.Node, 0, len(s.nodes)),
		// The pointed-to value is never modified (see FSM).
		ClusterConfig: s.clusterConfig,
	}
	for _, k := range slices.Sorted(maps.Keys(s.deployments)) {
		data.Deployments = append(data.Deployments, s.deployments[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.pods)) {
		data.Pods = append(data.Pods, s.pods[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.nodes)) {
		data.Nodes = append(data.Nodes, s.nodes[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.services)) {
		data.Services = append(data.Services, s.services[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.ingresses)) {
		data.Ingresses = append(data.Ingresses, s.ingresses[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.revoked)) {
		data.Revoked = append(data.Revoked, revocation{Name: k, At: s.revoked[k]})
	}
	return data
}

// Persist writes the snapshot; raft calls it concurrently with Apply.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.data()); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("state: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
