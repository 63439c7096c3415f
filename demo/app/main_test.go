package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlers(t *testing.T) {
	srv := httptest.NewServer(newMux("v9", "host-1"))
	defer srv.Close()
	tests := []struct {
		path       string
		wantStatus int
		wantPrefix string
	}{
		{"/", http.StatusOK, "flotilla-demo version=v9 hostname=host-1 ip="},
		{"/healthz", http.StatusOK, "ok"},
		{"/hostname", http.StatusOK, "host-1\n"},
		{"/nope", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := srv.Client().Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || !strings.HasPrefix(string(body), tt.wantPrefix) {
				t.Errorf("GET %s = %d %q, want %d %q...", tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantPrefix)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	t.Setenv("EXIT_CODE", "4")
	if got := run(); got != 4 {
		t.Errorf("run() = %d, want 4", got)
	}
}

func TestCrashAfter(t *testing.T) {
	t.Setenv("PORT", "0")
	t.Setenv("CRASH_AFTER", "10ms")
	if got := run(); got != 3 {
		t.Errorf("run() = %d, want 3", got)
	}
}

func TestReadyToggle(t *testing.T) {
	srv := httptest.NewServer(newMux("v1", "host-1"))
	defer srv.Close()
	c := srv.Client()
	call := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	steps := []struct {
		method, path string
		wantStatus   int
		wantBody     string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"POST", "/ready?ok=false", 200, "ready=false"},
		{"GET", "/healthz", 503, "not ready"},
		{"GET", "/hostname", 200, "host-1"}, // still serving: only readiness fails
		{"POST", "/ready?ok=maybe", 400, "ok must be true or false"},
		{"GET", "/healthz", 503, "not ready"},
		{"POST", "/ready?ok=true", 200, "ready=true"},
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/ready?ok=false", 405, "Method Not Allowed"},
	}
	for _, s := range steps {
		if code, body := call(s.method, s.path); code != s.wantStatus || body != s.wantBody {
			t.Errorf("%s %s = %d %q, want %d %q", s.method, s.path, code, body, s.wantStatus, s.wantBody)
		}
	}
}
