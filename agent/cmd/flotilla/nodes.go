package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newNodesCmd(c *cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "nodes",
		Aliases: []string{"node", "no"},
		Short:   "List the fleet's nodes",
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
			nodes, err := cl.ListNodes(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(nodes, func(a, b api.Node) int { return cmp.Compare(a.Name, b.Name) })
			if output == outputJSON {
				return writeJSON(c.stdout, nodes)
			}
			headers := []string{"NAME", "STATUS", "ROLE", "ADDRESS", "CPU", "MEMORY", "VERSION"}
			if output == outputWide {
				headers = append(headers, "POD-CIDR", "LABELS")
			}
			t := newTable(c.stdout, headers...)
			for _, n := range nodes {
				row := []string{n.Name, nodeStatus(&n), n.Role(), n.Address, millis(n.CPUMillis), mib(n.MemoryMiB), n.Version}
				if output == outputWide {
					row = append(row, n.PodCIDR, labelList(n.Labels))
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or wide")
	return cmd
}

// nodeStatus is the node's status with its scheduling state, as kubectl
// shows "Ready,SchedulingDisabled".
func nodeStatus(n *api.Node) string {
	s := []string{n.Status}
	switch {
	case n.Draining:
		s = append(s, "Draining")
	case n.Unschedulable:
		s = append(s, "SchedulingDisabled")
	}
	return strings.Join(s, ",")
}

// millis renders CPU millicores as kubectl does: "2" cores or "500m".
func millis(m int64) string {
	if m == 0 {
		return "0"
	}
	if m%1000 == 0 {
		return fmt.Sprint(m / 1000)
	}
	return fmt.Sprintf("%dm", m)
}

// mib renders MiB as "512Mi" or "8Gi".
func mib(m int64) string {
	if m != 0 && m%1024 == 0 {
		return fmt.Sprintf("%dGi", m/1024)
	}
	return fmt.Sprintf("%dMi", m)
}
