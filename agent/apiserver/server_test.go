package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// memStore is an in-memory Store with the error semantics of state.Store.
type memStore struct {
	mu   sync.Mutex
	deps map[string]api.Deployment
}

func key(ns, name string) string { return ns + "/" + name }

func (m *memStore) CreateDeployment(_ context.Context, d api.Deployment) (api.Deployment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.deps[key(d.Namespace, d.Name)]; ok {
		return d, fmt.Errorf("deployment %s: %w", key(d.Namespace, d.Name), state.ErrExists)
	}
	d.Generation = 1
	m.deps[key(d.Namespace, d.Name)] = d
	return d, nil
}

func (m *memStore) UpdateDeployment(_ context.Context, d api.Deployment) (api.Deployment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.deps[key(d.Namespace, d.Name)]
	if !ok {
		return d, fmt.Errorf("deployment %s: %w", key(d.Namespace, d.Name), state.ErrNotFound)
	}
	d.Generation = old.Generation + 1
	m.deps[key(d.Namespace, d.Name)] = d
	return d, nil
}

func (m *memStore) DeleteDeployment(_ context.Context, ns, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.deps[key(ns, name)]; !ok {
		return fmt.Errorf("deployment %s: %w", key(ns, name), state.ErrNotFound)
	}
	delete(m.deps, key(ns, name))
	return nil
}

func (m *memStore) Deployment(ns, name string) (api.Deployment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.deps[key(ns, name)]
	return d, ok
}

func (m *memStore) Deployments(string) []api.Deployment { return nil }
func (m *memStore) Pods(state.PodFilter) []api.Pod      { return nil }
func (m *memStore) Nodes() []api.Node                   { return nil }
func (m *memStore) Leader() string                      { return "n1" }
func (m *memStore) Index() uint64                       { return 7 }

const validBody = `{"name":"web","replicas":2,"containers":[{"name":"app","image":"demo:v1","ports":[{"container_port":8080}]}]}`

func TestServer(t *testing.T) {
	tests := []struct {
		name, method, path, token, body string
		wantCode                        int
		wantErr                         string
	}{
		{name: "no token", method: "GET", path: "/v1/status", wantCode: 401, wantErr: "missing or wrong token"},
		{name: "wrong token", method: "GET", path: "/v1/status", token: "nope", wantCode: 401},
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
	srv, err := New(Config{Store: &memStore{deps: map[string]api.Deployment{}}, Token: "s3cret",
		Status: func(api.Deployment) api.DeploymentStatus { return api.DeploymentStatus{} }})
	if err != nil {
		t.Fatal(err)
	}
	// Cases run in order: later ones depend on what earlier ones created.
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != tt.wantCode {
			t.Errorf("%s: %s %s = %d, want %d (%s)", tt.name, tt.method, tt.path, rec.Code, tt.wantCode, rec.Body)
			continue
		}
		if tt.wantErr != "" {
			var er api.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || !strings.Contains(er.Error, tt.wantErr) {
				t.Errorf("%s: error %q, want it to contain %q", tt.name, rec.Body, tt.wantErr)
			}
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := New(Config{Store: &memStore{deps: map[string]api.Deployment{}}, Token: "tok", Metrics: reg,
		Status: func(api.Deployment) api.DeploymentStatus { return api.DeploymentStatus{} }})
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
	_, err := New(Config{Store: &memStore{}, Status: func(api.Deployment) api.DeploymentStatus { return api.DeploymentStatus{} }})
	if err == nil {
		t.Fatal("a server without a token was created")
	}
}

func TestClientRoundTrip(t *testing.T) {
	srv, _ := New(Config{Store: &memStore{deps: map[string]api.Deployment{}}, Token: "tok",
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
