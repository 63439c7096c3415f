package state

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"

	"github.com/flotilla-io/flotilla/api"
)

// Services and their endpoints. A service is written by its commands; its
// endpoints are derived, as Kubernetes' endpoints controller derives them,
// but inside the state machine: every replica computes the same endpoints
// from the same pods at the same index, so they need no writes of their
// own (a pod readiness flip is one entry, not two) and a server failover
// cannot leave them stale. They are rebuilt from the tables after Restore
// and are not in snapshots.
//
// Every node reads every service and endpoints object through its watch:
// each node load balances every service.

// CreateService stores a new service, with its virtual IP and node ports
// given from the cluster's ranges where the service asks for none.
type CreateService struct {
	Service api.Service `json:"service"`
}

// UpdateService replaces a service's spec; its cluster IP stays.
type UpdateService struct {
	Service api.Service `json:"service"`
}

// DeleteService removes a service and its endpoints.
type DeleteService struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (*CreateService) Type() MessageType { return CreateServiceType }
func (*UpdateService) Type() MessageType { return UpdateServiceType }
func (*DeleteService) Type() MessageType { return DeleteServiceType }

func (c *CreateService) Validate() error       { return validateService(&c.Service, true) }
func (c *UpdateService) Validate() error       { return validateService(&c.Service, true) }
func (c *CreateService) validateFields() error { return validateService(&c.Service, false) }
func (c *UpdateService) validateFields() error { return validateService(&c.Service, false) }
func (c *DeleteService) Validate() error {
	if err := api.ValidateName(c.Namespace); err != nil {
		return invalid("service namespace: %s", err)
	}
	if err := api.ValidateName(c.Name); err != nil {
		return invalid("service name: %s", err)
	}
	return nil
}

func validateService(s *api.Service, size bool) error {
	check := s.ValidateFields
	if size {
		check = s.Validate
	}
	if err := check(); err != nil {
		return invalid("service %s/%s: %s", s.Namespace, s.Name, err)
	}
	return nil
}

// serviceIndex is what the FSM keeps beside the services table: who holds
// each virtual IP and node port, the services of each namespace (a pod
// change looks only at its namespace's), and the endpoints.
type serviceIndex struct {
	byIP       map[netip.Addr]string // virtual IP → service key
	byNodePort map[string]string     // "tcp/30080" → service key
	byNS       map[string]map[string]struct{}
	// members holds, per service, the addresses of the pods it selects
	// (those with an IP), by pod ID; endpoints is what the view reads,
	// rebuilt from members at the end of each entry for the services it
	// touched (dirty).
	members   map[string]map[string]api.EndpointAddress
	endpoints map[string]api.Endpoints
	dirty     map[string]struct{}
	// changed is the index of the last entry that changed a service or its
	// endpoints: every node's view changed.
	changed uint64
}

func newServiceIndex() serviceIndex {
	return serviceIndex{
		byIP:       map[netip.Addr]string{},
		byNodePort: map[string]string{},
		byNS:       map[string]map[string]struct{}{},
		members:    map[string]map[string]api.EndpointAddress{},
		endpoints:  map[string]api.Endpoints{},
		dirty:      map[string]struct{}{},
	}
}

func nodePortKey(proto string, port int) string { return proto + "/" + strconv.Itoa(port) }

func (f *FSM) applyCreateService(index uint64, c *CreateService) any {
	s := c.Service
	key := s.ID()
	if _, ok := f.services[key]; ok {
		return fmt.Errorf("service %s: %w", key, ErrExists)
	}
	// Every service is a chain on every node and a name in every node's
	// DNS: the range alone (a /12 holds a million) would not bound them.
	if len(f.services) >= api.MaxServices {
		return fmt.Errorf("service %s: the cluster has %d services, the most it takes; delete services you no longer need: %w", key, len(f.services), ErrConflict)
	}
	if s.Type == "" {
		s.Type = api.ServiceClusterIP
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = api.AffinityNone
	}
	ip, err := f.serviceIP(key, s.ClusterIP)
	if err != nil {
		return err
	}
	s.ClusterIP = ip.String()
	s.Ports = slices.Clone(s.Ports)
	if err := f.nodePorts(key, &s, nil); err != nil {
		return err
	}
	s.CreateIndex, s.ModifyIndex = index, index
	f.putService(index, s)
	return s.Clone()
}

