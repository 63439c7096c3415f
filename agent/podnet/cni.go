//go:build linux

package podnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/coreos/go-iptables/iptables"
)

var _ Network = (*CNI)(nil)

const (
	// netnsDir is where iproute2 keeps named network namespaces; ours live
	// there too so `ip netns` and `nsenter --net=` find them.
	netnsDir = "/run/netns"
	// rollbackTimeout bounds the DEL that undoes a failed ADD, which runs
	// even when the caller's context is already cancelled.
	rollbackTimeout = 30 * time.Second
	ipForwardPath   = "/proc/sys/net/ipv4/ip_forward"
)

// CNI is the pod network of one node: a Linux bridge, host-local IPAM over
// the node's pod range, and one named netns per pod, all through the CNI
// reference plugins. It is safe for concurrent use; calls for the same key
// are serialised.
type CNI struct {
	cfg      Config
	log      *slog.Logger
	pfx      netip.Prefix
	gw       netip.Addr
	netnsDir string
	cni      *libcni.CNIConfig
	exec     invoke.Exec
	list     *libcni.NetworkConfigList
	// noPorts is list without portmap, for pods without host ports.
	noPorts *libcni.NetworkConfigList
	ipt     iptablesAPI
	locks   keyLocks

	dirMu    sync.Mutex
	dirReady bool
}

// New validates cfg and returns the node's pod network. It changes nothing
// on the host; Init does.
func New(cfg Config) (*CNI, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.PluginDirs = slices.Clone(cfg.PluginDirs)
	cfg.DenyCIDRs = slices.Clone(cfg.DenyCIDRs)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "podnet", "bridge", cfg.BridgeName)
	pfx := netip.MustParsePrefix(cfg.PodCIDR) // validated above

	raw, err := buildConfList(cfg)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("parse generated CNI conflist: %w", err)
	}
	if raw, err = buildConfListNoPorts(cfg); err != nil {
		return nil, err
	}
	listNoPorts, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("parse generated CNI conflist: %w", err)
	}
	// An explicit exec: libcni fills in a default lazily, which races when
	// pods are set up concurrently.
	exec := &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: logWriter{log}},
		PluginDecoder: version.PluginDecoder{},
	}
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("set up iptables: %w; install the iptables package", err)
	}
	return &CNI{
		cfg:      cfg,
		log:      log,
		pfx:      pfx,
		gw:       gatewayOf(pfx),
		netnsDir: netnsDir,
		cni:      libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cacheDir(cfg), exec),
		exec:     exec,
		list:     list,
		noPorts:  listNoPorts,
		ipt:      ipt,
		locks:    keyLocks{m: map[string]*keyLock{}},
	}, nil
}

// Gateway is the pod range's first address, which the bridge carries from
// Init on: pods reach node services (DNS) there.
func (c *CNI) Gateway() netip.Addr { return c.gw }

// Init enables IPv4 forwarding, prepares /run/netns and DataDir, checks the
// plugins, makes the bridge with the gateway address (Gateway) if it is
// missing, and installs the iptables rules: FORWARD refuses DenyCIDRs to
// the pods and accepts the rest of their traffic (host port traffic
// included), INPUT refuses them DenyCIDRs and the node's loopback range on
// the node.
func (c *CNI) Init(ctx context.Context) error {
	if err := enableIPForward(c.log); err != nil {
		return err
	}
	if err := c.ensureNetNSDir(); err != nil {
		return err
	}
	if err := os.MkdirAll(c.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create CNI data dir: %w", err)
	}
	for _, plugin := range []string{"bridge", "host-local", "portmap"} {
		if err := c.checkPlugin(ctx, plugin); err != nil {
			return err
		}
	}
	if err := checkBridgeAddr(c.cfg.BridgeName, netip.PrefixFrom(c.gw, c.pfx.Bits())); err != nil {
		return err
	}
	if err := ensureBridge(c.cfg.BridgeName, netip.PrefixFrom(c.gw, c.pfx.Bits()), c.cfg.MTU); err != nil {
		return err
	}
	if err := ensureForwardRules(c.ipt, c.cfg.fwdChain(), c.cfg.BridgeName, c.cfg.DenyCIDRs, c.cfg.inboundFrom()); err != nil {
		return err
	}
	if err := ensureInputRules(c.ipt, c.cfg.inChain(), c.cfg.BridgeName, c.cfg.DenyCIDRs); err != nil {
		return err
	}
	if err := ensureOutputRules(c.ipt, c.cfg.outChain(), c.cfg.BridgeName, c.gw); err != nil {
		return err
	}
	if len(c.cfg.DenyCIDRs) > 0 {
		c.log.Info("pods are refused these ranges", "deny_cidrs", c.cfg.DenyCIDRs, "chains", []string{c.cfg.fwdChain(), c.cfg.inChain()})
	} else {
		c.log.Warn("pods may reach every address the node reaches, the cloud metadata service (169.254.169.254) included; no ranges are denied")
	}
	if c.cfg.ClusterCIDR != "" {
		if err := ensureMasqRules(c.ipt, c.cfg.masqChain(), c.pfx.String(), c.cfg.ClusterCIDR); err != nil {
			return err
		}
		c.log.Info("pod traffic leaving the cluster is masqueraded", "cluster_cidr", c.cfg.ClusterCIDR, "chain", c.cfg.masqChain())
	}
	c.log.Info("pod network ready", "pod_cidr", c.pfx, "gateway", c.gw, "chain", c.cfg.fwdChain())
	return nil
}

// Setup creates the pod's netns, attaches it to the bridge and forwards
// the host ports WithPortMappings names (through the portmap plugin). For a
// key that is already set up it returns the existing attachment, from
// libcni's cache or, when that is gone, from eth0 inside the netns, and
// makes its host ports match the mappings given.
func (c *CNI) Setup(ctx context.Context, key string, opts ...SetupOption) (Attachment, error) {
	if err := validKey(key); err != nil {
		return Attachment{}, err
	}
	pms, err := normalizePortMappings(applySetupOptions(opts).portMappings)
	if err != nil {
		return Attachment{}, fmt.Errorf("set up network for pod %q: %w", key, err)
	}
	defer c.locks.lock(key)()
	if err := c.ensureNetNSDir(); err != nil {
		return Attachment{}, err
	}
	a, err := c.setup(ctx, key, pms)
	if err != nil && ctx.Err() == nil {
		// A failed attempt has been rolled back, which also clears state it
		// may have tripped on (a reservation for the key that host-local
		// kept while libcni's cache was lost), so one more try is worth it.
		c.log.Warn("pod network setup failed; trying once more", "key", key, "err", err)
		a, err = c.setup(ctx, key, pms)
	}
	return a, err
}

// setup is one attempt of Setup, with the key locked and the mappings
// normalized. It undoes what it did when it fails, bar a pod network that
// was there before: only its host ports are changed.
func (c *CNI) setup(ctx context.Context, key string, pms []PortMapping) (Attachment, error) {
	path := c.netnsPath(key)
	rt := c.runtimeConf(key, path)

	state, err := statNetNS(path)
	if err != nil {
		return Attachment{}, err
	}
	if state == netnsLive {
		if ip, ok := c.existingIP(key, path, rt); ok {
			if err := c.syncPortMappings(ctx, key, path, ip, pms); err != nil {
				return Attachment{}, fmt.Errorf("set up network for pod %q: %w", key, err)
			}
			return Attachment{Key: key, NetNSPath: path, IP: ip.String()}, nil
		}
		// A netns without a network: an ADD was cut short. Release what it
		// may have taken and add again in the same netns.
		c.log.Warn("pod netns has no network; attaching it again", "key", key)
		if err := c.del(ctx, rt); err != nil {
			return Attachment{}, fmt.Errorf("set up network for pod %q: clean up interrupted attach: %w", key, err)
		}
	} else {
		if state == netnsStale {
			if err := removeNetNS(path); err != nil {
				return Attachment{}, err
			}
		}
		// A cached result without a netns (say, after a reboot wiped /run)
		// still holds an IP, and host-local refuses a second one per key.
		if ip, _ := c.cachedIP(rt); ip.IsValid() {
			c.log.Info("releasing stale IP of pod before setup", "key", key, "ip", ip)
			if err := c.del(ctx, rt); err != nil {
				return Attachment{}, fmt.Errorf("set up network for pod %q: release stale IP %s: %w", key, ip, err)
			}
		}
		if err := createNetNS(path); err != nil {
			return Attachment{}, fmt.Errorf("set up network for pod %q: %w", key, err)
		}
	}

	// Only on ADD: the DELs above take the mappings from libcni's cache.
	// libcni caches them with the result, for the DEL after a restart.
	rt.CapabilityArgs = capabilityArgs(pms)
	res, err := c.addNetworkList(ctx, rt, len(pms) > 0)
	var ip netip.Addr
	if err == nil {
		ip, err = c.ipFromResult(res)
	}
	if err != nil {
		c.rollback(ctx, key, rt)
		return Attachment{}, fmt.Errorf("set up network for pod %q on bridge %s: %w", key, c.cfg.BridgeName, err)
	}
	if len(pms) > 0 {
		c.log.Info("pod network set up", "key", key, "ip", ip, "netns", path, "host_ports", pms)
	} else {
		c.log.Info("pod network set up", "key", key, "ip", ip, "netns", path)
	}
	return Attachment{Key: key, NetNSPath: path, IP: ip.String()}, nil
}

// Teardown releases the pod's IP and host ports (CNI DEL) and removes its
// netns. An unknown key, a netns already gone or a lost cache are all fine;
// host ports are found in the nat table without any state (see del).
func (c *CNI) Teardown(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	defer c.locks.lock(key)()
	path := c.netnsPath(key)
	state, err := statNetNS(path)
	if err != nil {
		return err
	}
	if state == netnsStale {
		// The plugins fail on a path that is not a netns but are fine with a
		// missing one; the file is only a name.
		if err := removeNetNS(path); err != nil {
			return err
		}
	}
	if err := c.del(ctx, c.runtimeConf(key, path)); err != nil {
		return fmt.Errorf("tear down network of pod %q: %w", key, err)
	}
	if err := removeNetNS(path); err != nil {
		return fmt.Errorf("tear down network of pod %q: %w", key, err)
	}
	c.log.Info("pod network torn down", "key", key)
	return nil
}

// List returns every pod this agent has a netns or a cached CNI result for,
// sorted by key. A cached result without a netns (after a reboot) still holds
// an IP and is listed with an empty NetNSPath so the reconciler tears it
// down; an IP is empty when neither cache nor netns tells it.
func (c *CNI) List(ctx context.Context) ([]Attachment, error) {
	keys, err := c.keys()
	if err != nil {
		return nil, err
	}
	out := make([]Attachment, 0, len(keys))
	for _, key := range keys {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		path := c.netnsPath(key)
		state, err := statNetNS(path)
		if err != nil {
			return nil, err
		}
		a := Attachment{Key: key}
		if state != netnsMissing {
			a.NetNSPath = path
		}
		rt := c.runtimeConf(key, path)
		if ip, ok := c.existingIP(key, path, rt); ok {
			a.IP = ip.String()
		}
		out = append(out, a)
	}
	return out, nil
}

// Keys returns the keys List would, sorted, reading no IP.
func (c *CNI) Keys(context.Context) ([]string, error) { return c.keys() }

