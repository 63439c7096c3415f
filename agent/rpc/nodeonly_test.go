package rpc

import (
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/agent/pki"
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

// checkWrongNodeRefused checks that a server asking client node c1's
// address for node c2 (open) fails the handshake, naming the node, before
// anything reaches c1's containers (served counts what did).
func checkWrongNodeRefused(t *testing.T, open func(node string) error, served func() int) {
	t.Helper()
	before := served()
	if err := open("c2"); err == nil || !strings.Contains(err.Error(), "not node c2") {
		t.Fatalf("asking c1's address for node c2: %v", err)
	}
	if served() != before {
		t.Fatal("the request reached the wrong node")
	}
}

// checkClientCertsRefused checks that client node c1's endpoint refuses,
// at the handshake, another client node's certificate (what an attacker on
// a client VM holds) and c1's own: open asks it presenting kp.
func checkClientCertsRefused(t *testing.T, c *testCA, open func(kp *pki.Keypair) error) {
	t.Helper()
	for _, kp := range []*pki.Keypair{c.client(t, "c2", loopback), c.client(t, "c1", loopback)} {
		if err := open(kp); err == nil {
			t.Errorf("%s was served by c1", kp.Identity())
		}
	}
}