func (f *FSM) applyUpdateService(index uint64, c *UpdateService) any {
	s := c.Service
	key := s.ID()
	cur, ok := f.services[key]
	if !ok {
		return fmt.Errorf("service %s: %w", key, ErrNotFound)
	}
	if s.ClusterIP != "" && s.ClusterIP != cur.ClusterIP {
		return fmt.Errorf("service %s: cluster_ip is %s and cannot change; replace the service to move it: %w", key, cur.ClusterIP, ErrConflict)
	}
	if s.Type == "" {
		s.Type = api.ServiceClusterIP
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = api.AffinityNone
	}
	s.ClusterIP = cur.ClusterIP
	s.Ports = slices.Clone(s.Ports)
	if err := f.nodePorts(key, &s, &cur); err != nil {
		return err
	}
	s.CreateIndex, s.ModifyIndex = cur.CreateIndex, index
	f.dropServiceIndex(cur)
	f.putService(index, s)
	return s.Clone()
}

func (f *FSM) applyDeleteService(index uint64, c *DeleteService) any {
	key := deploymentKey(c.Namespace, c.Name)
	cur, ok := f.services[key]
	if !ok {
		return fmt.Errorf("service %s: %w", key, ErrNotFound)
	}
	delete(f.services, key)
	f.dropServiceIndex(cur)
	delete(f.svc.members, key)
	delete(f.svc.endpoints, key)
	delete(f.svc.dirty, key)
	f.serviceTouched(index, kindService, key)
	f.serviceTouched(index, kindEndpoints, key)
	return nil
}

