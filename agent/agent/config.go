package agent

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/diskpressure"
	"github.com/flotilla-io/flotilla/agent/node"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/podnet"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// Config is everything a flotilla-agent needs to run.
type Config struct {
	// Dev runs server and node in one process with a single raft voter and
	// a generated token, like `nomad agent -dev`.
	Dev      bool
	NodeName string
	DataDir  string
	// APIAddr is where the HTTP API listens (loopback unless told otherwise).
	APIAddr  string
	RaftAddr string
	// Token authenticates API requests. In dev mode an empty token is
	// generated and written to <DataDir>/token (0600).
	Token string

	// ContainerdAddress is an existing containerd socket; empty means the
	// agent starts and supervises its own containerd, as k3s does.
	ContainerdAddress   string
	ContainerdBinary    string
	ContainerdNamespace string
	InsecureRegistries  []string
	// ImageDir holds image archives (*.tar) imported at start, for air-gapped nodes.
	ImageDir string

	PodCIDR       string
	BridgeName    string
	ChainPrefix   string
	NetNSPrefix   string
	CgroupParent  string
	CNIPluginDirs []string
	// MTU of pod interfaces; 0 takes the MTU of the default route's interface.
	MTU int

	// Fleet mode (any of Server, RetryJoin or CAFile set): memberlist
	// membership, raft across servers (clients are non-voters), mTLS RPC.
	Server          bool
	BootstrapExpect int
	RetryJoin       []string
	// AdvertiseAddr is the IP other agents reach this one at; BindAddr is
	// where gossip, raft and RPC listen (default: AdvertiseAddr).
	AdvertiseAddr string
	BindAddr      string
	GossipPort    int
	RaftPort      int
	RPCPort       int
	CAFile        string
	CAKeyFile     string // servers only: signs the certificates of joining agents
	GossipKeyFile string
	JoinTokenFile string
	TokenFile     string
	// ClusterPodCIDR is split into one range per node (servers set it at bootstrap).
	ClusterPodCIDR string
	NodeMaskBits   int
	// ServiceCIDR, NodePortRange and ClusterDomain are the service layout:
	// the range service addresses come from, the range node ports come
	// from ("30000-32767") and the DNS domain of service and pod names.
	// Servers and --dev agents write them into the cluster config when the
	// state is created (the first server's win); every node then reads
	// them from there.
	ServiceCIDR   string
	NodePortRange string
	ClusterDomain string
	// IngressHTTPPort and IngressHTTPSPort are where this node's ingress
	// proxy listens, on IngressBind ("" is every address); 0 turns a
	// listener off, both 0 the proxy.
	IngressHTTPPort, IngressHTTPSPort int
	IngressBind                       string
	// IngressNoAccessLog turns off the proxy's access log lines and
	// request metrics, for ~7 µs less CPU per request.
	IngressNoAccessLog bool
	Labels             map[string]string
	// CertValidity is how long the node certificates this agent issues
	// (servers) or gets (clients, from the server that signs) last; agents
	// renew them at two thirds of it.
	CertValidity time.Duration

	Version string
	Logger  *slog.Logger

	// Inputs and limits (trust issue).
	// APITokenHashFile holds the hex SHA-256 of the API token, the only
	// form of it fleet VMs get (cloud-init writes it).
	APITokenHashFile string
	// RaftMultiplier scales raft's timeouts (1..10; 0 lets the agent pick).
	RaftMultiplier int
	// LegacyClientRaft is for benchmarks only (hidden flag
	// --legacy-client-raft): it brings back the design before clients left
	// raft, so that BenchmarkFleetScale can measure it beside the current
	// one. On a server, the leader adds verified client members to raft as
	// non-voters; a simulated node (RunSimulatedNode) then holds the full
	// replica as such a non-voter. Real client agents hold no raft state
	// any more: a leader with it set fails to verify them and says so.
	LegacyClientRaft bool
	// TuneGossip, if set, changes this agent's memberlist configuration
	// (membership.Config.Tune). No flag sets it: the node simulator gives
	// its nodes, which share one machine, more time to answer probes.
	TuneGossip func(*memberlist.Config)

	// ReservedCPUMillis and ReservedMemoryMiB are kept for the system (the
	// agent, containerd, the OS): the scheduler places pods in what is left.
	ReservedCPUMillis int64
	ReservedMemoryMiB int64
	// LostNodeGrace is how long after gossip marks a node failed the leader
	// replaces its pods elsewhere, and how long a node cut off from the
	// servers waits before it stops its self-fencing pods. Servers write it
	// into the cluster config when they bootstrap it; the first one wins.
	LostNodeGrace time.Duration
	// Gossip failure detection (memberlist): a probe every
	// GossipProbeInterval, answered within GossipProbeTimeout, and a
	// suspected node declared failed after GossipSuspicionMult probe
	// intervals (scaled by log10 of the fleet size) once others confirm
	// the suspicion, or up to GossipSuspicionMaxMult times that without.
	GossipProbeInterval    time.Duration
	GossipProbeTimeout     time.Duration
	GossipSuspicionMult    int
	GossipSuspicionMaxMult int

	// DefaultPidsLimit bounds the processes and threads of every container
	// that sets no pids_limit (node.Config.DefaultPidsLimit); 0 leaves them
	// unbounded.
	DefaultPidsLimit int64
	// AllowedCapabilities are the capabilities beyond Docker's default set
	// that containers on this node may add (node.Config.AllowedCapabilities).
	AllowedCapabilities []string

	// ContainerLogMaxSize and ContainerLogMaxFiles bound each run of a
	// container's log under <DataDir>/logs (the kubelet's
	// containerLogMaxSize and containerLogMaxFiles, 10 MiB × 5 by default):
	// a container's output takes at most twice their product (its current
	// run and the one before). They apply to runs started after a change.
	ContainerLogMaxSize  int64
	ContainerLogMaxFiles int
	// LogDriver is the executable containerd's shim runs as each
	// container's log driver (flotilla-agent's hidden log-driver command);
	// empty is this agent's own executable. No flag sets it.
	LogDriver string

	// RuntimeCallTimeout bounds every containerd call but image pulls,
	// ImagePullTimeout those; a node whose containerd leaves a call
	// unanswered for RuntimeUnhealthyAfter reports RuntimeUnhealthy.
	RuntimeCallTimeout    time.Duration
	ImagePullTimeout      time.Duration
	RuntimeUnhealthyAfter time.Duration
	// DiskPressureThreshold and DiskPressureLow are percentages of the
	// data dir's file system: past the first the node frees rotated logs
	// and unused images and, if still past it, reports DiskPressure and
	// takes no new pods until usage is under the second. 0 turns it off.
	DiskPressureThreshold float64
	DiskPressureLow       float64

	// PodDenyCIDRs are IPv4 ranges (or addresses) pods may not reach,
	// through the node or on it (podnet.Config.DenyCIDRs, parsed with
	// podnet.ParseDenyCIDRs). The default denies the cloud metadata service;
	// empty denies nothing (--pod-deny-cidr none).
	PodDenyCIDRs []string

	// conditions are the node's conditions as last found, shared by every
	// registration of the node (Run sets it; copies of the Config share it).
	conditions *nodeConditions
}

