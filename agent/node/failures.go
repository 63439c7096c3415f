package node

import (
	"errors"
	"fmt"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// transientTries is how many times in a row a failure that may go away by
// itself (containerd slow under load, a call cut off at its deadline, a
// create that left something behind) is retried before it is reported
// under a reason that fails a rollout. Errors the runtime marks permanent
// are reported at once.
const transientTries = 5

// permanent reports whether err will not go away by retrying: the image is
// not there or may not be pulled, or the spec cannot run.
func permanent(err error) bool {
	return errors.Is(err, runtime.ErrImageNotFound) || errors.Is(err, runtime.ErrImageAccessDenied) ||
		errors.Is(err, runtime.ErrInvalidSpec)
}

// failureStatus is the reason and message to report for the n-th failure
// in a row (1-based) to create or start a container: a transient one reads
// as ContainerCreating until it has failed transientTries times.
func failureStatus(err error, n int) (reason, message string) {
	if !permanent(err) && n < transientTries {
		return api.ReasonContainerCreating, fmt.Sprintf("attempt %d failed; retrying: %v", n, err)
	}
	if errors.Is(err, errPull) {
		return api.ReasonErrImagePull, err.Error()
	}
	return api.ReasonCreateError, err.Error()
}

// oomMessage says that c was killed for its memory limit.
func oomMessage(c api.Container) string {
	if c.MemoryLimit > 0 {
		return fmt.Sprintf("killed for going over its memory limit of %d MiB (OOMKilled)", c.MemoryLimit)
	}
	return "killed by the kernel for lack of memory (OOMKilled)"
}
