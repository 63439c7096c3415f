package apiserver

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

func TestListEvents(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	ev := func(ago time.Duration, reason string) api.Event {
		return api.Event{Time: now.Add(-ago), Type: api.EventNormal, Reason: reason, Message: reason + " message"}
	}
	store := &memStore{pods: []api.Pod{
		{Namespace: "default", Name: "web-a", Node: "n1", Status: api.PodStatus{Events: []api.Event{ev(3*time.Minute, "Scheduled"), ev(time.Minute, "Started")}}},
		{Namespace: "default", Name: "web-b", Node: "n2", Status: api.PodStatus{Events: []api.Event{ev(2*time.Hour, "Scheduled"), ev(2*time.Minute, "Started")}}},
		{Namespace: "other", Name: "db-a", Node: "n1", Status: api.PodStatus{Events: []api.Event{ev(0, "Started")}}},
	}}
	srv := newTestServer(t, store)
	tests := []struct {
		name, path string
		code       int
		want       []string // object reason, in order
		wantErr    string
	}{
		{"namespace, newest last, old ones left out", "/v1/namespaces/default/events", 200,
			[]string{"pod/web-a Scheduled", "pod/web-b Started", "pod/web-a Started"}, ""},
		{"one pod", "/v1/namespaces/default/events?object=pod/web-b", 200, []string{"pod/web-b Started"}, ""},
		{"empty namespace", "/v1/namespaces/none/events", 200, nil, ""},
		{"unknown pod", "/v1/namespaces/default/events?object=pod/web-z", 404, nil, "pod default/web-z not found"},
		{"not a pod", "/v1/namespaces/default/events?object=deployment/web", 400, nil, "only pods have events"},
		{"bad name", "/v1/namespaces/default/events?object=pod/../x", 400, nil, "pod/NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(srv, "GET", tt.path, "s3cret", "")
			if rec.Code != tt.code {
				t.Fatalf("code %d, want %d: %s", rec.Code, tt.code, rec.Body)
			}
			if tt.wantErr != "" {
				if got := errorText(t, rec); !strings.Contains(got, tt.wantErr) {
					t.Errorf("error %q, want %q", got, tt.wantErr)
				}
				return
			}
			var got []api.ObjectEvent
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got == nil {
				t.Fatalf("answer %s: %v (want a JSON list)", rec.Body, err)
			}
			var lines []string
			for _, e := range got {
				lines = append(lines, e.Object+" "+e.Reason)
			}
			if strings.Join(lines, ",") != strings.Join(tt.want, ",") {
				t.Errorf("events %q, want %q", lines, tt.want)
			}
		})
	}
}

// GET /v1/pods lists every namespace's pods (flotilla pods -A).
func TestListPodsOfEveryNamespace(t *testing.T) {
	store := &memStore{pods: []api.Pod{{Namespace: "default", Name: "web-a"}, {Namespace: "other", Name: "db-a"}}}
	srv := newTestServer(t, store)
	for path, want := range map[string]int{"/v1/pods": 2, "/v1/namespaces/other/pods": 1} {
		rec := serve(srv, "GET", path, "s3cret", "")
		var got []api.Pod
		if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != 200 || err != nil || len(got) != want {
			t.Errorf("GET %s: %d %s; want %d pods", path, rec.Code, rec.Body, want)
		}
	}
}
