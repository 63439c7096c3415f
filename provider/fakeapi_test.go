package provider

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	calls         []string // "METHOD /path", in order
}

// createCall prefixes the calls that create a deployment, as count and
// checkCalls take it (the capacity check is a POST as well).
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
	var d api.Deployment
	if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
		writeError(w, http.StatusBadRequest, "decode deployment: "+err.Error())
		return nil, false
	}
	if d.Namespace == "" {
		d.Namespace = r.PathValue("ns")
	}
	if d.Namespace != r.PathValue("ns") {
		writeError(w, http.StatusBadRequest, "namespace in body and path differ")
		return nil, false
	}
	if err := d.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return &d, true
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
		d := fd.d
		if d.Namespace != ns || (dep != "" && d.Name != dep) {
			continue
		}
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
				Containers: d.Containers,
				Status:     api.PodStatus{Phase: phase, Ready: ready, IP: fmt.Sprintf("10.42.0.%d", 10+i), Containers: cs},
			})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name }) // the provider sorts
	writeJSON(w, http.StatusOK, out)
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