// Cleanup tears down every pod network of this agent, deletes the bridge,
// the iptables chains and their jumps, and the IPAM and cache state. It goes on
// past errors and returns them all.
func (c *CNI) Cleanup(ctx context.Context) error {
	var errs []error
	keys, err := c.keys()
	if err != nil {
		errs = append(errs, err)
	}
	for _, key := range keys {
		if err := c.Teardown(ctx, key); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeMasqRules(c.ipt, networkName(c.cfg), ""); err != nil {
		errs = append(errs, err)
	}
	if unlock, err := lockPortmap(ctx); err != nil {
		errs = append(errs, err)
	} else {
		if err := cleanupHostPorts(c.ipt, networkName(c.cfg), c.pfx); err != nil {
			errs = append(errs, fmt.Errorf("remove host port rules: %w", err))
		}
		unlock()
	}
	if err := deleteBridge(c.cfg.BridgeName); err != nil {
		errs = append(errs, err)
	}
	if err := removeForwardRules(c.ipt, c.cfg.fwdChain()); err != nil {
		errs = append(errs, err)
	}
	if err := removeInputRules(c.ipt, c.cfg.inChain()); err != nil {
		errs = append(errs, err)
	}
	if err := removeOutputRules(c.ipt, c.cfg.outChain()); err != nil {
		errs = append(errs, err)
	}
	// Also without ClusterCIDR: the agent may have run in a fleet before.
	if len(c.cfg.masqChain()) <= maxChainName {
		if err := removeMasqChain(c.ipt, c.cfg.masqChain()); err != nil {
			errs = append(errs, err)
		}
	}
	for _, dir := range []string{filepath.Join(ipamDir(c.cfg), networkName(c.cfg)), cacheDir(c.cfg)} {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove CNI state %s: %w", dir, err))
		}
	}
	// ipamDir is left when other networks' state is in it.
	_ = os.Remove(ipamDir(c.cfg))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up pod network %s: %w", c.cfg.BridgeName, err)
	}
	c.log.Info("pod network cleaned up", "pods", len(keys))
	return nil
}

func (c *CNI) netnsPath(key string) string {
	return filepath.Join(c.netnsDir, c.cfg.NetNSPrefix+key)
}

func (c *CNI) runtimeConf(key, path string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: key, NetNS: path, IfName: podIfName}
}

func (c *CNI) ensureNetNSDir() error {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	if c.dirReady {
		return nil
	}
	if err := ensureNetNSDir(c.netnsDir); err != nil {
		return err
	}
	c.dirReady = true
	return nil
}

// existingIP finds the IP of a pod that is set up: libcni's cache first,
// eth0 inside the netns second.
func (c *CNI) existingIP(key, path string, rt *libcni.RuntimeConf) (netip.Addr, bool) {
	ip, err := c.cachedIP(rt)
	if err != nil {
		c.log.Warn("unreadable cached CNI result; reading IP from the netns", "key", key, "err", err)
	}
	if ip.IsValid() {
		return ip, true
	}
	if st, _ := statNetNS(path); st != netnsLive {
		return netip.Addr{}, false
	}
	ip, err = readIfaceIPv4(path, podIfName, c.pfx)
	if err != nil {
		c.log.Warn("cannot read pod IP from its netns", "key", key, "err", err)
		return netip.Addr{}, false
	}
	if ip.IsValid() {
		c.log.Debug("no cached CNI result; took pod IP from its netns", "key", key, "ip", ip)
	}
	return ip, ip.IsValid()
}

// cachedIP is the pod IP from libcni's cache; the zero Addr when there is
// no cached result.
func (c *CNI) cachedIP(rt *libcni.RuntimeConf) (netip.Addr, error) {
	res, err := c.cni.GetNetworkListCachedResult(c.list, rt)
	if err != nil || res == nil {
		return netip.Addr{}, err
	}
	return c.ipFromResult(res)
}

