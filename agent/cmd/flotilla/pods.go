package main

import (
	"cmp"
	"fmt"
	"slices"
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

// ns is the namespace to list, "" for all.
func (f *namespaceFlags) ns() string {
	if f.all {
		return ""
	}
	return f.namespace
}

func newPodsCmd(c *cli) *cobra.Command {
	var nsf namespaceFlags
	var output, deployment string
	cmd := &cobra.Command{
		Use:     "pods",
		Aliases: []string{"pod", "po"},
		Short:   "List pods",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			pods, err := cl.ListPods(ctx, nsf.ns(), deployment)
			if err != nil {
				return err
			}
			slices.SortFunc(pods, func(a, b api.Pod) int {
				return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
			})
			if output == outputJSON {
				return writeJSON(c.stdout, pods)
			}
			if len(pods) == 0 && !nsf.all {
				fmt.Fprintf(c.stderr, "No pods in namespace %s.\n", nsf.namespace)
				return nil
			}
			var headers []string
			if nsf.all {
				headers = append(headers, "NAMESPACE")
			}
			headers = append(headers, "NAME", "READY", "STATUS", "RESTARTS", "AGE")
			if output == outputWide {
				headers = append(headers, "IP", "NODE", "DEPLOYMENT")
			}
			t := newTable(c.stdout, headers...)
			now := c.now()
			for _, p := range pods {
				var row []string
				if nsf.all {
					row = append(row, p.Namespace)
				}
				row = append(row, p.Name, podReady(&p), podStatus(&p), fmt.Sprint(restarts(&p)), age(now, podCreated(&p)))
				if output == outputWide {
					row = append(row, p.Status.IP, p.Node, p.Deployment)
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	nsf.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or wide")
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
