// Command flotilla-agent is the Flotilla node daemon. It only wires flags to
// agent.Config; everything else lives in package agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/flotilla-io/flotilla/agent/agent"
	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/api"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

const usage = `Usage:
  flotilla-agent [flags]                    run the agent
  flotilla-agent cleanup [flags]            remove all an agent with these flags made (stop it first)
  flotilla-agent remove-node NAME [flags]   remove a node from the fleet and revoke its certificates
  flotilla-agent cordon NAME [flags]        keep new pods off a node
  flotilla-agent uncordon NAME [flags]      let a node take new pods again (ends a drain)
  flotilla-agent drain NAME [flags]         move a node's pods elsewhere, one per deployment at a time, and wait
  flotilla-agent version

The subcommand comes first, then the flags. The API token is never a flag:
set FLOTILLA_TOKEN or pass --token-file.

Flags:
`

const removeNodeUsage = `Usage:
  flotilla-agent remove-node NAME [flags]

Removes node NAME from the fleet through the agent API: its record and pods
go, and every certificate it holds is refused fleet-wide, so it cannot take
part again without joining anew. Needs no root. The API address comes from
$FLOTILLA_ADDR or the local agent's <data-dir>/addr, the token from
$FLOTILLA_TOKEN or --token-file.

Flags:
`

// subcommands are the words that may start the command line.
var subcommands = []string{"run", "cleanup", "remove-node", "cordon", "uncordon", "drain", "version"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code: 0 done, 1 failed,
// 2 a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version":
		if len(args) > 0 {
			fmt.Fprintf(stderr, "flotilla-agent version: unexpected argument %q\n", args[0])
			return 2
		}
		fmt.Fprintln(stdout, "flotilla-agent", version)
		return 0
	case "run", "cleanup":
		return runAgent(cmd, args, stderr)
	case "remove-node":
		return removeNode(args, stdout, stderr)
	case "cordon", "uncordon", "drain":
		return scheduleNode(cmd, args, stdout, stderr)
	case containerlog.DriverCommand:
		// Hidden: containerd's shim runs the agent's binary as each
		// container's log driver (agent/runtime/containerd).
		return containerlog.DriverMain(args)
	default:
		fmt.Fprintf(stderr, "flotilla-agent: unknown command %q; the commands are %s\n\n%s", cmd, strings.Join(subcommands, ", "), usage)
		return 2
	}
}

// runAgent runs the agent or its cleanup.
func runAgent(cmd string, args []string, stderr io.Writer) int {
	if tokenOnArgv(args, stderr) {
		return 2
	}
	cfg := agent.DefaultConfig()
	cfg.Version = version
	cfg.Token = os.Getenv(api.EnvToken)
	fs := flag.NewFlagSet("flotilla-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); printDefaults(fs, hiddenFlags) }
	fs.BoolVar(&cfg.Dev, "dev", false, "run server and node in one process with a single raft voter and a generated token (<data-dir>/token)")
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's name")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "where state, logs and containerd's files live")
	fs.StringVar(&cfg.APIAddr, "api-addr", cfg.APIAddr, "API listen address: loopback unless in a fleet (HTTPS)")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "raft RPC listen address")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file with the API token (default $FLOTILLA_TOKEN; generated in --dev)")
	fs.StringVar(&cfg.APITokenHashFile, "api-token-hash-file", "", "file with the hex SHA-256 of the API token (what fleet VMs get from cloud-init), instead of the token")
	fs.StringVar(&cfg.ContainerdAddress, "containerd-address", "", "socket of an existing containerd; empty starts and supervises a private one")
	fs.StringVar(&cfg.ContainerdBinary, "containerd-binary", "", "containerd binary for the supervised containerd (default: containerd on PATH)")
	fs.StringVar(&cfg.ContainerdNamespace, "containerd-namespace", cfg.ContainerdNamespace, "containerd namespace for this agent's containers and images")
	var insecure, labels listFlag
	fs.Var(&labels, "label", "a label of this node, key=value, that node_selector and anti_affinity match (repeatable), e.g. --label zone=eu-1a")
	fs.Var(&insecure, "insecure-registry", "registry host:port to pull from over plain HTTP (repeatable)")
	fs.StringVar(&cfg.ImageDir, "image-dir", "", "directory of image archives (*.tar) to import at start")
	fs.StringVar(&cfg.PodCIDR, "pod-cidr", cfg.PodCIDR, "IPv4 range pods on this node get addresses from")
	fs.Var(denyFlag{&cfg.PodDenyCIDRs}, "pod-deny-cidr", "IPv4 range or address pods may not reach, refused at once (repeatable; adds to the default; \"none\" empties the list so far, for nodes whose pods must reach a metadata service)")
	fs.StringVar(&cfg.BridgeName, "bridge", cfg.BridgeName, "Linux bridge the pods attach to")
	fs.StringVar(&cfg.ChainPrefix, "iptables-chain-prefix", cfg.ChainPrefix, "prefix of this agent's iptables chains")
	fs.StringVar(&cfg.NetNSPrefix, "netns-prefix", cfg.NetNSPrefix, "prefix of pod network namespace names under /run/netns")
	fs.StringVar(&cfg.CgroupParent, "cgroup-parent", cfg.CgroupParent, "cgroup under which pod containers run")
	fs.IntVar(&cfg.MTU, "mtu", 0, "MTU of pod interfaces (default: the MTU of the default route's interface)")
	fs.BoolVar(&cfg.Server, "server", false, "fleet: hold the cluster state (a raft voter); otherwise a client that runs pods")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "fleet servers: bootstrap once this many servers have joined")
	fs.IntVar(&cfg.RaftMultiplier, "raft-multiplier", cfg.RaftMultiplier, "fleet: scale raft's timeouts for slow machines or networks (1..10; 0 lets the agent pick)")
	var retryJoin listFlag
	fs.Var(&retryJoin, "retry-join", "fleet: address of a server to join, retried until it answers (repeatable)")
	fs.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "fleet: IP other agents reach this one at")
	fs.StringVar(&cfg.BindAddr, "bind-addr", "", "fleet: IP gossip, raft and RPC listen on (default: --advertise-addr)")
	fs.IntVar(&cfg.GossipPort, "gossip-port", cfg.GossipPort, "fleet: memberlist port")
	fs.IntVar(&cfg.RaftPort, "raft-port", cfg.RaftPort, "fleet: raft port")
	fs.IntVar(&cfg.RPCPort, "rpc-port", cfg.RPCPort, "fleet: agent-to-agent RPC port (mTLS)")
	fs.StringVar(&cfg.CAFile, "ca-file", "", "fleet: the cluster CA certificate (PEM)")
	fs.StringVar(&cfg.CAKeyFile, "ca-key-file", "", "fleet servers: the cluster CA key, to sign joining agents' certificates")
	fs.StringVar(&cfg.GossipKeyFile, "gossip-key-file", "", "fleet: file with the base64 gossip encryption key")
	fs.StringVar(&cfg.JoinTokenFile, "join-token-file", "", "fleet: file with the join token agents present to get a certificate")
	fs.DurationVar(&cfg.CertValidity, "cert-validity", cfg.CertValidity, "fleet: lifetime of the node certificates servers issue (renewed at two thirds)")
	fs.StringVar(&cfg.ClusterPodCIDR, "cluster-pod-cidr", cfg.ClusterPodCIDR, "fleet servers: range split into one pod range per node")
	fs.StringVar(&cfg.ServiceCIDR, "service-cidr", cfg.ServiceCIDR, "servers and --dev: range service addresses are given from (/12 to /28); set when the cluster state is created")
	fs.StringVar(&cfg.NodePortRange, "service-node-port-range", cfg.NodePortRange, "servers and --dev: range node ports are given from; set when the cluster state is created")
	fs.IntVar(&cfg.IngressHTTPPort, "ingress-http-port", cfg.IngressHTTPPort, "port of this node's ingress proxy for HTTP (0: off)")
	fs.IntVar(&cfg.IngressHTTPSPort, "ingress-https-port", cfg.IngressHTTPSPort, "port of this node's ingress proxy for HTTPS (0: off)")
	fs.BoolVar(&cfg.IngressNoAccessLog, "ingress-no-access-log", cfg.IngressNoAccessLog, "no access log lines or request metrics from the ingress proxy (~7 µs less CPU per request)")
	fs.StringVar(&cfg.IngressBind, "ingress-bind", cfg.IngressBind, "address the ingress proxy listens on (default: every address)")
	fs.StringVar(&cfg.ClusterDomain, "cluster-domain", cfg.ClusterDomain, "servers and --dev: DNS domain of service and pod names (<service>.<namespace>.svc.<domain>); set when the cluster state is created")
	// Hidden: benchmarks only (BenchmarkFleetScale compares the design
	// before clients left raft). See agent.Config.LegacyClientRaft.
	fs.Int64Var(&cfg.ReservedCPUMillis, "reserved-cpu", cfg.ReservedCPUMillis, "millicores of CPU kept for the system: pods are placed in the rest")
	fs.Int64Var(&cfg.ReservedMemoryMiB, "reserved-memory", cfg.ReservedMemoryMiB, "MiB of memory kept for the system: pods are placed in the rest")
	fs.DurationVar(&cfg.LostNodeGrace, "lost-node-grace", cfg.LostNodeGrace, "fleet servers: how long after gossip marks a node failed its pods are replaced elsewhere (also how long a cut-off node waits before stopping self-fencing pods); set when the cluster bootstraps")
	fs.DurationVar(&cfg.GossipProbeInterval, "gossip-probe-interval", cfg.GossipProbeInterval, "fleet: how often each agent probes another for failure detection")
	fs.DurationVar(&cfg.GossipProbeTimeout, "gossip-probe-timeout", cfg.GossipProbeTimeout, "fleet: how long a probe waits for its answer before asking others to probe indirectly")
	fs.IntVar(&cfg.GossipSuspicionMult, "gossip-suspicion-mult", cfg.GossipSuspicionMult, "fleet: probe intervals (scaled by log10 of the fleet size) a suspected agent has to refute before it is declared failed")
	fs.IntVar(&cfg.GossipSuspicionMaxMult, "gossip-suspicion-max-mult", cfg.GossipSuspicionMaxMult, "fleet: how many times longer the suspicion lasts while no other agent confirms it")
	fs.BoolVar(&cfg.LegacyClientRaft, "legacy-client-raft", false, "benchmarks only: the leader adds clients to raft as non-voters, as before clients watched")
	fs.Int64Var(&cfg.DefaultPidsLimit, "default-pids-limit", cfg.DefaultPidsLimit, "processes and threads each container that sets no pids_limit may have (0: no limit); applies to containers created after a change")
	fs.Var(capsFlag{&cfg.AllowedCapabilities}, "allow-capability", "a capability beyond Docker's default set that containers on this node may add, e.g. NET_ADMIN (repeatable, or comma-separated); pods adding others are refused")
	fs.Var(sizeFlag{&cfg.ContainerLogMaxSize}, "container-log-max-size", "size at which a container's log file is rotated, in bytes or with Ki, Mi or Gi (as the kubelet's containerLogMaxSize)")
	fs.IntVar(&cfg.ContainerLogMaxFiles, "container-log-max-files", cfg.ContainerLogMaxFiles, "log files kept per run of a container (the current run and the one before are kept), as the kubelet's containerLogMaxFiles")
	fs.DurationVar(&cfg.RuntimeCallTimeout, "runtime-call-timeout", cfg.RuntimeCallTimeout, "deadline of each containerd call other than image pulls (a hung call is given up and retried)")
	fs.DurationVar(&cfg.ImagePullTimeout, "image-pull-timeout", cfg.ImagePullTimeout, "deadline of each image pull")
	fs.DurationVar(&cfg.RuntimeUnhealthyAfter, "runtime-unhealthy-after", cfg.RuntimeUnhealthyAfter, "how long containerd may leave a call unanswered before the node reports the RuntimeUnhealthy condition")
	fs.Var(percentFlag{&cfg.DiskPressureThreshold}, "disk-pressure-threshold", "percent of the data dir's file system in use at which the node prunes rotated container logs and unused images and, if still over it, reports DiskPressure and takes no new pods (0: off)")
	fs.Var(percentFlag{&cfg.DiskPressureLow}, "disk-pressure-low", "percent in use under which DiskPressure ends")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	purge := fs.Bool("purge", false, "cleanup: also remove the data dir (all state)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		strayArgument(cmd, args, fs.Args(), stderr)
		return 2
	}
	cfg.InsecureRegistries = insecure
	if len(labels) > 0 {
		cfg.Labels = map[string]string{}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				fmt.Fprintf(stderr, "--label %q: want key=value\n", l)
				return 2
			}
			cfg.Labels[k] = v
		}
		if err := api.ValidateLabels(cfg.Labels); err != nil {
			fmt.Fprintf(stderr, "--label: %v\n", err)
			return 2
		}
	}
	cfg.RetryJoin = retryJoin

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "--log-level: %v\n", err)
		return 2
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, opts)
	case "json":
		h = slog.NewJSONHandler(stderr, opts)
	default:
		fmt.Fprintf(stderr, "--log-format: %q is not text or json\n", *logFormat)
		return 2
	}
	cfg.Logger = slog.New(h)
	routeLogrus(cfg.Logger)

	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "flotilla-agent must run as root: it creates network namespaces, bridges, iptables rules and cgroups")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if cmd == "cleanup" {
		err = agent.Cleanup(ctx, cfg, *purge)
	} else {
		err = agent.Run(ctx, cfg)
	}
	if err != nil {
		cfg.Logger.Error(cmd+" failed", "err", err)
		return 1
	}
	return 0
}

