package svcsync

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
	"github.com/flotilla-io/flotilla/agent/svcproxy"
	"github.com/flotilla-io/flotilla/api"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func ep(ip string, port uint16) svcproxy.EndpointAddr {
	return svcproxy.EndpointAddr{IP: addr(ip), Port: port}
}

func TestProxyState(t *testing.T) {
	web := api.Service{Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", Type: api.ServiceClusterIP, SessionAffinity: api.AffinityClientIP,
		Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: "http"}, {Name: "dns", Protocol: "udp", Port: 53, TargetPort: "5353"}}}
	np := api.Service{Namespace: "default", Name: "np", ClusterIP: "10.96.0.11", Type: api.ServiceNodePort,
		Ports: []api.ServicePort{{Port: 80, NodePort: 30080}}}
	tests := []struct {
		name      string
		services  []api.Service
		endpoints []api.Endpoints
		want      svcproxy.State
		wantErrs  []string
	}{
		{
			name:     "named target ports resolve per pod; not ready and no IP left out",
			services: []api.Service{web},
			endpoints: []api.Endpoints{{Namespace: "default", Name: "web", Addresses: []api.EndpointAddress{
				// The state resolved "http" to a different port on each pod.
				{Pod: "a", IP: "10.244.0.5", Ready: true, Ports: []api.EndpointPort{{Name: "http", Port: 8080}, {Name: "dns", Protocol: "udp", Port: 5353}}},
				{Pod: "b", IP: "10.244.1.5", Ready: true, Ports: []api.EndpointPort{{Name: "http", Port: 9090}}},
				{Pod: "c", IP: "10.244.1.6", Ready: false, Ports: []api.EndpointPort{{Name: "http", Port: 8080}}},
				{Pod: "d", IP: "", Ready: true, Ports: []api.EndpointPort{{Name: "http", Port: 8080}}},
			}}},
			want: svcproxy.State{
				Services: []svcproxy.Service{{Namespace: "default", Name: "web", ClusterIP: addr("10.96.0.10"), SessionAffinity: "client_ip",
					Ports: []svcproxy.ServicePort{{Name: "http", Protocol: "tcp", Port: 80}, {Name: "dns", Protocol: "udp", Port: 53}}}},
				Endpoints: map[svcproxy.ServicePortKey][]svcproxy.EndpointAddr{
					{Namespace: "default", Name: "web", Port: "http"}: {ep("10.244.0.5", 8080), ep("10.244.1.5", 9090)},
					{Namespace: "default", Name: "web", Port: "dns"}:  {ep("10.244.0.5", 5353)},
				},
			},
		},
		{
			name:     "node port only for node_port services",
			services: []api.Service{np, {Namespace: "default", Name: "cip", ClusterIP: "10.96.0.12", Ports: []api.ServicePort{{Port: 80, NodePort: 30081}}}},
			want: svcproxy.State{
				Services: []svcproxy.Service{
					{Namespace: "default", Name: "np", ClusterIP: addr("10.96.0.11"), Ports: []svcproxy.ServicePort{{Protocol: "tcp", Port: 80, NodePort: 30080}}},
					{Namespace: "default", Name: "cip", ClusterIP: addr("10.96.0.12"), Ports: []svcproxy.ServicePort{{Protocol: "tcp", Port: 80}}},
				},
				Endpoints: map[svcproxy.ServicePortKey][]svcproxy.EndpointAddr{},
			},
		},
		{
			name:     "a cluster IP that does not parse is reported, not made headless",
			services: []api.Service{{Namespace: "default", Name: "bad", ClusterIP: "10.96.0.300", Ports: []api.ServicePort{{Port: 80}}}},
			endpoints: []api.Endpoints{{Namespace: "default", Name: "bad", Addresses: []api.EndpointAddress{
				{Pod: "a", IP: "not-an-ip", Ready: true, Ports: []api.EndpointPort{{Port: 80}}},
			}}},
			want:     svcproxy.State{Services: []svcproxy.Service{}, Endpoints: map[svcproxy.ServicePortKey][]svcproxy.EndpointAddr{}},
			wantErrs: []string{"service default/bad: cluster IP", "pod a has address \"not-an-ip\""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ProxyState(tc.services, tc.endpoints)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ProxyState:\n got %+v\nwant %+v", got, tc.want)
			}
			if len(errs) != len(tc.wantErrs) {
				t.Fatalf("errors %v, want %d", errs, len(tc.wantErrs))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.wantErrs[i]) {
					t.Errorf("error %d: %v, want it to mention %q", i, e, tc.wantErrs[i])
				}
			}
		})
	}
}

func TestDNSView(t *testing.T) {
	services := []api.Service{{Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", Ports: []api.ServicePort{{Name: "http", Port: 80}}}}
	endpoints := []api.Endpoints{{Namespace: "default", Name: "web", Addresses: []api.EndpointAddress{
		{Pod: "web-a", Node: "n2", IP: "10.244.1.5", Ready: true},
		{Pod: "web-b", Node: "n1", IP: "10.244.0.9", Ready: false},
		{Pod: "web-c", Node: "n1", IP: "10.244.0.7", Ready: true},
	}}}
	local := []api.Pod{
		{Namespace: "default", Name: "web-c", Node: "n1", Status: api.PodStatus{IP: "10.244.0.8"}}, // newer IP than the endpoints say
		{Namespace: "batch", Name: "job", Node: "n1", Status: api.PodStatus{IP: "10.244.0.20"}},
		{Namespace: "batch", Name: "pending", Node: "n1"},
	}
	svcs, pods := DNSView(services, endpoints, local)
	wantSvcs := []clusterdns.Service{{Namespace: "default", Name: "web", ClusterIP: addr("10.96.0.10"),
		Ports: []clusterdns.Port{{Name: "http", Protocol: "tcp", Port: 80}}, Endpoints: []netip.Addr{addr("10.244.0.7"), addr("10.244.1.5")}}}
	if !reflect.DeepEqual(svcs, wantSvcs) {
		t.Errorf("services:\n got %+v\nwant %+v", svcs, wantSvcs)
	}
	wantPods := []clusterdns.Pod{
		{Namespace: "batch", Name: "job", IP: addr("10.244.0.20")},
		{Namespace: "default", Name: "web-a", IP: addr("10.244.1.5")},
		{Namespace: "default", Name: "web-b", IP: addr("10.244.0.9")},
		{Namespace: "default", Name: "web-c", IP: addr("10.244.0.8")},
	}
	if !reflect.DeepEqual(pods, wantPods) {
		t.Errorf("pods:\n got %+v\nwant %+v", pods, wantPods)
	}
}
