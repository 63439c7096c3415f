package svcproxy

import (
	"cmp"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Service is a load-balanced virtual address with one or more ports.
type Service struct {
	Namespace, Name string
	// ClusterIP is the virtual IPv4 address. The zero Addr (a headless
	// Service) gets no rules and is not an error.
	ClusterIP netip.Addr
	Ports     []ServicePort
	// SessionAffinity is "" or "none" (each new connection picks an endpoint
	// at random), or "client_ip" (a client keeps its endpoint for 3 hours
	// after its last new connection, as kube-proxy's ClientIP affinity).
	SessionAffinity string
}

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name tells the ports of a Service apart ("" for a single port); it is
	// the Port of the ServicePortKey its endpoints are filed under.
	Name string
	// Protocol is "tcp" or "udp"; "" means "tcp".
	Protocol string
	Port     uint16
	// NodePort, when not 0, makes the port reachable on every local
	// address of the node (127.0.0.0/8 excepted) on this port.
	NodePort uint16
}

// ServicePortKey names the endpoints of one port of a Service.
type ServicePortKey struct {
	Namespace, Name string
	// Port is the ServicePort's Name.
	Port string
}

func (k ServicePortKey) String() string {
	if k.Port == "" {
		return k.Namespace + "/" + k.Name
	}
	return k.Namespace + "/" + k.Name + ":" + k.Port
}

// EndpointAddr is a ready endpoint: a pod address and the target port,
// already resolved from a named port.
type EndpointAddr struct {
	IP   netip.Addr
	Port uint16
}

func (e EndpointAddr) String() string { return netip.AddrPortFrom(e.IP, e.Port).String() }

// State is everything the rules are made from.
type State struct {
	Services []Service
	// Endpoints holds the ready endpoints of each Service port; only ready
	// ones belong here. A port with none refuses new connections.
	Endpoints map[ServicePortKey][]EndpointAddr
}

const (
	affinityNone     = "none"
	affinityClientIP = "client_ip"
)

// nameRE is what a Kubernetes namespace, Service or port name may hold
// (DNS-1123 labels and subdomains): safe in a comment without quoting
// trouble.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$`)

const maxName = 253

// svcPort is one valid Service port with what is rendered from it. The
// renderer keeps it between Syncs while its Service is unchanged, and
// re-renders its chain only when its endpoints change.
type svcPort struct {
	key      ServicePortKey
	chain    string
	vip      netip.Addr
	proto    string
	port     uint16
	nodePort uint16
	affinity bool
	shard    int
	order    uint64 // shard, address, protocol, port: the render order
	// dispatch is its rule in the shard chain; nodePortRules its two in the
	// node port chain (mark, then jump) when nodePort is set.
	dispatch      string
	nodePortRules [2]string

	rendered   bool
	rawEps     []EndpointAddr // as last given, to tell a change
	eps        []EndpointAddr // sorted, distinct, at most MaxEndpointsPerPort
	epsSkipped []error
	local      []netip.Addr // endpoint addresses in NodePodCIDR (all without it), distinct
	rules      []string     // the Service chain
}

// svcEntry is a Service as last given, checked and split into ports.
type svcEntry struct {
	svc      Service // Ports cloned
	gen      uint64  // the render that last saw it
	headless bool
	err      error      // the whole Service is skipped
	ports    []*svcPort // nil where the port is skipped, for portErrs
	portErrs []error
}

// addrPortKey is a protocol, address and port, to find two Service ports
// with the same ClusterIP:port or node port.
type addrPortKey struct {
	proto string
	addr  netip.Addr
	port  uint16
}

