package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/flotilla-io/flotilla/api"
)

// podKey names a pod's network (CNI container ID, netns) and log directory.
// Namespaces and pod names are DNS labels, so "_" cannot occur in either.
func podKey(p *api.Pod) string { return p.Namespace + "_" + p.Name }

// containerID is the runtime ID of one container of a pod: readable, and
// unique across namespaces thanks to a short hash of the full identity.
func containerID(p *api.Pod, container string) string {
	sum := sha256.Sum256([]byte(p.Namespace + "/" + p.Name + "/" + container))
	name := p.Name
	if len(name) > 60 {
		name = name[:60]
	}
	return name + "-" + hex.EncodeToString(sum[:])[:10]
}

// specHash identifies a container's spec, so a container created from
// another spec is never mistaken for this one.
func specHash(c api.Container) string {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}
