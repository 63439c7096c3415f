package node

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/flotilla-io/flotilla/api"
)

// checkSandbox refuses a pod whose containers ask for more of the sandbox
// than this node allows (capabilities beyond api.DefaultCapabilities and
// Config.AllowedCapabilities), or carry settings the API refuses: the
// node takes pods from the replicated state, which it does not trust.
func (r *Reconciler) checkSandbox(p *api.Pod) error {
	var errs []error
	for _, c := range p.Containers {
		if c.PidsLimit < 0 || c.PidsLimit > api.MaxPidsLimit {
			errs = append(errs, fmt.Errorf("container %s: pids_limit %d is out of range 0..%d", c.Name, c.PidsLimit, api.MaxPidsLimit))
		}
		if err := c.Security.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("container %s: security: %w", c.Name, err))
			continue
		}
		var refused []string
		if c.Security != nil {
			for _, n := range api.AddedCapabilities(c.Security.Capabilities) {
				if !slices.Contains(r.cfg.AllowedCapabilities, n) {
					refused = append(refused, n)
				}
			}
		}
		if len(refused) > 0 {
			allowed := "none"
			if len(r.cfg.AllowedCapabilities) > 0 {
				allowed = strings.Join(r.cfg.AllowedCapabilities, ", ")
			}
			errs = append(errs, fmt.Errorf("container %s adds capabilities %s, which node %s does not allow "+
				"(beyond Docker's default set it allows %s); remove them from security.capabilities.add, or start "+
				"the nodes that may run it with flotilla-agent --allow-capability", c.Name, strings.Join(refused, ", "), r.cfg.NodeName, allowed))
		}
	}
	return errors.Join(errs...)
}