func (c *CNI) ipFromResult(res types.Result) (netip.Addr, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read CNI result: %w", err)
	}
	for _, ipc := range r.IPs {
		ip, ok := netip.AddrFromSlice(ipc.Address.IP)
		if ip = ip.Unmap(); ok && c.pfx.Contains(ip) {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("CNI result has no address in pod CIDR %s: %v", c.pfx, r.IPs)
}

// del runs CNI DEL with the conflist and port mappings the pod was added
// with, when libcni cached them, so a changed config (IPMasq) still removes
// what ADD made and the portmap plugin its rules (it removes nothing when
// DEL has no mappings), and then removes masquerade and host port rules
// the plugins missed: after a lost cache, or for a pod added by an agent
// that had no portmap in its conflist.
func (c *CNI) del(ctx context.Context, rt *libcni.RuntimeConf) error {
	list := c.list
	if raw, cachedRT, err := c.cni.GetNetworkListCachedConfig(c.list, rt); err == nil && len(raw) > 0 {
		if cached, err := libcni.ConfListFromBytes(raw); err == nil && cached.Name == c.list.Name {
			list = cached
		}
		if cachedRT != nil && cachedRT.CapabilityArgs[portMappingsCapability] != nil {
			rt = cachedRT
		}
	}
	// A pod with host ports: its chains go under the host port lock, so
	// another agent's cleanup never reads one half gone.
	if rt.CapabilityArgs[portMappingsCapability] != nil {
		unlock, err := lockPortmap(ctx)
		if err != nil {
			return err
		}
		defer unlock()
	}
	if err := c.cni.DelNetworkList(ctx, list, rt); err != nil {
		return err
	}
	// The bridge plugin leaves the masquerade rule behind when it cannot
	// see the pod's addresses (netns or eth0 gone); see removeMasqRules.
	if err := removeMasqRules(c.ipt, list.Name, rt.ContainerID); err != nil {
		return err
	}
	return removeHostPortRules(c.ipt, list.Name, rt.ContainerID)
}

// syncPortMappings makes the host ports of a pod that is already set up
// forward pms. When libcni's cache says the pod has pms, that is trusted
// and nothing is read: the common case costs one small file read. Otherwise
// (the cache is lost, or the pod was added with other mappings, say by an
// agent without host ports) the nat table is read, and when it differs the
// pod's forwarding is replaced by running the portmap plugin on its own.
// The cache is then made to say what is in force.
func (c *CNI) syncPortMappings(ctx context.Context, key, path string, ip netip.Addr, pms []PortMapping) error {
	rt := c.runtimeConf(key, path)
	if raw, cachedRT, err := c.cni.GetNetworkListCachedConfig(c.list, rt); err == nil && len(raw) > 0 && cachedRT != nil {
		if cached, err := portMappingsFromCapabilityArgs(cachedRT.CapabilityArgs); err == nil && slices.Equal(cached, pms) {
			return nil
		}
	}
	network := networkName(c.cfg)
	live, err := liveHostPortDNAT(c.ipt, network, key)
	if err != nil {
		return fmt.Errorf("read host port rules: %w", err)
	}
	if slices.Equal(live, wantHostPortDNAT(pms, ip)) {
		c.recordPortMappings(key, pms)
		return nil
	}
	c.log.Info("host ports of pod differ from those wanted; forwarding them anew", "key", key, "ip", ip, "have", live, "want", pms)
	if err := removeHostPortRules(c.ipt, network, key); err != nil {
		return fmt.Errorf("remove old host port rules: %w", err)
	}
	if len(pms) == 0 {
		return nil
	}
	if err := c.addPortMappings(ctx, key, path, ip, pms); err != nil {
		// No half-made forwarding; the next Setup tries again.
		if rerr := removeHostPortRules(c.ipt, network, key); rerr != nil {
			c.log.Warn("undo failed host port setup", "key", key, "err", rerr)
		}
		return fmt.Errorf("forward host ports %v to %s: %w", pms, ip, err)
	}
	c.recordPortMappings(key, pms)
	return nil
}

// cacheCapabilityArgsField is where libcni's cache entry for a pod
// (results/<network>-<key>-<ifname>, libcni's cachedInfo) keeps the
// CapabilityArgs of the ADD, which GetNetworkListCachedConfig returns.
const cacheCapabilityArgsField = "capabilityArgs"

// recordPortMappings writes pms into libcni's cache entry for the pod, as
// if it had been added with them, so that the next Setup trusts the cache
// again and DEL gives portmap the mappings in force. libcni has no call
// for this; the entry is JSON and every other field is kept. A missing
// entry is left missing. Failure only costs a read of the nat table on the
// next Setup (DEL finds the rules without the cache), so it is logged.
func (c *CNI) recordPortMappings(key string, pms []PortMapping) {
	path := filepath.Join(cacheDir(c.cfg), "results", networkName(c.cfg)+"-"+key+"-"+podIfName)
	if err := rewriteCachedCapabilityArgs(path, capabilityArgs(pms)); err != nil {
		c.log.Warn("cannot record host ports in libcni's cache; the next setup reads them from iptables", "key", key, "err", err)
	}
}

// rewriteCachedCapabilityArgs sets the portMappings capability argument of
// the libcni cache entry at path to args' (removes it when args has none).
func rewriteCachedCapabilityArgs(path string, args map[string]any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var entry map[string]json.RawMessage
	if err := json.Unmarshal(b, &entry); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	caps := map[string]json.RawMessage{}
	if raw := entry[cacheCapabilityArgsField]; len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &caps); err != nil {
			return fmt.Errorf("parse %s of %s: %w", cacheCapabilityArgsField, path, err)
		}
	}
	if v, ok := args[portMappingsCapability]; ok {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		caps[portMappingsCapability] = raw
	} else {
		delete(caps, portMappingsCapability)
	}
	if len(caps) == 0 {
		delete(entry, cacheCapabilityArgsField)
	} else if entry[cacheCapabilityArgsField], err = json.Marshal(caps); err != nil {
		return err
	}
	out, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	// Renamed into place, so a crash leaves the old entry or the new one.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// addPortMappings runs the conflist's portmap plugin alone (CNI ADD) for a
