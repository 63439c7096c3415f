// Command nodesim runs many simulated client nodes in one process, as
// Kubernetes' kwok and Nomad's nomad-nodesim do, so that the servers of a
// fleet can be tried with more nodes than there are machines. Each node is
// agent.RunSimulatedNodeWith: real memberlist with the gossip key, a real
// certificate from joining with the join token, a real watch, registration
// and status writes over mTLS; only its pods are pretended (they are ready
// as soon as they start). The servers cannot tell them from real nodes.
// It needs no root.
//
//	nodesim --count 1000 --advertise-addr 10.97.3.4 --gossip-port 10000 \
//	  --retry-join 10.97.3.1 --retry-join 10.97.3.2 --retry-join 10.97.3.3 \
//	  --ca-file ca.pem --join-token-file join.token --gossip-key-file gossip.key \
//	  --data-dir /tmp/nodesim
//
// --cpu-millis and --memory-mib set the capacity the nodes report (as
// kwok's node templates do), e.g. room for pods the real nodes cannot take.
//
// Node i (from 0) is <prefix><i> with gossip on --gossip-port+i (and, with
// --legacy-client-raft, raft on --raft-port+i); its certificate is kept in
// <data-dir>/<name>. At most --concurrency nodes are joining at a time, so
// a thousand joins do not storm the servers. Progress goes to stderr; one
// line goes to stdout once every node has registered. SIGINT or SIGTERM
// stops every node cleanly (each leaves the fleet).
//
// With --pprof-addr HOST:PORT it serves Go's profiles (/debug/pprof/) there,
// to see where a simulation's time goes. A thousand nodes' gossip allocates
// fast: at the default GOGC the collector takes a large part of the
// simulator's CPU, so run it with e.g.
// GOGC=400 GOMEMLIMIT=8GiB in its environment.
//
// With --control PATH, nodesim listens on a unix socket there for one
// command per line, answered with one line ("ok ..." or "error: ..."):
//
//	crash NAME   end node NAME as a crash would: its gossip stops without a
//	             leave, so servers find it failed by failure detection
//	status       how many nodes are registered
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flotilla-io/flotilla/agent/agent"
	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/api"
	"github.com/hashicorp/memberlist"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args and runs the simulation until ctx ends: exit code 0 when
// it was stopped, 1 when a node failed, 2 for a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nodesim:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	s := &simulator{opts: o, log: log, stdout: stdout, stderr: stderr, runNode: agent.RunSimulatedNodeWith}
	if err := s.run(ctx); err != nil {
		fmt.Fprintln(stderr, "nodesim:", err)
		return 1
	}
	return 0
}