// removeNode removes a node from the fleet through the API. It needs no
// root: only the API's address, token and CA.
func removeNode(args []string, stdout, stderr io.Writer) int {
	nc, code := parseNodeCommand("remove-node", removeNodeUsage, args, stderr)
	if nc == nil {
		return code
	}
	ctx, cancel := nc.context()
	defer cancel()
	err := nc.client.RemoveNode(ctx, nc.name)
	if err == nil {
		fmt.Fprintf(stdout, "node %s removed from the fleet; its certificates are revoked\n", nc.name)
		return 0
	}
	return nc.fail(err, stderr)
}

// tokenOnArgv refuses the --token flag of earlier versions: a token on the
// command line is visible to every user of the machine (ps, /proc).
func tokenOnArgv(args []string, stderr io.Writer) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "token" {
			fmt.Fprintf(stderr, "flotilla-agent: --token is no longer accepted: a token on the command line is visible to every user of the machine; set %s or pass --token-file FILE\n", api.EnvToken)
			return true
		}
	}
	return false
}

// strayArgument explains an argument left after the flags, which earlier
// versions ignored (`flotilla-agent --data-dir X cleanup` started an agent).
func strayArgument(cmd string, args, rest []string, stderr io.Writer) {
	stray := rest[0]
	if slices.Contains(subcommands, stray) && cmd == "run" {
		flags := args[:len(args)-len(rest)]
		fixed := append(append([]string{"flotilla-agent", stray}, flags...), rest[1:]...)
		fmt.Fprintf(stderr, "flotilla-agent: unexpected argument %q after the flags; the subcommand goes first: %s\n", stray, shellJoin(fixed))
		return
	}
	prefix := "flotilla-agent"
	if cmd != "run" {
		prefix += " " + cmd
	}
	fmt.Fprintf(stderr, "%s: unexpected argument %q; only flags follow (%s -h lists them)\n", prefix, stray, prefix)
}

