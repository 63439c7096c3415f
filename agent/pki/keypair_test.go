package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// node is a certificate and key the test CA issued.
type node struct{ certPEM, keyPEM []byte }

func issueServer(t *testing.T, ca *CA, name string, ip string) node {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueServer(name, ips(ip), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return node{certPEM, keyPEM}
}

func joinClient(t *testing.T, ca *CA, name string, ip string) node {
	t.Helper()
	csrPEM, keyPEM, err := NewCSR(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignJoin(csrPEM, name, net.ParseIP(ip), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return node{certPEM, keyPEM}
}

func renew(t *testing.T, ca *CA, k *Keypair) node {
	t.Helper()
	csrPEM, keyPEM, err := NewCSR(k.Identity().Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Renew(k.Identity(), csrPEM, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return node{certPEM, keyPEM}
}

func newKeypair(t *testing.T, caPEM []byte, n node) *Keypair {
	t.Helper()
	k, err := NewKeypair(caPEM, n.certPEM, n.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewKeypair(t *testing.T) {
	ca := newTestCA(t, "cluster")
	other := newTestCA(t, "impostor")
	srv := issueServer(t, ca.CA, "node1", "10.0.0.1")
	k := newKeypair(t, ca.certPEM, srv)
	if id := k.Identity(); id.String() != "server/node1" || len(id.IPs) != 1 || !id.IPs[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("Identity = %s %v; want server/node1 10.0.0.1", id, id.IPs)
	}
	if !bytes.Equal(k.CertPEM(), srv.certPEM) || !bytes.Equal(k.KeyPEM(), srv.keyPEM) || !bytes.Equal(k.CAPEM(), ca.certPEM) {
		t.Error("CertPEM, KeyPEM or CAPEM differ from what NewKeypair was given")
	}
	if k.Leaf() == nil || k.Leaf().SerialNumber.Cmp(k.Identity().Serial) != 0 {
		t.Error("Leaf is not the certificate")
	}
	// Accessors hand out copies.
	k.Identity().IPs[0][0] = 99
	k.CertPEM()[0] = 'x'
	if !k.Identity().IPs[0].Equal(net.ParseIP("10.0.0.1")) || k.CertPEM()[0] != '-' {
		t.Error("changing what an accessor returned changed the keypair")
	}

	foreign := issueServer(t, other.CA, "node1", "10.0.0.1")
	expired := issueServer(t, at(ca.CA, time.Now().Add(-3*time.Hour)), "node1", "10.0.0.1")
	notYet := issueServer(t, at(ca.CA, time.Now().Add(time.Hour)), "node1", "10.0.0.1")
	oldStyle, oldKey, err := ca.Issue("node1", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                   string
		caPEM, certPEM, keyPEM []byte
		want                   string
	}{
		{"no CA", nil, srv.certPEM, srv.keyPEM, "no CA certificate"},
		{"certificate from another CA", ca.certPEM, foreign.certPEM, foreign.keyPEM, "does not verify"},
		{"key of another certificate", ca.certPEM, srv.certPEM, foreign.keyPEM, "key"},
		{"expired certificate", ca.certPEM, expired.certPEM, expired.keyPEM, "expired"},
		{"not yet valid certificate", ca.certPEM, notYet.certPEM, notYet.keyPEM, "not yet valid"},
		{"certificate without an identity (Issue)", ca.certPEM, oldStyle, oldKey, "not a flotilla node certificate"},
		{"garbage", ca.certPEM, []byte("nope"), []byte("nope"), "node certificate and key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewKeypair(tc.caPEM, tc.certPEM, tc.keyPEM)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewKeypair error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestKeypairSetRefuses(t *testing.T) {
	ca := newTestCA(t, "cluster")
	other := newTestCA(t, "impostor")
	srv := issueServer(t, ca.CA, "node1", "10.0.0.1")
	k := newKeypair(t, ca.certPEM, srv)
	otherName := issueServer(t, ca.CA, "node2", "10.0.0.1")
	otherRole := joinClient(t, ca.CA, "node1", "10.0.0.1")
	foreign := issueServer(t, other.CA, "node1", "10.0.0.1")
	expired := issueServer(t, at(ca.CA, time.Now().Add(-3*time.Hour)), "node1", "10.0.0.1")
	for _, tc := range []struct {
		name string
		n    node
		want string
	}{
		{"another name", otherName, "is for server/node2 but this node is server/node1"},
		{"another role", otherRole, "is for client/node1 but this node is server/node1"},
		{"certificate from another CA", foreign, "does not verify"},
		{"expired certificate", expired, "expired"},
		{"key of another certificate", node{otherName.certPEM, srv.keyPEM}, "key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k.Set(tc.n.certPEM, tc.n.keyPEM)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Set error = %v; want one containing %q", err, tc.want)
			}
			if !bytes.Equal(k.CertPEM(), srv.certPEM) {
				t.Fatal("a refused Set replaced the certificate")
			}
		})
	}
}

// TestKeypairSetRotates renews both ends of a connection and checks the
// next handshake over the same configurations presents the new certificates.
func TestKeypairSetRotates(t *testing.T) {
	ca := newTestCA(t, "cluster")
	srv := newKeypair(t, ca.certPEM, issueServer(t, ca.CA, "node1", "10.0.0.1"))
	cli := newKeypair(t, ca.certPEM, joinClient(t, ca.CA, "web-1", "10.0.0.7"))
	serverCfg := srv.ServerTLS(tls.RequireAndVerifyClientCert, RequireRole(RoleClient))
	clientCfg := cli.ClientTLS(RequireNode(RoleServer, "node1"))
	peerCfg := srv.PeerTLS(nil)

	check := func(step string) {
		t.Helper()
		r := handshakeStates(t, serverCfg, clientCfg, "10.0.0.1")
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("%s: handshake failed: server: %v; client: %v", step, r.serverErr, r.clientErr)
		}
		srvID, ok := PeerIdentity(&r.client)
		if !ok || srvID.Serial.Cmp(srv.Identity().Serial) != 0 {
			t.Errorf("%s: the server presented serial %v; want %v", step, srvID.Serial, srv.Identity().Serial)
		}
		cliID, ok := PeerIdentity(&r.server)
		if !ok || cliID.Serial.Cmp(cli.Identity().Serial) != 0 {
			t.Errorf("%s: the client presented serial %v; want %v", step, cliID.Serial, cli.Identity().Serial)
		}
		// PeerTLS presents the current certificate both ways.
		r = handshakeStates(t, peerCfg, peerCfg, "10.0.0.1")
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("%s: peer handshake failed: server: %v; client: %v", step, r.serverErr, r.clientErr)
		}
		for side, cs := range map[string]*tls.ConnectionState{"dialing": &r.client, "accepting": &r.server} {
			if id, ok := PeerIdentity(cs); !ok || id.Serial.Cmp(srv.Identity().Serial) != 0 {
				t.Errorf("%s: the %s peer saw serial %v; want %v", step, side, id.Serial, srv.Identity().Serial)
			}
		}
	}
	check("before renewal")
	oldSrv, oldCli := srv.Identity().Serial, cli.Identity().Serial

	for _, k := range []*Keypair{srv, cli} {
		n := renew(t, ca.CA, k)
		if err := k.Set(n.certPEM, n.keyPEM); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.CertPEM(), n.certPEM) || !bytes.Equal(k.KeyPEM(), n.keyPEM) {
			t.Fatal("Set did not replace the certificate and key")
		}
	}
	if srv.Identity().Serial.Cmp(oldSrv) == 0 || cli.Identity().Serial.Cmp(oldCli) == 0 {
		t.Fatal("renewal kept a serial")
	}
	check("after renewal")
}

func TestKeypairHandshake(t *testing.T) {
	ca := newTestCA(t, "cluster")
	other := newTestCA(t, "impostor")
	srv1 := newKeypair(t, ca.certPEM, issueServer(t, ca.CA, "node1", "10.0.0.1"))
	srv2 := newKeypair(t, ca.certPEM, issueServer(t, ca.CA, "node2", "10.0.0.2"))
	removedAt := time.Now().Add(time.Minute) // web-1's certificate was issued before
	cli := newKeypair(t, ca.certPEM, joinClient(t, ca.CA, "web-1", "10.0.0.7"))
	cli2 := newKeypair(t, ca.certPEM, joinClient(t, ca.CA, "web-2", "10.0.0.8"))
	joinCfg, err := JoinTLS(ca.certPEM)
	if err != nil {
		t.Fatal(err)
	}
	oldCert, oldKey, err := ca.Issue("node1", ips("10.0.0.1"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := issueServer(t, other.CA, "node1", "10.0.0.1")

	refuseAll := func(Identity) error { return errors.New("no clients today") }
	notRemoved := func(id Identity) error {
		if id.Name == "web-1" && id.IssuedBefore(removedAt) {
			return errors.New("web-1 was removed from the cluster")
		}
		return nil
	}
	servers := RequireRole(RoleServer)

	for _, tc := range []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		serverName string
		want       string // "" for success; else a substring of either side's error
		wantPeer   string // on success, the client identity the server saw ("" for none)
	}{
		{"raft peers", srv1.PeerTLS(servers), srv2.PeerTLS(servers), "10.0.0.1", "", "server/node2"},
		{"client certificate where servers only may connect", srv1.PeerTLS(servers), cli.PeerTLS(nil), "10.0.0.1", "only a server may connect here", ""},
		{"server certificate where only clients may connect", cli.PeerTLS(RequireRole(RoleClient)), srv1.PeerTLS(nil), "10.0.0.7", "only a client may connect here", ""},
		{"client to server, any identity", srv1.ServerTLS(tls.RequireAndVerifyClientCert, nil), cli.ClientTLS(nil), "10.0.0.1", "", "client/web-1"},
		{"client to the server it meant", srv1.ServerTLS(tls.VerifyClientCertIfGiven, nil), cli.ClientTLS(RequireNode(RoleServer, "node1")), "10.0.0.1", "", "client/web-1"},
		{"server refuses every client", srv1.ServerTLS(tls.RequireAndVerifyClientCert, refuseAll), cli.ClientTLS(nil), "10.0.0.1", "no clients today", ""},
		{"server refuses a removed node", srv1.ServerTLS(tls.VerifyClientCertIfGiven, notRemoved), cli.ClientTLS(nil), "10.0.0.1", "web-1 was removed", ""},
		{"server accepts another node", srv1.ServerTLS(tls.VerifyClientCertIfGiven, notRemoved), cli2.ClientTLS(nil), "10.0.0.1", "", "client/web-2"},
		{"client refuses the wrong server", srv1.ServerTLS(tls.VerifyClientCertIfGiven, nil), cli.ClientTLS(RequireNode(RoleServer, "node2")), "10.0.0.1", "not server/node2", ""},
		{"client refuses a client posing as a server", cli2.ServerTLS(tls.VerifyClientCertIfGiven, nil), cli.ClientTLS(servers), "10.0.0.8", "only a server", ""},
		{"dialed IP not in the server's SANs", srv1.ServerTLS(tls.VerifyClientCertIfGiven, nil), cli.ClientTLS(nil), "10.0.0.2", "10.0.0.2", ""},
		{"node name is not a host name", srv1.ServerTLS(tls.VerifyClientCertIfGiven, nil), cli.ClientTLS(nil), "node1", "node1", ""},
		{"joining agent without a certificate", srv1.ServerTLS(tls.VerifyClientCertIfGiven, refuseAll), joinCfg, "10.0.0.1", "", ""},
		{"joining agent where a certificate is required", srv1.ServerTLS(tls.RequireAndVerifyClientCert, nil), joinCfg, "10.0.0.1", "certificate", ""},
		{"joining agent to a client", cli.ServerTLS(tls.VerifyClientCertIfGiven, nil), joinCfg, "10.0.0.7", "only a server", ""},
		{"joining agent to a server of another CA", rawTLS(t, other.certPEM, foreign.certPEM, foreign.keyPEM), joinCfg, "10.0.0.1", "unknown authority", ""},
		{"client certificate without an identity", srv1.ServerTLS(tls.VerifyClientCertIfGiven, nil), rawTLS(t, ca.certPEM, oldCert, oldKey), "10.0.0.1", "not a flotilla node certificate", ""},
		{"server certificate without an identity", rawTLS(t, ca.certPEM, oldCert, oldKey), cli.ClientTLS(nil), "10.0.0.1", "not a flotilla node certificate", ""},
		{"client certificate from another CA", srv1.ServerTLS(tls.VerifyClientCertIfGiven, nil), rawTLS(t, ca.certPEM, foreign.certPEM, foreign.keyPEM), "10.0.0.1", "unknown certificate authority", ""},
		{"unverified client certificate", srv1.ServerTLS(tls.RequestClientCert, nil), cli.ClientTLS(nil), "10.0.0.1", "not verified", ""},
		{"no client certificate asked for", srv1.ServerTLS(tls.NoClientCert, refuseAll), cli.ClientTLS(nil), "10.0.0.1", "", ""},
		{"unknown client auth type", srv1.ServerTLS(tls.ClientAuthType(42), nil), cli.ClientTLS(nil), "10.0.0.1", "client auth type", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := handshakeStates(t, tc.server, tc.client, tc.serverName)
			if tc.want == "" {
				if r.serverErr != nil || r.clientErr != nil {
					t.Fatalf("handshake failed: server: %v; client: %v", r.serverErr, r.clientErr)
				}
				id, ok := PeerIdentity(&r.server)
				if got := map[bool]string{true: id.String()}[ok]; got != tc.wantPeer {
					t.Errorf("the server saw client %q; want %q", got, tc.wantPeer)
				}
				return
			}
			err := errors.Join(r.serverErr, r.clientErr)
			if r.serverErr == nil || r.clientErr == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want both sides to fail, mentioning %q; server: %v; client: %v", tc.want, r.serverErr, r.clientErr)
			}
		})
	}
}

func TestJoinTLS(t *testing.T) {
	if _, err := JoinTLS([]byte("nope")); err == nil || !strings.Contains(err.Error(), "no CA certificate") {
		t.Errorf("JoinTLS without a CA: %v; want an error saying so", err)
	}
	ca := newTestCA(t, "cluster")
	cfg, err := JoinTLS(ca.certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ServerName != "" || len(cfg.Certificates) != 0 || cfg.GetClientCertificate != nil || cfg.InsecureSkipVerify {
		t.Errorf("JoinTLS config: MinVersion %x, ServerName %q, %d certificates, InsecureSkipVerify %v", cfg.MinVersion, cfg.ServerName, len(cfg.Certificates), cfg.InsecureSkipVerify)
	}
}

func TestKeypairConfigs(t *testing.T) {
	ca := newTestCA(t, "cluster")
	k := newKeypair(t, ca.certPEM, issueServer(t, ca.CA, "node1", "10.0.0.1"))
	for _, tc := range []struct {
		name       string
		cfg        *tls.Config
		clientAuth tls.ClientAuthType
	}{
		{"server", k.ServerTLS(tls.VerifyClientCertIfGiven, nil), tls.VerifyClientCertIfGiven},
		{"client", k.ClientTLS(nil), tls.NoClientCert},
		{"peer", k.PeerTLS(nil), tls.RequireAndVerifyClientCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.MinVersion != tls.VersionTLS13 {
				t.Errorf("MinVersion = %x; want TLS 1.3", tc.cfg.MinVersion)
			}
			if tc.cfg.ServerName != "" || tc.cfg.InsecureSkipVerify {
				t.Errorf("ServerName %q, InsecureSkipVerify %v; want empty, false", tc.cfg.ServerName, tc.cfg.InsecureSkipVerify)
			}
			if len(tc.cfg.Certificates) != 0 {
				t.Error("static Certificates would not follow renewals")
			}
			if tc.cfg.ClientAuth != tc.clientAuth {
				t.Errorf("ClientAuth = %v; want %v", tc.cfg.ClientAuth, tc.clientAuth)
			}
		})
	}
}

func TestPeerIdentity(t *testing.T) {
	ca := newTestCA(t, "cluster")
	k := newKeypair(t, ca.certPEM, issueServer(t, ca.CA, "node1", "10.0.0.1"))
	old := mustParseCert(t, mustIssue(t, ca.CA))
	for _, tc := range []struct {
		name string
		cs   *tls.ConnectionState
		want string // "" for none
	}{
		{"nil", nil, ""},
		{"no certificate", &tls.ConnectionState{}, ""},
		{"unverified certificate", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{k.Leaf()}}, ""},
		{"empty chain", &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}, ""},
		{"certificate without an identity", &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{old}}}, ""},
		{"node certificate", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{k.Leaf()}, VerifiedChains: [][]*x509.Certificate{{k.Leaf()}}}, "server/node1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, ok := PeerIdentity(tc.cs)
			if got := map[bool]string{true: id.String()}[ok]; got != tc.want {
				t.Errorf("PeerIdentity = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}
