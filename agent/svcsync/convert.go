package svcsync

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
	"github.com/flotilla-io/flotilla/agent/svcproxy"
	"github.com/flotilla-io/flotilla/api"
)

// ProxyState converts services and their endpoints into what svcproxy
// programs. Only addresses that are Ready and have an IP become endpoints;
// each EndpointPort is filed under the service port of its Name, at the
// port the state resolved for that pod. A service whose cluster IP does
// not parse is left out and reported (rather than passed on as headless);
// the rest of the checking is svcproxy's, which skips and logs what it
// cannot program.
func ProxyState(services []api.Service, endpoints []api.Endpoints) (svcproxy.State, []error) {
	st := svcproxy.State{
		Services:  make([]svcproxy.Service, 0, len(services)),
		Endpoints: make(map[svcproxy.ServicePortKey][]svcproxy.EndpointAddr, len(endpoints)),
	}
	var errs []error
	for _, s := range services {
		var vip netip.Addr
		if s.ClusterIP != "" {
			a, err := netip.ParseAddr(s.ClusterIP)
			if err != nil {
				errs = append(errs, fmt.Errorf("service %s: cluster IP %q does not parse; skipped", s.ID(), api.TruncateText(s.ClusterIP, 60)))
				continue
			}
			vip = a.Unmap()
		}
		ps := svcproxy.Service{Namespace: s.Namespace, Name: s.Name, ClusterIP: vip, SessionAffinity: s.SessionAffinity}
		for _, p := range s.Ports {
			if !validPort(p.Port) || p.NodePort != 0 && !validPort(p.NodePort) {
				errs = append(errs, fmt.Errorf("service %s: port %d (node port %d) is out of range; skipped", s.ID(), p.Port, p.NodePort))
				continue
			}
			sp := svcproxy.ServicePort{Name: p.Name, Protocol: p.Proto(), Port: uint16(p.Port)}
			if s.Type == api.ServiceNodePort {
				sp.NodePort = uint16(p.NodePort)
			}
			ps.Ports = append(ps.Ports, sp)
		}
		st.Services = append(st.Services, ps)
	}
	for _, e := range endpoints {
		for _, a := range e.Addresses {
			if !a.Ready || a.IP == "" {
				continue
			}
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				errs = append(errs, fmt.Errorf("endpoints %s/%s: pod %s has address %q, which does not parse; skipped", e.Namespace, e.Name, a.Pod, api.TruncateText(a.IP, 60)))
				continue
			}
			for _, p := range a.Ports {
				if !validPort(p.Port) {
					continue // svcproxy would skip port 0 too; out of range cannot be a uint16
				}
				k := svcproxy.ServicePortKey{Namespace: e.Namespace, Name: e.Name, Port: p.Name}
				st.Endpoints[k] = append(st.Endpoints[k], svcproxy.EndpointAddr{IP: ip.Unmap(), Port: uint16(p.Port)})
			}
		}
	}
	return st, errs
}

// DNSView converts services, their endpoints and this node's pods into
// clusterdns's view. Services get their ports and ready addresses. Pods are
// every address of every Endpoints object (ready or not) and every local
// pod with an IP, each once: a local pod's own record wins over what an
// Endpoints object says of it, being this node's fresher word.
func DNSView(services []api.Service, endpoints []api.Endpoints, local []api.Pod) ([]clusterdns.Service, []clusterdns.Pod) {
	ready := make(map[string][]netip.Addr, len(endpoints))
	type podKey struct{ ns, name string }
	pods := map[podKey]netip.Addr{}
	for _, e := range endpoints {
		key := e.Namespace + "/" + e.Name
		for _, a := range e.Addresses {
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			if a.Ready && !slices.Contains(ready[key], ip) {
				ready[key] = append(ready[key], ip)
			}
			if a.Pod != "" {
				pods[podKey{e.Namespace, a.Pod}] = ip
			}
		}
	}
	for _, p := range local {
		if ip, err := netip.ParseAddr(p.Status.IP); err == nil {
			pods[podKey{p.Namespace, p.Name}] = ip.Unmap()
		}
	}

	out := make([]clusterdns.Service, 0, len(services))
	for _, s := range services {
		ds := clusterdns.Service{Namespace: s.Namespace, Name: s.Name}
		if a, err := netip.ParseAddr(s.ClusterIP); err == nil {
			ds.ClusterIP = a.Unmap()
		}
		for _, p := range s.Ports {
			if validPort(p.Port) {
				ds.Ports = append(ds.Ports, clusterdns.Port{Name: p.Name, Protocol: p.Proto(), Port: uint16(p.Port)})
			}
		}
		ds.Endpoints = ready[s.ID()]
		slices.SortFunc(ds.Endpoints, netip.Addr.Compare)
		out = append(out, ds)
	}
	dpods := make([]clusterdns.Pod, 0, len(pods))
	for k, ip := range pods {
		dpods = append(dpods, clusterdns.Pod{Namespace: k.ns, Name: k.name, IP: ip})
	}
	// A stable order, so Update sees the same input for the same state.
	slices.SortFunc(dpods, func(a, b clusterdns.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out, dpods
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }
