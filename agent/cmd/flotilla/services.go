package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newServicesCmd(c *cli) *cobra.Command {
	return listCmd(c, &cobra.Command{
		Use:     "services",
		Aliases: []string{"service", "svc"},
		Short:   "List services",
	}, listing[api.Service]{
		plural: "services", namespaced: true,
		list: func(ctx context.Context, cl *api.Client, ns string) ([]api.Service, error) {
			return cl.ListServices(ctx, ns)
		},
		id:      func(s *api.Service) (string, string) { return s.Namespace, s.Name },
		headers: []string{"NAME", "TYPE", "CLUSTER-IP", "PORTS"},
		wide:    []string{"SELECTOR"},
		row: func(s *api.Service) []string {
			typ := s.Type
			if typ == "" {
				typ = api.ServiceClusterIP
			}
			return []string{s.Name, typ, s.ClusterIP, servicePorts(s.Ports)}
		},
		wideRow: func(s *api.Service) []string { return []string{labelList(s.Selector)} },
	})
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
