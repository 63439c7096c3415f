package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-io/flotilla/agent/apiserver"
	"github.com/flotilla-io/flotilla/agent/containerdproc"
	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/controller"
	"github.com/flotilla-io/flotilla/agent/diskpressure"
	"github.com/flotilla-io/flotilla/agent/ingress"
	"github.com/flotilla-io/flotilla/agent/metrics"
	"github.com/flotilla-io/flotilla/agent/node"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	ctrd "github.com/flotilla-io/flotilla/agent/runtime/containerd"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// Run starts the agent and blocks until ctx ends, then shuts it down in order.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	cfg.conditions = &nodeConditions{}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	tokenHash, err := apiTokenHash(&cfg)
	if err != nil {
		return err
	}

	lc := newLifecycle(ctx, log)
	defer lc.stop()
	// Container logs have a directory of their own under the data dir.
	logs := &node.Logs{Dir: filepath.Join(cfg.DataDir, "logs")}

	if cfg.ContainerdAddress == "" {
		proc, err := startContainerd(ctx, &cfg)
		if err != nil {
			return err
		}
		lc.add("containerd", func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := proc.Stop(sctx); err != nil {
				log.Warn("stop containerd", "err", err)
			}
		})
	}
	rt, err := newRuntime(ctx, &cfg)
	if err != nil {
		return err
	}
	lc.add("runtime", func() { rt.Close() })
	// Every containerd call the node makes has a deadline, and a hung one
	// blocks only the pod that made it; the node reports a containerd
	// that does not answer.
	guard := runtime.NewGuard(rt, "containerd", runtime.Deadlines{
		Pull: cfg.ImagePullTimeout, Call: cfg.RuntimeCallTimeout, UnhealthyAfter: cfg.RuntimeUnhealthyAfter}, nil)
	// exec into this node's containers, for the API and for servers.
	execs := node.NewExec(rt, node.DefaultMaxExecs)

	// A server or single agent holds the state and runs the controller;
	// a client watches the servers and its API proxies to theirs.
	var (
		nodeStore node.Store
		svcSource serviceSource // where services, endpoints and the layout are read
		ingSource ingress.Source
		svcReady  func(context.Context)
		fenceOn   fenceState // where self-fencing learns of contact with the control plane
		fresh     func(context.Context)
		apiTLS    *tls.Config
		acfg      = apiserver.Config{TokenHash: tokenHash, NodeName: cfg.NodeName, Version: cfg.Version, Logger: log}
		startLoop func() // the state's own loops, started with the node loop
		// register updates this node's record (its conditions); stored
		// reads it back from this agent's copy of the state.
		register func(context.Context, api.Node) (api.Node, error)
		stored   func(string) (api.Node, bool)
	)
	if cfg.Fleet() && !cfg.Server {
		cn, b, err := startClient(ctx, &cfg, lc)
		if err != nil {
			return err
		}
		// Servers read this node's container logs from it.
		if err := serveNodeRPC(&cfg, b, logs, execs, lc); err != nil {
			return err
		}
		nodeStore, apiTLS = cn, b.id.Keypair.ServerTLS(tls.NoClientCert, nil)
		register, stored = cn.writes.RegisterNode, cn.Node
		fenceOn = cn.Store
		fresh = func(ctx context.Context) { waitFresh(ctx, cn.Store, freshBound, log) }
		// Rules and names wait for the servers' word as the node loop
		// does; meanwhile the last run's rules stay, and DNS serves the
		// cached view.
		svcSource, ingSource = cn.Store, cn.Store
		svcReady = func(ctx context.Context) { waitFresh(ctx, cn.Store, freshBound, log.With("component", "svcsync")) }
		acfg.Local, acfg.Members = cn, b.apiMembers
		acfg.Upstream, acfg.UpstreamTLS = apiAddrs(b.members), b.id.Keypair.ClientTLS(pki.RequireRole(pki.RoleServer))
		acfg.Metrics = metrics.NewRegistry(clientMetrics{cn}, cfg.NodeName)
		// Its own pods' logs from disk; the rest through a server.
		acfg.Logs = &apiserver.LogsConfig{Pod: cn.Pod, Local: logs}
		acfg.Exec = &apiserver.ExecConfig{Pod: cn.Pod, Local: execs}
		startLoop = func() {}
	} else {
		var st *store.Store
		if cfg.Fleet() {
			var b *fleetBase
			if st, b, err = startServer(ctx, &cfg, lc, tokenHash, logs, execs); err != nil {
				return err
			}
			apiTLS, acfg.Members = b.id.Keypair.ServerTLS(tls.NoClientCert, nil), b.apiMembers
			acfg.Logs = &apiserver.LogsConfig{Pod: st.Pod, Local: logs, Remote: newNodeLogs(b)}
			acfg.Exec = &apiserver.ExecConfig{Pod: st.Pod, Local: execs, Remote: newNodeExec(b)}
		} else {
			if st, err = startDevStore(ctx, &cfg, lc); err != nil {
				return err
			}
			acfg.Logs = &apiserver.LogsConfig{Pod: st.Pod, Local: logs}
			acfg.Exec = &apiserver.ExecConfig{Pod: st.Pod, Local: execs}
		}
		register, stored = st.RegisterNode, st.Node
		ctl := controller.New(controller.Config{Store: st, Logger: log})
		nodeStore, svcSource, ingSource = st, st, st
		svcReady = func(ctx context.Context) { _ = st.WaitLeader(ctx) }
		if cfg.Fleet() {
			fenceOn = st
		}
		acfg.Store, acfg.Status, acfg.Statuses, acfg.Capacity = st, ctl.Status, ctl.Statuses, ctl.Capacity
		acfg.Metrics = metrics.NewRegistry(st, cfg.NodeName)
		// The controller acts only as the leader, once its state holds
		// every committed entry.
		startLoop = func() { lc.loop("controller", func(ctx context.Context) { st.RunLeaderLoop(ctx, ctl.Run) }) }
	}

	network, err := newNetwork(&cfg)
	if err != nil {
		return err
	}
	if err := network.Init(ctx); err != nil {
		return fmt.Errorf("set up pod network: %w", err)
	}
	// Services before the image import: the cluster DNS is down from the
	// end of the last run until it starts, and pods resolve nothing then.
	svc, err := startServices(&cfg, lc, svcSource, network.Gateway(), svcReady)
	if err != nil {
		return fmt.Errorf("set up services: %w", err)
	}
	acfg.Metrics.MustRegister(svc.collector)
	ing, err := startIngress(&cfg, lc, ingSource, svcReady)
	if err != nil {
		return err
	}
	if ing != nil {
		acfg.Metrics.MustRegister(ing)
	}
	// Imports run as long as the archive takes to read (no Pull deadline).
	if err := importImageDir(ctx, rt, cfg.ImageDir, log); err != nil {
		return err
	}

	ncfg := node.DefaultConfig()
	ncfg.NodeName, ncfg.Store, ncfg.Runtime, ncfg.Network, ncfg.LogDir, ncfg.Logger = cfg.NodeName, nodeStore, guard, network, logs.Dir, log
	ncfg.PodDir, ncfg.ResolvConf = filepath.Join(cfg.DataDir, "pods"), svc.resolvConf
	ncfg.ReservedHostPorts = reservedHostPorts(&cfg)
	ncfg.DefaultPidsLimit, ncfg.AllowedCapabilities = cfg.DefaultPidsLimit, cfg.AllowedCapabilities
	var fc *fence
	if fenceOn != nil {
		fc = newFence(fenceOn, cfg.NodeName, log)
		ncfg.Fenced = fc.Fenced
	}
	rec, err := node.New(ncfg)
	if err != nil {
		return err
	}
	if fc != nil {
		lc.loop("fence", func(ctx context.Context) { fc.watch(ctx, rec.Wake) })
	}
	icfg := apiserver.DefaultImageImportConfig()
	icfg.Importer, icfg.Logger = rt, log
	if cfg.ContainerdAddress == "" {
		icfg.ImageDir = containerdConfig(&cfg).Root
	}
	if acfg.Images, err = apiserver.NewImageImport(icfg); err != nil {
		return err
	}
	srv, err := apiserver.New(acfg)
	if err != nil {
		return err
	}
	conds := []conditionSource{runtimeCondition(guard)}
	if cfg.DiskPressureThreshold > 0 {
		dm, err := newDiskMonitor(&cfg, logs.Dir, rt, nodeStore)
		if err != nil {
			return err
		}
		lc.loop("disk-pressure", func(ctx context.Context) { dm.Run(ctx, nil) })
		conds = append(conds, dm.Condition)
	}
	reporter := &conditionReporter{self: func() api.Node { return selfNode(&cfg) }, register: register,
		stored: func() (api.Node, bool) { return stored(cfg.NodeName) }, held: cfg.conditions,
		sources: conds, every: time.Second, log: log.With("component", "node-conditions")}
	startLoop()
	lc.loop("node-conditions", func(ctx context.Context) { reporter.run(ctx, nil) })
	lc.loop("node", func(ctx context.Context) {
		if fresh != nil {
			fresh(ctx)
		}
		rec.Run(ctx)
	})

	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listen on --api-addr %s: %w (is another agent running? `make down` stops the quickstart's)", cfg.APIAddr, err)
	}
	scheme := "http://"
	if apiTLS != nil {
		ln, scheme = tls.NewListener(ln, apiTLS), "https://"
	}
	hs := apiserver.NewHTTPServer(srv, log)
	hs.RegisterOnShutdown(srv.StopStreams) // a follow would hold the shutdown
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	lc.add("api", func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
		srv.CloseIdleConnections()
	})
	addr := scheme + ln.Addr().String()
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "addr"), []byte(addr+"\n"), 0o644); err != nil {
		return fmt.Errorf("write addr file: %w", err)
	}
	log.Info("agent ready", "node", cfg.NodeName, "api", addr, "pod_cidr", cfg.PodCIDR)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("API server stopped: %w", err)
	}
	log.Info("agent shutting down")
	return nil
}

