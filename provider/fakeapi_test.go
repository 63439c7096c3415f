package provider

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// fakeAgent is an in-memory stand-in for the agent's HTTP API, implementing
// only the endpoints the provider calls. It is a unit-test seam, not a model
// of the agent: every GET of a deployment advances its rollout by one step,
// so a rollout of n replicas completes after n+1 polls.
type fakeAgent struct {
	URL string
	// CAPEM is the certificate of a TLS fake (newFakeAgentTLS), which is
	// its own CA.
	CAPEM string

	mu sync.Mutex
	// Token is the bearer token the fake wants. Empty: it adopts the first
	// token it is sent, as a fleet whose API token flotilla_cluster
	// generates in the test (see token).
	Token string
	// unavailable is how many more requests answer 503 "no leader", as a
	// fleet whose servers are still joining. Capacity checks neither count
	// nor get a 503: how many of them a plan makes is up to terraform, and
	// tests count the 503s the waits retry through.
	unavailable int
	// nodes is what GET /v1/nodes lists. If nodesJoin is set, each GET
	// makes the first node that is not ready ready, as VMs booting one by one.
	nodes       []api.Node
	nodesJoin   bool
	deployments map[string]*fakeDeployment // by namespace/name
	// failImages makes any deployment using the image report this failure.
	failImages map[string]string
	// stuckImages never become ready.
	stuckImages map[string]bool
	// capacity answers POST /v1/capacity: a status code and, for 200, the
	// check. Nil answers 404, as an agent older than the endpoint does.
	capacity func(d api.Deployment) (int, api.CapacityCheck)
	// capacityAsked holds the deployments POST /v1/capacity was asked about.
	capacityAsked []api.Deployment
	// services by namespace/name, with the cluster IPs (from
	// fakeServiceCIDR) and node ports (fakeNodePortMin..Max) they hold.
	services   map[string]*api.Service
	ipHolder   map[netip.Addr]string
	portHolder map[string]string // "tcp/30000" → namespace/name
	// ingresses by namespace/name, with their keys (ingress_resource_test.go).
	ingresses map[string]*api.Ingress
	calls     []string // "METHOD /path", in order
}

// createCall prefixes the calls that create a deployment, as count and
// checkCalls take it (the capacity check is a POST as well). It also
// matches service creates: deployment tests make none.
const createCall = "POST /v1/namespaces/"

// placeable makes the fake's capacity check say that at most n replicas
// fit, for reason.
func placeable(n int, reason string) func(api.Deployment) (int, api.CapacityCheck) {
	return func(d api.Deployment) (int, api.CapacityCheck) {
		c := api.CapacityCheck{Replicas: d.Replicas, Placeable: min(n, d.Replicas)}
		if c.Placeable < c.Replicas {
			c.Reason = reason
		}
		return http.StatusOK, c
	}
}

// capacityFails makes the fake's capacity check answer code.
func capacityFails(code int) func(api.Deployment) (int, api.CapacityCheck) {
	return func(api.Deployment) (int, api.CapacityCheck) { return code, api.CapacityCheck{} }
}

// setCapacity sets how the fake answers capacity checks.
func (f *fakeAgent) setCapacity(fn func(api.Deployment) (int, api.CapacityCheck)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.capacity = fn
}

// capacityChecks returns the deployments the fake was asked to check.
func (f *fakeAgent) capacityChecks() []api.Deployment {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Deployment(nil), f.capacityAsked...)
}

func (f *fakeAgent) checkCapacity(w http.ResponseWriter, r *http.Request) {
	var d api.Deployment
	if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
		writeError(w, http.StatusBadRequest, "decode deployment: "+err.Error())
		return
	}
	if err := d.Validate(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid deployment: "+err.Error())
		return
	}
	f.mu.Lock()
	f.capacityAsked = append(f.capacityAsked, d)
	fn := f.capacity
	f.mu.Unlock()
	if fn == nil {
		writeError(w, http.StatusNotFound, "404 page not found")
		return
	}
	code, c := fn(d)
	if code != http.StatusOK {
		writeError(w, code, "capacity check failed")
		return
	}
	writeJSON(w, code, c)
}

