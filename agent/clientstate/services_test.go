package clientstate

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

func testService(name, ip string) api.Service {
	return api.Service{Namespace: "default", Name: name, ClusterIP: ip, Type: api.ServiceClusterIP,
		Selector: map[string]string{"app": name}, Ports: []api.ServicePort{{Port: 80}}}
}

func svcEv(index uint64, s api.Service) rpc.WatchEvent {
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchService, Key: s.ID(), Service: &s}
}

func epEv(index uint64, name string, ips ...string) rpc.WatchEvent {
	e := api.Endpoints{Namespace: "default", Name: name, ModifyIndex: index}
	for _, ip := range ips {
		e.Addresses = append(e.Addresses, api.EndpointAddress{Pod: "p-" + ip, Node: "n1", IP: ip, Ready: true, Ports: []api.EndpointPort{{Port: 8080}}})
	}
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchEndpoints, Key: "default/" + name, Endpoints: &e}
}

func TestServicesInTheView(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client-state.json")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		resp     rpc.WatchResponse
		services int
		ready    int // endpoint addresses of web
		changed  bool
	}{
		{"reset", rpc.WatchResponse{Index: 5, Reset: true, Events: []rpc.WatchEvent{svcEv(3, testService("web", "10.96.0.10")), epEv(4, "web", "10.0.1.2")}}, 1, 1, true},
		{"an endpoint joins", rpc.WatchResponse{Index: 7, Events: []rpc.WatchEvent{epEv(7, "web", "10.0.1.2", "10.0.2.2")}}, 1, 2, true},
		{"the same again", rpc.WatchResponse{Index: 8, Events: []rpc.WatchEvent{epEv(7, "web", "10.0.1.2", "10.0.2.2")}}, 1, 2, false},
		{"an older event is ignored", rpc.WatchResponse{Index: 9, Events: []rpc.WatchEvent{epEv(6, "web")}}, 1, 2, false},
		{"an invalid service is dropped", rpc.WatchResponse{Index: 10, Events: []rpc.WatchEvent{svcEv(10, api.Service{Namespace: "default", Name: "Bad!"})}}, 1, 2, false},
		{"a second service", rpc.WatchResponse{Index: 11, Events: []rpc.WatchEvent{svcEv(11, testService("db", "10.96.0.11"))}}, 2, 2, true},
		{"deleted", rpc.WatchResponse{Index: 12, Events: []rpc.WatchEvent{
			{Index: 12, Kind: rpc.WatchService, Key: "default/web", Deleted: true},
			{Index: 12, Kind: rpc.WatchEndpoints, Key: "default/web", Deleted: true}}}, 1, 0, true},
	}
	for _, st := range steps {
		before := s.ServicesChanged()
		if err := s.Apply(st.resp); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		ready := 0
		for _, e := range s.Endpoints() {
			if e.Name == "web" {
				ready = len(e.Addresses)
			}
		}
		if got := len(s.Services()); got != st.services || ready != st.ready {
			t.Errorf("%s: %d services, %d web endpoints; want %d, %d", st.name, got, ready, st.services, st.ready)
		}
		if changed := s.ServicesChanged() > before; changed != st.changed {
			t.Errorf("%s: ServicesChanged moved %v, want %v", st.name, changed, st.changed)
		}
	}
	want, wantEp := s.Services(), s.Endpoints()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !reflect.DeepEqual(again.Services(), want) || !reflect.DeepEqual(again.Endpoints(), wantEp) || again.ServicesChanged() == 0 {
		t.Errorf("after a restart: %+v %+v, want %+v %+v", again.Services(), again.Endpoints(), want, wantEp)
	}
}