// Defaults for scheduling and failure detection.
//
// Failure detection is tuned for repair in under 10 s: memberlist's LAN
// defaults (probe 1 s, timeout 500 ms, suspicion ×4 and up to ×6 that
// without confirmations) took about 6 s to mark a killed node failed in a
// 5-node fleet, most of it waiting for other members to confirm the
// suspicion. Suspicion ×3, at most ×2 that (3 to 6 s in fleets under 10
// nodes, longer in larger ones: memberlist scales it by log10 of the size)
// keeps the indirect probes through 3 other members, which is what rides
// out a lossy link; scripts/bench.sh measures the false-failure rate with
// packets dropped on the lab bridge. The grace then adds 2 s before the
// leader replaces a failed node's pods, so that a node that was only slow
// to answer for a moment keeps them.
const (
	DefaultReservedCPUMillis      = 100
	DefaultReservedMemoryMiB      = 256
	DefaultLostNodeGrace          = state.DefaultLostNodeGrace
	DefaultGossipProbeInterval    = time.Second
	DefaultGossipProbeTimeout     = 500 * time.Millisecond
	DefaultGossipSuspicionMult    = 3
	DefaultGossipSuspicionMaxMult = 2
)

// Fleet reports whether the agent joins a fleet rather than running alone in dev mode.
func (c *Config) Fleet() bool { return !c.Dev && (c.Server || len(c.RetryJoin) > 0 || c.CAFile != "") }

