package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

// newCordonCmd, newUncordonCmd and newDrainCmd set a node's scheduling
// state (PUT /v1/nodes/{name}/schedule), as kubectl's commands of the same
// names do.
func newCordonCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "cordon NODE",
		Short: "Keep new pods off a node; its pods stay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.setSchedule(cmd, args[0], api.NodeSchedule{Unschedulable: true}, "cordoned")
		},
	}
}

func newUncordonCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "uncordon NODE",
		Short: "Let new pods onto a node again (also ends a drain)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.setSchedule(cmd, args[0], api.NodeSchedule{}, "uncordoned")
		},
	}
}

func newDrainCmd(c *cli) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Move a node's pods to other nodes and keep new ones off it",
		Long: `Cordons the node and moves its pods to other nodes, one availability step per
deployment at a time (the servers do it; nothing is killed before its replacement is
ready). With --wait, flotilla waits until no running pod is left on the node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.setSchedule(cmd, args[0], api.NodeSchedule{Unschedulable: true, Draining: true}, "draining"); err != nil {
				return err
			}
			if wait <= 0 {
				return nil
			}
			return c.waitDrained(cmd.Context(), args[0], wait)
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the node's pods to leave, e.g. 5m (0: do not wait)")
	return cmd
}

func (c *cli) setSchedule(cmd *cobra.Command, node string, s api.NodeSchedule, done string) error {
	if err := api.ValidateName(node); err != nil {
		return fmt.Errorf("node %q: %w", node, err)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(cmd)
	defer cancel()
	if _, err := cl.SetNodeSchedule(ctx, node, s); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "node/%s %s\n", node, done)
	return nil
}

// waitDrained polls the node's pods until every one is stopping (its
// replacement ready elsewhere, as the servers drain) or gone.
func (c *cli) waitDrained(ctx context.Context, node string, wait time.Duration) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		pods, err := cl.ListPods(ctx, "", "")
		if err != nil {
			return fmt.Errorf("drain %s: %w", node, err)
		}
		left := 0
		for _, p := range pods {
			if p.Node == node && !p.Stop {
				left++
			}
		}
		if left == 0 {
			fmt.Fprintf(c.stdout, "node/%s drained\n", node)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %d pods still on it after %s; `flotilla pods -A -o wide` shows them and `flotilla describe pod` why", node, left, wait)
		case <-time.After(time.Second):
		}
	}
}
