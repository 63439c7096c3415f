// Command flotilla-agent is the Flotilla node daemon. It only wires flags to
// agent.Config; everything else lives in package agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/flotilla-io/flotilla/agent/agent"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

const usage = `Usage:
  flotilla-agent [flags]           run the agent
  flotilla-agent cleanup [flags]   remove all an agent with these flags made (stop it first)
  flotilla-agent version

Flags:
`

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	if cmd == "version" {
		fmt.Println("flotilla-agent", version)
		return 0
	}
	cfg := agent.DefaultConfig()
	cfg.Version = version
	fs := flag.NewFlagSet("flotilla-agent", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.BoolVar(&cfg.Dev, "dev", false, "run server and node in one process with a single raft voter and a generated token (<data-dir>/token)")
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's name")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "where state, logs and containerd's files live")
	fs.StringVar(&cfg.APIAddr, "api-addr", cfg.APIAddr, "HTTP API listen address")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "raft RPC listen address")
	fs.StringVar(&cfg.Token, "token", os.Getenv("FLOTILLA_TOKEN"), "API token (default $FLOTILLA_TOKEN; generated in --dev)")
	fs.StringVar(&cfg.ContainerdAddress, "containerd-address", "", "socket of an existing containerd; empty starts and supervises a private one")
	fs.StringVar(&cfg.ContainerdBinary, "containerd-binary", "", "containerd binary for the supervised containerd (default: containerd on PATH)")
	fs.StringVar(&cfg.ContainerdNamespace, "containerd-namespace", cfg.ContainerdNamespace, "containerd namespace for this agent's containers and images")
	var insecure listFlag
	fs.Var(&insecure, "insecure-registry", "registry host:port to pull from over plain HTTP (repeatable)")
	fs.StringVar(&cfg.ImageDir, "image-dir", "", "directory of image archives (*.tar) to import at start")
	fs.StringVar(&cfg.PodCIDR, "pod-cidr", cfg.PodCIDR, "IPv4 range pods on this node get addresses from")
	fs.StringVar(&cfg.BridgeName, "bridge", cfg.BridgeName, "Linux bridge the pods attach to")
	fs.StringVar(&cfg.ChainPrefix, "iptables-chain-prefix", cfg.ChainPrefix, "prefix of this agent's iptables chains")
	fs.StringVar(&cfg.NetNSPrefix, "netns-prefix", cfg.NetNSPrefix, "prefix of pod network namespace names under /run/netns")
	fs.StringVar(&cfg.CgroupParent, "cgroup-parent", cfg.CgroupParent, "cgroup under which pod containers run")
	fs.IntVar(&cfg.MTU, "mtu", 0, "MTU of pod interfaces (default: the MTU of the default route's interface)")
	fs.BoolVar(&cfg.Server, "server", false, "fleet: hold the cluster state (a raft voter); otherwise a client that runs pods")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "fleet servers: bootstrap once this many servers have joined")
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
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file with the API token (instead of --token)")
	fs.StringVar(&cfg.ClusterPodCIDR, "cluster-pod-cidr", cfg.ClusterPodCIDR, "fleet servers: range split into one pod range per node")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	purge := fs.Bool("purge", false, "cleanup: also remove the data dir (all state)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg.InsecureRegistries = insecure
	cfg.RetryJoin = retryJoin

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level: %v\n", err)
		return 2
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	cfg.Logger = slog.New(h)
	routeLogrus(cfg.Logger)

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "flotilla-agent must run as root: it creates network namespaces, bridges, iptables rules and cgroups")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd {
	case "run":
		err = agent.Run(ctx, cfg)
	case "cleanup":
		err = agent.Cleanup(ctx, cfg, *purge)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", cmd)
		fs.Usage()
		return 2
	}
	if err != nil {
		cfg.Logger.Error(cmd+" failed", "err", err)
		return 1
	}
	return 0
}