// DefaultConfig returns the values a single dev agent on a laptop uses.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:               host,
		DataDir:                "/var/lib/flotilla",
		APIAddr:                "127.0.0.1:7400",
		RaftAddr:               "127.0.0.1:7401",
		ContainerdNamespace:    "flotilla",
		PodCIDR:                "10.244.0.0/24",
		BridgeName:             "flotilla0",
		ChainPrefix:            "FLOTILLA",
		NetNSPrefix:            "flt-",
		CgroupParent:           "/flotilla",
		CNIPluginDirs:          []string{"/usr/lib/cni", "/opt/cni/bin"},
		GossipPort:             7402,
		RaftPort:               7401,
		RPCPort:                7403,
		ClusterPodCIDR:         "10.244.0.0/16",
		NodeMaskBits:           24,
		ServiceCIDR:            state.DefaultServiceCIDR,
		NodePortRange:          state.DefaultNodePortRange,
		ClusterDomain:          state.DefaultClusterDomain,
		IngressHTTPPort:        api.DefaultIngressHTTP,
		IngressHTTPSPort:       api.DefaultIngressHTTPS,
		CertValidity:           pki.DefaultCertValidity,
		Version:                "dev",
		PodDenyCIDRs:           []string{podnet.MetadataCIDR},
		ReservedCPUMillis:      DefaultReservedCPUMillis,
		ReservedMemoryMiB:      DefaultReservedMemoryMiB,
		LostNodeGrace:          DefaultLostNodeGrace,
		GossipProbeInterval:    DefaultGossipProbeInterval,
		GossipProbeTimeout:     DefaultGossipProbeTimeout,
		GossipSuspicionMult:    DefaultGossipSuspicionMult,
		GossipSuspicionMaxMult: DefaultGossipSuspicionMaxMult,
		DefaultPidsLimit:       node.DefaultPidsLimit,
		ContainerLogMaxSize:    containerlog.DefaultMaxSize,
		ContainerLogMaxFiles:   containerlog.DefaultMaxFiles,
		RuntimeCallTimeout:     runtime.DefaultDeadlines().Call,
		ImagePullTimeout:       runtime.DefaultDeadlines().Pull,
		RuntimeUnhealthyAfter:  runtime.DefaultDeadlines().UnhealthyAfter,
		DiskPressureThreshold:  diskpressure.DefaultConfig().High,
		DiskPressureLow:        diskpressure.DefaultConfig().Low,
	}
}

