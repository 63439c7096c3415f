// Package podnet gives each pod a network namespace and an IP from the node's
// pod range through CNI (bridge + host-local + loopback), forwards the pod's
// host ports to it (portmap), and owns the node's pod bridge and the
// iptables rules that let its traffic through, bar the ranges pods are
// denied (the cloud metadata service by default).
package podnet

import "context"

// Attachment is a pod's network.
type Attachment struct {
	// Key identifies the pod; it is the CNI container ID and part of the netns name.
	Key       string
	NetNSPath string
	IP        string
}

// Network sets pod networks up and tears them down. Implementations must be
// safe for concurrent use on different keys.
type Network interface {
	// Init creates what every pod needs on this node (bridge, iptables
	// chains). It is idempotent and runs at agent start.
	Init(ctx context.Context) error
	// Setup creates the pod's netns and attaches it, and forwards the host
	// ports the options name (WithPortMappings). It is idempotent: for a
	// key already set up it returns the existing attachment with its IP,
	// its host ports made to match the options.
	Setup(ctx context.Context, key string, opts ...SetupOption) (Attachment, error)
	// Teardown releases the pod's IP and host ports and deletes its netns.
	// It succeeds when they are already gone, and needs no memory of Setup
	// (it works after an agent restart).
	Teardown(ctx context.Context, key string) error
	// List returns the pods that have a network on this node, with their
	// IPs where known.
	List(ctx context.Context) ([]Attachment, error)
	// Keys returns the keys of the pods that have a network on this node,
	// sorted, for the reconciler to find orphans at every pass: List
	// without reading each pod's IP (a JSON file per pod).
	Keys(ctx context.Context) ([]string, error)
	// Cleanup tears down every pod network and removes the bridge and
	// iptables chains Init made (flotilla-agent cleanup, make down, tests).
	Cleanup(ctx context.Context) error
}
