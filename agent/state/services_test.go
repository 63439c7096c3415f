package state

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

func svc(name string, ports ...api.ServicePort) api.Service {
	if len(ports) == 0 {
		ports = []api.ServicePort{{Port: 80, TargetPort: "8080"}}
	}
	return api.Service{Namespace: "default", Name: name, Selector: map[string]string{"app": "web"}, Ports: ports}
}

func podWith(name, node string, labels map[string]string) api.Pod {
	return api.Pod{Namespace: "default", Name: name, Node: node, Labels: labels,
		Containers: []api.Container{{Name: "c", Image: "i", Ports: []api.Port{{Name: "http", ContainerPort: 8080}}}}}
}

func runningAt(ip string, ready bool) api.PodStatus {
	return api.PodStatus{Phase: api.PodRunning, Ready: ready, IP: ip}
}

func statusOf(node, id string, st api.PodStatus) *SetPodStatuses {
	return &SetPodStatuses{Node: node, Updates: []PodStatusUpdate{{ID: id, Status: st}}}
}

func readyIPs(e api.Endpoints) []string {
	var out []string
	for _, a := range e.Addresses {
		if a.Ready {
			out = append(out, a.IP)
		}
	}
	return out
}

func TestServiceEndpointsFollowPods(t *testing.T) {
	f := NewFSM(nil)
	web := map[string]string{"app": "web"}
	applyAll(t, f,
		&UpsertNode{Node: api.Node{Name: "n1", Address: "192.0.2.10", Status: api.NodeReady}},
		&UpsertNode{Node: api.Node{Name: "n2", Address: "192.0.2.11", Status: api.NodeReady}},
		&PutPods{Pods: []api.Pod{podWith("a", "n1", web), podWith("b", "n2", web), podWith("other", "n1", map[string]string{"app": "db"})}},
		&CreateService{Service: svc("web")},
	)
	s, ok := f.Service("default", "web")
	if !ok || s.ClusterIP == "" || s.Type != api.ServiceClusterIP || s.SessionAffinity != api.AffinityNone {
		t.Fatalf("service = %+v, %v", s, ok)
	}
	e, ok := f.ServiceEndpoints("default", "web")
	if !ok || len(e.Addresses) != 0 {
		t.Fatalf("endpoints before any pod has an IP = %+v, %v", e, ok)
	}
	steps := []struct {
		name string
		cmd  Command
		want string
	}{
		{"a runs but is not ready", statusOf("n1", "default/a", runningAt("10.0.1.2", false)), ""},
		{"a ready", statusOf("n1", "default/a", runningAt("10.0.1.2", true)), "10.0.1.2"},
		{"b ready", statusOf("n2", "default/b", runningAt("10.0.2.2", true)), "10.0.1.2,10.0.2.2"},
		{"other ready is not selected", statusOf("n1", "default/other", runningAt("10.0.1.3", true)), "10.0.1.2,10.0.2.2"},
		{"a fails readiness", statusOf("n1", "default/a", runningAt("10.0.1.2", false)), "10.0.2.2"},
		{"a ready again", statusOf("n1", "default/a", runningAt("10.0.1.2", true)), "10.0.1.2,10.0.2.2"},
		{"n2 goes down", &SetNodeStatus{Name: "n2", Status: api.NodeDown}, "10.0.1.2"},
		{"n2 comes back", &SetNodeStatus{Name: "n2", Status: api.NodeReady}, "10.0.1.2,10.0.2.2"},
		{"a stops", &StopPods{IDs: []string{"default/a"}}, "10.0.2.2"},
		{"a removed", &RemovePods{IDs: []string{"default/a"}}, "10.0.2.2"},
	}
	for _, st := range steps {
		before := f.ServicesChanged()
		applyAll(t, f, st.cmd)
		e, _ := f.ServiceEndpoints("default", "web")
		if got := strings.Join(readyIPs(e), ","); got != st.want {
			t.Errorf("%s: ready endpoints %q, want %q (%+v)", st.name, got, st.want, e)
		}
		if st.name == "other ready is not selected" && f.ServicesChanged() != before {
			t.Errorf("%s: a pod no service selects changed the services", st.name)
		}
	}
	e, _ = f.ServiceEndpoints("default", "web")
	if len(e.Addresses) != 1 || e.Addresses[0].Pod != "b" || e.Addresses[0].Node != "n2" ||
		len(e.Addresses[0].Ports) != 1 || e.Addresses[0].Ports[0].Port != 8080 {
		t.Errorf("endpoints = %+v", e)
	}

	// A selector change re-derives; deletion removes both from every view.
	s2 := svc("web")
	s2.Selector = map[string]string{"app": "db"}
	applyAll(t, f, &UpdateService{Service: s2})
	e, _ = f.ServiceEndpoints("default", "web")
	if got := strings.Join(readyIPs(e), ","); got != "10.0.1.3" {
		t.Errorf("after selector change: %q", got)
	}
	if s3, _ := f.Service("default", "web"); s3.ClusterIP != s.ClusterIP {
		t.Errorf("update moved the cluster IP: %s → %s", s.ClusterIP, s3.ClusterIP)
	}
	applyAll(t, f, &DeleteService{Namespace: "default", Name: "web"})
	if _, ok := f.ServiceEndpoints("default", "web"); ok {
		t.Error("endpoints of a deleted service remain")
	}
	changes, _, _ := f.NodeView("n1", f.Index()-1)
	var deleted []string
	for _, c := range changes {
		if c.Deleted {
			deleted = append(deleted, c.Kind)
		}
	}
	if strings.Join(deleted, ",") != "service,endpoints" {
		t.Errorf("view changes of the deletion: %+v", changes)
	}
}

