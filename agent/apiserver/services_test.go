package apiserver

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

func (m *memStore) CreateService(_ context.Context, s api.Service) (api.Service, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.svcs == nil {
		m.svcs = map[string]api.Service{}
	}
	if _, ok := m.svcs[s.ID()]; ok {
		return api.Service{}, fmt.Errorf("service %s: %w", s.ID(), state.ErrExists)
	}
	for _, o := range m.svcs {
		if s.ClusterIP != "" && o.ClusterIP == s.ClusterIP {
			return api.Service{}, fmt.Errorf("cluster_ip %s is taken by service %s: %w", s.ClusterIP, o.ID(), state.ErrConflict)
		}
	}
	if s.ClusterIP == "" {
		s.ClusterIP = fmt.Sprintf("10.96.0.%d", len(m.svcs)+1)
	}
	m.svcs[s.ID()] = s
	return s, nil
}

func (m *memStore) UpdateService(_ context.Context, s api.Service) (api.Service, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.svcs[s.ID()]
	if !ok {
		return api.Service{}, fmt.Errorf("service %s: %w", s.ID(), state.ErrNotFound)
	}
	s.ClusterIP = cur.ClusterIP
	m.svcs[s.ID()] = s
	return s, nil
}

func (m *memStore) DeleteService(_ context.Context, ns, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.svcs[ns+"/"+name]; !ok {
		return fmt.Errorf("service %s/%s: %w", ns, name, state.ErrNotFound)
	}
	delete(m.svcs, ns+"/"+name)
	return nil
}

func (m *memStore) Service(ns, name string) (api.Service, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.svcs[ns+"/"+name]
	return s, ok
}

func (m *memStore) ListServices(ns string) []api.Service {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.Service
	for _, s := range m.svcs {
		if ns == "" || s.Namespace == ns {
			out = append(out, s)
		}
	}
	return out
}

func (m *memStore) ServiceEndpoints(ns, name string) (api.Endpoints, bool) {
	if _, ok := m.Service(ns, name); !ok {
		return api.Endpoints{}, false
	}
	return api.Endpoints{Namespace: ns, Name: name}, true
}

func TestServicesAPI(t *testing.T) {
	const body = `{"name":"web","selector":{"app":"web"},"ports":[{"port":80,"target_port":"http"}]}`
	tests := []struct {
		name, method, path, token, body string
		wantCode                        int
		wantErr                         string
	}{
		{name: "no token", method: "POST", path: "/v1/namespaces/default/services", body: body, wantCode: 401},
		{name: "create", method: "POST", path: "/v1/namespaces/default/services", token: "s3cret", body: body, wantCode: 201},
		{name: "create again", method: "POST", path: "/v1/namespaces/default/services", token: "s3cret", body: body, wantCode: 409, wantErr: "exists"},
		{name: "address held", method: "POST", path: "/v1/namespaces/default/services", token: "s3cret",
			body: `{"name":"other","cluster_ip":"10.96.0.1","selector":{"app":"web"},"ports":[{"port":80}]}`, wantCode: 409, wantErr: "default/web"},
		{name: "invalid names the field", method: "POST", path: "/v1/namespaces/default/services", token: "s3cret",
			body: `{"name":"x","selector":{"app":"web"},"ports":[{"port":70000}]}`, wantCode: 422, wantErr: "ports[0].port"},
		{name: "no selector", method: "POST", path: "/v1/namespaces/default/services", token: "s3cret",
			body: `{"name":"x","ports":[{"port":80}]}`, wantCode: 422, wantErr: "selector"},
		{name: "unknown field", method: "POST", path: "/v1/namespaces/default/services", token: "s3cret",
			body: `{"name":"x","selectr":{}}`, wantCode: 400, wantErr: "unknown field"},
		{name: "get", method: "GET", path: "/v1/namespaces/default/services/web", token: "s3cret", wantCode: 200},
		{name: "endpoints", method: "GET", path: "/v1/namespaces/default/services/web/endpoints", token: "s3cret", wantCode: 200},
		{name: "list", method: "GET", path: "/v1/services", token: "s3cret", wantCode: 200},
		{name: "update", method: "PUT", path: "/v1/namespaces/default/services/web", token: "s3cret", body: body, wantCode: 200},
		{name: "name mismatch", method: "PUT", path: "/v1/namespaces/default/services/other", token: "s3cret", body: body, wantCode: 400, wantErr: "differs"},
		{name: "delete", method: "DELETE", path: "/v1/namespaces/default/services/web", token: "s3cret", wantCode: 204},
		{name: "get missing", method: "GET", path: "/v1/namespaces/default/services/web", token: "s3cret", wantCode: 404, wantErr: "not found"},
		{name: "endpoints missing", method: "GET", path: "/v1/namespaces/default/services/web/endpoints", token: "s3cret", wantCode: 404},
		{name: "delete missing", method: "DELETE", path: "/v1/namespaces/default/services/web", token: "s3cret", wantCode: 404},
	}
	srv := newTestServer(t, &memStore{deps: map[string]api.Deployment{}})
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
