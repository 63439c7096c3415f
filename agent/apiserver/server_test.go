package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/agent/authz"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// memStore is an in-memory Store with the error semantics of store.Store.
// It records the API token each write's context carries (authz.Token), as
// the store would forward it to the leader.
type memStore struct {
	mu      sync.Mutex
	deps    map[string]api.Deployment
	nodes   []api.Node
	peers   []api.RaftPeer
	removed []string
	// err, when set, is what every write fails with.
	err error
	// tokens are authz.Token of each write's context, in order.
	tokens []string
	svcs   map[string]api.Service
	pods   []api.Pod
	ing    ingressFSM
}

func key(ns, name string) string { return ns + "/" + name }

func (m *memStore) write(ctx context.Context) error {
	m.tokens = append(m.tokens, authz.Token(ctx))
	return m.err
}

func (m *memStore) CreateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.write(ctx); err != nil {
		return api.Deployment{}, err
	}
	if _, ok := m.deps[key(d.Namespace, d.Name)]; ok {
		return d, fmt.Errorf("deployment %s: %w", key(d.Namespace, d.Name), state.ErrExists)
	}
	d.Generation = 1
	m.deps[key(d.Namespace, d.Name)] = d
	return d, nil
}

func (m *memStore) UpdateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.write(ctx); err != nil {
		return api.Deployment{}, err
	}
	old, ok := m.deps[key(d.Namespace, d.Name)]
	if !ok {
		return d, fmt.Errorf("deployment %s: %w", key(d.Namespace, d.Name), state.ErrNotFound)
	}
	d.Generation = old.Generation + 1
	m.deps[key(d.Namespace, d.Name)] = d
	return d, nil
}

func (m *memStore) DeleteDeployment(ctx context.Context, ns, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.write(ctx); err != nil {
		return err
	}
	if _, ok := m.deps[key(ns, name)]; !ok {
		return fmt.Errorf("deployment %s: %w", key(ns, name), state.ErrNotFound)
	}
	delete(m.deps, key(ns, name))
	return nil
}

func (m *memStore) RemoveNode(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.write(ctx); err != nil {
		return err
	}
	m.removed = append(m.removed, name)
	m.nodes = slices.DeleteFunc(m.nodes, func(n api.Node) bool { return n.Name == name })
	return nil
}

func (m *memStore) SetNodeSchedule(ctx context.Context, name string, sched api.NodeSchedule) (api.Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.write(ctx); err != nil {
		return api.Node{}, err
	}
	for i, n := range m.nodes {
		if n.Name == name {
			m.nodes[i].Unschedulable, m.nodes[i].Draining = sched.Unschedulable || sched.Draining, sched.Draining
			return m.nodes[i], nil
		}
	}
	return api.Node{}, state.ErrNotFound
}

func (m *memStore) Deployment(ns, name string) (api.Deployment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.deps[key(ns, name)]
	return d, ok
}

func (m *memStore) Nodes() []api.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.nodes)
}

func (m *memStore) RaftPeers() ([]api.RaftPeer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.peers), nil
}

func (m *memStore) Deployments(string) []api.Deployment { return nil }
func (m *memStore) Pods(f state.PodFilter) []api.Pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Pod
	for _, p := range m.pods {
		if f.Namespace == "" || p.Namespace == f.Namespace {
			out = append(out, p)
		}
	}
	return out
}
func (m *memStore) Leader() string { return "n1" }
func (m *memStore) Index() uint64  { return 7 }

var _ Store = (*memStore)(nil)

