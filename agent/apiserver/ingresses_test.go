package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/testcert"
)

// ingressFSM is the real state machine behind memStore's ingresses, so
// that conflicts and redaction are the state's own.
type ingressFSM struct {
	once sync.Once
	mu   sync.Mutex
	fsm  *state.FSM
}

func (m *memStore) ingFSM() *state.FSM {
	m.ing.once.Do(func() { m.ing.fsm = state.NewFSM(nil) })
	return m.ing.fsm
}

func (m *memStore) applyIngress(cmd state.Command) (any, error) {
	if err := cmd.Validate(); err != nil { // as store.Write does before proposing
		return nil, err
	}
	data, err := state.Encode(cmd)
	if err != nil {
		return nil, err
	}
	f := m.ingFSM()
	m.ing.mu.Lock()
	defer m.ing.mu.Unlock()
	resp := f.Apply(&raft.Log{Index: f.Index() + 1, Type: raft.LogCommand, Data: data})
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

func (m *memStore) CreateIngress(_ context.Context, in api.Ingress) (api.Ingress, error) {
	resp, err := m.applyIngress(&state.CreateIngress{Ingress: in})
	if err != nil {
		return api.Ingress{}, err
	}
	return resp.(api.Ingress), nil
}

func (m *memStore) UpdateIngress(_ context.Context, in api.Ingress) (api.Ingress, error) {
	resp, err := m.applyIngress(&state.UpdateIngress{Ingress: in})
	if err != nil {
		return api.Ingress{}, err
	}
	return resp.(api.Ingress), nil
}

func (m *memStore) DeleteIngress(_ context.Context, ns, name string) error {
	_, err := m.applyIngress(&state.DeleteIngress{Namespace: ns, Name: name})
	return err
}

func (m *memStore) Ingress(ns, name string) (api.Ingress, bool) { return m.ingFSM().Ingress(ns, name) }
func (m *memStore) ListIngresses(ns string) []api.Ingress       { return m.ingFSM().Ingresses(ns) }

func ingressBody(t *testing.T, name, host, path, cert, key string) string {
	t.Helper()
	in := api.Ingress{Name: name, Rules: []api.IngressRule{{Host: host, Paths: []api.IngressPath{{Path: path, Backend: api.IngressBackend{Service: "web", Port: 80}}}}}}
	if cert != "" {
		in.TLS = []api.IngressTLS{{Hosts: []string{host}, Certificate: cert, Key: key}}
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestIngressesAPI(t *testing.T) {
	cert, key, err := testcert.Pair("shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := testcert.Pair("blog.example.com")
	if err != nil {
		t.Fatal(err)
	}
	keyBody := strings.Split(key, "\n")[1] // a line of the key's base64
	body := ingressBody(t, "shop", "shop.example.com", "/api", cert, key)
	const ns = "/v1/namespaces/default/ingresses"
	tests := []struct {
		name, method, path, token, body string
		wantCode                        int
		wantErr                         string
	}{
		{name: "no token", method: "POST", path: ns, body: body, wantCode: 401},
		{name: "create", method: "POST", path: ns, token: "s3cret", body: body, wantCode: 201},
		{name: "create again", method: "POST", path: ns, token: "s3cret", body: body, wantCode: 409, wantErr: "exists"},
		{name: "same route names both", method: "POST", path: ns, token: "s3cret", body: ingressBody(t, "b", "shop.example.com", "/api", "", ""),
			wantCode: 409, wantErr: "ingress default/b: both route shop.example.com prefix /api as ingress default/shop does"},
		{name: "key of another certificate", method: "POST", path: ns, token: "s3cret", body: ingressBody(t, "c", "c.example.com", "/", cert, otherKey),
			wantCode: 422, wantErr: "tls[0]: the certificate and key are not a PEM pair that fits"},
		{name: "no key", method: "POST", path: ns, token: "s3cret", body: ingressBody(t, "c", "c.example.com", "/", otherCert, ""),
			wantCode: 422, wantErr: "tls[0].key: is required"},
		{name: "bad path names the field", method: "POST", path: ns, token: "s3cret", body: ingressBody(t, "c", "c.example.com", "/a b", "", ""),
			wantCode: 422, wantErr: "rules[0].paths[0].path"},
		{name: "bad host names the field", method: "POST", path: ns, token: "s3cret", body: ingressBody(t, "c", "C.example.com:80", "/", "", ""),
			wantCode: 422, wantErr: "rules[0].host"},
		{name: "unknown field", method: "POST", path: ns, token: "s3cret", body: `{"name":"x","rulez":[]}`, wantCode: 400, wantErr: "unknown field"},
		{name: "get", method: "GET", path: ns + "/shop", token: "s3cret", wantCode: 200},
		{name: "list", method: "GET", path: ns, token: "s3cret", wantCode: 200},
		{name: "list all", method: "GET", path: "/v1/ingresses", token: "s3cret", wantCode: 200},
		{name: "update with another key", method: "PUT", path: ns + "/shop", token: "s3cret", body: ingressBody(t, "shop", "blog.example.com", "/api", otherCert, otherKey), wantCode: 200},
		{name: "name mismatch", method: "PUT", path: ns + "/other", token: "s3cret", body: body, wantCode: 400, wantErr: "differs"},
		{name: "update missing", method: "PUT", path: ns + "/zz", token: "s3cret", body: ingressBody(t, "zz", "zz.example.com", "/", "", ""), wantCode: 404},
		{name: "delete", method: "DELETE", path: ns + "/shop", token: "s3cret", wantCode: 204},
		{name: "get missing", method: "GET", path: ns + "/shop", token: "s3cret", wantCode: 404, wantErr: "not found"},
		{name: "delete missing", method: "DELETE", path: ns + "/shop", token: "s3cret", wantCode: 404},
	}
	var logs bytes.Buffer
	store := &memStore{deps: map[string]api.Deployment{}}
	srv, err := New(Config{Store: store, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
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
		// No answer carries a key; answers with an ingress carry its digest.
		if strings.Contains(rec.Body.String(), "PRIVATE KEY") || strings.Contains(rec.Body.String(), keyBody) {
			t.Errorf("%s: the answer holds a key: %s", tt.name, rec.Body)
		}
		if tt.wantCode < 300 && strings.Contains(rec.Body.String(), `"tls"`) && !strings.Contains(rec.Body.String(), `"key_sha256"`) {
			t.Errorf("%s: an answer with TLS lacks key_sha256: %s", tt.name, rec.Body)
		}
		if tt.name == "create" {
			var got api.Ingress
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.TLS[0].KeySHA256 != api.KeyDigest(key) || got.TLS[0].Key != "" || got.CreateIndex == 0 {
				t.Errorf("create answered %+v", got)
			}
		}
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") || strings.Contains(logs.String(), keyBody) {
		t.Errorf("a log line holds a key:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "ingress created") {
		t.Errorf("writes are not logged:\n%s", logs.String())
	}
}

// TestIngressClient drives the API through api.Client: the paths, methods
// and error kinds the provider relies on.
func TestIngressClient(t *testing.T) {
	ctx := context.Background()
	cert, key, err := testcert.Pair("shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, &memStore{deps: map[string]api.Deployment{}})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c, err := api.NewClient(&api.Config{Address: hs.URL, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	in := &api.Ingress{Namespace: "shop", Name: "web",
		Rules: []api.IngressRule{{Host: "shop.example.com", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}}},
		TLS:   []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert, Key: key}}}
	created, err := c.CreateIngress(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if created.TLS[0].Key != "" || created.TLS[0].KeySHA256 != api.KeyDigest(key) {
		t.Errorf("created %+v", created.TLS[0])
	}
	if _, err := c.CreateIngress(ctx, in); !api.IsConflict(err) {
		t.Errorf("create again: %v; want a 409", err)
	}
	other := *in
	other.Name, other.TLS = "other", nil
	if _, err := c.CreateIngress(ctx, &other); !api.IsConflict(err) || !strings.Contains(err.Error(), "as ingress shop/web does") {
		t.Errorf("conflicting create: %v", err)
	}
	in.SSLRedirect = true
	if up, err := c.UpdateIngress(ctx, in); err != nil || !up.SSLRedirect || up.TLS[0].Key != "" {
		t.Errorf("update: %+v, %v", up, err)
	}
	if got, err := c.GetIngress(ctx, "shop", "web"); err != nil || !got.SSLRedirect || got.TLS[0].Key != "" {
		t.Errorf("get: %+v, %v", got, err)
	}
	for _, ns := range []string{"shop", ""} {
		if l, err := c.ListIngresses(ctx, ns); err != nil || len(l) != 1 || l[0].TLS[0].Key != "" {
			t.Errorf("list %q: %+v, %v", ns, l, err)
		}
	}
	if l, err := c.ListIngresses(ctx, "other"); err != nil || len(l) != 0 {
		t.Errorf("list of another namespace: %+v, %v", l, err)
	}
	if err := c.DeleteIngress(ctx, "shop", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetIngress(ctx, "shop", "web"); !api.IsNotFound(err) {
		t.Errorf("get after delete: %v", err)
	}
	bad := *in
	bad.Rules = []api.IngressRule{{Host: "shop.example.com", Paths: []api.IngressPath{{Path: "/a b", Backend: api.IngressBackend{Service: "web"}}}}}
	var apiErr *api.Error
	if _, err := c.CreateIngress(ctx, &bad); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(apiErr.Message, "rules[0].paths[0].path") {
		t.Errorf("invalid create: %v", err)
	}
}