func TestServiceNamedTargetPort(t *testing.T) {
	f := NewFSM(nil)
	web := map[string]string{"app": "web"}
	noName := podWith("b", "n1", web)
	noName.Containers[0].Ports[0].Name = ""
	applyAll(t, f,
		&PutPods{Pods: []api.Pod{podWith("a", "n1", web), noName}},
		&CreateService{Service: svc("web", api.ServicePort{Name: "http", Port: 80, TargetPort: "http"}, api.ServicePort{Name: "raw", Port: 81, TargetPort: "9000"})},
		statusOf("n1", "default/a", runningAt("10.0.1.2", true)),
		statusOf("n1", "default/b", runningAt("10.0.1.3", true)),
	)
	e, _ := f.ServiceEndpoints("default", "web")
	if len(e.Addresses) != 2 {
		t.Fatalf("endpoints = %+v", e)
	}
	a, b := e.Addresses[0], e.Addresses[1]
	if len(a.Ports) != 2 || a.Ports[0] != (api.EndpointPort{Name: "http", Protocol: "tcp", Port: 8080}) || a.Ports[1].Port != 9000 {
		t.Errorf("a's ports = %+v", a.Ports)
	}
	if len(b.Ports) != 1 || b.Ports[0].Name != "raw" {
		t.Errorf("a pod without the named port must only have the numbered one: %+v", b.Ports)
	}
}

func TestServiceAddressesAndNodePorts(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, &SetClusterConfig{Config: ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.96.0.0/28", NodePortRange: "30000-30002"}})
	asked := svc("asked")
	asked.ClusterIP = "10.96.0.5"
	if err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: asked}).(error); err != nil {
		t.Fatal(err)
	}
	taken := svc("taken")
	taken.ClusterIP = "10.96.0.5"
	err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: taken}).(error)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "taken by service default/asked") {
		t.Errorf("asking a held address: %v", err)
	}
	for _, ip := range []string{"10.96.0.0", "10.96.0.15", "10.97.0.1"} {
		bad := svc("bad")
		bad.ClusterIP = ip
		if err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: bad}).(error); !errors.Is(err, ErrInvalid) {
			t.Errorf("asking %s: %v", ip, err)
		}
	}
	// 14 usable addresses: 13 more fit, the next is refused.
	seen := map[string]bool{"10.96.0.5": true}
	for i := range 13 {
		s := svc("s" + string(rune('a'+i)))
		out, ok := applyAt(t, f, f.Index()+1, &CreateService{Service: s}).(api.Service)
		if !ok || seen[out.ClusterIP] || out.ClusterIP == "10.96.0.0" || out.ClusterIP == "10.96.0.15" {
			t.Fatalf("service %d: %+v", i, out)
		}
		seen[out.ClusterIP] = true
	}
	if err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: svc("full")}).(error); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "no free address") {
		t.Errorf("full range: %v", err)
	}
	applyAll(t, f, &DeleteService{Namespace: "default", Name: "sa"})

	np := svc("np")
	np.Type = api.ServiceNodePort
	np.Ports = []api.ServicePort{{Name: "a", Port: 80}, {Name: "b", Port: 81, NodePort: 30001}}
	out, ok := applyAt(t, f, f.Index()+1, &CreateService{Service: np}).(api.Service)
	if !ok || out.Ports[1].NodePort != 30001 || out.Ports[0].NodePort < 30000 || out.Ports[0].NodePort > 30002 || out.Ports[0].NodePort == 30001 {
		t.Fatalf("node ports: %+v", out)
	}
	// An update that asks none keeps them.
	np.Ports[1].NodePort = 0
	out2, ok := applyAt(t, f, f.Index()+1, &UpdateService{Service: np}).(api.Service)
	if !ok || out2.Ports[0].NodePort != out.Ports[0].NodePort || out2.Ports[1].NodePort != 30001 {
		t.Errorf("update moved node ports: %+v → %+v", out.Ports, out2)
	}
	applyAll(t, f, &DeleteService{Namespace: "default", Name: "sb"})
	other := svc("other")
	other.Type = api.ServiceNodePort
	other.Ports = []api.ServicePort{{Port: 80, NodePort: 30001}}
	if err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: other}).(error); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "default/np") {
		t.Errorf("held node port: %v", err)
	}
	other.Ports[0].NodePort = 31000
	if err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: other}).(error); !errors.Is(err, ErrInvalid) {
		t.Errorf("node port outside the range: %v", err)
	}
	if err, _ := applyAt(t, f, f.Index()+1, &UpdateService{Service: func() api.Service { s := svc("np"); s.ClusterIP = "10.96.0.9"; return s }()}).(error); !errors.Is(err, ErrConflict) {
		t.Errorf("moving the cluster IP: %v", err)
	}
}