// normalize returns the valid Service ports of st sorted by shard,
// address, protocol and port, with their chains rendered, and one error for
// every entry it skipped. Endpoints of ports that do not exist are ignored:
// they may arrive first. Services unchanged since the last call are reused
// as they are, and their chains re-rendered only when their endpoint list
// changed (compared entry by entry, in the order given).
func (r *renderer) normalize(st State) ([]*svcPort, []error) {
	r.gen++
	var (
		out     = make([]*svcPort, 0, len(st.Services))
		skipped []error
		vips    = make(map[addrPortKey]ServicePortKey, len(st.Services))
		nodes   = map[addrPortKey]ServicePortKey{}
	)
	for i := range st.Services {
		s := &st.Services[i]
		id := [2]string{s.Namespace, s.Name}
		e := r.svcs[id]
		if e != nil && e.gen == r.gen {
			skipped = append(skipped, fmt.Errorf("service %s/%s is listed twice; the second is skipped", s.Namespace, s.Name))
			continue
		}
		if e == nil || !sameService(&e.svc, s) {
			e = r.newEntry(s)
			r.svcs[id] = e
		}
		e.gen = r.gen
		switch {
		case e.err != nil:
			skipped = append(skipped, e.err)
			continue
		case e.headless:
			continue
		}
		for j, sp := range e.ports {
			if sp == nil {
				skipped = append(skipped, e.portErrs[j])
				continue
			}
			vk := addrPortKey{sp.proto, sp.vip, sp.port}
			if owner, dup := vips[vk]; dup {
				skipped = append(skipped, fmt.Errorf("service port %s: %s %s:%d is %s's already; skipped", sp.key, sp.proto, sp.vip, sp.port, owner))
				continue
			}
			if sp.nodePort != 0 {
				nk := addrPortKey{proto: sp.proto, port: sp.nodePort}
				if owner, dup := nodes[nk]; dup {
					skipped = append(skipped, fmt.Errorf("service port %s: node port %s/%d is %s's already; skipped", sp.key, sp.proto, sp.nodePort, owner))
					continue
				}
				nodes[nk] = sp.key
			}
			vips[vk] = sp.key
			if raw := st.Endpoints[sp.key]; !sp.rendered || !slices.Equal(raw, sp.rawEps) {
				r.setEndpoints(sp, raw)
			}
			skipped = append(skipped, sp.epsSkipped...)
			out = append(out, sp)
		}
	}
	for id, e := range r.svcs {
		if e.gen != r.gen {
			delete(r.svcs, id)
		}
	}
	slices.SortFunc(out, func(a, b *svcPort) int { return cmp.Compare(a.order, b.order) })
	return out, skipped
}

func sameService(a, b *Service) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.ClusterIP == b.ClusterIP &&
		a.SessionAffinity == b.SessionAffinity && slices.Equal(a.Ports, b.Ports)
}

// newEntry checks s and prepares its ports (chain names, dispatch rules).
func (r *renderer) newEntry(s *Service) *svcEntry {
	e := &svcEntry{svc: *s}
	e.svc.Ports = slices.Clone(s.Ports)
	id := s.Namespace + "/" + s.Name
	switch {
	case !validName(s.Namespace) || !validName(s.Name):
		e.err = fmt.Errorf("service %q: namespace and name must be DNS-1123 names; skipped", id)
		return e
	case !s.ClusterIP.IsValid():
		e.headless = true
		return e
	case !s.ClusterIP.Is4():
		e.err = fmt.Errorf("service %s: cluster IP %s is not IPv4; skipped", id, s.ClusterIP)
		return e
	case s.ClusterIP.IsUnspecified() || s.ClusterIP.IsLoopback() || s.ClusterIP.IsMulticast() || s.ClusterIP == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		e.err = fmt.Errorf("service %s: cluster IP %s cannot be a virtual address; skipped", id, s.ClusterIP)
		return e
	}
	var affinity bool
	switch strings.ToLower(s.SessionAffinity) {
	case "", affinityNone:
	case affinityClientIP:
		affinity = true
	default:
		e.err = fmt.Errorf("service %s: session affinity %q is not \"none\" or \"client_ip\"; skipped", id, s.SessionAffinity)
		return e
	}
	cfg := r.cfg
	names := map[string]bool{}
	for _, p := range s.Ports {
		key := ServicePortKey{Namespace: s.Namespace, Name: s.Name, Port: p.Name}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		var err error
		switch {
		case p.Name != "" && !validName(p.Name):
			err = fmt.Errorf("service %s: port name %q must be a DNS-1123 name; skipped", id, p.Name)
		case names[p.Name]:
			err = fmt.Errorf("service port %s is listed twice; the second is skipped", key)
		case proto != "tcp" && proto != "udp":
			err = fmt.Errorf("service port %s: protocol %q is not \"tcp\" or \"udp\"; skipped", key, p.Protocol)
		case p.Port == 0:
			err = fmt.Errorf("service port %s: port 0; skipped", key)
		}
		if err != nil {
			e.ports = append(e.ports, nil)
			e.portErrs = append(e.portErrs, err)
			continue
		}
		names[p.Name] = true
		sp := &svcPort{
			key:      key,
			chain:    cfg.chainPrefix() + hash(key.String()+"/"+proto),
			vip:      s.ClusterIP,
			proto:    proto,
			port:     p.Port,
			nodePort: p.NodePort,
			affinity: affinity,
			shard:    int(s.ClusterIP.As4()[3]) & (cfg.Shards - 1),
		}
		a := s.ClusterIP.As4()
		sp.order = uint64(sp.shard)<<49 | uint64(a[0])<<41 | uint64(a[1])<<33 | uint64(a[2])<<25 | uint64(a[3])<<17 | uint64(p.Port)
		if proto == "udp" {
			sp.order |= 1 << 16
		}
		match := "-p " + proto + " -m comment --comment " + quote(cfg.CommentTag+" "+key.String()) + " -m " + proto + " --dport "
		sp.dispatch = "-d " + s.ClusterIP.String() + "/32 " + match + strconv.Itoa(int(p.Port)) + " -j " + sp.chain
		if p.NodePort != 0 {
			np := match + strconv.Itoa(int(p.NodePort))
			// Marked first: the Service chain's DNAT ends the traversal.
			sp.nodePortRules = [2]string{np + " -j MARK --set-xmark " + markMask(cfg.MasqueradeMark), np + " -j " + sp.chain}
		}
		e.ports = append(e.ports, sp)
		e.portErrs = append(e.portErrs, nil)
	}
	return e
}