// shellJoin joins args into a command line to copy, quoting where needed.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// hiddenFlags work but are left out of -h: they are for benchmarks, not
// for fleets.
var hiddenFlags = []string{"legacy-client-raft"}

// printDefaults is fs.PrintDefaults without the hidden flags.
func printDefaults(fs *flag.FlagSet, hidden []string) {
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(fs.Output())
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(hidden, f.Name) {
			shown.Var(f.Value, f.Name, f.Usage)
			shown.Lookup(f.Name).DefValue = f.DefValue
		}
	})
	shown.PrintDefaults()
}

// percentFlag reads a percentage: 90 or 90%.
type percentFlag struct{ p *float64 }

func (f percentFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strconv.FormatFloat(*f.p, 'g', -1, 64) + "%"
}

func (f percentFlag) Set(v string) error {
	p, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
	if err != nil || p < 0 || p > 100 {
		return fmt.Errorf("%q is not a percentage from 0 to 100 (e.g. 90%%)", v)
	}
	*f.p = p
	return nil
}

// sizeFlag reads a byte count: 10485760, 10Mi (the kubelet's form),
// 10MiB, 512Ki, 1Gi.
type sizeFlag struct{ n *int64 }

func (f sizeFlag) String() string {
	if f.n == nil {
		return ""
	}
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if *f.n >= u.size && *f.n%u.size == 0 {
			return strconv.FormatInt(*f.n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(*f.n, 10)
}

func (f sizeFlag) Set(v string) error {
	num, unit := strings.TrimSuffix(v, "B"), int64(1)
	for suffix, size := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if rest, ok := strings.CutSuffix(num, suffix); ok {
			num, unit = rest, size
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/unit {
		return fmt.Errorf("%q is not a size such as 10Mi or 10485760", v)
	}
	*f.n = n * unit
	return nil
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// capsFlag adds --allow-capability values, comma-separated or one a flag,
// to the list it points to. Config.Validate checks them.
type capsFlag struct{ list *[]string }

func (c capsFlag) String() string {
	if c.list == nil {
		return ""
	}
	return strings.Join(*c.list, ",")
}

func (c capsFlag) Set(v string) error {
	for n := range strings.SplitSeq(v, ",") {
		if n = strings.TrimSpace(n); n != "" {
			*c.list = append(*c.list, n)
		}
	}
	return nil
}

// denyFlag adds --pod-deny-cidr values to the list it points to, which
// starts with the defaults; "none" empties it. Config.Validate checks them.
type denyFlag struct{ list *[]string }

func (d denyFlag) String() string {
	if d.list == nil {
		return ""
	}
	return strings.Join(*d.list, ",")
}

func (d denyFlag) Set(v string) error {
	if v == "none" {
		*d.list = []string{}
		return nil
	}
	*d.list = append(*d.list, v)
	return nil
}