// startDevStore opens a single agent's state: one raft voter, no network
// listener, and this node registered with its configured pod range.
func startDevStore(ctx context.Context, cfg *Config, lc *lifecycle) (*store.Store, error) {
	scfg := store.DefaultConfig()
	scfg.NodeName, scfg.DataDir, scfg.Bootstrap, scfg.Logger = cfg.NodeName, cfg.DataDir, true, cfg.Logger
	st, err := store.Open(ctx, scfg)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	lc.add("store", func() {
		if err := st.Close(); err != nil {
			cfg.Logger.Warn("close state", "err", err)
		}
	})
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = st.WaitLeader(wctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("no raft leader after 30s: %w", err)
	}
	if err := st.UpsertNode(ctx, selfNode(cfg)); err != nil {
		return nil, fmt.Errorf("register node: %w", err)
	}
	// The layout the state machine gives service addresses and node ports
	// from; a data dir that has one keeps it.
	if err := st.SetClusterConfig(ctx, devClusterConfig(cfg)); err != nil {
		return nil, fmt.Errorf("set the cluster config: %w", err)
	}
	return st, nil
}

// devClusterConfig is a single agent's cluster config: its pod range is
// the cluster's, one node range wide.
func devClusterConfig(cfg *Config) state.ClusterConfig {
	bits := 24
	if p, err := netip.ParsePrefix(cfg.PodCIDR); err == nil {
		bits = p.Bits()
	}
	return state.ClusterConfig{PodCIDR: cfg.PodCIDR, NodeMaskBits: bits, LostNodeGraceMillis: cfg.LostNodeGrace.Milliseconds(),
		ServiceCIDR: cfg.ServiceCIDR, NodePortRange: cfg.NodePortRange, ClusterDomain: cfg.ClusterDomain}
}