// pod whose network exists, with a previous result that holds its IP.
func (c *CNI) addPortMappings(ctx context.Context, key, path string, ip netip.Addr, pms []PortMapping) error {
	i := slices.IndexFunc(c.list.Plugins, func(p *libcni.PluginConfig) bool { return p.Network.Type == "portmap" })
	if i < 0 {
		return errors.New("the CNI conflist has no portmap plugin")
	}
	prev := &types100.Result{
		CNIVersion: c.list.CNIVersion,
		IPs:        []*types100.IPConfig{{Address: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(c.pfx.Bits(), 32)}}},
	}
	conf, err := libcni.InjectConf(c.list.Plugins[i], map[string]any{
		"name":          c.list.Name,
		"cniVersion":    c.list.CNIVersion,
		"prevResult":    prev,
		"runtimeConfig": capabilityArgs(pms),
	})
	if err != nil {
		return fmt.Errorf("build portmap config: %w", err)
	}
	pluginPath, err := c.exec.FindInPath("portmap", c.cfg.PluginDirs)
	if err != nil {
		return fmt.Errorf("CNI plugin portmap in %v: %w", c.cfg.PluginDirs, err)
	}
	args := &invoke.Args{
		Command:     "ADD",
		ContainerID: key,
		NetNS:       path,
		IfName:      podIfName,
		Path:        strings.Join(c.cfg.PluginDirs, string(os.PathListSeparator)),
	}
	unlock, err := lockPortmap(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = invoke.ExecPluginWithResult(ctx, pluginPath, conf.Bytes, args, c.exec)
	return err
}

