package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/hashicorp/memberlist"

	"github.com/flotilla-io/flotilla/api"
)

// Roles a node can have (the api package's names).
const (
	RoleServer = api.RoleServer
	RoleClient = api.RoleClient
)

// MetaMaxSize is the most bytes a node's encoded Meta may take: memberlist
// sends it in every alive message and refuses more.
const MetaMaxSize = memberlist.MetaMaxSize

// Meta is what a node tells the fleet about itself.
type Meta struct {
	// Role is RoleServer (a raft voter) or RoleClient.
	Role string
	// APIAddr, RPCAddr and RaftAddr are host:port addresses peers dial.
	APIAddr, RPCAddr, RaftAddr string
	// CPUMillis and MemoryMiB are the node's capacity for pods.
	CPUMillis, MemoryMiB int64
	// Labels are the operator's key/value labels for placement.
	Labels map[string]string
	// Version is the agent's version.
	Version string
}

// wireMeta is Meta as gossiped: JSON with one-letter keys, empty fields left
// out, so that labels have most of the 512 bytes.
type wireMeta struct {
	Role      string            `json:"r,omitempty"`
	APIAddr   string            `json:"a,omitempty"`
	RPCAddr   string            `json:"p,omitempty"`
	RaftAddr  string            `json:"f,omitempty"`
	CPUMillis int64             `json:"c,omitempty"`
	MemoryMiB int64             `json:"m,omitempty"`
	Labels    map[string]string `json:"l,omitempty"`
	Version   string            `json:"v,omitempty"`
}

// Validate checks the role and that the encoded form fits memberlist's limit.
func (m Meta) Validate() error {
	_, err := m.encode()
	return err
}

// encode returns the wire form, or an error saying what is wrong.
func (m Meta) encode() ([]byte, error) {
	if m.Role != RoleServer && m.Role != RoleClient {
		return nil, fmt.Errorf("node meta: role %q must be %q or %q", m.Role, RoleServer, RoleClient)
	}
	if m.CPUMillis < 0 || m.MemoryMiB < 0 {
		return nil, fmt.Errorf("node meta: capacity cannot be negative (cpu %d millicores, memory %d MiB)", m.CPUMillis, m.MemoryMiB)
	}
	b, err := json.Marshal(wireMeta(m))
	if err != nil {
		return nil, fmt.Errorf("node meta: encode: %w", err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("node meta is %d bytes encoded, more than memberlist's limit of %d: use fewer or shorter labels (%d labels now)",
			len(b), MetaMaxSize, len(m.Labels))
	}
	return b, nil
}

// decodeMeta reads a peer's wire form.
func decodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{}, errors.New("node meta is empty (not a flotilla agent?)")
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, fmt.Errorf("decode node meta: %w", err)
	}
	return Meta(w), nil
}

// clone returns a copy that shares no map with m.
func (m Meta) clone() Meta {
	m.Labels = maps.Clone(m.Labels)
	return m
}