// options are nodesim's flags.
type options struct {
	count, concurrency            int
	prefix                        string
	bindAddr, advertiseAddr       string
	gossipPort, raftPort, rpcPort int
	serverGossipPort              int
	retryJoin                     []string
	caFile, joinTokenFile         string
	gossipKeyFile, dataDir        string
	control, pprofAddr            string
	labels                        map[string]string
	cpuMillis, memoryMiB          int64
	legacy                        bool
	raftMultiplier                int
	logLevel                      slog.Level
	probeInterval, probeTimeout   time.Duration
	retransmitMult                int
	joinRate                      float64
	progressEvery                 time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{labels: map[string]string{}, progressEvery: 5 * time.Second}
	fs := flag.NewFlagSet("nodesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.count, "count", 0, "number of simulated nodes (required)")
	fs.IntVar(&o.concurrency, "concurrency", 50, "nodes joining at a time")
	fs.StringVar(&o.prefix, "name-prefix", "sim-", "node names are this followed by the node's number")
	fs.StringVar(&o.bindAddr, "bind-addr", "", "IP the nodes' gossip (and legacy raft) listen on (default: --advertise-addr)")
	fs.StringVar(&o.advertiseAddr, "advertise-addr", "", "IP the servers reach the nodes at (required)")
	fs.IntVar(&o.gossipPort, "gossip-port", 10000, "gossip port of node 0; node i uses this plus i")
	fs.IntVar(&o.raftPort, "raft-port", 20000, "with --legacy-client-raft: raft port of node 0; node i uses this plus i")
	fs.IntVar(&o.rpcPort, "rpc-port", agent.DefaultConfig().RPCPort, "the servers' RPC port")
	fs.IntVar(&o.serverGossipPort, "server-gossip-port", membership.DefaultPort, "the servers' gossip port, for --retry-join addresses without one")
	var joins, labels listFlag
	fs.Var(&joins, "retry-join", "address of a server to join, host or host:gossip-port (repeatable, required)")
	fs.Var(&labels, "label", "KEY=VALUE label of every node (repeatable)")
	fs.DurationVar(&o.probeInterval, "probe-interval", 0, "memberlist probe interval of the simulated nodes (default memberlist's LAN 1s; servers keep theirs)")
	fs.DurationVar(&o.probeTimeout, "probe-timeout", 0, "memberlist probe timeout of the simulated nodes (default memberlist's LAN 500ms; servers keep theirs)")
	fs.Float64Var(&o.joinRate, "join-rate", 0, "nodes started per second at most, as a fleet's VMs boot over time (0: as fast as --concurrency allows)")
	fs.IntVar(&o.retransmitMult, "retransmit-mult", 0, "memberlist retransmit multiplier of the simulated nodes: how many times each spreads a message (default memberlist's LAN 4; servers keep theirs)")
	fs.Int64Var(&o.cpuMillis, "cpu-millis", 0, "CPU capacity every node reports, in millicores (default: the machine's)")
	fs.Int64Var(&o.memoryMiB, "memory-mib", 0, "memory capacity every node reports, in MiB (default: the machine's)")
	fs.StringVar(&o.caFile, "ca-file", "", "the cluster CA certificate (required)")
	fs.StringVar(&o.joinTokenFile, "join-token-file", "", "file with the join token (required)")
	fs.StringVar(&o.gossipKeyFile, "gossip-key-file", "", "file with the gossip key (required)")
	fs.StringVar(&o.dataDir, "data-dir", "", "absolute directory; node NAME keeps its certificate in <data-dir>/NAME (required)")
	fs.StringVar(&o.control, "control", "", "unix socket to listen on for commands (crash NAME, status)")
	fs.StringVar(&o.pprofAddr, "pprof-addr", "", "serve Go's profiles (/debug/pprof/) on this address, e.g. 127.0.0.1:6060")
	fs.BoolVar(&o.legacy, "legacy-client-raft", false, "benchmarks only: each node is a raft non-voter holding the full replica, as clients were before they watched (servers need --legacy-client-raft too)")
	fs.IntVar(&o.raftMultiplier, "raft-multiplier", 0, "with --legacy-client-raft: scale raft's timeouts (0 lets the agent pick)")
	level := fs.String("log-level", "error", "debug, info, warn or error (every node logs: at a thousand nodes each failure is a thousand warnings)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q; only flags follow (nodesim -h lists them)", fs.Arg(0))
	}
	var errs []error
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	if o.count < 1 {
		errs = append(errs, fmt.Errorf("--count: %d; simulate at least 1 node", o.count))
	}
	if o.concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency: %d; at least 1 node must be able to join", o.concurrency))
	}
	if _, err := netip.ParseAddr(o.advertiseAddr); err != nil {
		errs = append(errs, fmt.Errorf("--advertise-addr: %q is not an IP address the servers can reach the nodes at", o.advertiseAddr))
	}
	if o.bindAddr != "" {
		if _, err := netip.ParseAddr(o.bindAddr); err != nil {
			errs = append(errs, fmt.Errorf("--bind-addr: %q is not an IP address", o.bindAddr))
		}
	}
	ports := []struct {
		flag  string
		first int
		used  bool
	}{{"--gossip-port", o.gossipPort, true}, {"--raft-port", o.raftPort, o.legacy}}
	for _, p := range ports {
		if p.used && (p.first < 1 || p.first+max(o.count, 1)-1 > 65535) {
			errs = append(errs, fmt.Errorf("%s: %d..%d is not a range of ports", p.flag, p.first, p.first+max(o.count, 1)-1))
		}
	}
	if o.legacy && o.gossipPort < o.raftPort+o.count && o.raftPort < o.gossipPort+o.count {
		errs = append(errs, fmt.Errorf("--raft-port: %d..%d overlaps the gossip ports %d..%d", o.raftPort, o.raftPort+o.count-1, o.gossipPort, o.gossipPort+o.count-1))
	}
	if len(joins) == 0 {
		errs = append(errs, errors.New("--retry-join: give at least one server address"))
	}
	for _, j := range joins {
		addr, err := joinAddr(j, o.serverGossipPort)
		if err != nil {
			errs = append(errs, fmt.Errorf("--retry-join: %w", err))
			continue
		}
		o.retryJoin = append(o.retryJoin, addr)
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("--label: %q is not KEY=VALUE", l))
			continue
		}
		o.labels[k] = v
	}
	if o.cpuMillis < 0 || o.cpuMillis > api.MaxResource || o.memoryMiB < 0 || o.memoryMiB > api.MaxResource {
		errs = append(errs, fmt.Errorf("--cpu-millis %d, --memory-mib %d: capacities are 0 (the machine's) to %d", o.cpuMillis, o.memoryMiB, int64(api.MaxResource)))
	}
	if o.probeInterval < 0 || o.probeTimeout < 0 || o.probeInterval > time.Minute || o.probeTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("--probe-interval %s, --probe-timeout %s: 0 (memberlist's default) to 1m", o.probeInterval, o.probeTimeout))
	}
	if o.joinRate < 0 || o.joinRate > 1e6 {
		errs = append(errs, fmt.Errorf("--join-rate %g: 0 (no limit) to 1000000 nodes per second", o.joinRate))
	}
	if o.retransmitMult < 0 || o.retransmitMult > 16 {
		errs = append(errs, fmt.Errorf("--retransmit-mult %d: 0 (memberlist's default) to 16", o.retransmitMult))
	}
	if err := api.ValidateLabels(o.labels); err != nil {
		errs = append(errs, fmt.Errorf("--label: %w", err))
	}
	for flag, v := range map[string]string{"--ca-file": o.caFile, "--join-token-file": o.joinTokenFile, "--gossip-key-file": o.gossipKeyFile} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: required (a simulated node joins as a real one does)", flag))
		}
	}
	if !filepath.IsAbs(o.dataDir) {
		errs = append(errs, fmt.Errorf("--data-dir: %q must be an absolute path", o.dataDir))
	}
	if o.count >= 1 {
		for _, i := range []int{0, o.count - 1} {
			if err := api.ValidateNodeName(o.name(i)); err != nil {
				errs = append(errs, fmt.Errorf("--name-prefix: node name %q: %w", o.name(i), err))
				break
			}
		}
	}
	return o, errors.Join(errs...)
}