// addNetworkList runs CNI ADD: without portmap for a pod without host
// ports (libcni caches the list a pod was added with, and DEL runs that).
// With host ports it holds the host-wide portmap lock: the plugin makes the
// chains all pods share with check-then-create, so two ADDs at once
// duplicate the jumps to them (seen with 8 pods at once).
func (c *CNI) addNetworkList(ctx context.Context, rt *libcni.RuntimeConf, hostPorts bool) (types.Result, error) {
	if !hostPorts {
		return c.cni.AddNetworkList(ctx, c.noPorts, rt)
	}
	unlock, err := lockPortmap(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return c.cni.AddNetworkList(ctx, c.list, rt)
}

// rollback undoes a failed Setup, even when ctx is what failed it.
func (c *CNI) rollback(ctx context.Context, key string, rt *libcni.RuntimeConf) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if err := c.del(ctx, rt); err != nil {
		c.log.Warn("undo failed pod network setup: CNI DEL", "key", key, "err", err)
	}
	if err := removeNetNS(rt.NetNS); err != nil {
		c.log.Warn("undo failed pod network setup: remove netns", "key", key, "err", err)
	}
}

// keys are the pods with a netns under our prefix or a cached CNI result of
// our network, sorted.
func (c *CNI) keys() ([]string, error) {
	set := map[string]struct{}{}
	entries, err := os.ReadDir(c.netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list netns: %w", err)
	}
	for _, e := range entries {
		if key, ok := strings.CutPrefix(e.Name(), c.cfg.NetNSPrefix); ok && validKey(key) == nil {
			set[key] = struct{}{}
		}
	}
	results := filepath.Join(cacheDir(c.cfg), "results")
	entries, err = os.ReadDir(results)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list CNI cache: %w", err)
	}
	for _, e := range entries {
		// libcni names them <network>-<container ID>-<ifname>.
		rest, ok := strings.CutPrefix(e.Name(), networkName(c.cfg)+"-")
		if !ok {
			continue
		}
		if key, ok := strings.CutSuffix(rest, "-"+podIfName); ok && validKey(key) == nil {
			set[key] = struct{}{}
		}
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// checkPlugin fails early, with the fix, when a plugin is missing or too old.
func (c *CNI) checkPlugin(ctx context.Context, plugin string) error {
	info, err := c.cni.GetVersionInfo(ctx, plugin)
	if err != nil {
		return fmt.Errorf("CNI plugin %q in %v: %w; install containernetworking-plugins (Debian) or set the plugin dirs", plugin, c.cfg.PluginDirs, err)
	}
	if !slices.Contains(info.SupportedVersions(), cniVersion) {
		return fmt.Errorf("CNI plugin %q in %v supports CNI versions %v, not %s; install containernetworking-plugins v1.0 or later", plugin, c.cfg.PluginDirs, info.SupportedVersions(), cniVersion)
	}
	return nil
}

// enableIPForward turns on IPv4 forwarding, without which pods reach only
// the node.
func enableIPForward(log *slog.Logger) error {
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return fmt.Errorf("read net.ipv4.ip_forward: %w", err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable net.ipv4.ip_forward: %w", err)
	}
	log.Info("enabled IPv4 forwarding (net.ipv4.ip_forward=1)")
	return nil
}

// logWriter passes what plugins print on stderr to the logger.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info("CNI plugin stderr", "output", strings.TrimSpace(string(p)))
	return len(p), nil
}

// keyLocks serialises calls for one key while letting keys run in parallel.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	refs int
}

// lock locks key and returns its unlock.
func (l *keyLocks) lock(key string) func() {
	l.mu.Lock()
	kl := l.m[key]
	if kl == nil {
		kl = &keyLock{}
		l.m[key] = kl
	}
	kl.refs++
	l.mu.Unlock()

	kl.Lock()
	return func() {
		kl.Unlock()
		l.mu.Lock()
		if kl.refs--; kl.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}