// tokenHash is what the agent keeps of an API token.
func tokenHash(t *testing.T, token string) [32]byte {
	t.Helper()
	h, err := pki.ParseTokenHash(pki.TokenHash(token))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func noStatus(api.Deployment) api.DeploymentStatus { return api.DeploymentStatus{} }

// newTestServer is the API of agent n1 with token s3cret on store.
func newTestServer(t *testing.T, store *memStore) *Server {
	t.Helper()
	srv, err := New(Config{Store: store, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// serve sends one request, with the token when not empty.
func serve(srv http.Handler, method, path, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec
}

func errorText(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var er api.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil {
		t.Fatalf("the answer %q is not an error response: %v", rec.Body, err)
	}
	return er.Error
}

const validBody = `{"name":"web","replicas":2,"containers":[{"name":"app","image":"demo:v1","ports":[{"container_port":8080}]}]}`

func TestServer(t *testing.T) {
	tests := []struct {
		name, method, path, token, body string
		wantCode                        int
		wantErr                         string
	}{
		{name: "no token", method: "GET", path: "/v1/status", wantCode: 401, wantErr: "missing or wrong token"},
		{name: "wrong token", method: "GET", path: "/v1/status", token: "nope", wantCode: 401},
		{name: "the hash is not the token", method: "GET", path: "/v1/status", token: pki.TokenHash("s3cret"), wantCode: 401},
		{name: "status", method: "GET", path: "/v1/status", token: "s3cret", wantCode: 200},
		{name: "create", method: "POST", path: "/v1/namespaces/default/deployments", token: "s3cret", body: validBody, wantCode: 201},
		{name: "create again", method: "POST", path: "/v1/namespaces/default/deployments", token: "s3cret", body: validBody, wantCode: 409},
		{name: "malformed JSON", method: "POST", path: "/v1/namespaces/default/deployments", token: "s3cret", body: `{"name":`, wantCode: 400, wantErr: "malformed"},
		{name: "unknown field", method: "POST", path: "/v1/namespaces/default/deployments", token: "s3cret", body: `{"name":"web","replica":2}`, wantCode: 400, wantErr: "unknown field"},
		{name: "invalid spec names the field", method: "POST", path: "/v1/namespaces/default/deployments", token: "s3cret",
			body: `{"name":"Web","containers":[{"name":"app","image":""}]}`, wantCode: 422, wantErr: "containers[0].image"},
		{name: "namespace mismatch", method: "POST", path: "/v1/namespaces/default/deployments", token: "s3cret",
			body: strings.Replace(validBody, `{"name"`, `{"namespace":"prod","name"`, 1), wantCode: 400, wantErr: "differs"},
		{name: "get", method: "GET", path: "/v1/namespaces/default/deployments/web", token: "s3cret", wantCode: 200},
		{name: "get missing", method: "GET", path: "/v1/namespaces/default/deployments/nope", token: "s3cret", wantCode: 404, wantErr: "not found"},
		{name: "update", method: "PUT", path: "/v1/namespaces/default/deployments/web", token: "s3cret", body: validBody, wantCode: 200},
		{name: "update missing", method: "PUT", path: "/v1/namespaces/default/deployments/other", token: "s3cret",
			body: strings.Replace(validBody, `"web"`, `"other"`, 1), wantCode: 404},
		{name: "delete", method: "DELETE", path: "/v1/namespaces/default/deployments/web", token: "s3cret", wantCode: 202},
		{name: "delete missing", method: "DELETE", path: "/v1/namespaces/default/deployments/web", token: "s3cret", wantCode: 404},
		{name: "images without runtime", method: "POST", path: "/v1/images", token: "s3cret", wantCode: 501},
	}
	srv := newTestServer(t, &memStore{deps: map[string]api.Deployment{}})
	// Cases run in order: later ones depend on what earlier ones created.
	for _, tt := range tests {
		rec := serve(srv, tt.method, tt.path, tt.token, tt.body)
		if rec.Code != tt.wantCode {
			t.Errorf("%s: %s %s = %d, want %d (%s)", tt.name, tt.method, tt.path, rec.Code, tt.wantCode, rec.Body)
			continue
		}
		if tt.wantErr != "" {
			if got := errorText(t, rec); !strings.Contains(got, tt.wantErr) {
				t.Errorf("%s: error %q, want it to contain %q", tt.name, got, tt.wantErr)
			}
		}
	}
}

func TestRemoveNode(t *testing.T) {
	nodes := []api.Node{{Name: "n1", Address: "10.0.0.1", Server: true}, {Name: "n2", Address: "10.0.0.2"}}
	tests := []struct {
		name, path, token string
		storeErr          error
		wantCode          int
		wantErr           string
		wantRemoved       []string
	}{
		{name: "a known node", path: "/v1/nodes/n2", token: "s3cret", wantCode: 204, wantRemoved: []string{"n2"}},
		{name: "an unknown node", path: "/v1/nodes/n9", token: "s3cret", wantCode: 404, wantErr: "node n9 not found"},
		{name: "the answering agent itself", path: "/v1/nodes/n1", token: "s3cret", wantCode: 409,
			wantErr: "node n1 is the agent answering this request; send the removal to another agent"},
		{name: "no token", path: "/v1/nodes/n2", wantCode: 401, wantErr: "missing or wrong token"},
		{name: "wrong token", path: "/v1/nodes/n2", token: "guess", wantCode: 401},
		{name: "an invalid name", path: "/v1/nodes/N_2", token: "s3cret", wantCode: 400, wantErr: "node name"},
		{name: "the leader refuses", path: "/v1/nodes/n2", token: "s3cret", storeErr: fmt.Errorf("%w: no", state.ErrForbidden),
			wantCode: 403, wantErr: "forbidden: no"},
		{name: "no leader", path: "/v1/nodes/n2", token: "s3cret", storeErr: fmt.Errorf("remove node: %w", state.ErrNotLeader),
			wantCode: 503, wantErr: "retry shortly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &memStore{nodes: slices.Clone(nodes), err: tt.storeErr}
			rec := serve(newTestServer(t, st), http.MethodDelete, tt.path, tt.token, "")
			if rec.Code != tt.wantCode {
				t.Fatalf("DELETE %s = %d, want %d (%s)", tt.path, rec.Code, tt.wantCode, rec.Body)
			}
			if tt.wantErr != "" {
				if got := errorText(t, rec); !strings.Contains(got, tt.wantErr) {
					t.Errorf("error %q, want it to contain %q", got, tt.wantErr)
				}
			}
			if !slices.Equal(st.removed, tt.wantRemoved) {
				t.Errorf("removed %v, want %v", st.removed, tt.wantRemoved)
			}
			if tt.wantCode == 401 && len(st.tokens) > 0 {
				t.Error("an unauthenticated request reached the store")
			}
		})
	}
	t.Run("a removed node is gone from the listing", func(t *testing.T) {
		st := &memStore{nodes: slices.Clone(nodes)}
		srv := newTestServer(t, st)
		if rec := serve(srv, http.MethodDelete, "/v1/nodes/n2", "s3cret", ""); rec.Code != 204 || rec.Body.Len() != 0 {
			t.Fatalf("DELETE = %d %q, want 204 and no body", rec.Code, rec.Body)
		}
		rec := serve(srv, http.MethodGet, "/v1/nodes", "s3cret", "")
		var got []api.Node
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got) != 1 || got[0].Name != "n1" {
			t.Errorf("nodes after the removal: %s (%v)", rec.Body, err)
		}
		if rec := serve(srv, http.MethodDelete, "/v1/nodes/n2", "s3cret", ""); rec.Code != 404 {
			t.Errorf("second DELETE = %d, want 404", rec.Code)
		}
	})
}

// TestWritesCarryTheToken: every write reaches the store with the request's
// API token in its context, so that a write this agent forwards to the
// leader proves an operator asked for it.
func TestWritesCarryTheToken(t *testing.T) {
	st := &memStore{deps: map[string]api.Deployment{}, nodes: []api.Node{{Name: "n2", Address: "10.0.0.2"}}}
	srv := newTestServer(t, st)
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/namespaces/default/deployments", validBody},
		{"PUT", "/v1/namespaces/default/deployments/web", validBody},
		{"DELETE", "/v1/namespaces/default/deployments/web", ""},
		{"DELETE", "/v1/nodes/n2", ""},
	} {
		if rec := serve(srv, r.method, r.path, "s3cret", r.body); rec.Code >= 300 {
			t.Fatalf("%s %s = %d %s", r.method, r.path, rec.Code, rec.Body)
		}
	}
	if want := []string{"s3cret", "s3cret", "s3cret", "s3cret"}; !slices.Equal(st.tokens, want) {
		t.Errorf("tokens the store saw: %q, want %q", st.tokens, want)
	}
}

// TestStoreErrors: a failed write is answered with its kind's status, as
// the agents' RPC answers it.
func TestStoreErrors(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode int
		wantErr  string
	}{
		{"not found", fmt.Errorf("deployment default/web: %w", state.ErrNotFound), 404, "deployment default/web: not found"},
		{"exists", fmt.Errorf("deployment default/web: %w", state.ErrExists), 409, "already exists"},
		{"conflict", fmt.Errorf("%w: pods left", state.ErrConflict), 409, "pods left"},
		{"invalid at the leader", fmt.Errorf("%w: deployment default/web: too big", state.ErrInvalid), 422, "too big"},
		{"forbidden at the leader", fmt.Errorf("%w: client c1 may not", state.ErrForbidden), 403, "client c1 may not"},
		{"no leader", fmt.Errorf("forward: %w", state.ErrNotLeader), 503, "retry shortly"},
		{"not committed in time", fmt.Errorf("apply: %w", context.DeadlineExceeded), 503, "the write was not committed in time"},
		{"anything else", errors.New("disk on fire"), 500, "disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, &memStore{deps: map[string]api.Deployment{}, err: tt.err})
			rec := serve(srv, http.MethodPost, "/v1/namespaces/default/deployments", "s3cret", validBody)
			if rec.Code != tt.wantCode {
				t.Fatalf("create = %d, want %d (%s)", rec.Code, tt.wantCode, rec.Body)
			}
			if got := errorText(t, rec); !strings.Contains(got, tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", got, tt.wantErr)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := New(Config{Store: &memStore{deps: map[string]api.Deployment{}}, TokenHash: tokenHash(t, "tok"), Metrics: reg, Status: noStatus})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c, _ := api.NewClient(&api.Config{Address: ts.URL, Token: "tok"})
	if _, err := c.GetDeployment(context.Background(), "default", "nope"); !api.IsNotFound(err) {
		t.Fatal(err)
	}
	text, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := `flotilla_api_request_duration_seconds_count{code="404",route="GET /v1/namespaces/{ns}/deployments/{name}"} 1`
	if !strings.Contains(text, want) {
		t.Errorf("metrics lack %s:\n%s", want, text)
	}
	anon, _ := api.NewClient(&api.Config{Address: ts.URL})
	if _, err := anon.Metrics(context.Background()); err == nil {
		t.Error("metrics served without a token")
	}
}

func TestNewRequiresToken(t *testing.T) {
	_, err := New(Config{Store: &memStore{}, Status: noStatus})
	if err == nil || !strings.Contains(err.Error(), "token hash is required") {
		t.Fatalf("a server without a token hash: %v", err)
	}
}

func TestClientRoundTrip(t *testing.T) {
	srv, _ := New(Config{Store: &memStore{deps: map[string]api.Deployment{}}, TokenHash: tokenHash(t, "tok"),
		Status: func(api.Deployment) api.DeploymentStatus { return api.DeploymentStatus{Complete: true} }})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c, err := api.NewClient(&api.Config{Address: ts.URL, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := api.Deployment{Namespace: "default", Name: "web", Replicas: 1, Containers: []api.Container{{Name: "app", Image: "demo:v1"}}}
	if _, err := c.CreateDeployment(ctx, &d); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateDeployment(ctx, &d); !api.IsConflict(err) {
		t.Fatalf("second create: %v, want conflict", err)
	}
	got, err := c.GetDeployment(ctx, "default", "web")
	if err != nil || !got.Status.Complete || got.Generation != 1 {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if err := c.DeleteDeployment(ctx, "default", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetDeployment(ctx, "default", "web"); !api.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want not found", err)
	}
	bad, _ := api.NewClient(&api.Config{Address: ts.URL, Token: "wrong"})
	if _, err := bad.Status(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
}
