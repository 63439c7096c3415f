package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

// namespaceFlags are -n and -A of the list commands.
type namespaceFlags struct {
	namespace string
	all       bool
}

func (f *namespaceFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", api.DefaultNamespace, "namespace")
	cmd.Flags().BoolVarP(&f.all, "all-namespaces", "A", false, "every namespace")
}

func newPodsCmd(c *cli) *cobra.Command {
	var deployment string
	cmd := listCmd(c, &cobra.Command{
		Use:     "pods",
		Aliases: []string{"pod", "po"},
		Short:   "List pods",
	}, listing[api.Pod]{
		plural: "pods", namespaced: true,
		list: func(ctx context.Context, cl *api.Client, ns string) ([]api.Pod, error) {
			return cl.ListPods(ctx, ns, deployment)
		},
		id:      func(p *api.Pod) (string, string) { return p.Namespace, p.Name },
		headers: []string{"NAME", "READY", "STATUS", "RESTARTS", "AGE"},
		wide:    []string{"IP", "NODE", "DEPLOYMENT"},
		row: func(p *api.Pod) []string {
			return []string{p.Name, podReady(p), podStatus(p), fmt.Sprint(restarts(p)), age(c.now(), podCreated(p))}
		},
		wideRow: func(p *api.Pod) []string { return []string{p.Status.IP, p.Node, p.Deployment} },
	})
	cmd.Flags().StringVar(&deployment, "deployment", "", "only the pods of this deployment")
	return cmd
}

// podReady is "ready containers/containers".
func podReady(p *api.Pod) string {
	n := 0
	for _, cs := range p.Status.Containers {
		if cs.Ready {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(p.Containers))
}

// podStatus is kubectl's STATUS: the reason a pod is not running
// (CrashLoopBackOff, ErrImagePull), else its phase.
func podStatus(p *api.Pod) string {
	switch {
	case p.Stop:
		return "Terminating"
	case p.Status.Reason != "":
		return p.Status.Reason
	case p.Status.Phase == "":
		return "Pending"
	}
	return strings.ToUpper(p.Status.Phase[:1]) + p.Status.Phase[1:]
}

func restarts(p *api.Pod) int {
	n := 0
	for _, cs := range p.Status.Containers {
		n += cs.RestartCount
	}
	return n
}

// podCreated is when the pod was placed, or for pods placed before agents
// kept that, when it started.
func podCreated(p *api.Pod) time.Time {
	if !p.CreatedAt.IsZero() {
		return p.CreatedAt
	}
	return p.Status.StartedAt
}
