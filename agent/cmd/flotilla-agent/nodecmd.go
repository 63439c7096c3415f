package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-io/flotilla/agent/agent"
	"github.com/flotilla-io/flotilla/api"
)

const scheduleUsage = `Usage:
  flotilla-agent cordon NAME [flags]
  flotilla-agent uncordon NAME [flags]
  flotilla-agent drain NAME [flags]

cordon keeps new pods off node NAME; its pods keep running. drain cordons
it and moves its pods to other nodes, one pod per deployment at a time, so
that every deployment keeps at least replicas - 1 ready pods, and waits
until the node runs none (--timeout). uncordon ends both. Needs no root.
The API address comes from $FLOTILLA_ADDR or the local agent's
<data-dir>/addr, the token from $FLOTILLA_TOKEN or --token-file.

Flags:
`

// nodeCommand is a parsed command line of a subcommand that acts on one
// node through the API.
type nodeCommand struct {
	cmd     string
	name    string
	client  *api.Client
	caFile  string
	timeout time.Duration
}

// parseNodeCommand parses "NAME [flags]" (NAME before or after the flags)
// and builds the API client; nil and the exit code on a usage error.
func parseNodeCommand(cmd, usage string, args []string, stderr io.Writer) (*nodeCommand, int) {
	if tokenOnArgv(args, stderr) {
		return nil, 2
	}
	prefix := "flotilla-agent " + cmd
	fs := flag.NewFlagSet(prefix, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	dataDir := fs.String("data-dir", agent.DefaultConfig().DataDir, "data dir of the local agent, whose addr file names its API (unless $FLOTILLA_ADDR is set)")
	tokenFile := fs.String("token-file", "", "file with the API token (default $FLOTILLA_TOKEN)")
	caFile := fs.String("ca-file", "", "the cluster CA certificate (PEM) to verify an https agent with, e.g. the agent's own --ca-file")
	defTimeout := 30 * time.Second
	if cmd == "drain" {
		defTimeout = 10 * time.Minute
	}
	timeout := fs.Duration("timeout", defTimeout, "how long to wait for the fleet to carry it out")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0
		}
		return nil, 2
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	switch {
	case len(rest) > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q; it acts on one node at a time: %s NAME\n", prefix, rest[0], prefix)
		return nil, 2
	case name == "":
		fmt.Fprintf(stderr, "%s: which node? name it: %s NAME (flotilla_nodes or GET /v1/nodes lists them)\n", prefix, prefix)
		return nil, 2
	}
	if err := api.ValidateNodeName(name); err != nil {
		fmt.Fprintf(stderr, "%s: node name: %v\n", prefix, err)
		return nil, 2
	}
	cfg := api.Config{Address: os.Getenv(api.EnvAddr), Token: os.Getenv(api.EnvToken)}
	if cfg.Address == "" {
		addrFile := filepath.Join(*dataDir, "addr")
		b, err := os.ReadFile(addrFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: no agent address: set %s, or run it on a node whose agent wrote %s (--data-dir): %v\n", prefix, api.EnvAddr, addrFile, err)
			return nil, 2
		}
		cfg.Address = strings.TrimSpace(string(b))
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: --token-file: %v\n", prefix, err)
			return nil, 2
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	if cfg.Token == "" {
		fmt.Fprintf(stderr, "%s: no API token: set %s or pass --token-file\n", prefix, api.EnvToken)
		return nil, 2
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: --ca-file: %v\n", prefix, err)
			return nil, 2
		}
		cfg.CACertPEM = pem
	}
	c, err := api.NewClient(&cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
		return nil, 2
	}
	return &nodeCommand{cmd: cmd, name: name, client: c, caFile: *caFile, timeout: *timeout}, 0
}

// context is bounded by --timeout and ends on SIGINT or SIGTERM.
func (nc *nodeCommand) context() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, nc.timeout)
	return ctx, func() { cancel(); stop() }
}

// fail explains err and returns exit code 1.
func (nc *nodeCommand) fail(err error, stderr io.Writer) int {
	prefix := "flotilla-agent " + nc.cmd
	var apiErr *api.Error
	var certErr *tls.CertificateVerificationError
	switch {
	case api.IsNotFound(err):
		fmt.Fprintf(stderr, "%s: no node %q in the fleet at %s: %v\n", prefix, nc.name, nc.client.Address(), err)
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusForbidden:
		verb := nc.cmd
		if verb == "remove-node" {
			verb = "remove"
		}
		fmt.Fprintf(stderr, "%s: the agent at %s refused to %s %s: %s\n", prefix, nc.client.Address(), verb, nc.name, apiErr.Message)
	case errors.As(err, &certErr) && nc.caFile == "":
		fmt.Fprintf(stderr, "%s: %v\nA fleet's API certificates come from the cluster CA: pass it with --ca-file.\n", prefix, err)
	default:
		fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
	}
	return 1
}

// scheduleNode cordons, uncordons or drains a node; drain waits until the
// node runs no pods, printing progress.
func scheduleNode(cmd string, args []string, stdout, stderr io.Writer) int {
	nc, code := parseNodeCommand(cmd, scheduleUsage, args, stderr)
	if nc == nil {
		return code
	}
	ctx, cancel := nc.context()
	defer cancel()
	sched := api.NodeSchedule{Unschedulable: cmd != "uncordon", Draining: cmd == "drain"}
	if _, err := nc.client.SetNodeSchedule(ctx, nc.name, sched); err != nil {
		return nc.fail(err, stderr)
	}
	switch cmd {
	case "cordon":
		fmt.Fprintf(stdout, "node %s cordoned: it takes no new pods; its pods keep running\n", nc.name)
		return 0
	case "uncordon":
		fmt.Fprintf(stdout, "node %s uncordoned: it takes new pods again\n", nc.name)
		return 0
	}
	fmt.Fprintf(stdout, "node %s draining: moving its pods to other nodes, one per deployment at a time\n", nc.name)
	last := -1
	for {
		left, err := podsOn(ctx, nc.client, nc.name)
		if err == nil && left == 0 {
			fmt.Fprintf(stdout, "node %s drained: it runs no pods and takes no new ones (uncordon it to use it again)\n", nc.name)
			return 0
		}
		if err == nil && left != last {
			fmt.Fprintf(stdout, "  %d pods left on %s\n", left, nc.name)
			last = left
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "flotilla-agent drain: %d pods still on %s after %s; it stays draining. A deployment that cannot place its pods elsewhere (see its status) holds the drain up.\n", last, nc.name, nc.timeout)
			return 1
		case <-time.After(time.Second):
		}
	}
}

// podsOn counts the pods placed on node, stopping ones included: a drain
// is done when they are all gone.
func podsOn(ctx context.Context, c *api.Client, node string) (int, error) {
	ds, err := c.ListDeployments(ctx, "")
	if err != nil {
		return 0, err
	}
	namespaces := map[string]bool{}
	for _, d := range ds {
		namespaces[d.Namespace] = true
	}
	n := 0
	for ns := range namespaces {
		pods, err := c.ListPods(ctx, ns, "")
		if err != nil {
			return 0, err
		}
		for _, p := range pods {
			if p.Node == node {
				n++
			}
		}
	}
	return n, nil
}