// apiTokenHash returns the hash of the API token, the only form of it the
// agent keeps: from --api-token-hash-file (what fleet VMs get from
// cloud-init), from the token itself ($FLOTILLA_TOKEN or --token-file,
// hashed in memory), or, for a --dev agent given none, a token it
// generates (see devTokenHash).
func apiTokenHash(cfg *Config) ([32]byte, error) {
	switch {
	case cfg.APITokenHashFile != "":
		b, err := readSecret(cfg.APITokenHashFile, "--api-token-hash-file")
		if err != nil {
			return [32]byte{}, err
		}
		h, err := pki.ParseTokenHash(string(b))
		if err != nil {
			return [32]byte{}, fmt.Errorf("--api-token-hash-file %s: %w", cfg.APITokenHashFile, err)
		}
		return h, nil
	case cfg.Token != "":
		return pki.ParseTokenHash(pki.TokenHash(cfg.Token))
	case cfg.TokenFile != "":
		tok, err := readSecret(cfg.TokenFile, "--token-file")
		if err != nil {
			return [32]byte{}, err
		}
		if len(tok) == 0 {
			return [32]byte{}, fmt.Errorf("--token-file %s is empty", cfg.TokenFile)
		}
		return pki.ParseTokenHash(pki.TokenHash(string(tok)))
	}
	return devTokenHash(cfg.DataDir)
}

