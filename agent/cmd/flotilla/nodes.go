package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newNodesCmd(c *cli) *cobra.Command {
	return listCmd(c, &cobra.Command{
		Use:     "nodes",
		Aliases: []string{"node", "no"},
		Short:   "List the fleet's nodes",
	}, listing[api.Node]{
		plural:  "nodes",
		list:    func(ctx context.Context, cl *api.Client, _ string) ([]api.Node, error) { return cl.ListNodes(ctx) },
		id:      func(n *api.Node) (string, string) { return "", n.Name },
		headers: []string{"NAME", "STATUS", "ROLE", "ADDRESS", "CPU", "MEMORY", "VERSION"},
		wide:    []string{"POD-CIDR", "LABELS"},
		row: func(n *api.Node) []string {
			return []string{n.Name, nodeStatus(n), n.Role(), n.Address, millis(n.CPUMillis), mib(n.MemoryMiB), n.Version}
		},
		wideRow: func(n *api.Node) []string { return []string{n.PodCIDR, labelList(n.Labels)} },
	})
}

// nodeStatus is the node's status with its scheduling state, as kubectl
// shows "Ready,SchedulingDisabled".
func nodeStatus(n *api.Node) string {
	s := []string{n.Status}
	for _, c := range n.Conditions {
		s = append(s, c.Type) // DiskPressure, RuntimeUnhealthy
	}
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