// joinAddr gives a retry-join address the servers' gossip port unless it
// names one: the nodes' own gossip ports are not the servers'.
func joinAddr(addr string, port int) (string, error) {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr, nil
	}
	if _, err := netip.ParseAddr(addr); err != nil {
		return "", fmt.Errorf("%q is not an IP address or IP:port", addr)
	}
	return net.JoinHostPort(addr, strconv.Itoa(port)), nil
}

// name is node i's name: the prefix and i, zero-padded to the width of the
// largest number so that names sort in order.
func (o options) name(i int) string {
	return fmt.Sprintf("%s%0*d", o.prefix, len(strconv.Itoa(o.count-1)), i)
}

// nodeConfig is node i's configuration: a fleet client of its own name,
// data dir and ports, logging through log.
func (o options) nodeConfig(i int, log *slog.Logger) agent.Config {
	name := o.name(i)
	cfg := agent.DefaultConfig()
	cfg.NodeName, cfg.DataDir = name, filepath.Join(o.dataDir, name)
	cfg.AdvertiseAddr, cfg.BindAddr = o.advertiseAddr, o.bindAddr
	cfg.GossipPort, cfg.RPCPort = o.gossipPort+i, o.rpcPort
	if o.legacy {
		cfg.RaftPort = o.raftPort + i
	}
	cfg.RetryJoin = o.retryJoin
	cfg.CAFile, cfg.JoinTokenFile, cfg.GossipKeyFile = o.caFile, o.joinTokenFile, o.gossipKeyFile
	cfg.LegacyClientRaft, cfg.RaftMultiplier = o.legacy, o.raftMultiplier
	if len(o.labels) > 0 {
		cfg.Labels = o.labels
	}
	cfg.Version = "nodesim"
	if o.probeInterval > 0 || o.probeTimeout > 0 || o.retransmitMult > 0 {
		cfg.TuneGossip = func(mc *memberlist.Config) {
			if o.retransmitMult > 0 {
				mc.RetransmitMult = o.retransmitMult
			}
			if o.probeInterval > 0 {
				mc.ProbeInterval = o.probeInterval
			}
			if o.probeTimeout > 0 {
				mc.ProbeTimeout = o.probeTimeout
			}
		}
	}
	cfg.Logger = log.With("node", name)
	return cfg
}