func TestServicesSurviveSnapshot(t *testing.T) {
	f := NewFSM(nil)
	web := map[string]string{"app": "web"}
	applyAll(t, f,
		&PutPods{Pods: []api.Pod{podWith("a", "n1", web)}},
		&CreateService{Service: svc("web")},
		statusOf("n1", "default/a", runningAt("10.0.1.2", true)),
	)
	want, _ := f.ServiceEndpoints("default", "web")
	g := NewFSM(nil)
	if err := g.Restore(readCloser{bytes.NewReader(snapshotBytes(t, f))}); err != nil {
		t.Fatal(err)
	}
	s1, _ := f.Service("default", "web")
	s2, ok := g.Service("default", "web")
	if !ok || s1.ClusterIP != s2.ClusterIP {
		t.Fatalf("restored service %+v", s2)
	}
	got, _ := g.ServiceEndpoints("default", "web")
	if strings.Join(readyIPs(got), ",") != strings.Join(readyIPs(want), ",") || len(got.Addresses) != 1 {
		t.Errorf("restored endpoints %+v, want %+v", got, want)
	}
	// The restored index still refuses the address.
	dup := svc("dup")
	dup.ClusterIP = s1.ClusterIP
	if err, _ := applyAt(t, g, g.Index()+1, &CreateService{Service: dup}).(error); !errors.Is(err, ErrConflict) {
		t.Errorf("restored address index: %v", err)
	}
	changes, reset, _ := g.NodeView("n9", 0)
	kinds := map[string]int{}
	for _, c := range changes {
		kinds[c.Kind]++
	}
	if !reset || kinds[ViewService] != 1 || kinds[ViewEndpoints] != 1 {
		t.Errorf("whole view of another node: %v", kinds)
	}
}

func TestServiceNodePortsKeptWhenAPortIsAdded(t *testing.T) {
	// A range of 2: the added port can only take the free one, never the
	// port an existing one keeps, whatever the hash says.
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		f := NewFSM(nil)
		applyAll(t, f, &SetClusterConfig{Config: ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, NodePortRange: "30000-30001"}})
		s := svc(name)
		s.Type = api.ServiceNodePort
		s.Ports = []api.ServicePort{{Name: "b", Port: 81}}
		out, ok := applyAt(t, f, f.Index()+1, &CreateService{Service: s}).(api.Service)
		if !ok {
			t.Fatal(out)
		}
		s.Ports = []api.ServicePort{{Name: "a", Port: 80}, {Name: "b", Port: 81}}
		up, ok := applyAt(t, f, f.Index()+1, &UpdateService{Service: s}).(api.Service)
		if !ok || up.Ports[1].NodePort != out.Ports[0].NodePort || up.Ports[0].NodePort == up.Ports[1].NodePort {
			t.Errorf("%s: before %+v, after %+v", name, out.Ports, up.Ports)
		}
	}
}

func TestServiceCountBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("creates api.MaxServices services")
	}
	f := NewFSM(nil)
	applyAll(t, f, &SetClusterConfig{Config: ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.96.0.0/12"}})
	for i := range api.MaxServices {
		if err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: svc(fmt.Sprintf("s%d", i))}).(error); err != nil {
			t.Fatalf("service %d: %v", i, err)
		}
	}
	err, _ := applyAt(t, f, f.Index()+1, &CreateService{Service: svc("one-more")}).(error)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "delete services you no longer need") {
		t.Errorf("service %d: %v, want a conflict saying the cluster is full", api.MaxServices+1, err)
	}
}