// serviceIP returns the virtual IP for service key: the one asked for if it
// is free and in the service range, else a free one. The search starts at
// a point hashed from the key, so a deleted service's address is not the
// next one given (connections to it may linger in conntrack), and depends
// only on the tables, so every replica gives the same.
func (f *FSM) serviceIP(key, asked string) (netip.Addr, error) {
	cc := ClusterConfig{}
	if f.clusterConfig != nil {
		cc = *f.clusterConfig
	}
	r := cc.ServiceRange()
	first := r.Addr().As4()
	base := uint32(first[0])<<24 | uint32(first[1])<<16 | uint32(first[2])<<8 | uint32(first[3])
	size := uint32(1) << (32 - r.Bits())
	usable := func(a netip.Addr) bool { return a != r.Addr() && a != addrAt(base+size-1) }
	if asked != "" {
		a, err := netip.ParseAddr(asked)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("service %s: cluster_ip %q: %w: %w", key, asked, err, ErrInvalid)
		}
		if !r.Contains(a) || !usable(a) {
			return netip.Addr{}, fmt.Errorf("service %s: cluster_ip %s is not a usable address of the cluster's service range %s: %w", key, a, r, ErrInvalid)
		}
		if holder, ok := f.svc.byIP[a]; ok {
			return netip.Addr{}, fmt.Errorf("service %s: cluster_ip %s is taken by service %s: %w", key, a, holder, ErrConflict)
		}
		return a, nil
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	start := h.Sum32() % size
	for i := uint32(0); i < size; i++ {
		a := addrAt(base + (start+i)%size)
		if _, taken := f.svc.byIP[a]; !taken && usable(a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("service %s: no free address in the cluster's service range %s: all %d are taken; delete services you no longer need: %w", key, r, size-2, ErrConflict)
}

func addrAt(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// nodePorts fills the node ports of a node_port service: the asked ones
// must be in the cluster's range and free; a port asking none keeps the
// one cur gave the same protocol and port, or gets a free one. Other types
// have none.
func (f *FSM) nodePorts(key string, s *api.Service, cur *api.Service) error {
	if s.Type != api.ServiceNodePort {
		for i := range s.Ports {
			s.Ports[i].NodePort = 0
		}
		return nil
	}
	cc := ClusterConfig{}
	if f.clusterConfig != nil {
		cc = *f.clusterConfig
	}
	lo, hi := cc.NodePorts()
	held := func(k string) (string, bool) {
		h, ok := f.svc.byNodePort[k]
		if ok && h == key {
			return "", false // this service's own, before the update
		}
		return h, ok
	}
	mine := map[string]bool{}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.NodePort == 0 {
			continue
		}
		if p.NodePort < lo || p.NodePort > hi {
			return fmt.Errorf("service %s: ports[%d].node_port %d is outside the cluster's node port range %d-%d: %w", key, i, p.NodePort, lo, hi, ErrInvalid)
		}
		k := nodePortKey(p.Proto(), p.NodePort)
		if h, ok := held(k); ok {
			return fmt.Errorf("service %s: ports[%d].node_port %d is taken by service %s: %w", key, i, p.NodePort, h, ErrConflict)
		}
		if mine[k] {
			return fmt.Errorf("service %s: ports[%d].node_port %d is asked twice: %w", key, i, p.NodePort, ErrInvalid)
		}
		mine[k] = true
	}
	// Ports that had one keep it, before new ports take any: a port added
	// in the same update must not take an existing port's.
	if cur != nil && cur.Type == api.ServiceNodePort {
		for i := range s.Ports {
			p := &s.Ports[i]
			if p.NodePort != 0 {
				continue
			}
			for _, cp := range cur.Ports {
				k := nodePortKey(cp.Proto(), cp.NodePort)
				if cp.Proto() == p.Proto() && cp.Port == p.Port && cp.NodePort != 0 && !mine[k] {
					p.NodePort = cp.NodePort
					mine[k] = true
					break
				}
			}
		}
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.NodePort != 0 {
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(key + "/" + strconv.Itoa(i)))
		n := hi - lo + 1
		start := int(h.Sum32() % uint32(n))
		for j := 0; j < n; j++ {
			port := lo + (start+j)%n
			k := nodePortKey(p.Proto(), port)
			if _, ok := held(k); !ok && !mine[k] {
				p.NodePort = port
				mine[k] = true
				break
			}
		}
		if p.NodePort == 0 {
			return fmt.Errorf("service %s: no free node port in the cluster's range %d-%d: %w", key, lo, hi, ErrConflict)
		}
	}
	return nil
}

// putService stores s, indexes it and recomputes its members. Called with
// f.mu held.
func (f *FSM) putService(index uint64, s api.Service) {
	key := s.ID()
	f.services[key] = s
	f.indexService(s)
	f.recomputeMembers(key)
	f.serviceTouched(index, kindService, key)
}

func (f *FSM) indexService(s api.Service) {
	key := s.ID()
	if a, err := netip.ParseAddr(s.ClusterIP); err == nil {
		f.svc.byIP[a] = key
	}
	for _, p := range s.Ports {
		if p.NodePort != 0 {
			f.svc.byNodePort[nodePortKey(p.Proto(), p.NodePort)] = key
		}
	}
	addTo(f.svc.byNS, s.Namespace, key)
}

func (f *FSM) dropServiceIndex(s api.Service) {
	key := s.ID()
	if a, err := netip.ParseAddr(s.ClusterIP); err == nil && f.svc.byIP[a] == key {
		delete(f.svc.byIP, a)
	}
	for _, p := range s.Ports {
		k := nodePortKey(p.Proto(), p.NodePort)
		if f.svc.byNodePort[k] == key {
			delete(f.svc.byNodePort, k)
		}
	}
	removeFrom(f.svc.byNS, s.Namespace, key)
}

// recomputeMembers rebuilds a service's members from its namespace's pods.
func (f *FSM) recomputeMembers(key string) {
	s := f.services[key]
	m := map[string]api.EndpointAddress{}
	for id, p := range f.pods {
		if p.Namespace != s.Namespace || !s.Selects(p.Labels) {
			continue
		}
		if a, ok := f.endpointAddress(&s, &p); ok {
			m[id] = a
		}
	}
	f.svc.members[key] = m
	f.svc.dirty[key] = struct{}{}
}

// podChangedForServices updates the members of the services that select
// the pod as it was (old) or is (cur, nil when removed). Called with f.mu
// held, from putPod and dropPod.
func (f *FSM) podChangedForServices(id string, old, cur *api.Pod) {
	ns := ""
	switch {
	case cur != nil:
		ns = cur.Namespace
	case old != nil:
		ns = old.Namespace
	}
	for key := range f.svc.byNS[ns] {
		s := f.services[key]
		was := old != nil && s.Selects(old.Labels)
		is := cur != nil && s.Selects(cur.Labels)
		if !was && !is {
			continue
		}
		m := f.svc.members[key]
		prev, had := m[id]
		var a api.EndpointAddress
		ok := false
		if is {
			a, ok = f.endpointAddress(&s, cur)
		}
		switch {
		case ok && (!had || !sameAddress(prev, a)):
			m[id] = a
		case !ok && had:
			delete(m, id)
		default:
			continue
		}
		f.svc.dirty[key] = struct{}{}
	}
}

// nodeChangedForServices re-derives the readiness of the pods on node,
// whose status changed: a node that is not ready serves no traffic.
func (f *FSM) nodeChangedForServices(node string) {
	if len(f.services) == 0 {
		return
	}
	for id := range f.idx.podsByNode[node] {
		p := f.pods[id]
		f.podChangedForServices(id, &p, &p)
	}
}

// endpointAddress is what service s sees of pod p: false for a pod with no
// address yet. A pod is ready for traffic when it is running and ready,
// not stopping, and on a node that is up.
func (f *FSM) endpointAddress(s *api.Service, p *api.Pod) (api.EndpointAddress, bool) {
	if p.Status.IP == "" {
		return api.EndpointAddress{}, false
	}
	ready := p.Status.Ready && !p.Stop && p.Status.Phase == api.PodRunning
	if n, ok := f.nodes[p.Node]; ok && n.Status != api.NodeReady {
		ready = false
	}
	a := api.EndpointAddress{Pod: p.Name, Node: p.Node, IP: p.Status.IP, Ready: ready}
	for _, sp := range s.Ports {
		port, name := sp.Target()
		if name != "" {
			port = 0
			for _, c := range p.Containers {
				for _, cp := range c.Ports {
					if cp.Name == name && protoOf(cp.Protocol) == sp.Proto() {
						port = cp.ContainerPort
					}
				}
			}
			if port == 0 {
				continue // this pod lacks the named port: not an endpoint of it
			}
		}
		a.Ports = append(a.Ports, api.EndpointPort{Name: sp.Name, Protocol: sp.Proto(), Port: port})
	}
	return a, true
}

func protoOf(p string) string {
	if p == "" {
		return "tcp"
	}
	return p
}

func sameAddress(a, b api.EndpointAddress) bool {
	return a.Pod == b.Pod && a.Node == b.Node && a.IP == b.IP && a.Ready == b.Ready && slices.Equal(a.Ports, b.Ports)
}

// flushEndpoints publishes the endpoints of the services the entry at index
// touched, where they changed. Called with f.mu held at the end of Apply.
func (f *FSM) flushEndpoints(index uint64) {
	if len(f.svc.dirty) == 0 {
		return
	}
	for _, key := range slices.Sorted(maps.Keys(f.svc.dirty)) {
		s, ok := f.services[key]
		if !ok {
			continue
		}
		e := api.Endpoints{Namespace: s.Namespace, Name: s.Name, ModifyIndex: index}
		for _, id := range slices.Sorted(maps.Keys(f.svc.members[key])) {
			if len(e.Addresses) == api.MaxEndpoints {
				break // bounded, in a stable order
			}
			e.Addresses = append(e.Addresses, f.svc.members[key][id])
		}
		if cur, ok := f.svc.endpoints[key]; ok && slices.EqualFunc(cur.Addresses, e.Addresses, sameAddress) {
			continue
		}
		f.svc.endpoints[key] = e
		f.serviceTouched(index, kindEndpoints, key)
	}
	clear(f.svc.dirty)
}

// serviceTouched records a change to a service or its endpoints and wakes
// every watch. Called with f.mu held.
func (f *FSM) serviceTouched(index uint64, kind objKind, key string) {
	f.svc.changed = index
	f.record(objChange{index: index, kind: kind, key: key})
	f.idx.waiters.wakeAll()
}

// rebuildServices recomputes the service indexes and endpoints from the
// tables (after Restore). Called with f.mu held.
func (f *FSM) rebuildServices(index uint64) {
	f.svc = newServiceIndex()
	for _, s := range f.services {
		f.indexService(s)
	}
	for key := range f.services {
		f.recomputeMembers(key)
	}
	f.flushEndpoints(index)
	f.svc.changed = index
}

// Services returns every service (ns "" ) or a namespace's, sorted by key.
func (f *FSM) Services(ns string) []api.Service {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Service, 0, len(f.services))
	for _, s := range f.services {
		if ns == "" || s.Namespace == ns {
			out = append(out, s.Clone())
		}
	}
	slices.SortFunc(out, func(a, b api.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Service returns one service.
func (f *FSM) Service(ns, name string) (api.Service, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s, ok := f.services[deploymentKey(ns, name)]
	if !ok {
		return api.Service{}, false
	}
	return s.Clone(), true
}

// ServiceEndpoints returns one service's endpoints.
func (f *FSM) ServiceEndpoints(ns, name string) (api.Endpoints, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	e, ok := f.svc.endpoints[deploymentKey(ns, name)]
	if !ok {
		return api.Endpoints{}, false
	}
	return e.Clone(), true
}

// AllEndpoints returns the endpoints of every service, sorted by key.
func (f *FSM) AllEndpoints() []api.Endpoints {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]api.Endpoints, 0, len(f.svc.endpoints))
	for _, k := range slices.Sorted(maps.Keys(f.svc.endpoints)) {
		out = append(out, f.svc.endpoints[k].Clone())
	}
	return out
}

// ServicesChanged returns the index of the last entry that changed a
// service or its endpoints (or restored the state).
func (f *FSM) ServicesChanged() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.svc.changed
}
