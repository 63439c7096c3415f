package rpc

import (
	"net/http"
	"testing"
)

// checkServersOnly checks that a server's node-only endpoint at url
// refuses what is not a server's certificate: none, or a client's, with
// the API token or without (servers accept client certificates, to serve
// writes and watches).
func checkServersOnly(t *testing.T, c *testCA, url string) {
	t.Helper()
	for _, tc := range []struct {
		name  string
		hc    *http.Client
		token string
		code  int
	}{
		{"no certificate", c.anonymous(t), "", http.StatusUnauthorized},
		{"a client's certificate", httpClient(t, c.client(t, "c1", loopback).ClientTLS(nil)), "", http.StatusForbidden},
		{"a client's certificate and the API token", httpClient(t, c.client(t, "c1", loopback).ClientTLS(nil)), apiToken, http.StatusForbidden},
	} {
		if code, body := do(t, tc.hc, http.MethodGet, url, nil, tc.token); code != tc.code {
			t.Errorf("%s: HTTP %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
}
