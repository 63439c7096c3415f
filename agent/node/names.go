package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

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

// checkPodNames refuses a pod whose names cannot safely become host paths
// and IDs on this node: the log directory <LogDir>/<namespace>_<pod>/
// <container>/, the netns /run/netns/<prefix><namespace>_<pod> and the
// CNI container ID. The API validates names, but the node takes pods from
// the replicated state, which it must not trust to be free of "../../etc"
// or "a/b": namespace and container names must be DNS labels of at most
// api.MaxNameLen characters, the pod name one of at most 63, and container
// names unique within the pod (they share its log directory).
func checkPodNames(p *api.Pod) error {
	var errs []error
	if err := api.ValidateName(p.Namespace); err != nil {
		errs = append(errs, fmt.Errorf("namespace: %w", err))
	}
	if err := api.ValidateDNSLabel(p.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	seen := make(map[string]bool, len(p.Containers))
	for i, c := range p.Containers {
		if err := api.ValidateName(c.Name); err != nil {
			errs = append(errs, fmt.Errorf("containers[%d].name: %w", i, err))
		} else if seen[c.Name] {
			errs = append(errs, fmt.Errorf("containers[%d].name: %q is used by another container of the pod", i, c.Name))
		}
		seen[c.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod %.80q/%.80q is not safe to run on this node: %w", p.Namespace, p.Name, err)
	}
	return nil
}
