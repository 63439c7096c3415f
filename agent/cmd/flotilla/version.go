package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newVersionCmd(c *cli) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print flotilla's version and the agent's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(c.stdout, "flotilla %s\n", c.version)
			if clientOnly {
				return nil
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			st, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "agent %s at %s (node %s, leader %s)\n", st.Version, cl.Address(), st.Node, st.Leader)
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only flotilla's own version; ask no agent")
	return cmd
}
