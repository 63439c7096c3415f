package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

func newDescribeCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe",
		Short: "Show a pod or node in detail, with events",
	}
	cmd.AddCommand(newDescribePodCmd(c), newDescribeNodeCmd(c))
	return cmd
}

func newDescribePodCmd(c *cli) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:     "pod NAME",
		Aliases: []string{"pods", "po"},
		Short:   "Show a pod: spec, status, containers and events",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			pods, err := cl.ListPods(ctx, namespace, "")
			if err != nil {
				return err
			}
			i := slices.IndexFunc(pods, func(p api.Pod) bool { return p.Name == args[0] })
			if i < 0 {
				return fmt.Errorf("no pod %q in namespace %s: list them with 'flotilla pods -n %s'", args[0], namespace, namespace)
			}
			return describePod(c.stdout, &pods[i], c.now())
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", api.DefaultNamespace, "namespace")
	return cmd
}

// fields writes "Key:  value" lines aligned at the values.
type fields struct{ tw *tabwriter.Writer }

func newFields(w io.Writer) *fields { return &fields{tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)} }

// add writes one field at indent levels; empty values are left out.
func (f *fields) add(indent int, key, value string) {
	if value == "" {
		return
	}
	fmt.Fprintf(f.tw, "%s%s:\t%s\n", strings.Repeat("  ", indent), key, printable(value))
}

// header writes a line without a value ("Containers:").
func (f *fields) header(indent int, key string) {
	fmt.Fprintf(f.tw, "%s%s:\n", strings.Repeat("  ", indent), key)
}

func (f *fields) flush() error { return f.tw.Flush() }

func when(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339) + " (" + age(now, t) + " ago)"
}

func describePod(w io.Writer, p *api.Pod, now time.Time) error {
	f := newFields(w)
	f.add(0, "Name", p.Name)
	f.add(0, "Namespace", p.Namespace)
	if p.Deployment != "" {
		f.add(0, "Deployment", fmt.Sprintf("%s (generation %d)", p.Deployment, p.Generation))
	}
	f.add(0, "Node", p.Node)
	f.add(0, "Created", when(now, p.CreatedAt))
	f.add(0, "Started", when(now, p.Status.StartedAt))
	f.add(0, "Labels", labelList(p.Labels))
	f.add(0, "Status", podStatus(p))
	if p.StopReason != "" {
		f.add(0, "Stopped because", p.StopReason)
	}
	f.add(0, "Ready", fmt.Sprint(p.Status.Ready))
	f.add(0, "IP", p.Status.IP)
	f.add(0, "Message", p.Status.Message)
	f.header(0, "Containers")
	for _, ct := range p.Containers {
		var cs api.ContainerStatus
		if i := slices.IndexFunc(p.Status.Containers, func(s api.ContainerStatus) bool { return s.Name == ct.Name }); i >= 0 {
			cs = p.Status.Containers[i]
		}
		f.header(1, ct.Name)
		f.add(2, "Image", ct.Image)
		f.add(2, "Command", strings.Join(ct.Command, " "))
		f.add(2, "Args", strings.Join(ct.Args, " "))
		var ports []string
		for _, pt := range ct.Ports {
			s := fmt.Sprintf("%d/%s", pt.ContainerPort, cmp.Or(pt.Protocol, "tcp"))
			if pt.HostPort != 0 {
				s += fmt.Sprintf(" (host %d)", pt.HostPort)
			}
			ports = append(ports, s)
		}
		f.add(2, "Ports", strings.Join(ports, ", "))
		f.add(2, "Requests", resources(ct.CPURequest, ct.MemoryRequest))
		f.add(2, "Limits", resources(ct.CPULimit, ct.MemoryLimit))
		f.add(2, "State", cmp.Or(cs.State, "unknown"))
		f.add(2, "Reason", cs.Reason)
		f.add(2, "Message", cs.Message)
		f.add(2, "Ready", fmt.Sprint(cs.Ready))
		f.add(2, "Restarts", fmt.Sprint(cs.RestartCount))
		if cs.RestartCount > 0 {
			f.add(2, "Last exit code", fmt.Sprint(cs.LastExitCode))
			f.add(2, "Last exit reason", cs.LastExitReason)
		}
		f.add(2, "Liveness", probe(ct.LivenessProbe))
		f.add(2, "Readiness", probe(ct.ReadinessProbe))
		if len(cs.LastLog) > 0 {
			f.header(2, "Last log lines")
			for _, l := range cs.LastLog {
				fmt.Fprintf(f.tw, "      %s\n", printable(l))
			}
		}
	}
	if err := f.flush(); err != nil {
		return err
	}
	return writeEvents(w, api.RecentEvents(p.Status.Events, now), now)
}

