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