type fakeDeployment struct {
	d api.Deployment
	// step counts polls since the last spec change; deleteLeft counts the
	// polls a deleting deployment stays visible.
	step       int
	deleteLeft int
}

func newFakeAgent(t *testing.T) *fakeAgent { t.Helper(); return startFakeAgent(t, false) }

// newFakeAgentTLS is a fake serving https with a self-signed certificate,
// which CAPEM holds.
func newFakeAgentTLS(t *testing.T) *fakeAgent { t.Helper(); return startFakeAgent(t, true) }

func startFakeAgent(t *testing.T, useTLS bool) *fakeAgent {
	t.Helper()
	f := &fakeAgent{
		Token:       "s3cret",
		deployments: map[string]*fakeDeployment{},
		failImages:  map[string]string{},
		stuckImages: map[string]bool{},
		services:    map[string]*api.Service{},
		ipHolder:    map[netip.Addr]string{},
		portHolder:  map[string]string{},
		ingresses:   map[string]*api.Ingress{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/namespaces/{ns}/deployments", f.create)
	mux.HandleFunc("PUT /v1/namespaces/{ns}/deployments/{name}", f.update)
	mux.HandleFunc("GET /v1/namespaces/{ns}/deployments/{name}", f.get)
	mux.HandleFunc("DELETE /v1/namespaces/{ns}/deployments/{name}", f.delete)
	mux.HandleFunc("GET /v1/namespaces/{ns}/pods", f.pods)
	mux.HandleFunc("GET /v1/nodes", f.listNodes)
	mux.HandleFunc("GET /v1/status", f.status)
	mux.HandleFunc("POST /v1/capacity", f.checkCapacity)
	mux.HandleFunc("POST /v1/namespaces/{ns}/services", f.createService)
	mux.HandleFunc("PUT /v1/namespaces/{ns}/services/{name}", f.updateService)
	mux.HandleFunc("GET /v1/namespaces/{ns}/services/{name}", f.getService)
	mux.HandleFunc("DELETE /v1/namespaces/{ns}/services/{name}", f.deleteService)
	mux.HandleFunc("GET /v1/namespaces/{ns}/services/{name}/endpoints", f.endpoints)
	f.handleIngresses(mux)
	srv := httptest.NewUnstartedServer(f.auth(mux))
	if useTLS {
		srv.StartTLS()
		f.CAPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *fakeAgent) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if f.Token == "" && got != "" {
			f.Token = got
		}
		ok, booting := got == f.Token, f.unavailable > 0 && r.URL.Path != "/v1/capacity"
		if booting {
			f.unavailable--
		}
		f.mu.Unlock()
		switch {
		case booting:
			writeError(w, http.StatusServiceUnavailable, "not the leader; no leader is known yet; retry shortly")
		case !ok:
			writeError(w, http.StatusUnauthorized, "missing or invalid token")
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// token returns the token the fake accepts.
func (f *fakeAgent) token() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Token
}

func (f *fakeAgent) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.AgentStatus{Node: "node-0", Version: "test", Leader: "10.0.1.10:7401", Index: 1})
}

func (f *fakeAgent) listNodes(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nodesJoin {
		for i := range f.nodes {
			if f.nodes[i].Status != "ready" {
				f.nodes[i].Status = "ready"
				break
			}
		}
	}
	writeJSON(w, http.StatusOK, append([]api.Node{}, f.nodes...))
}

// setNodes makes the fake's node list n nodes, the first servers of them
// servers, all with status.
func (f *fakeAgent) setNodes(n, servers int, status string, join bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes, f.nodesJoin = nil, join
	for i := n - 1; i >= 0; i-- { // unsorted: the provider sorts
		f.nodes = append(f.nodes, api.Node{
			Name: fmt.Sprintf("vm-%d", i), Address: fmt.Sprintf("10.0.1.%d", 10+i), PodCIDR: fmt.Sprintf("10.244.%d.0/24", i),
			CPUMillis: 2000, MemoryMiB: 4096, Status: status, Server: i < servers, Labels: map[string]string{"zone": "a"},
		})
	}
}

// setUnavailable makes the next n requests answer 503.
func (f *fakeAgent) setUnavailable(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unavailable = n
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.ErrorResponse{Error: msg})
}

