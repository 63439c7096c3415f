package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestClientCACert checks that CACertPEM makes the client trust exactly that
// CA: an agent whose certificate it signed answers, and the same agent is
// refused without it.
func TestClientCACert(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`[{"name":"n1","address":"10.0.0.1","status":"ready","server":true}]`))
	}))
	t.Cleanup(srv.Close)
	// httptest's certificate is self-signed: it is its own CA.
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := NewClient(&Config{Address: srv.URL, Token: "tok", CACertPEM: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	if c.hc.Timeout != 30*time.Second {
		t.Errorf("timeout = %s, want the default 30s", c.hc.Timeout)
	}
	nodes, err := c.ListNodes(ctx)
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	if len(nodes) != 1 || nodes[0].Name != "n1" || !nodes[0].Server {
		t.Errorf("nodes = %+v", nodes)
	}

	without, err := NewClient(&Config{Address: srv.URL, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = without.ListNodes(ctx)
	var unknownAuthority x509.UnknownAuthorityError
	if !errors.As(err, &unknownAuthority) {
		t.Errorf("without the CA: err = %v, want an unknown authority error", err)
	}
}

func TestClientCACertRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"not PEM", Config{Address: "https://10.0.0.1:7400", CACertPEM: []byte("not a certificate")}, "no PEM-encoded certificate"},
		{"with HTTPClient", Config{Address: "https://10.0.0.1:7400", CACertPEM: []byte("x"), HTTPClient: &http.Client{}}, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(&tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
