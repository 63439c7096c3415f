package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newDeploymentsCmd(c *cli) *cobra.Command {
	return listCmd(c, &cobra.Command{
		Use:     "deployments",
		Aliases: []string{"deployment", "deploy"},
		Short:   "List deployments and their rollout",
	}, listing[api.Deployment]{
		plural: "deployments", namespaced: true,
		list: func(ctx context.Context, cl *api.Client, ns string) ([]api.Deployment, error) {
			return cl.ListDeployments(ctx, ns)
		},
		id:      func(d *api.Deployment) (string, string) { return d.Namespace, d.Name },
		headers: []string{"NAME", "READY", "UP-TO-DATE", "GENERATION", "ROLLOUT"},
		wide:    []string{"IMAGES"},
		row: func(d *api.Deployment) []string {
			st := d.Status
			return []string{d.Name, fmt.Sprintf("%d/%d", st.ReadyReplicas, d.Replicas), fmt.Sprint(st.UpdatedReplicas), fmt.Sprint(d.Generation), rollout(d)}
		},
		wideRow: func(d *api.Deployment) []string {
			var images []string
			for _, ct := range d.Containers {
				images = append(images, ct.Image)
			}
			return []string{joinComma(images)}
		},
	})
}

// rollout says where a deployment's rollout is.
func rollout(d *api.Deployment) string {
	switch {
	case d.Deleting:
		return "Deleting"
	case d.Status.Failure != "":
		return "Failed: " + d.Status.Failure
	case d.Status.Complete:
		return "Complete"
	}
	return "Progressing"
}