func (f *fakeAgent) decode(w http.ResponseWriter, r *http.Request) (*api.Deployment, bool) {
	return decodeNamed(w, r, "deployment", func(d *api.Deployment) *string { return &d.Namespace }, (*api.Deployment).Validate)
}

// decodeNamed reads a namespaced object of the request's body as the agent
// does: the path's namespace when the body has none, the same one if it
// has, and valid.
func decodeNamed[T any](w http.ResponseWriter, r *http.Request, what string, ns func(*T) *string, validate func(*T) error) (*T, bool) {
	var o T
	if err := json.NewDecoder(r.Body).Decode(&o); err != nil {
		writeError(w, http.StatusBadRequest, "decode "+what+": "+err.Error())
		return nil, false
	}
	if *ns(&o) == "" {
		*ns(&o) = r.PathValue("ns")
	}
	if *ns(&o) != r.PathValue("ns") {
		writeError(w, http.StatusBadRequest, "namespace in body and path differ")
		return nil, false
	}
	if err := validate(&o); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return &o, true
}

func (f *fakeAgent) create(w http.ResponseWriter, r *http.Request) {
	d, ok := f.decode(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := d.Namespace + "/" + d.Name
	if _, exists := f.deployments[key]; exists {
		writeError(w, http.StatusConflict, fmt.Sprintf("deployment %s exists", key))
		return
	}
	d.Generation = 1
	d.Status = api.DeploymentStatus{}
	fd := &fakeDeployment{d: *d}
	f.deployments[key] = fd
	writeJSON(w, http.StatusCreated, fd.d)
}

func (f *fakeAgent) update(w http.ResponseWriter, r *http.Request) {
	d, ok := f.decode(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := d.Namespace + "/" + d.Name
	fd, exists := f.deployments[key]
	if !exists || d.Name != r.PathValue("name") {
		writeError(w, http.StatusNotFound, fmt.Sprintf("deployment %s not found", key))
		return
	}
	d.Generation = fd.d.Generation + 1
	d.Status = fd.d.Status
	fd.d, fd.step = *d, 0
	writeJSON(w, http.StatusOK, fd.d)
}

func (f *fakeAgent) get(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	fd, ok := f.deployments[key]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("deployment %s not found", key))
		return
	}
	if fd.d.Deleting {
		if fd.deleteLeft <= 0 {
			delete(f.deployments, key)
			writeError(w, http.StatusNotFound, fmt.Sprintf("deployment %s not found", key))
			return
		}
		fd.deleteLeft--
		fd.d.Status.Replicas = fd.deleteLeft
	} else {
		f.advance(fd)
	}
	writeJSON(w, http.StatusOK, fd.d)
}

// advance moves the rollout one step: first pods get updated, then ready.
func (f *fakeAgent) advance(fd *fakeDeployment) {
	want := fd.d.Replicas
	st := &fd.d.Status
	st.Failure = ""
	for _, c := range fd.d.Containers {
		if msg, bad := f.failImages[c.Image]; bad {
			st.Failure = msg
			return
		}
		if f.stuckImages[c.Image] {
			st.Replicas, st.UpdatedReplicas = want, want
			return
		}
	}
	fd.step++
	st.Replicas = want
	st.UpdatedReplicas = min(fd.step, want)
	st.UpdatedReadyReplicas = min(max(fd.step-1, 0), want)
	st.ReadyReplicas = st.UpdatedReadyReplicas
	st.Complete = st.UpdatedReadyReplicas == want
}