// simulator runs the nodes.
type simulator struct {
	opts           options
	log            *slog.Logger
	stdout, stderr io.Writer
	// runNode runs one node until ctx ends (agent.RunSimulatedNodeWith;
	// tests put a fake here).
	runNode func(ctx context.Context, cfg agent.Config, opts agent.SimulatedOptions) error

	registered atomic.Int64
	mu         sync.Mutex
	nodes      map[string]*simNode
}

// simNode is one node as the simulator tracks it.
type simNode struct {
	crash      chan struct{}
	crashOnce  sync.Once
	registered atomic.Bool
}

// run starts the nodes, at most opts.concurrency joining at a time, and
// runs them until ctx ends or a node fails before it registered; then it
// stops them all and waits for them.
func (s *simulator) run(ctx context.Context) error {
	o := s.opts
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.nodes = make(map[string]*simNode, o.count)
	if o.control != "" {
		ln, err := s.listenControl()
		if err != nil {
			return err
		}
		defer ln.Close()
		go s.serveControl(ln)
	}

	if o.pprofAddr != "" {
		stop, err := servePprof(o.pprofAddr)
		if err != nil {
			return err
		}
		defer stop()
	}

	start := time.Now()
	slots := make(chan struct{}, o.concurrency)
	allRegistered := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: every node has stopped (and left) when run returns
	go s.progress(ctx, start, allRegistered)
	fmt.Fprintf(s.stderr, "nodesim: starting %d nodes (%s..%s) at %s, gossip ports %d..%d, %d joining at a time%s\n",
		o.count, o.name(0), o.name(o.count-1), o.advertiseAddr, o.gossipPort, o.gossipPort+o.count-1, o.concurrency, legacyNote(o))
	for i := range o.count {
		if o.joinRate > 0 {
			// Node i starts no sooner than i/rate after the first.
			if wait := time.Until(start.Add(time.Duration(float64(i) / o.joinRate * float64(time.Second)))); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return s.stopped(ctx, &wg, cancel)
				}
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return s.stopped(ctx, &wg, cancel)
		}
		cfg := o.nodeConfig(i, s.log)
		n := &simNode{crash: make(chan struct{})}
		s.mu.Lock()
		s.nodes[cfg.NodeName] = n
		s.mu.Unlock()
		var release sync.Once
		free := func() { release.Do(func() { <-slots }) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.runNode(ctx, cfg, agent.SimulatedOptions{
				Crash: n.crash, CPUMillis: o.cpuMillis, MemoryMiB: o.memoryMiB,
				Registered: func() {
					n.registered.Store(true)
					free()
					if s.registered.Add(1) == int64(o.count) {
						close(allRegistered)
					}
				},
			})
			free()
			if ctx.Err() != nil {
				return
			}
			if !n.registered.Load() {
				if err == nil {
					err = errors.New("stopped before it registered")
				}
				cancel(fmt.Errorf("node %s: %w", cfg.NodeName, err))
			}
		}()
	}
	select {
	case <-allRegistered:
		fmt.Fprintf(s.stdout, "nodesim: all %d nodes registered in %.1f s\n", o.count, time.Since(start).Seconds())
	case <-ctx.Done():
		return s.stopped(ctx, &wg, cancel)
	}
	<-ctx.Done()
	return s.stopped(ctx, &wg, cancel)
}

