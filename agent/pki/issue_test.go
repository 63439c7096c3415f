package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// at returns a copy of ca whose clock reads t.
func at(ca *CA, t time.Time) *CA {
	c := *ca
	c.now = func() time.Time { return t }
	return &c
}

func ips(s ...string) []net.IP {
	var out []net.IP
	for _, x := range s {
		out = append(out, net.ParseIP(x))
	}
	return out
}

// checkNodeCert checks what every node certificate must be: it pairs with
// its key (when given), verifies against the CA for both usages, is no CA,
// has exactly the identity and IPs wanted and no DNS SANs, and expires at
// notAfter.
func checkNodeCert(t *testing.T, ca *testCA, certPEM, keyPEM []byte, role, name string, wantIPs []string, notAfter time.Time) Identity {
	t.Helper()
	if keyPEM != nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Fatalf("certificate and key do not pair: %v", err)
		}
	}
	if err := verify(t, ca.certPEM, certPEM); err != nil {
		t.Fatalf("does not verify against its CA: %v", err)
	}
	c := mustParseCert(t, certPEM)
	id, err := IdentityOf(c)
	if err != nil {
		t.Fatal(err)
	}
	if id.Role != role || id.Name != name || c.Subject.CommonName != name {
		t.Errorf("identity %s, CN %q; want %s/%s", id, c.Subject.CommonName, role, name)
	}
	if want := "flotilla://" + role + "/" + name; len(c.URIs) != 1 || c.URIs[0].String() != want {
		t.Errorf("URI SANs = %v; want exactly %s", c.URIs, want)
	}
	if got := ipStrings(c.IPAddresses); !slices.Equal(got, wantIPs) {
		t.Errorf("IP SANs = %q; want %q", got, wantIPs)
	}
	if len(c.DNSNames) != 0 || len(c.EmailAddresses) != 0 || c.IsCA {
		t.Errorf("DNS %q, e-mail %q, IsCA %v; want none, none, false", c.DNSNames, c.EmailAddresses, c.IsCA)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %b; want DigitalSignature only", c.KeyUsage)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v; want ServerAuth and ClientAuth", c.ExtKeyUsage)
	}
	if !c.NotAfter.Equal(notAfter) {
		t.Errorf("NotAfter = %s; want %s", c.NotAfter, notAfter)
	}
	return id
}

func TestIssueServer(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	now := time.Now().Truncate(time.Second)
	for _, tc := range []struct {
		name     string
		node     string
		ips      []net.IP
		validity time.Duration
		wantIPs  []string
		notAfter time.Time
	}{
		{"one IP", "node1", ips("10.0.0.1"), time.Hour, []string{"10.0.0.1"}, now.Add(time.Hour)},
		{"several IPs, deduplicated", "node2", append(ips("10.0.0.2", "fd00::2"), net.IPv4(10, 0, 0, 2)), time.Hour, []string{"10.0.0.2", "fd00::2"}, now.Add(time.Hour)},
		{"loopback", "node3", ips("127.0.0.1"), time.Hour, []string{"127.0.0.1"}, now.Add(time.Hour)},
		{"default validity capped at the CA's expiry", "node4", ips("10.0.0.4"), DefaultCertValidity, []string{"10.0.0.4"}, ca.cert.NotAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, keyPEM, err := at(ca.CA, now).IssueServer(tc.node, tc.ips, tc.validity)
			if err != nil {
				t.Fatal(err)
			}
			checkNodeCert(t, ca, certPEM, keyPEM, RoleServer, tc.node, tc.wantIPs, tc.notAfter)
		})
	}
}

