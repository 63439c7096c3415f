package node

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/api"
)

// containerLogDir is a container's log directory under root:
// <namespace>_<pod>/<container>/. The pod's part is its podKey, so
// teardown removes every container's logs with the pod's directory.
func containerLogDir(root, ns, pod, container string) string {
	return filepath.Join(root, ns+"_"+pod, container)
}

// Logs reads the logs of this node's containers from the directories the
// reconciler gives them (Config.LogDir): what the pod's own node serves a
// container's logs from. It is safe for concurrent use.
type Logs struct {
	// Dir is the reconciler's Config.LogDir.
	Dir string
	// Now resolves LogOptions.Since on this node's clock, the one the
	// records were stamped with; nil is time.Now.
	Now func() time.Time
	// Poll is how often a follower that caught up looks for more; 0 is
	// containerlog's default.
	Poll time.Duration
}

// ContainerLogs writes the logs of container opts.Container of pod ns/pod
// to w (see api.LogOptions), flushing w when it implements http.Flusher
// each time it has caught up. It returns an error wrapping
// containerlog.ErrNotFound when this node has no logs for the container,
// or containerlog.ErrNoPrevious for Previous of a container that has not
// restarted. Following ends when ctx ends or the pod is removed.
func (l *Logs) ContainerLogs(ctx context.Context, ns, pod string, opts api.LogOptions, w io.Writer) error {
	// The names become a path: only ones a pod of this node can have.
	if api.ValidateName(ns) != nil || api.ValidateDNSLabel(pod) != nil || api.ValidateName(opts.Container) != nil {
		return fmt.Errorf("container %.60q of pod %.60q/%.60q: %w", opts.Container, ns, pod, containerlog.ErrNotFound)
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	ro := containerlog.ReadOptions{
		Previous: opts.Previous, Tail: -1, Since: opts.SinceTime, Follow: opts.Follow,
		Timestamps: opts.Timestamps, Poll: l.Poll,
	}
	if opts.Tail != nil {
		ro.Tail = *opts.Tail
	}
	if opts.Since > 0 {
		ro.Since = now().Add(-opts.Since)
	}
	if err := containerlog.Read(ctx, containerLogDir(l.Dir, ns, pod, opts.Container), ro, w); err != nil {
		return fmt.Errorf("container %s of pod %s/%s: %w", opts.Container, ns, pod, err)
	}
	return nil
}