func legacyNote(o options) string {
	if !o.legacy {
		return ""
	}
	return fmt.Sprintf("; legacy: raft non-voters on ports %d..%d", o.raftPort, o.raftPort+o.count-1)
}

// stopped stops every node, waits for them and says why the run ended: nil
// for a signal, the failed node's error otherwise.
func (s *simulator) stopped(ctx context.Context, wg *sync.WaitGroup, cancel context.CancelCauseFunc) error {
	cause := context.Cause(ctx)
	cancel(nil)
	fmt.Fprintf(s.stderr, "nodesim: stopping %d nodes\n", len(s.snapshot()))
	start := time.Now()
	wg.Wait()
	fmt.Fprintf(s.stderr, "nodesim: all nodes stopped in %.1f s\n", time.Since(start).Seconds())
	if cause == nil || errors.Is(cause, context.Canceled) {
		return nil
	}
	return cause
}

func (s *simulator) snapshot() map[string]*simNode {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*simNode, len(s.nodes))
	for k, v := range s.nodes {
		out[k] = v
	}
	return out
}

// progress reports how many nodes registered every opts.progressEvery
// until all did or ctx ends.
func (s *simulator) progress(ctx context.Context, start time.Time, all <-chan struct{}) {
	t := time.NewTicker(s.opts.progressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-all:
			return
		case <-t.C:
			fmt.Fprintf(s.stderr, "nodesim: %d/%d registered after %.0f s\n", s.registered.Load(), s.opts.count, time.Since(start).Seconds())
		}
	}
}

func (s *simulator) listenControl() (net.Listener, error) {
	// A socket left by an earlier run goes; anything else at the path is
	// not ours to remove.
	if fi, err := os.Lstat(s.opts.control); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("--control %s: exists and is not a socket; give a path of its own", s.opts.control)
		}
		_ = os.Remove(s.opts.control)
	}
	ln, err := net.Listen("unix", s.opts.control)
	if err != nil {
		return nil, fmt.Errorf("--control: %w", err)
	}
	// It crashes nodes on request: its owner's only.
	if err := os.Chmod(s.opts.control, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("--control: %w", err)
	}
	return ln, nil
}

// serveControl answers commands until ln is closed.
func (s *simulator) serveControl(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintln(c, s.command(sc.Text()))
			}
		}()
	}
}

// command runs one control command and returns its answer.
func (s *simulator) command(line string) string {
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == "crash":
		s.mu.Lock()
		n, ok := s.nodes[f[1]]
		s.mu.Unlock()
		switch {
		case !ok:
			return fmt.Sprintf("error: no node %q (yet)", f[1])
		case !n.registered.Load():
			return fmt.Sprintf("error: node %s has not registered yet", f[1])
		}
		n.crashOnce.Do(func() { close(n.crash) })
		return "ok crashed " + f[1]
	case len(f) == 1 && f[0] == "status":
		return fmt.Sprintf("ok %d/%d registered", s.registered.Load(), s.opts.count)
	default:
		return fmt.Sprintf("error: unknown command %q; the commands are: crash NAME, status", line)
	}
}

// servePprof serves the runtime's profiles on addr until stop is called.
func servePprof(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
