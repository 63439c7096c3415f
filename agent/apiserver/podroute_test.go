package apiserver

import (
	"net/http"
	"testing"

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