// setEndpoints takes raw as the endpoints of sp and renders its chain.
func (r *renderer) setEndpoints(sp *svcPort, raw []EndpointAddr) {
	sp.rendered = true
	sp.rawEps = slices.Clone(raw)
	sp.eps, sp.epsSkipped = normalizeEndpoints(r.cfg, sp.key, raw)
	sp.local = sp.local[:0]
	for _, e := range sp.eps {
		if (!r.cfg.NodePodCIDR.IsValid() || r.cfg.NodePodCIDR.Contains(e.IP)) && !slices.Contains(sp.local, e.IP) {
			sp.local = append(sp.local, e.IP)
		}
	}
	sp.rules = r.serviceRules(sp)
}

// normalizeEndpoints returns the valid endpoints of key sorted and without
// duplicates, at most cfg.MaxEndpointsPerPort of them.
func normalizeEndpoints(cfg Config, key ServicePortKey, in []EndpointAddr) ([]EndpointAddr, []error) {
	var (
		out     = make([]EndpointAddr, 0, len(in))
		skipped []error
	)
	for _, e := range in {
		switch {
		case !e.IP.Is4():
			skipped = append(skipped, fmt.Errorf("service port %s: endpoint %s is not IPv4; skipped", key, e))
		case e.IP.IsUnspecified() || e.IP.IsLoopback() || e.IP.IsMulticast():
			skipped = append(skipped, fmt.Errorf("service port %s: endpoint %s is not a pod address; skipped", key, e))
		case e.Port == 0:
			skipped = append(skipped, fmt.Errorf("service port %s: endpoint %s has port 0; skipped", key, e.IP))
		default:
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b EndpointAddr) int { return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port)) })
	out = slices.Compact(out)
	if len(out) > cfg.MaxEndpointsPerPort {
		skipped = append(skipped, fmt.Errorf("service port %s: %d endpoints, at most %d are used; the rest are skipped", key, len(out), cfg.MaxEndpointsPerPort))
		out = out[:cfg.MaxEndpointsPerPort]
	}
	return out, skipped
}

func validName(s string) bool { return len(s) <= maxName && nameRE.MatchString(s) }

// hash names a chain or a recent list after what it is for, so the name is
// the same in every run of the agent (like kube-proxy's KUBE-SVC-<hash>).
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:hashLen]
}