func TestIssueServerRefuses(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	for _, tc := range []struct {
		name     string
		ca       *CA
		node     string
		ips      []net.IP
		validity time.Duration
		want     string
	}{
		{"no IPs", ca.CA, "node1", nil, time.Hour, "at least one IP"},
		{"nil IP (a failed net.ParseIP)", ca.CA, "node1", ips("10.0.0.1", "nope"), time.Hour, "IP #1"},
		{"unspecified IP", ca.CA, "node1", ips("0.0.0.0"), time.Hour, "not an address peers can dial"},
		{"unspecified IPv6", ca.CA, "node1", ips("::"), time.Hour, "not an address peers can dial"},
		{"invalid name", ca.CA, "Node1", ips("10.0.0.1"), time.Hour, "node name"},
		{"empty name", ca.CA, "", ips("10.0.0.1"), time.Hour, "empty"},
		{"zero validity", ca.CA, "node1", ips("10.0.0.1"), 0, "validity"},
		{"CA expired", at(ca.CA, ca.cert.NotAfter.Add(time.Second)), "node1", ips("10.0.0.1"), time.Hour, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.ca.IssueServer(tc.node, tc.ips, tc.validity)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("IssueServer error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestNewCSR(t *testing.T) {
	csrPEM, keyPEM, err := NewCSR("web-1", ips("10.0.0.7"))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	if csr.Subject.CommonName != "web-1" || len(csr.DNSNames) != 0 || len(csr.URIs) != 0 || !slices.Equal(ipStrings(csr.IPAddresses), []string{"10.0.0.7"}) {
		t.Errorf("CSR: CN %q, DNS %q, URIs %v, IPs %v; want web-1 and 10.0.0.7 only", csr.Subject.CommonName, csr.DNSNames, csr.URIs, csr.IPAddresses)
	}
	key, err := parseKey(keyPEM)
	if err != nil || !publicKeysEqual(csr.PublicKey, key.Public()) {
		t.Errorf("the key does not belong to the CSR (%v)", err)
	}
	for _, tc := range []struct {
		name string
		node string
		ips  []net.IP
		want string
	}{
		{"invalid name", "web_1", nil, "node name"},
		{"nil IP", "web-1", ips("nope"), "not a usable address"},
		{"unspecified IP", "web-1", ips("0.0.0.0"), "not a usable address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewCSR(tc.node, tc.ips)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewCSR error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSignJoin(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	now := time.Now().Truncate(time.Second)
	for _, tc := range []struct {
		name     string
		csrIPs   []net.IP
		remote   net.IP
		validity time.Duration
		wantIPs  []string
		notAfter time.Time
	}{
		{"CSR without IPs", nil, net.ParseIP("10.0.0.7"), time.Hour, []string{"10.0.0.7"}, now.Add(time.Hour)},
		{"CSR with the remote IP", ips("10.0.0.7"), net.ParseIP("10.0.0.7"), time.Hour, []string{"10.0.0.7"}, now.Add(time.Hour)},
		{"joining over loopback", nil, net.ParseIP("127.0.0.1"), time.Hour, []string{"127.0.0.1"}, now.Add(time.Hour)},
		{"IPv4-mapped remote address", ips("10.0.0.7"), net.ParseIP("::ffff:10.0.0.7"), time.Hour, []string{"10.0.0.7"}, now.Add(time.Hour)},
		{"IPv6", ips("fd00::7"), net.ParseIP("fd00::7"), time.Hour, []string{"fd00::7"}, now.Add(time.Hour)},
		{"default validity capped at the CA's expiry", nil, net.ParseIP("10.0.0.7"), DefaultCertValidity, []string{"10.0.0.7"}, ca.cert.NotAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csrPEM, keyPEM, err := NewCSR("web-1", tc.csrIPs)
			if err != nil {
				t.Fatal(err)
			}
			certPEM, err := at(ca.CA, now).SignJoin(csrPEM, "web-1", tc.remote, tc.validity)
			if err != nil {
				t.Fatal(err)
			}
			checkNodeCert(t, ca, certPEM, keyPEM, RoleClient, "web-1", tc.wantIPs, tc.notAfter)
		})
	}
}

// csrRefusals are requests neither SignJoin nor Renew may sign, whoever
// asks: the name is always "web-1" and the IP 10.0.0.7.
func csrRefusals(t *testing.T, ca *testCA) []struct {
	name string
	csr  []byte
	want string
} {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	mustMarshal := func(v any) []byte {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cn := pkix.Name{CommonName: "web-1"}
	good := csrPEMFor(t, &x509.CertificateRequest{Subject: cn}, key)
	block, _ := pem.Decode(good)
	tampered := slices.Clone(block.Bytes)
	tampered[len(tampered)-1] ^= 0xff // the last byte belongs to the signature
	return []struct {
		name string
		csr  []byte
		want string
	}{
		{"not PEM", []byte("hello"), "no PEM"},
		{"a certificate, not a CSR", ca.certPEM, "no PEM"},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), "signature"},
		{"another name", csrPEMFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node1"}}, key), `is for node "node1" but must be for "web-1"`},
		{"no common name", csrPEMFor(t, &x509.CertificateRequest{IPAddresses: ips("10.0.0.7")}, key), `is for node ""`},
		{"wildcard DNS SAN", csrPEMFor(t, &x509.CertificateRequest{Subject: cn, DNSNames: []string{"*"}}, key), "DNS names"},
		{"DNS SAN of its own name", csrPEMFor(t, &x509.CertificateRequest{Subject: cn, DNSNames: []string{"web-1"}}, key), "DNS names"},
		{"e-mail SAN", csrPEMFor(t, &x509.CertificateRequest{Subject: cn, EmailAddresses: []string{"a@b.c"}}, key), "e-mail"},
		{"URI SAN", csrPEMFor(t, &x509.CertificateRequest{Subject: cn, URIs: []*url.URL{mustURL(t, "flotilla://server/web-1")}}, key), "URI"},
		{"CA request", csrPEMFor(t, &x509.CertificateRequest{Subject: cn, ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: mustMarshal(struct{ IsCA bool }{true})}}}, key), "CA certificate"},
		{"certificate-signing key usage", csrPEMFor(t, &x509.CertificateRequest{Subject: cn, ExtraExtensions: []pkix.Extension{{Id: oidKeyUsage, Critical: true, Value: mustMarshal(asn1.BitString{Bytes: []byte{0x04}, BitLength: 6})}}}, key), "sign certificates"},
		{"weak RSA key", csrPEMFor(t, &x509.CertificateRequest{Subject: cn}, weak), "too weak"},
	}
}

func TestSignJoinRefuses(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	remote := net.ParseIP("10.0.0.7")
	csr := func(name string, ips []net.IP) []byte {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return csrPEMFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, IPAddresses: ips}, key)
	}
	type refusal struct {
		name     string
		ca       *CA
		csr      []byte
		node     string
		remote   net.IP
		validity time.Duration
		want     string
	}
	cases := []refusal{
		{"an extra IP", ca.CA, csr("web-1", ips("10.0.0.7", "10.0.0.9")), "web-1", remote, time.Hour, "asks for IP 10.0.0.9; a joining agent gets a certificate for the IP it connects from (10.0.0.7) only"},
		{"another IP", ca.CA, csr("web-1", ips("10.0.0.9")), "web-1", remote, time.Hour, "asks for IP 10.0.0.9; a joining agent gets a certificate for the IP it connects from (10.0.0.7) only"},
		{"loopback when connecting from 10.x", ca.CA, csr("web-1", ips("127.0.0.1")), "web-1", remote, time.Hour, "asks for IP 127.0.0.1; a joining agent gets a certificate for the IP it connects from (10.0.0.7) only"},
		{"loopback and the remote IP", ca.CA, csr("web-1", ips("10.0.0.7", "::1")), "web-1", remote, time.Hour, "asks for IP ::1"},
		{"invalid name", ca.CA, csr("Web-1", nil), "Web-1", remote, time.Hour, "node name"},
		{"nil remote IP", ca.CA, csr("web-1", nil), "web-1", nil, time.Hour, "not one it can connect from"},
		{"unspecified remote IP", ca.CA, csr("web-1", nil), "web-1", net.IPv4zero, time.Hour, "not one it can connect from"},
		{"multicast remote IP", ca.CA, csr("web-1", nil), "web-1", net.ParseIP("224.0.0.1"), time.Hour, "not one it can connect from"},
		{"zero validity", ca.CA, csr("web-1", nil), "web-1", remote, 0, "validity"},
		{"CA expired", at(ca.CA, ca.cert.NotAfter.Add(time.Second)), csr("web-1", nil), "web-1", remote, time.Hour, "expired"},
	}
	for _, r := range csrRefusals(t, ca) {
		cases = append(cases, refusal{r.name, ca.CA, r.csr, "web-1", remote, time.Hour, r.want})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.ca.SignJoin(tc.csr, tc.node, tc.remote, tc.validity)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SignJoin error = %v; want one containing %q", err, tc.want)
			}
		})
	}
	// The checks above must be what refused them: a plain request signs.
	if _, err := ca.SignJoin(csr("web-1", nil), "web-1", remote, time.Hour); err != nil {
		t.Errorf("SignJoin of a good request: %v", err)
	}
}

