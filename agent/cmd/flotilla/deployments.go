package main

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newDeploymentsCmd(c *cli) *cobra.Command {
	var nsf namespaceFlags
	var output string
	cmd := &cobra.Command{
		Use:     "deployments",
		Aliases: []string{"deployment", "deploy"},
		Short:   "List deployments and their rollout",
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
			ds, err := cl.ListDeployments(ctx, nsf.ns())
			if err != nil {
				return err
			}
			slices.SortFunc(ds, func(a, b api.Deployment) int {
				return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
			})
			if output == outputJSON {
				return writeJSON(c.stdout, ds)
			}
			if len(ds) == 0 && !nsf.all {
				fmt.Fprintf(c.stderr, "No deployments in namespace %s.\n", nsf.namespace)
				return nil
			}
			var headers []string
			if nsf.all {
				headers = append(headers, "NAMESPACE")
			}
			headers = append(headers, "NAME", "READY", "UP-TO-DATE", "GENERATION", "ROLLOUT")
			if output == outputWide {
				headers = append(headers, "IMAGES")
			}
			t := newTable(c.stdout, headers...)
			for _, d := range ds {
				var row []string
				if nsf.all {
					row = append(row, d.Namespace)
				}
				st := d.Status
				row = append(row, d.Name, fmt.Sprintf("%d/%d", st.ReadyReplicas, d.Replicas), fmt.Sprint(st.UpdatedReplicas),
					fmt.Sprint(d.Generation), rollout(&d))
				if output == outputWide {
					var images []string
					for _, ct := range d.Containers {
						images = append(images, ct.Image)
					}
					row = append(row, joinComma(images))
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	nsf.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or wide")
	return cmd
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