// devTokenHash returns the hash of a --dev agent's token. At first start
// it generates the token and writes it to <data-dir>/token (0600): the
// operator's copy, as k3s writes its kubeconfig, which the agent never
// reads again; the agent itself keeps only <data-dir>/api-token.sha256.
func devTokenHash(dataDir string) ([32]byte, error) {
	hashPath, tokPath := filepath.Join(dataDir, "api-token.sha256"), filepath.Join(dataDir, "token")
	if b, err := os.ReadFile(hashPath); err == nil {
		return pki.ParseTokenHash(string(b))
	}
	// An agent of an earlier version kept only the token: hash it once.
	tok := ""
	if b, err := os.ReadFile(tokPath); err == nil {
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return [32]byte{}, err
		}
		tok = hex.EncodeToString(b)
		if err := os.WriteFile(tokPath, []byte(tok+"\n"), 0o600); err != nil {
			return [32]byte{}, fmt.Errorf("write token file: %w", err)
		}
	}
	hash := pki.TokenHash(tok)
	if err := os.WriteFile(hashPath, []byte(hash+"\n"), 0o600); err != nil {
		return [32]byte{}, fmt.Errorf("write token hash file: %w", err)
	}
	return pki.ParseTokenHash(hash)
}

func containerdConfig(cfg *Config) containerdproc.Config {
	base := filepath.Join(cfg.DataDir, "containerd")
	return containerdproc.Config{
		Binary:     cfg.ContainerdBinary,
		Root:       filepath.Join(base, "root"),
		State:      filepath.Join(cfg.runDir(), "containerd-state"),
		Address:    cfg.ContainerdSocket(),
		ConfigPath: filepath.Join(base, "config.toml"),
		LogPath:    filepath.Join(base, "containerd.log"),
		PidFile:    filepath.Join(cfg.runDir(), "containerd.pid"),
		Logger:     cfg.Logger,
	}
}

func startContainerd(ctx context.Context, cfg *Config) (*containerdproc.Process, error) {
	proc, err := containerdproc.Start(ctx, containerdConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("start containerd (log: %s): %w", containerdConfig(cfg).LogPath, err)
	}
	return proc, nil
}

func newRuntime(ctx context.Context, cfg *Config) (*ctrd.Runtime, error) {
	rc := ctrd.DefaultConfig()
	rc.Address, rc.Namespace, rc.InsecureRegistries, rc.CgroupParent, rc.Logger = cfg.ContainerdSocket(), cfg.ContainerdNamespace, cfg.InsecureRegistries, cfg.CgroupParent, cfg.Logger
	// runc keeps its state per namespace under one root by default; a root of
	// our own keeps agents sharing a machine (the lab) apart.
	rc.RuncRoot = filepath.Join(cfg.runDir(), "runc")
	// The shim runs this binary as each container's log driver.
	rc.LogDriver, rc.LogMaxSize, rc.LogMaxFiles = cfg.LogDriver, cfg.ContainerLogMaxSize, cfg.ContainerLogMaxFiles
	if rc.LogDriver == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find this executable, the containers' log driver: %w", err)
		}
		rc.LogDriver = logDriverBeside(exe, cfg.Logger)
	}
	rt, err := ctrd.New(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", rc.Address, err)
	}
	return rt, nil
}

func newNetwork(cfg *Config) (*podnet.CNI, error) {
	nc := podnet.DefaultConfig()
	nc.BridgeName, nc.PodCIDR, nc.NetNSPrefix, nc.ChainPrefix, nc.DataDir, nc.Logger = cfg.BridgeName, cfg.PodCIDR, cfg.NetNSPrefix, cfg.ChainPrefix, filepath.Join(cfg.DataDir, "cni"), cfg.Logger
	// Pods on other nodes (host-gw routes) see the source pod's IP; only
	// traffic leaving the cluster's pod range is masqueraded, by one chain
	// of the agent's. A single agent's cluster is its own range: without a
	// cluster range the bridge plugin would masquerade instead, with a chain
	// and four iptables runs per pod (12% of the node's CPU while 200 pods
	// started).
	nc.ClusterCIDR = cfg.PodCIDR
	if cfg.Fleet() {
		nc.ClusterCIDR = cfg.ClusterPodCIDR
	}
	deny, err := podnet.ParseDenyCIDRs(cfg.PodDenyCIDRs)
	if err != nil {
		return nil, fmt.Errorf("--pod-deny-cidr: %w", err)
	}
	nc.DenyCIDRs = deny // even when empty: "none" allows what the default denies
	nc.MTU = cfg.MTU
	if nc.MTU == 0 {
		nc.MTU = uplinkMTU()
	}
	if len(cfg.CNIPluginDirs) > 0 {
		nc.PluginDirs = cfg.CNIPluginDirs
	}
	n, err := podnet.New(nc)
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	return n, nil
}

// reservedHostPorts are the ports this agent listens on, which no pod's
// host port may take over.
func reservedHostPorts(cfg *Config) map[int]string {
	ports := map[int]string{}
	if _, p, err := net.SplitHostPort(cfg.APIAddr); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			ports[n] = "flotilla-agent's API"
		}
	}
	if cfg.Fleet() {
		ports[cfg.RaftPort] = "flotilla-agent's raft"
		ports[cfg.GossipPort] = "flotilla-agent's gossip"
		ports[cfg.RPCPort] = "flotilla-agent's RPC"
	}
	return ports
}

