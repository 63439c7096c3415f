package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newServicesCmd(c *cli) *cobra.Command {
	var nsf namespaceFlags
	var output string
	cmd := &cobra.Command{
		Use:     "services",
		Aliases: []string{"service", "svc"},
		Short:   "List services",
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
			svcs, err := cl.ListServices(ctx, nsf.ns())
			if err != nil {
				return err
			}
			slices.SortFunc(svcs, func(a, b api.Service) int {
				return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
			})
			if output == outputJSON {
				return writeJSON(c.stdout, svcs)
			}
			if len(svcs) == 0 && !nsf.all {
				fmt.Fprintf(c.stderr, "No services in namespace %s.\n", nsf.namespace)
				return nil
			}
			var headers []string
			if nsf.all {
				headers = append(headers, "NAMESPACE")
			}
			headers = append(headers, "NAME", "TYPE", "CLUSTER-IP", "PORTS")
			if output == outputWide {
				headers = append(headers, "SELECTOR")
			}
			t := newTable(c.stdout, headers...)
			for _, s := range svcs {
				var row []string
				if nsf.all {
					row = append(row, s.Namespace)
				}
				typ := s.Type
				if typ == "" {
					typ = api.ServiceClusterIP
				}
				row = append(row, s.Name, typ, s.ClusterIP, servicePorts(s.Ports))
				if output == outputWide {
					row = append(row, labelList(s.Selector))
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

// servicePorts renders ports as kubectl does: 80/TCP, or 80:30080/TCP
// with a node port.
func servicePorts(ps []api.ServicePort) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		s := fmt.Sprint(p.Port)
		if p.NodePort != 0 {
			s += fmt.Sprintf(":%d", p.NodePort)
		}
		out[i] = s + "/" + strings.ToUpper(p.Proto())
	}
	return joinComma(out)
}

func joinComma(s []string) string { return strings.Join(s, ",") }