func TestRenew(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	issued := time.Now().Truncate(time.Second).Add(-time.Hour)
	renewed := issued.Add(40 * time.Minute)

	srvPEM, _, err := at(ca.CA, issued).IssueServer("node1", ips("10.0.0.1", "fd00::1"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	joinCSR, _, err := NewCSR("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	cliPEM, err := at(ca.CA, issued).SignJoin(joinCSR, "web-1", net.ParseIP("10.0.0.7"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cur     []byte
		csrIPs  []net.IP
		wantIPs []string
	}{
		{"server, CSR without IPs", srvPEM, nil, []string{"10.0.0.1", "fd00::1"}},
		{"server, CSR with some of its IPs", srvPEM, ips("fd00::1"), []string{"10.0.0.1", "fd00::1"}},
		{"client", cliPEM, nil, []string{"10.0.0.7"}},
		{"client, CSR with its IP", cliPEM, ips("10.0.0.7"), []string{"10.0.0.7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := mustParseCert(t, tc.cur)
			cur, err := IdentityOf(old)
			if err != nil {
				t.Fatal(err)
			}
			csrPEM, keyPEM, err := NewCSR(cur.Name, tc.csrIPs)
			if err != nil {
				t.Fatal(err)
			}
			certPEM, err := at(ca.CA, renewed).Renew(cur, csrPEM, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			id := checkNodeCert(t, ca, certPEM, keyPEM, cur.Role, cur.Name, tc.wantIPs, renewed.Add(time.Hour))
			if id.Serial.Cmp(cur.Serial) == 0 {
				t.Error("the renewed certificate has the old serial")
			}
			if !id.IssuedAt.Equal(renewed) || !id.IssuedBefore(renewed.Add(time.Second)) || id.IssuedBefore(issued.Add(time.Second)) {
				t.Errorf("renewed IssuedAt = %s; want %s", id.IssuedAt, renewed)
			}
			if publicKeysEqual(mustParseCert(t, certPEM).PublicKey, old.PublicKey) {
				t.Error("the renewed certificate has the old key")
			}
		})
	}
}

func TestRenewRefuses(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	certPEM, _, err := ca.IssueServer("web-1", ips("10.0.0.7"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := IdentityOf(mustParseCert(t, certPEM))
	if err != nil {
		t.Fatal(err)
	}
	csr := func(name string, ips []net.IP) []byte {
		t.Helper()
		csrPEM, _, err := NewCSR(name, ips)
		if err != nil {
			t.Fatal(err)
		}
		return csrPEM
	}
	with := func(f func(*Identity)) Identity {
		id := cur
		id.IPs = cloneIPs(cur.IPs)
		f(&id)
		return id
	}
	type refusal struct {
		name string
		ca   *CA
		cur  Identity
		csr  []byte
		want string
	}
	cases := []refusal{
		{"CSR for another name", ca.CA, cur, csr("node2", nil), `is for node "node2" but must be for "web-1"`},
		{"CSR with another IP", ca.CA, cur, csr("web-1", ips("10.0.0.9")), "asks for IP 10.0.0.9, which its current certificate does not have (10.0.0.7)"},
		{"CSR with an extra IP", ca.CA, cur, csr("web-1", ips("10.0.0.7", "127.0.0.1")), "asks for IP 127.0.0.1"},
		{"unknown role", ca.CA, with(func(id *Identity) { id.Role = "admin" }), csr("web-1", nil), "unknown role"},
		{"invalid name", ca.CA, with(func(id *Identity) { id.Name = "Web-1" }), csr("web-1", nil), "node name"},
		{"unspecified IP", ca.CA, with(func(id *Identity) { id.IPs = ips("0.0.0.0") }), csr("web-1", nil), "issue a new certificate"},
		{"CA expired", at(ca.CA, ca.cert.NotAfter.Add(time.Second)), cur, csr("web-1", nil), "expired"},
	}
	for _, r := range csrRefusals(t, ca) {
		cases = append(cases, refusal{r.name, ca.CA, cur, r.csr, r.want})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.ca.Renew(tc.cur, tc.csr, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Renew error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
		want                time.Time
	}{
		{"default validity", t0, t0.Add(DefaultCertValidity), t0.Add(112 * time.Hour)},
		{"an hour", t0, t0.Add(time.Hour), t0.Add(40 * time.Minute)},
		{"empty lifetime", t0, t0, t0},
		{"inverted", t0, t0.Add(-time.Hour), t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RenewAt(tc.notBefore, tc.notAfter); !got.Equal(tc.want) {
				t.Errorf("RenewAt = %s; want %s", got, tc.want)
			}
		})
	}
}