// logDriverBinary is the light log driver (agent/cmd/flotilla-log-driver)
// the agent runs beside each container when it is installed next to the
// agent's executable.
const logDriverBinary = "flotilla-log-driver"

// logDriverBeside returns the log driver the shim should run (as root):
// exe's logDriverBinary when it is there, an executable file with exe's
// owner that no one else may change, else exe itself (its hidden
// log-driver command), which costs each container more memory and
// start-up time.
func logDriverBeside(exe string, log *slog.Logger) string {
	p := filepath.Join(filepath.Dir(exe), logDriverBinary)
	fi, err := os.Stat(p)
	if err != nil {
		log.Info("containers' log driver: this executable; install "+logDriverBinary+" beside it for ~4 MiB less memory per container", "path", exe)
		return exe
	}
	exeInfo, err := os.Stat(exe)
	mode := fi.Mode()
	if err != nil || !mode.IsRegular() || mode.Perm()&0o111 == 0 || mode.Perm()&0o022 != 0 || owner(fi) != owner(exeInfo) {
		log.Warn("containers' log driver: not using "+p+" (not an executable of this one's owner that only its owner may change); using this executable", "mode", mode.String())
		return exe
	}
	log.Debug("containers' log driver", "path", p)
	return p
}

// owner is the uid of a file, -1 when unknown.
func owner(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Uid)
	}
	return -1
}

func selfNode(cfg *Config) api.Node {
	addr := "127.0.0.1"
	if cfg.AdvertiseAddr != "" {
		addr = cfg.AdvertiseAddr
	}
	return api.Node{
		Name: cfg.NodeName, Address: addr, PodCIDR: cfg.PodCIDR, Labels: cfg.Labels,
		CPUMillis: int64(goruntime.NumCPU()) * 1000, MemoryMiB: memTotalMiB(),
		Status: api.NodeReady, Server: cfg.Server || cfg.Dev, Version: cfg.Version,
		ReservedCPUMillis: cfg.ReservedCPUMillis, ReservedMemoryMiB: cfg.ReservedMemoryMiB,
		Conditions: cfg.conditions.get(),
	}
}

// memTotalMiB reads MemTotal from /proc/meminfo.
func memTotalMiB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb / 1024
		}
	}
	return 0
}

// importImageDir imports every *.tar in dir, so an air-gapped node has its
// images before any pod asks for them.
func importImageDir(ctx context.Context, rt runtime.Runtime, dir string, log *slog.Logger) error {
	if dir == "" {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		return err
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return fmt.Errorf("open image archive: %w", err)
		}
		names, err := rt.ImportImages(ctx, fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("import image archive %s: %w", f, err)
		}
		log.Info("imported images", "file", f, "images", names)
	}
	return nil
}

// newDiskMonitor watches the data dir's file system. Under pressure it
// first removes rotated container logs, then images no container uses and
// no pod on this node names (a pod waiting to be created keeps its image:
// with no registry it could not be pulled again).
func newDiskMonitor(cfg *Config, logDir string, rt *ctrd.Runtime, pods node.Store) (*diskpressure.Monitor, error) {
	dc := diskpressure.DefaultConfig()
	dc.Dir, dc.High, dc.Low, dc.Logger = cfg.DataDir, cfg.DiskPressureThreshold, cfg.DiskPressureLow, cfg.Logger
	dc.Steps = []diskpressure.Step{
		{Name: "rotated container logs", Run: func(context.Context) (string, error) {
			n, err := containerlog.PruneRotated(logDir)
			return fmt.Sprintf("%d bytes", n), err
		}},
		{Name: "unused images", Run: func(ctx context.Context) (string, error) {
			keep := map[string]bool{}
			for _, p := range pods.Pods(state.PodFilter{Node: cfg.NodeName}) {
				for _, c := range p.Containers {
					keep[ctrd.ImageRef(c.Image)] = true
				}
			}
			ctx, cancel := context.WithTimeout(ctx, cfg.ImagePullTimeout)
			defer cancel()
			names, err := rt.PruneImages(ctx, func(ref string) bool { return keep[ref] })
			return strings.Join(names, ", "), err
		}},
	}
	m, err := diskpressure.New(dc)
	if err != nil {
		return nil, fmt.Errorf("disk pressure: %w", err)
	}
	return m, nil
}

// readSecret reads a token or key file, without surrounding white space.
func readSecret(path, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}
