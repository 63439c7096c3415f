package provider

import (
	"encoding/json"
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
	URL   string
	Token string

	mu          sync.Mutex
	deployments map[string]*fakeDeployment // by namespace/name
	// failImages makes any deployment using the image report this failure.
	failImages map[string]string
	// stuckImages never become ready.
	stuckImages map[string]bool
	calls       []string // "METHOD /path", in order
}

type fakeDeployment struct {
	d api.Deployment
	// step counts polls since the last spec change; deleteLeft counts the
	// polls a deleting deployment stays visible.
	step       int
	deleteLeft int
}

func newFakeAgent(t *testing.T) *fakeAgent {
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
	srv := httptest.NewServer(f.auth(mux))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *fakeAgent) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+f.Token {
			writeError(w, http.StatusUnauthorized, "missing or invalid token")
			return
		}
		next.ServeHTTP(w, r)
	})
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