// writeEvents writes kubectl describe's Events section.
func writeEvents(w io.Writer, events []api.Event, now time.Time) error {
	if len(events) == 0 {
		_, err := fmt.Fprintln(w, "Events:  <none>")
		return err
	}
	fmt.Fprintln(w, "Events:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tREASON\tAGE\tMESSAGE")
	for _, e := range events {
		a := age(now, e.Time)
		if e.Times() > 1 {
			a = fmt.Sprintf("%s (x%d over %s)", a, e.Times(), humanDuration(e.Time.Sub(e.First())))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Type, e.Reason, a, printable(e.Message))
	}
	return tw.Flush()
}

func resources(cpu, mem int64) string {
	var out []string
	if cpu != 0 {
		out = append(out, "cpu "+millis(cpu))
	}
	if mem != 0 {
		out = append(out, "memory "+mib(mem))
	}
	return strings.Join(out, ", ")
}

// probe renders a probe as kubectl does: "http-get :8080/healthz delay=0s
// timeout=1s period=10s #success=1 #failure=3".
func probe(p *api.Probe) string {
	if p == nil {
		return ""
	}
	d := p.WithDefaults()
	var what string
	switch {
	case p.HTTPGet != nil:
		what = fmt.Sprintf("http-get :%d%s", p.HTTPGet.Port, cmp.Or(p.HTTPGet.Path, "/"))
	case p.TCPSocket != nil:
		what = fmt.Sprintf("tcp-socket :%d", p.TCPSocket.Port)
	case p.Exec != nil:
		what = "exec [" + strings.Join(p.Exec.Command, " ") + "]"
	}
	return fmt.Sprintf("%s delay=%ds timeout=%ds period=%ds #success=%d #failure=%d", what,
		d.InitialDelaySeconds, d.TimeoutSeconds, d.PeriodSeconds, d.SuccessThreshold, d.FailureThreshold)
}

func newDescribeNodeCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:     "node NAME",
		Aliases: []string{"nodes", "no"},
		Short:   "Show a node: capacity, scheduling state and its pods",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			i := slices.IndexFunc(nodes, func(n api.Node) bool { return n.Name == args[0] })
			if i < 0 {
				return fmt.Errorf("no node %q in the fleet: list them with 'flotilla nodes'", args[0])
			}
			pods, err := cl.ListPods(ctx, "", "")
			if err != nil {
				return err
			}
			pods = slices.DeleteFunc(pods, func(p api.Pod) bool { return p.Node != args[0] })
			slices.SortFunc(pods, func(a, b api.Pod) int {
				return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
			})
			return describeNode(c.stdout, &nodes[i], pods, c.now())
		},
	}
}

func describeNode(w io.Writer, n *api.Node, pods []api.Pod, now time.Time) error {
	f := newFields(w)
	f.add(0, "Name", n.Name)
	f.add(0, "Role", n.Role())
	f.add(0, "Status", nodeStatus(n))
	f.add(0, "Address", n.Address)
	f.add(0, "Pod CIDR", n.PodCIDR)
	f.add(0, "Labels", labelList(n.Labels))
	f.add(0, "Version", n.Version)
	f.add(0, "Capacity", resources(n.CPUMillis, n.MemoryMiB))
	f.add(0, "Reserved", resources(n.ReservedCPUMillis, n.ReservedMemoryMiB))
	for _, c := range n.Conditions {
		f.add(0, "Condition", fmt.Sprintf("%s since %s: %s", c.Type, age(now, c.Since), printable(c.Message)))
	}
	var cpu, mem int64
	for _, p := range pods {
		if p.Stop {
			continue
		}
		for _, ct := range p.Containers {
			cpu += ct.CPURequest
			mem += ct.MemoryRequest
		}
	}
	f.add(0, "Requested", cmp.Or(resources(cpu, mem), "nothing"))
	if err := f.flush(); err != nil {
		return err
	}
	if len(pods) == 0 {
		_, err := fmt.Fprintln(w, "Pods:  <none>")
		return err
	}
	fmt.Fprintf(w, "Pods (%d):\n", len(pods))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAMESPACE\tNAME\tREADY\tSTATUS\tRESTARTS\tAGE")
	for _, p := range pods {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\n", p.Namespace, p.Name, podReady(&p), podStatus(&p), restarts(&p), age(now, podCreated(&p)))
	}
	return tw.Flush()
}
