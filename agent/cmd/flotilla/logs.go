package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newLogsCmd(c *cli) *cobra.Command {
	var namespace string
	var opts api.LogOptions
	tail := -1
	cmd := &cobra.Command{
		Use:   "logs POD",
		Short: "Print (or follow) a container's log",
		Long: `Prints a container's output, stdout and stderr together, from the node that runs it.
With -f it follows the container, through restarts, until interrupted or the pod is removed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail >= 0 {
				opts.Tail = api.Lines(tail)
			}
			if err := opts.Validate(); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			// Following lasts until interrupted: only the wait for the
			// answer to begin is bounded (by the client).
			ctx := cmd.Context()
			if !opts.Follow {
				var cancel func()
				ctx, cancel = c.ctx(cmd)
				defer cancel()
			}
			rc, err := cl.PodLogs(ctx, namespace, args[0], opts)
			if err != nil {
				return err
			}
			defer rc.Close()
			if _, err := io.Copy(c.stdout, rc); err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("logs of %s/%s: %w", namespace, args[0], err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&namespace, "namespace", "n", api.DefaultNamespace, "namespace")
	fl.StringVarP(&opts.Container, "container", "c", "", "container (may be left out for a pod with one)")
	fl.BoolVarP(&opts.Follow, "follow", "f", false, "stream new output, through restarts")
	fl.BoolVarP(&opts.Previous, "previous", "p", false, "the run before the last restart")
	fl.IntVar(&tail, "tail", -1, "only the last N lines (-1: all kept)")
	fl.DurationVar(&opts.Since, "since", 0, "only lines newer than this, e.g. 5m")
	fl.BoolVar(&opts.Timestamps, "timestamps", false, "start each line with when it was written")
	return cmd
}