// Validate reports every problem with c, naming the flag to fix.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name: must not be empty"))
	}
	if !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("--data-dir: %q must be an absolute path", c.DataDir))
	}
	for flag, addr := range map[string]string{"--api-addr": c.APIAddr, "--raft-addr": c.RaftAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port: %w", flag, addr, err))
		}
	}
	if p, err := netip.ParsePrefix(c.PodCIDR); !c.Fleet() && (err != nil || !p.Addr().Is4() || p.Bits() > 28) {
		errs = append(errs, fmt.Errorf("--pod-cidr: %q must be an IPv4 range of at least /28, e.g. 10.244.0.0/24", c.PodCIDR))
	}
	if l := len(c.BridgeName); l == 0 || l > 15 {
		errs = append(errs, fmt.Errorf("--bridge: %q must be 1 to 15 characters (a Linux interface name)", c.BridgeName))
	}
	if l := len(c.ChainPrefix); l == 0 || l > maxChainPrefix {
		errs = append(errs, fmt.Errorf("--iptables-chain-prefix: %q must be 1 to %d characters: the service chains are named <prefix>-SVC-<13-character hash>, and iptables allows 28", c.ChainPrefix, maxChainPrefix))
	}
	if !c.Fleet() || c.Server {
		errs = append(errs, c.validateServiceLayout()...)
	}
	errs = append(errs, c.validateIngress()...)
	if c.ContainerLogMaxSize < containerlog.MinMaxSize {
		errs = append(errs, fmt.Errorf("--container-log-max-size: %d bytes; at least %d (a log file holds at least a few lines)", c.ContainerLogMaxSize, containerlog.MinMaxSize))
	}
	if c.ContainerLogMaxFiles < containerlog.MinMaxFiles {
		errs = append(errs, fmt.Errorf("--container-log-max-files: %d; at least %d (a rotation needs a file to rotate into)", c.ContainerLogMaxFiles, containerlog.MinMaxFiles))
	}
	if c.LogDriver != "" && !filepath.IsAbs(c.LogDriver) {
		errs = append(errs, fmt.Errorf("log driver %q must be an absolute path", c.LogDriver))
	}
	if !c.Dev && c.Token == "" && c.TokenFile == "" && c.APITokenHashFile == "" {
		errs = append(errs, errors.New("--token-file or --api-token-hash-file: an agent outside --dev needs the API token, or its SHA-256 (or set FLOTILLA_TOKEN)"))
	}
	if c.Fleet() {
		if err := api.ValidateNodeName(c.NodeName); err != nil {
			errs = append(errs, fmt.Errorf("--node-name: %w (it is the common name of the node's certificate)", err))
		}
		if c.GossipKeyFile == "" {
			errs = append(errs, errors.New("--gossip-key-file: a fleet agent needs the gossip key (flotilla_cluster's gossip_key): unencrypted gossip would let anyone who reaches the gossip port join the member list"))
		}
		if c.CertValidity < time.Hour || c.CertValidity > 366*24*time.Hour {
			errs = append(errs, fmt.Errorf("--cert-validity: %s is out of range 1h..8784h", c.CertValidity))
		}
		if c.CAFile == "" {
			errs = append(errs, errors.New("--ca-file: a fleet agent needs the cluster CA certificate (flotilla_cluster's ca_cert_pem)"))
		}
		if c.CAKeyFile == "" && c.JoinTokenFile == "" {
			errs = append(errs, errors.New("--join-token-file: an agent without --ca-key-file needs the join token to get its certificate"))
		}
		if c.Server && c.BootstrapExpect < 1 {
			errs = append(errs, errors.New("--bootstrap-expect: a server needs the number of servers to wait for (1, 3 or 5)"))
		}
		if !c.Server && len(c.RetryJoin) == 0 {
			errs = append(errs, errors.New("--retry-join: a client agent needs at least one server address"))
		}
		if _, err := netip.ParseAddr(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("--advertise-addr: %q is not an IP address other agents can reach this one at", c.AdvertiseAddr))
		}
		if p, err := netip.ParsePrefix(c.ClusterPodCIDR); err != nil || !p.Addr().Is4() || p.Bits() >= c.NodeMaskBits {
			errs = append(errs, fmt.Errorf("--cluster-pod-cidr: %q must be an IPv4 range larger than one node's /%d", c.ClusterPodCIDR, c.NodeMaskBits))
		}
	}
	errs = append(errs, c.validateInputs()...)
	return errors.Join(errs...)
}

