package node

import (
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

func TestCheckPodNames(t *testing.T) {
	pod := func(ns, name string, containers ...string) *api.Pod {
		p := &api.Pod{Namespace: ns, Name: name}
		for _, c := range containers {
			p.Containers = append(p.Containers, api.Container{Name: c, Image: "demo:v1"})
		}
		return p
	}
	tests := []struct {
		name    string
		pod     *api.Pod
		wantErr string // empty: valid
	}{
		{"ordinary", pod("default", "web-6f9c7d5b8a", "app", "sidecar"), ""},
		{"63-char pod name", pod("default", strings.Repeat("p", 63), "app"), ""},
		{"52-char namespace and container", pod(strings.Repeat("n", 52), "web", strings.Repeat("c", 52)), ""},
		{"traversal in namespace", pod("../../etc", "web", "app"), "namespace:"},
		{"traversal in pod name", pod("default", "../../etc", "app"), "name:"},
		{"traversal in container", pod("default", "web", "../../etc/cron.d/x"), "containers[0].name:"},
		{"slash in namespace", pod("a/b", "web", "app"), "namespace:"},
		{"slash in pod name", pod("default", "a/b", "app"), "name:"},
		{"slash in container", pod("default", "web", "a/b"), "containers[0].name:"},
		{"dot-dot pod name", pod("default", "..", "app"), "name:"},
		{"NUL in pod name", pod("default", "web\x00x", "app"), "name:"},
		{"upper case namespace", pod("Default", "web", "app"), "namespace:"},
		{"upper case pod name", pod("default", "Web", "app"), "name:"},
		{"upper case container", pod("default", "web", "App"), "containers[0].name:"},
		{"underscore pod name", pod("default", "a_b", "app"), "name:"},
		{"64-char pod name", pod("default", strings.Repeat("p", 64), "app"), "at most 63"},
		{"64-char namespace", pod(strings.Repeat("n", 64), "web", "app"), "namespace:"},
		{"53-char namespace", pod(strings.Repeat("n", 53), "web", "app"), "at most 52"},
		{"64-char container", pod("default", "web", strings.Repeat("c", 64)), "containers[0].name:"},
		{"empty namespace", pod("", "web", "app"), "namespace: must not be empty"},
		{"empty pod name", pod("default", "", "app"), "name: must not be empty"},
		{"empty container name", pod("default", "web", "app", ""), "containers[1].name: must not be empty"},
		{"duplicate container", pod("default", "web", "app", "app"), "containers[1].name: \"app\" is used by another container"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPodNames(tt.pod)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("want error containing %q, got none", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

// TestCheckPodNamesReportsAll shows every bad name at once, so an operator
// reading the pod's status sees the whole problem.
func TestCheckPodNamesReportsAll(t *testing.T) {
	err := checkPodNames(&api.Pod{Namespace: "../x", Name: "A/B", Containers: []api.Container{{Name: "ok"}, {Name: "../log"}}})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"namespace:", "name:", "containers[1].name:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
