package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newEventsCmd(c *cli) *cobra.Command {
	var namespace, pod, output string
	cmd := &cobra.Command{
		Use:     "events",
		Aliases: []string{"event", "ev"},
		Short:   "List the events of a namespace's pods (the last hour), newest last",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == outputWide {
				return fmt.Errorf("-o wide: events have no wide form; use json, or leave -o out")
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			events, err := cl.ListEvents(ctx, namespace, pod)
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeJSON(c.stdout, events)
			}
			if len(events) == 0 {
				fmt.Fprintf(c.stderr, "No events in namespace %s.\n", namespace)
				return nil
			}
			t := newTable(c.stdout, "LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE")
			now := c.now()
			for _, e := range events {
				t.row(age(now, e.Time), e.Type, e.Reason, e.Object, fmt.Sprint(e.Times()), e.Message)
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", api.DefaultNamespace, "namespace")
	cmd.Flags().StringVar(&pod, "pod", "", "only this pod's events")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json")
	return cmd
}