// validateInputs checks the settings of the trust issue: the API listen
// address, the ranges pods are denied and the raft multiplier.
func (c *Config) validateInputs() []error {
	var errs []error
	if host, _, err := net.SplitHostPort(c.APIAddr); err == nil && !c.Fleet() && !isLoopback(host) {
		who := "a --dev agent"
		if !c.Dev {
			who = "an agent outside a fleet (no --server, --retry-join or --ca-file)"
		}
		errs = append(errs, fmt.Errorf("--api-addr %s: %s serves plain HTTP; listen on loopback (127.0.0.1) or run a fleet agent, whose API is HTTPS", c.APIAddr, who))
	}
	deny, err := podnet.ParseDenyCIDRs(c.PodDenyCIDRs)
	if err != nil {
		errs = append(errs, fmt.Errorf("--pod-deny-cidr: %w", err))
	}
	flag, pods := "--pod-cidr", c.PodCIDR
	if c.Fleet() {
		flag, pods = "--cluster-pod-cidr", c.ClusterPodCIDR
	}
	if pfx, err := netip.ParsePrefix(pods); err == nil {
		for _, d := range deny {
			if d.Overlaps(pfx) {
				errs = append(errs, fmt.Errorf("--pod-deny-cidr: %s overlaps the pod range %s (%s); pods could not reach each other", d, pods, flag))
			}
		}
	}
	if c.ReservedCPUMillis < 0 || c.ReservedCPUMillis > api.MaxResource {
		errs = append(errs, fmt.Errorf("--reserved-cpu: %d is out of range 0..%d millicores", c.ReservedCPUMillis, int64(api.MaxResource)))
	}
	if c.ReservedMemoryMiB < 0 || c.ReservedMemoryMiB > api.MaxResource {
		errs = append(errs, fmt.Errorf("--reserved-memory: %d is out of range 0..%d MiB", c.ReservedMemoryMiB, int64(api.MaxResource)))
	}
	if c.DefaultPidsLimit < 0 || c.DefaultPidsLimit > api.MaxPidsLimit {
		errs = append(errs, fmt.Errorf("--default-pids-limit: %d is out of range 0..%d (0: no limit)", c.DefaultPidsLimit, api.MaxPidsLimit))
	}
	for flag, d := range map[string]time.Duration{"--runtime-call-timeout": c.RuntimeCallTimeout, "--image-pull-timeout": c.ImagePullTimeout, "--runtime-unhealthy-after": c.RuntimeUnhealthyAfter} {
		if d < time.Second || d > time.Hour {
			errs = append(errs, fmt.Errorf("%s: %s is out of range 1s..1h", flag, d))
		}
	}
	if c.DiskPressureThreshold < 0 {
		errs = append(errs, fmt.Errorf("--disk-pressure-threshold: %g%% is negative (0 turns the check off)", c.DiskPressureThreshold))
	} else if c.DiskPressureThreshold != 0 {
		dc := diskpressure.DefaultConfig()
		dc.Dir, dc.High, dc.Low = c.DataDir, c.DiskPressureThreshold, c.DiskPressureLow
		if err := dc.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range c.AllowedCapabilities {
		if err := api.ValidateCapability(n, false); err != nil {
			errs = append(errs, fmt.Errorf("--allow-capability: %w", err))
		}
	}
	if c.LostNodeGrace < 0 || c.LostNodeGrace > time.Hour {
		errs = append(errs, fmt.Errorf("--lost-node-grace: %s is out of range 0..1h", c.LostNodeGrace))
	}
	if c.GossipProbeInterval < 100*time.Millisecond || c.GossipProbeInterval > time.Minute {
		errs = append(errs, fmt.Errorf("--gossip-probe-interval: %s is out of range 100ms..1m", c.GossipProbeInterval))
	}
	if c.GossipProbeTimeout <= 0 || c.GossipProbeTimeout >= c.GossipProbeInterval {
		errs = append(errs, fmt.Errorf("--gossip-probe-timeout: %s must be above 0 and below --gossip-probe-interval (%s)", c.GossipProbeTimeout, c.GossipProbeInterval))
	}
	if c.GossipSuspicionMult < 1 || c.GossipSuspicionMult > 20 {
		errs = append(errs, fmt.Errorf("--gossip-suspicion-mult: %d is out of range 1..20", c.GossipSuspicionMult))
	}
	if c.GossipSuspicionMaxMult < 1 || c.GossipSuspicionMaxMult > 20 {
		errs = append(errs, fmt.Errorf("--gossip-suspicion-max-mult: %d is out of range 1..20", c.GossipSuspicionMaxMult))
	}
	if c.RaftMultiplier < 0 || c.RaftMultiplier > 10 {
		errs = append(errs, fmt.Errorf("--raft-multiplier: %d is out of range 0..10 (0 lets the agent pick)", c.RaftMultiplier))
	}
	return errs
}

// maxChainPrefix is svcproxy's bound on the chain prefix.
const maxChainPrefix = 10

// validateServiceLayout checks the flags that become the cluster config's
// service layout (servers and --dev agents only: clients take the
// cluster's). Empty values are the defaults, as in the cluster config.
func (c *Config) validateServiceLayout() []error {
	var errs []error
	pods, podFlag := c.PodCIDR, "--pod-cidr"
	if c.Fleet() {
		pods, podFlag = c.ClusterPodCIDR, "--cluster-pod-cidr"
	}
	svcCIDR := cmp.Or(c.ServiceCIDR, state.DefaultServiceCIDR)
	svc, err := netip.ParsePrefix(svcCIDR)
	switch {
	case err != nil || !svc.Addr().Is4() || svc.Bits() < 12 || svc.Bits() > 28:
		errs = append(errs, fmt.Errorf("--service-cidr: %q must be an IPv4 range from /12 to /28, e.g. %s", c.ServiceCIDR, state.DefaultServiceCIDR))
	case svc != svc.Masked():
		errs = append(errs, fmt.Errorf("--service-cidr: %s has host bits set; did you mean %s?", svc, svc.Masked()))
	default:
		if p, err := netip.ParsePrefix(pods); err == nil && p.Overlaps(svc) {
			errs = append(errs, fmt.Errorf("--service-cidr: %s overlaps the pod range %s (%s); they must be disjoint", svc, pods, podFlag))
		}
	}
	if _, _, err := api.ParseNodePortRange(cmp.Or(c.NodePortRange, state.DefaultNodePortRange)); err != nil {
		errs = append(errs, fmt.Errorf("--service-node-port-range: %w", err))
	}
	// The cluster config's own check of the domain, on a layout that is
	// otherwise valid.
	cc := state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ClusterDomain: c.ClusterDomain}
	if err := cc.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--cluster-domain: %q must be DNS labels separated by dots, at most 100 characters, e.g. %s", c.ClusterDomain, state.DefaultClusterDomain))
	}
	return errs
}