func (f *fakeAgent) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	fd, ok := f.deployments[key]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("deployment %s not found", key))
		return
	}
	if !fd.d.Deleting {
		fd.d.Deleting, fd.deleteLeft = true, 2
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAgent) pods(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ns, dep := r.PathValue("ns"), r.URL.Query().Get("deployment")
	out := []api.Pod{}
	for _, fd := range f.deployments {
		if fd.d.Namespace == ns && (dep == "" || fd.d.Name == dep) {
			out = append(out, fakePods(fd.d)...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name }) // the provider sorts
	writeJSON(w, http.StatusOK, out)
}

// fakePods are a deployment's pods as its status counts them: the first
// ReadyReplicas ready, the first UpdatedReplicas running.
func fakePods(d api.Deployment) []api.Pod {
	var out []api.Pod
	for i := range d.Status.Replicas {
		ready := i < d.Status.ReadyReplicas
		phase := api.PodPending
		if i < d.Status.UpdatedReplicas {
			phase = api.PodRunning
		}
		var cs []api.ContainerStatus
		for _, c := range d.Containers {
			cs = append(cs, api.ContainerStatus{Name: c.Name, State: api.ContainerRunning, Ready: ready, RestartCount: i})
		}
		out = append(out, api.Pod{
			Namespace:  d.Namespace,
			Name:       fmt.Sprintf("%s-%010d", d.Name, i),
			Deployment: d.Name,
			Node:       fmt.Sprintf("node-%d", i%2),
			Generation: d.Generation,
			Labels:     d.Labels,
			Containers: d.Containers,
			Status:     api.PodStatus{Phase: phase, Ready: ready, IP: fmt.Sprintf("10.42.0.%d", 10+i), Containers: cs},
		})
	}
	return out
}

// seed stores d as if it had been created and rolled out completely.
func (f *fakeAgent) seed(d api.Deployment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d.Namespace == "" {
		d.Namespace = api.DefaultNamespace
	}
	d.Generation = 1
	d.Status = api.DeploymentStatus{Replicas: d.Replicas, UpdatedReplicas: d.Replicas,
		ReadyReplicas: d.Replicas, UpdatedReadyReplicas: d.Replicas, Complete: true}
	f.deployments[d.Namespace+"/"+d.Name] = &fakeDeployment{d: d, step: d.Replicas + 1}
}

// edit changes a stored deployment out of band, as another client would.
func (f *fakeAgent) edit(key string, fn func(d *api.Deployment)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fd, ok := f.deployments[key]; ok {
		fn(&fd.d)
		fd.d.Generation++
	}
}

// remove deletes a deployment out of band, with its pods.
func (f *fakeAgent) remove(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.deployments, key)
}

func (f *fakeAgent) deployment(key string) (api.Deployment, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, ok := f.deployments[key]
	if !ok {
		return api.Deployment{}, false
	}
	return fd.d, true
}

// count returns how many calls started with prefix, e.g. "PUT ".
func (f *fakeAgent) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// The fake's service ranges: the cluster defaults.
var fakeServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")

const (
	fakeNodePortMin = api.DefaultNodePortMin
	fakeNodePortMax = api.DefaultNodePortMax
)

func (f *fakeAgent) decodeService(w http.ResponseWriter, r *http.Request) (*api.Service, bool) {
	s, ok := decodeNamed(w, r, "service", func(s *api.Service) *string { return &s.Namespace }, (*api.Service).Validate)
	if !ok {
		return nil, false
	}
	if s.Type == "" {
		s.Type = api.ServiceClusterIP
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = api.AffinityNone
	}
	return s, true
}

