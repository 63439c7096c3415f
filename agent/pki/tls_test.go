package pki

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs a real TLS handshake over net.Pipe and one byte from server
// to client, so a client certificate the server refuses (which TLS 1.3
// reports only after the client's handshake returns) shows up too.
func handshake(t *testing.T, server, client *tls.Config, serverName string) (serverErr, clientErr error) {
	t.Helper()
	r := handshakeStates(t, server, client, serverName)
	return r.serverErr, r.clientErr
}

// handshakeResult is what each side of a handshake saw.
type handshakeResult struct {
	server, client       tls.ConnectionState
	serverErr, clientErr error
}

// handshakeStates is handshake, returning both sides' connection states too.
func handshakeStates(t *testing.T, server, client *tls.Config, serverName string) handshakeResult {
	t.Helper()
	sc, cc := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	_ = sc.SetDeadline(deadline)
	_ = cc.SetDeadline(deadline)
	t.Cleanup(func() { _ = sc.Close(); _ = cc.Close() })

	client = client.Clone()
	client.ServerName = serverName
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		srv := tls.Server(sc, server)
		err := srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte{1})
		}
		st := srv.ConnectionState()
		_ = sc.Close()
		done <- result{st, err}
	}()
	var r handshakeResult
	cl := tls.Client(cc, client)
	r.clientErr = cl.Handshake()
	if r.clientErr == nil {
		_, r.clientErr = cl.Read(make([]byte, 1))
	}
	r.client = cl.ConnectionState()
	_ = cc.Close()
	sr := <-done
	r.server, r.serverErr = sr.state, sr.err
	return r
}

// rawTLS builds a config without the start-up checks of ServerTLS and
// friends, to play a misconfigured, out-of-date or hostile peer. As a client
// it sends its certificate even when the server's list of acceptable CAs
// does not name its issuer (crypto/tls would otherwise send none).
func rawTLS(t *testing.T, caPEM, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	pool, err := certPool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	if certPEM != nil {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg
}

func TestHandshake(t *testing.T) {
	ca := newTestCA(t, "cluster")
	other := newTestCA(t, "impostor")
	issue := func(ca *testCA, name string, at time.Time, validity time.Duration) (certPEM, keyPEM []byte) {
		t.Helper()
		issuer := *ca.CA
		issuer.now = func() time.Time { return at }
		certPEM, keyPEM, err := issuer.Issue(name, []net.IP{net.ParseIP("10.0.0.1")}, nil, validity)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM, keyPEM
	}
	now := time.Now()
	srvCert, srvKey := issue(ca, "server-1", now, time.Hour)
	cliCert, cliKey := issue(ca, "client-1", now, time.Hour)
	foreignCert, foreignKey := issue(other, "server-1", now, time.Hour)
	expiredCert, expiredKey := issue(ca, "server-1", now.Add(-3*time.Hour), time.Hour)
	futureCert, futureKey := issue(ca, "server-1", now.Add(time.Hour), time.Hour)

	must := func(c *tls.Config, err error) *tls.Config {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	peerServer := must(PeerTLS(ca.certPEM, srvCert, srvKey))
	optionalServer := must(ServerTLS(ca.certPEM, srvCert, srvKey, tls.VerifyClientCertIfGiven))
	peerClient := must(PeerTLS(ca.certPEM, cliCert, cliKey))
	client := must(ClientTLS(ca.certPEM, cliCert, cliKey))
	anonClient := must(ClientTLS(ca.certPEM, nil, nil))

	for _, tc := range []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		serverName string
		want       string // "" for success; else a substring of either side's error
	}{
		{"peer to peer by node name", peerServer, peerClient, "server-1", ""},
		{"peer to peer by IP SAN", peerServer, peerClient, "10.0.0.1", ""},
		{"peer to peer by localhost", peerServer, peerClient, "localhost", ""},
		{"client certificate to an optional-auth server", optionalServer, client, "server-1", ""},
		{"no certificate to an optional-auth server", optionalServer, anonClient, "server-1", ""},
		{"no certificate to a peer", peerServer, anonClient, "server-1", "certificate"},
		{"client certificate from another CA", optionalServer, rawTLS(t, ca.certPEM, foreignCert, foreignKey), "server-1", "unknown certificate authority"},
		{"client certificate from another CA to a peer", peerServer, rawTLS(t, ca.certPEM, foreignCert, foreignKey), "server-1", "unknown certificate authority"},
		{"server certificate from another CA", rawTLS(t, other.certPEM, foreignCert, foreignKey), peerClient, "server-1", "unknown authority"},
		{"expired server certificate", rawTLS(t, ca.certPEM, expiredCert, expiredKey), peerClient, "server-1", "expired"},
		{"not yet valid server certificate", rawTLS(t, ca.certPEM, futureCert, futureKey), peerClient, "server-1", "not yet valid"},
		{"expired client certificate", peerServer, rawTLS(t, ca.certPEM, expiredCert, expiredKey), "server-1", "expired"},
		{"dialed host not in the SANs", peerServer, peerClient, "server-2", "server-2"},
		{"dialed IP not in the SANs", peerServer, peerClient, "10.0.0.2", "10.0.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverErr, clientErr := handshake(t, tc.server, tc.client, tc.serverName)
			if tc.want == "" {
				if serverErr != nil || clientErr != nil {
					t.Fatalf("handshake failed: server: %v; client: %v", serverErr, clientErr)
				}
				return
			}
			err := errors.Join(serverErr, clientErr)
			if serverErr == nil || clientErr == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want both sides to fail, mentioning %q; server: %v; client: %v", tc.want, serverErr, clientErr)
			}
		})
	}
}

func TestTLSConfigs(t *testing.T) {
	ca := newTestCA(t, "cluster")
	other := newTestCA(t, "impostor")
	cert, key, err := ca.Issue("n", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey, err := other.Issue("n", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired := *ca.CA
	expired.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	oldCert, oldKey, err := expired.Issue("n", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		make func() (*tls.Config, error)
		want string // "" for success
	}{
		{"server", func() (*tls.Config, error) { return ServerTLS(ca.certPEM, cert, key, tls.RequireAndVerifyClientCert) }, ""},
		{"client with certificate", func() (*tls.Config, error) { return ClientTLS(ca.certPEM, cert, key) }, ""},
		{"client without certificate", func() (*tls.Config, error) { return ClientTLS(ca.certPEM, nil, nil) }, ""},
		{"peer", func() (*tls.Config, error) { return PeerTLS(ca.certPEM, cert, key) }, ""},
		{"no CA", func() (*tls.Config, error) { return ClientTLS(nil, nil, nil) }, "no CA certificate"},
		{"client with a certificate but no key", func() (*tls.Config, error) { return ClientTLS(ca.certPEM, cert, nil) }, "both"},
		{"key of another certificate", func() (*tls.Config, error) { return PeerTLS(ca.certPEM, cert, foreignKey) }, "key"},
		{"certificate from another CA", func() (*tls.Config, error) { return ServerTLS(ca.certPEM, foreignCert, foreignKey, tls.NoClientCert) }, "does not verify"},
		{"expired certificate", func() (*tls.Config, error) { return PeerTLS(ca.certPEM, oldCert, oldKey) }, "expired"},
		{"bad client auth type", func() (*tls.Config, error) { return ServerTLS(ca.certPEM, cert, key, tls.ClientAuthType(42)) }, "client auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.make()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.MinVersion != tls.VersionTLS13 {
					t.Errorf("MinVersion = %x; want TLS 1.3", cfg.MinVersion)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}