// isLoopback reports whether host (of host:port) is a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// runDir holds sockets: unix socket paths are limited to 108 bytes, so they
// cannot live under an arbitrarily deep data dir.
func (c *Config) runDir() string {
	sum := sha256.Sum256([]byte(c.DataDir))
	return filepath.Join("/run/flotilla", hex.EncodeToString(sum[:])[:12])
}

// ContainerdSocket is the containerd socket the agent uses.
func (c *Config) ContainerdSocket() string {
	if c.ContainerdAddress != "" {
		return c.ContainerdAddress
	}
	return filepath.Join(c.runDir(), "containerd.sock")
}

// validateIngress checks the ingress listeners' flags.
func (c *Config) validateIngress() []error {
	var errs []error
	for _, p := range []struct {
		flag string
		port int
	}{{"--ingress-http-port", c.IngressHTTPPort}, {"--ingress-https-port", c.IngressHTTPSPort}} {
		if p.port < 0 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("%s: %d is out of range 0..65535 (0 turns the listener off)", p.flag, p.port))
		}
	}
	if c.IngressHTTPPort != 0 && c.IngressHTTPPort == c.IngressHTTPSPort {
		errs = append(errs, fmt.Errorf("--ingress-http-port and --ingress-https-port are both %d; give them different ports", c.IngressHTTPPort))
	}
	if c.IngressBind != "" {
		if a, err := netip.ParseAddr(c.IngressBind); err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("--ingress-bind: %q must be an IPv4 address of this node, or empty for all", c.IngressBind))
		}
	}
	return errs
}