func (f *fakeAgent) createService(w http.ResponseWriter, r *http.Request) {
	s, ok := f.decodeService(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := s.ID()
	if _, exists := f.services[key]; exists {
		writeError(w, http.StatusConflict, fmt.Sprintf("service %s exists", key))
		return
	}
	ip, code, err := f.serviceIP(key, s.ClusterIP)
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	s.ClusterIP = ip.String()
	if code, err := f.nodePorts(key, s, nil); err != nil {
		writeError(w, code, err.Error())
		return
	}
	f.putService(s)
	writeJSON(w, http.StatusCreated, s)
}

func (f *fakeAgent) updateService(w http.ResponseWriter, r *http.Request) {
	s, ok := f.decodeService(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := s.ID()
	cur, exists := f.services[key]
	if !exists || s.Name != r.PathValue("name") {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", key))
		return
	}
	if s.ClusterIP != "" && s.ClusterIP != cur.ClusterIP {
		writeError(w, http.StatusConflict, fmt.Sprintf("service %s: cluster_ip is %s and cannot change", key, cur.ClusterIP))
		return
	}
	s.ClusterIP = cur.ClusterIP
	if code, err := f.nodePorts(key, s, cur); err != nil {
		writeError(w, code, err.Error())
		return
	}
	f.dropService(cur)
	f.putService(s)
	writeJSON(w, http.StatusOK, s)
}

func (f *fakeAgent) getService(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	s, ok := f.services[key]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", key))
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (f *fakeAgent) deleteService(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	s, ok := f.services[key]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", key))
		return
	}
	f.dropService(s)
	w.WriteHeader(http.StatusNoContent)
}

// endpoints derives a service's endpoints from the fake pods of the
// deployments whose labels its selector matches.
func (f *fakeAgent) endpoints(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	s, ok := f.services[key]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", key))
		return
	}
	ep := api.Endpoints{Namespace: s.Namespace, Name: s.Name}
	for _, fd := range f.deployments {
		if fd.d.Namespace != s.Namespace || fd.d.Deleting || !s.Selects(fd.d.Labels) {
			continue
		}
		for _, p := range fakePods(fd.d) {
			a := api.EndpointAddress{Pod: p.Name, Node: p.Node, IP: p.Status.IP, Ready: p.Status.Ready}
			for _, sp := range s.Ports {
				if port := targetOf(sp, p.Containers); port != 0 {
					a.Ports = append(a.Ports, api.EndpointPort{Name: sp.Name, Protocol: sp.Proto(), Port: port})
				}
			}
			ep.Addresses = append(ep.Addresses, a)
		}
	}
	sort.Slice(ep.Addresses, func(i, j int) bool { return ep.Addresses[i].Pod > ep.Addresses[j].Pod }) // the provider sorts
	writeJSON(w, http.StatusOK, ep)
}

// targetOf is the port a service port reaches on a pod of these
// containers: 0 for a named target port none of them declares.
func targetOf(sp api.ServicePort, cs []api.Container) int {
	n, name := sp.Target()
	if name == "" {
		return n
	}
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.Name == name && p.Protocol == sp.Proto() {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// serviceIP gives key the address it asks for, if free, or the lowest
// free one. Called with f.mu held.
func (f *fakeAgent) serviceIP(key, asked string) (netip.Addr, int, error) {
	if asked != "" {
		a, err := netip.ParseAddr(asked)
		if err != nil || !fakeServiceCIDR.Contains(a) {
			return netip.Addr{}, http.StatusBadRequest, fmt.Errorf("service %s: cluster_ip %s is not in the cluster's service range %s", key, asked, fakeServiceCIDR)
		}
		if holder, taken := f.ipHolder[a]; taken {
			return netip.Addr{}, http.StatusConflict, fmt.Errorf("service %s: cluster_ip %s is taken by service %s", key, a, holder)
		}
		return a, 0, nil
	}
	for a := fakeServiceCIDR.Addr().Next(); fakeServiceCIDR.Contains(a); a = a.Next() {
		if _, taken := f.ipHolder[a]; !taken {
			return a, 0, nil
		}
	}
	return netip.Addr{}, http.StatusConflict, fmt.Errorf("service %s: no free address in %s", key, fakeServiceCIDR)
}

// nodePorts fills s's node ports as the agent does: asked ones must be
// free, others keep cur's for the same port and protocol or get the
// lowest free one. Called with f.mu held.
func (f *fakeAgent) nodePorts(key string, s, cur *api.Service) (int, error) {
	if s.Type != api.ServiceNodePort {
		for i := range s.Ports {
			s.Ports[i].NodePort = 0
		}
		return 0, nil
	}
	held := func(k string) (string, bool) {
		h, ok := f.portHolder[k]
		return h, ok && h != key
	}
	mine := map[string]bool{}
	for i, p := range s.Ports {
		if p.NodePort == 0 {
			continue
		}
		if p.NodePort < fakeNodePortMin || p.NodePort > fakeNodePortMax {
			return http.StatusBadRequest, fmt.Errorf("service %s: ports[%d].node_port %d is outside the cluster's node port range %d-%d",
				key, i, p.NodePort, fakeNodePortMin, fakeNodePortMax)
		}
		k := nodePortKey(p.Proto(), p.NodePort)
		if h, taken := held(k); taken {
			return http.StatusConflict, fmt.Errorf("service %s: ports[%d].node_port %d is taken by service %s", key, i, p.NodePort, h)
		}
		mine[k] = true
	}
	// Kept ones before new ones, so a new port never takes the node port
	// another port keeps.
	for i := range s.Ports {
		p := &s.Ports[i]
		if p.NodePort != 0 || cur == nil || cur.Type != api.ServiceNodePort {
			continue
		}
		for _, cp := range cur.Ports {
			k := nodePortKey(cp.Proto(), cp.NodePort)
			if cp.Proto() == p.Proto() && cp.Port == p.Port && cp.NodePort != 0 && !mine[k] {
				p.NodePort, mine[k] = cp.NodePort, true
				break
			}
		}
	}
	for i := range s.Ports {
		p := &s.Ports[i]
		for port := fakeNodePortMin; p.NodePort == 0 && port <= fakeNodePortMax; port++ {
			if _, taken := held(nodePortKey(p.Proto(), port)); !taken && !mine[nodePortKey(p.Proto(), port)] {
				p.NodePort = port
			}
		}
		if p.NodePort == 0 {
			return http.StatusConflict, fmt.Errorf("service %s: no free node port", key)
		}
		mine[nodePortKey(p.Proto(), p.NodePort)] = true
	}
	return 0, nil
}

func nodePortKey(proto string, port int) string { return fmt.Sprintf("%s/%d", proto, port) }

// putService stores s with the addresses it holds. Called with f.mu held.
func (f *fakeAgent) putService(s *api.Service) {
	key := s.ID()
	f.services[key] = s
	f.ipHolder[netip.MustParseAddr(s.ClusterIP)] = key
	for _, p := range s.Ports {
		if p.NodePort != 0 {
			f.portHolder[nodePortKey(p.Proto(), p.NodePort)] = key
		}
	}
}

// dropService removes s and frees what it holds. Called with f.mu held.
func (f *fakeAgent) dropService(s *api.Service) {
	key := s.ID()
	delete(f.services, key)
	for a, h := range f.ipHolder {
		if h == key {
			delete(f.ipHolder, a)
		}
	}
	for k, h := range f.portHolder {
		if h == key {
			delete(f.portHolder, k)
		}
	}
}

// service returns a copy of a stored service.
func (f *fakeAgent) service(key string) (api.Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[key]
	if !ok {
		return api.Service{}, false
	}
	c := *s
	c.Ports = append([]api.ServicePort(nil), s.Ports...)
	return c, true
}

// seedService stores s as another client would have created it; it must
// carry its cluster IP (and node ports).
func (f *fakeAgent) seedService(s api.Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.Namespace == "" {
		s.Namespace = api.DefaultNamespace
	}
	f.putService(&s)
}

// editService changes a stored service out of band, as another client would.
func (f *fakeAgent) editService(key string, fn func(s *api.Service)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.services[key]; ok {
		f.dropService(s)
		fn(s)
		f.putService(s)
	}
}

// removeService deletes a service out of band.
func (f *fakeAgent) removeService(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.services[key]; ok {
		f.dropService(s)
	}
}
