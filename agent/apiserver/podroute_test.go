package apiserver

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

func TestLocatePod(t *testing.T) {
	pods := podOf(map[string]api.Pod{
		"default/here":     {Namespace: "default", Name: "here", Node: "n1", Containers: []api.Container{{Name: "app"}}},
		"default/there":    {Namespace: "default", Name: "there", Node: "n2", Containers: []api.Container{{Name: "app"}}},
		"default/unplaced": {Namespace: "default", Name: "unplaced", Containers: []api.Container{{Name: "app"}}},
		"default/two":      {Namespace: "default", Name: "two", Node: "n1", Containers: []api.Container{{Name: "a"}, {Name: "b"}}},
	})
	for _, tc := range []struct {
		name, pod, container string
		forward, proxy       bool
		route                podRoute
		code                 int // of the refusal; 0: none
		wantContainer        string
	}{
		{name: "own pod, its one container named for it", pod: "here", route: routeHere, wantContainer: "app"},
		{name: "own pod, two containers, one named", pod: "two", container: "b", route: routeHere, wantContainer: "b"},
		{name: "two containers, none named", pod: "two", code: http.StatusBadRequest},
		{name: "no such container", pod: "here", container: "db", code: http.StatusNotFound},
		{name: "no such container, with a server to ask", pod: "here", container: "db", proxy: true, code: http.StatusNotFound},
		{name: "unplaced", pod: "unplaced", forward: true, route: routeUnplaced, wantContainer: "app"},
		{name: "another node's, a server", pod: "there", forward: true, proxy: true, route: routeNode, wantContainer: "app"},
		{name: "another node's, a client agent", pod: "there", proxy: true, route: routeServer, wantContainer: "app"},
		{name: "another node's, no way there", pod: "there", code: http.StatusServiceUnavailable},
		{name: "unknown, a client agent", pod: "gone", proxy: true, route: routeServer},
		{name: "unknown, no server to ask", pod: "gone", forward: true, code: http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: Config{NodeName: "n1"}}
			if tc.proxy {
				s.proxy = &proxy{}
			}
			container := tc.container
			_, route, rerr := s.locatePod(pods, "default", tc.pod, &container, tc.forward)
			switch {
			case tc.code != 0 && (rerr == nil || rerr.code != tc.code):
				t.Fatalf("refusal %+v, want HTTP %d", rerr, tc.code)
			case tc.code != 0:
				return
			case rerr != nil:
				t.Fatalf("refused: HTTP %d %s", rerr.code, rerr.msg)
			case route != tc.route:
				t.Errorf("route %d, want %d", route, tc.route)
			}
			if container != tc.wantContainer {
				t.Errorf("container %q, want %q", container, tc.wantContainer)
			}
		})
	}
}

// clientAgentPods is what client agent c1 of startClientAgent knows: its
// own pod default/mine, one container "app".
func clientAgentPods() func(string) (api.Pod, bool) {
	return podOf(map[string]api.Pod{
		"default/mine": {Namespace: "default", Name: "mine", Node: "c1", Containers: []api.Container{{Name: "app"}}},
	})
}

// startClientAgent serves the API of client agent c1 (token "s3cret"),
// which proxies to the server at upstream what is not its own; with sets
// the feature under test.
func startClientAgent(t *testing.T, p *testPKI, upstream string, with func(*Config)) *httptest.Server {
	t.Helper()
	certPEM, keyPEM := p.client(t, "c1")
	kp := p.keypair(t, certPEM, keyPEM)
	cfg := Config{
		Local: &memStore{}, TokenHash: tokenHash(t, "s3cret"), NodeName: "c1",
		Logger:   slog.New(slog.NewTextHandler(testLogWriter{t}, nil)),
		Upstream: func() []string { return []string{upstream} }, UpstreamTLS: kp.ClientTLS(pki.RequireRole(pki.RoleServer)),
	}
	with(&cfg)
	agent, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.CloseIdleConnections)
	hs := httptest.NewServer(agent)
	t.Cleanup(hs.Close)
	return hs
}
