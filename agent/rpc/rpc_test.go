package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
)

// cluster is a CA and the PEMs of the nodes a test needs.
type cluster struct {
	ca    *pki.CA
	caPEM []byte
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("flotilla", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{ca: ca, caPEM: certPEM}
}

func (c *cluster) issue(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := c.ca.Issue(name, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// client returns an RPC client presenting a fresh certificate for name, or
// no certificate when name is "".
func (c *cluster) client(t *testing.T, name string) *Client {
	t.Helper()
	var certPEM, keyPEM []byte
	if name != "" {
		certPEM, keyPEM = c.issue(t, name)
	}
	cfg, err := pki.ClientTLS(c.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cl := NewClient(cfg, 10*time.Second)
	t.Cleanup(cl.CloseIdleConnections)
	return cl
}

// fakeApplier records entries and answers with result.
type fakeApplier struct {
	mu      sync.Mutex
	entries [][]byte
	result  func(ctx context.Context, entry []byte) (uint64, []byte, error)
}

func (f *fakeApplier) ApplyRaw(ctx context.Context, entry []byte) (uint64, []byte, error) {
	f.mu.Lock()
	f.entries = append(f.entries, bytes.Clone(entry))
	result := f.result
	f.mu.Unlock()
	if result == nil {
		return uint64(len(f.entries)), []byte("applied"), nil
	}
	return result(ctx, entry)
}

func (f *fakeApplier) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

var _ Applier = (*fakeApplier)(nil)

type server struct {
	addr    string
	applier *fakeApplier
}

const joinToken = "0123456789abcdef"

// serve starts an RPC server for node "server-1" of c on loopback. It signs
// joins unless client is set; edit may change the config further.
func serve(t *testing.T, c *cluster, client bool, edit func(*ServerConfig)) *server {
	t.Helper()
	certPEM, keyPEM := c.issue(t, "server-1")
	tlsCfg, err := pki.ServerTLS(c.caPEM, certPEM, keyPEM, tls.VerifyClientCertIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{applier: &fakeApplier{}}
	cfg := DefaultServerConfig()
	cfg.TLS, cfg.Applier = tlsCfg, s.applier
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if !client {
		cfg.Joiner, cfg.JoinToken = c.ca, joinToken
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	})
	return s
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestApplyReachesApplier(t *testing.T) {
	c := newCluster(t)
	s := serve(t, c, false, nil)
	s.applier.result = func(_ context.Context, entry []byte) (uint64, []byte, error) {
		return 42, append([]byte("resp:"), entry...), nil
	}
	entry := []byte{0x01, 0x00, 0xff, '{', '}'} // opaque, not UTF-8
	index, resp, err := c.client(t, "client-1").Apply(testContext(t), s.addr, entry)
	if err != nil {
		t.Fatal(err)
	}
	if index != 42 || !bytes.Equal(resp, append([]byte("resp:"), entry...)) {
		t.Errorf("Apply = %d, %q; want 42, %q", index, resp, append([]byte("resp:"), entry...))
	}
	if s.applier.calls() != 1 || !bytes.Equal(s.applier.entries[0], entry) {
		t.Errorf("applier saw %q; want exactly %q", s.applier.entries, entry)
	}
}

func TestApplyRefusesPeersWithoutClusterCertificate(t *testing.T) {
	c := newCluster(t)
	s := serve(t, c, false, nil)
	impostor := newCluster(t)
	foreignCert, foreignKey := impostor.issue(t, "client-1")
	foreign, err := tls.X509KeyPair(foreignCert, foreignKey)
	if err != nil {
		t.Fatal(err)
	}
	// Trusts the right CA but presents a certificate from another one, even
	// when the server's list of acceptable CAs does not name its issuer.
	foreignTLS, err := pki.ClientTLS(c.caPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	foreignTLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	// Trusts only the other CA, so the server's certificate is unknown to it.
	wrongRoots, err := pki.ClientTLS(impostor.caPEM, foreignCert, foreignKey)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		client *Client
		want   []string
	}{
		{"no client certificate", c.client(t, ""), []string{"client certificate signed by the cluster CA is required"}},
		{"client certificate from another CA", NewClient(foreignTLS, 5*time.Second), []string{"unknown certificate authority", "same cluster CA"}},
		{"server certificate from another CA", NewClient(wrongRoots, 5*time.Second), []string{"certificate signed by unknown authority", "same cluster CA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.client.Apply(testContext(t), s.addr, []byte("x"))
			if err == nil {
				t.Fatal("Apply succeeded; want it refused")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, sentinel := range []error{state.ErrNotFound, state.ErrExists, state.ErrConflict, state.ErrNotLeader} {
				if errors.Is(err, sentinel) {
					t.Errorf("error matches %v; a refused peer must not look like a state error", sentinel)
				}
			}
			if _, err := tc.client.Ping(testContext(t), s.addr); err == nil {
				t.Error("Ping succeeded; want it refused too")
			}
			if n := s.applier.calls(); n != 0 {
				t.Errorf("applier called %d times", n)
			}
		})
	}
}

func TestApplyErrorKindsRoundTrip(t *testing.T) {
	c := newCluster(t)
	s := serve(t, c, false, nil)
	client := c.client(t, "client-1")
	sentinels := []error{state.ErrNotFound, state.ErrExists, state.ErrConflict, state.ErrNotLeader}
	for _, tc := range []struct {
		name string
		err  error
		want error // nil: no sentinel
	}{
		{"not found", fmt.Errorf("state: update deployment default/web: %w", state.ErrNotFound), state.ErrNotFound},
		{"exists", fmt.Errorf("state: create deployment default/web: %w", state.ErrExists), state.ErrExists},
		{"conflict", fmt.Errorf("state: delete deployment default/web: %w: 3 pods remain", state.ErrConflict), state.ErrConflict},
		{"not leader", fmt.Errorf("%w; the leader is 10.0.0.2:7402", state.ErrNotLeader), state.ErrNotLeader},
		{"not leader wins over what it wraps", fmt.Errorf("%w: %w", state.ErrNotLeader, state.ErrNotFound), state.ErrNotLeader},
		{"other", errors.New("raft: log store is full"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.applier.mu.Lock()
			s.applier.result = func(context.Context, []byte) (uint64, []byte, error) { return 9, []byte("encoded refusal"), tc.err }
			s.applier.mu.Unlock()
			index, resp, err := client.Apply(testContext(t), s.addr, []byte("entry"))
			if err == nil {
				t.Fatal("Apply succeeded; want the applier's error")
			}
			// A refused write was still committed: its index and the FSM's
			// answer travel with the error.
			if index != 9 || string(resp) != "encoded refusal" {
				t.Errorf("Apply = %d, %q with the error; want 9, %q", index, resp, "encoded refusal")
			}
			for _, sentinel := range sentinels {
				if got, want := errors.Is(err, sentinel), sentinel == tc.want; got != want {
					t.Errorf("errors.Is(%q, %v) = %v; want %v", err, sentinel, got, want)
				}
			}
			var re *RemoteError
			if !errors.As(err, &re) || re.Addr != s.addr {
				t.Fatalf("error %T %v is not a *RemoteError from %s", err, err, s.addr)
			}
			if tc.want != nil && err.Error() != tc.err.Error() {
				t.Errorf("message = %q; want the leader's %q unchanged", err, tc.err)
			}
			if tc.want == nil && (!strings.Contains(err.Error(), tc.err.Error()) || !strings.Contains(err.Error(), s.addr)) {
				t.Errorf("message = %q; want the leader's message and address", err)
			}
		})
	}
}

func TestApplyLimitsAndNetworkErrors(t *testing.T) {
	c := newCluster(t)
	s := serve(t, c, false, nil)
	client := c.client(t, "client-1")

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()

	for _, tc := range []struct {
		name   string
		client *Client
		addr   string
		entry  []byte
		want   []string
		is     error
	}{
		{"entry too large", client, s.addr, make([]byte, MaxEntrySize+1), []string{"larger than"}, nil},
		{"empty entry", client, s.addr, nil, []string{"empty"}, nil},
		{"unreachable leader", client, closed, []byte("x"), []string{"forward to leader at " + closed + ": ", "is it reachable?"}, nil},
		{"no leader known", client, "", []byte("x"), []string{"no leader"}, state.ErrNotLeader},
		{"address without port", client, "127.0.0.1", []byte("x"), []string{"host:port"}, nil},
		{"client without TLS", NewClient(nil, time.Second), s.addr, []byte("x"), []string{"no TLS configuration"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.client.Apply(testContext(t), tc.addr, tc.entry)
			if err == nil {
				t.Fatal("Apply succeeded; want an error")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Apply error %q does not contain %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
	if n := s.applier.calls(); n != 0 {
		t.Errorf("applier called %d times", n)
	}
}

func TestApplyTimeout(t *testing.T) {
	c := newCluster(t)
	s := serve(t, c, false, func(cfg *ServerConfig) { cfg.ApplyTimeout = 50 * time.Millisecond })
	// A leader whose raft cannot commit (no quorum) blocks until its context ends.
	s.applier.result = func(ctx context.Context, _ []byte) (uint64, []byte, error) {
		<-ctx.Done()
		return 0, nil, fmt.Errorf("state: apply: %w", ctx.Err())
	}
	_, _, err := c.client(t, "client-1").Apply(testContext(t), s.addr, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "not committed within 50ms") {
		t.Fatalf("Apply error = %v; want the leader's ApplyTimeout explained", err)
	}

	// A client that gives up first says the write may still happen.
	slow := serve(t, c, false, nil)
	slow.applier.result = s.applier.result
	certPEM, keyPEM := c.issue(t, "client-1")
	cfg, err := pki.ClientTLS(c.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	impatient := NewClient(cfg, 50*time.Millisecond)
	_, _, err = impatient.Apply(testContext(t), slow.addr, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "may still have taken effect") {
		t.Fatalf("Apply error = %v; want a client timeout that warns the write may still apply", err)
	}
}

func TestPing(t *testing.T) {
	c := newCluster(t)
	s := serve(t, c, false, nil)
	name, err := c.client(t, "client-1").Ping(testContext(t), s.addr)
	if err != nil || name != "server-1" {
		t.Fatalf("Ping = %q, %v; want server-1", name, err)
	}
	// The server's certificate names 127.0.0.1 and localhost.
	_, port, _ := net.SplitHostPort(s.addr)
	if name, err := c.client(t, "client-1").Ping(testContext(t), net.JoinHostPort("localhost", port)); err != nil || name != "server-1" {
		t.Fatalf("Ping via localhost = %q, %v", name, err)
	}
}

func TestJoin(t *testing.T) {
	c := newCluster(t)
	s := serve(t, c, false, nil)
	clientNode := serve(t, c, true, nil)
	impostor := newCluster(t)
	joiner := NewClient(nil, 10*time.Second)
	ips := []net.IP{net.ParseIP("10.9.8.7")}

	t.Run("right token", func(t *testing.T) {
		certPEM, keyPEM, err := joiner.Join(testContext(t), s.addr, c.caPEM, joinToken+"\n", "client-7", ips)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := pki.ClientTLS(c.caPEM, certPEM, keyPEM)
		if err != nil {
			t.Fatalf("joined certificate: %v", err)
		}
		if cn := cfg.Certificates[0].Leaf.Subject.CommonName; cn != "client-7" {
			t.Errorf("joined certificate is for %q", cn)
		}
		if san := cfg.Certificates[0].Leaf.IPAddresses; len(san) == 0 || !san[len(san)-1].Equal(ips[0]) {
			t.Errorf("joined certificate IP SANs %v lack %v", san, ips[0])
		}
		// The new certificate is a full member: it can forward writes.
		client := NewClient(cfg, 10*time.Second)
		t.Cleanup(client.CloseIdleConnections)
		if _, _, err := client.Apply(testContext(t), s.addr, []byte("after join")); err != nil {
			t.Fatalf("Apply with the joined certificate: %v", err)
		}
		// And it can serve: another agent verifies it as a server.
		if _, err := pki.ServerTLS(c.caPEM, certPEM, keyPEM, tls.VerifyClientCertIfGiven); err != nil {
			t.Errorf("joined certificate cannot serve: %v", err)
		}
	})

	for _, tc := range []struct {
		name  string
		addr  string
		caPEM []byte
		token string
		want  string
		is    error
	}{
		{"wrong token", s.addr, c.caPEM, "not-the-token", "join token rejected: check the token flotilla_cluster generated", ErrJoinTokenRejected},
		{"no token", s.addr, c.caPEM, "", "join token rejected", ErrJoinTokenRejected},
		{"agent that is not a server", clientNode.addr, c.caPEM, joinToken, "not a server", nil},
		{"server from another CA", s.addr, impostor.caPEM, joinToken, "unknown authority", nil},
		{"no CA", s.addr, nil, joinToken, "no CA certificate", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := joiner.Join(testContext(t), tc.addr, tc.caPEM, tc.token, "client-8", nil)
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Join error = %v; want one containing %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

func TestNewServerValidates(t *testing.T) {
	c := newCluster(t)
	certPEM, keyPEM := c.issue(t, "server-1")
	tlsFor := func(auth tls.ClientAuthType) *tls.Config {
		cfg, err := pki.ServerTLS(c.caPEM, certPEM, keyPEM, auth)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	applier := &fakeApplier{}
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		want string // "" for success
	}{
		{"server", ServerConfig{TLS: tlsFor(tls.VerifyClientCertIfGiven), Applier: applier, Joiner: c.ca, JoinToken: "t"}, ""},
		{"client", ServerConfig{TLS: tlsFor(tls.VerifyClientCertIfGiven), Applier: applier}, ""},
		{"client requiring certificates", ServerConfig{TLS: tlsFor(tls.RequireAndVerifyClientCert), Applier: applier}, ""},
		{"no TLS", ServerConfig{Applier: applier}, "TLS"},
		{"TLS without certificate", ServerConfig{TLS: &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven}, Applier: applier}, "node certificate"},
		{"client certificates not verified", ServerConfig{TLS: tlsFor(tls.RequestClientCert), Applier: applier}, "verify client certificates"},
		{"no client certificates", ServerConfig{TLS: tlsFor(tls.NoClientCert), Applier: applier}, "verify client certificates"},
		{"signing server requiring certificates", ServerConfig{TLS: tlsFor(tls.RequireAndVerifyClientCert), Applier: applier, Joiner: c.ca, JoinToken: "t"}, "VerifyClientCertIfGiven"},
		{"no applier", ServerConfig{TLS: tlsFor(tls.VerifyClientCertIfGiven)}, "Applier"},
		{"signing server without token", ServerConfig{TLS: tlsFor(tls.VerifyClientCertIfGiven), Applier: applier, Joiner: c.ca, JoinToken: " \n"}, "join token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewServer error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}
