package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestValidNodeName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string // "" when valid
	}{
		{"node1", ""},
		{"n", ""},
		{"0", ""},
		{"web-01", ""},
		{"a" + strings.Repeat("b", 62), ""},
		{"", "empty"},
		{"a" + strings.Repeat("b", 63), "64 characters"},
		{"-node", "starts or ends"},
		{"node-", "starts or ends"},
		{"Node1", "'N'"},
		{"node_1", "'_'"},
		{"node.example", "'.'"},
		{"10.0.0.1", "'.'"},
		{"nöde", "'ö'"},
		{"node 1", "' '"},
		{"node/1", "'/'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidNodeName(tc.name)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidNodeName(%q) = %v; want nil", tc.name, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "lower-case letters") {
				t.Fatalf("ValidNodeName(%q) = %v; want an error containing %q and the rule", tc.name, err, tc.want)
			}
		})
	}
}

// signTemplate signs tmpl with ca as it is, with none of the checks of
// IssueServer and friends, to make certificates the CA would never issue.
func signTemplate(t testing.TB, ca *CA, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(42)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestIdentityOf(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	at := time.Now().Truncate(time.Second)
	clock := *ca.CA
	clock.now = func() time.Time { return at }

	srvPEM, _, err := clock.IssueServer("node1", []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("fd00::1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, err := NewCSR("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	cliPEM, err := clock.SignJoin(csr, "web-1", net.ParseIP("10.0.0.7"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		cert     []byte
		wantName string
		wantRole string
		wantIPs  []string
	}{
		{"server", srvPEM, "node1", RoleServer, []string{"10.0.0.1", "fd00::1"}},
		{"client", cliPEM, "web-1", RoleClient, []string{"10.0.0.7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParseCert(t, tc.cert)
			id, err := IdentityOf(c)
			if err != nil {
				t.Fatal(err)
			}
			if id.Name != tc.wantName || id.Role != tc.wantRole {
				t.Errorf("identity = %s; want %s/%s", id, tc.wantRole, tc.wantName)
			}
			if got := ipStrings(id.IPs); strings.Join(got, ",") != strings.Join(tc.wantIPs, ",") {
				t.Errorf("IPs = %q; want %q", got, tc.wantIPs)
			}
			if id.Serial == nil || id.Serial.Cmp(c.SerialNumber) != 0 {
				t.Errorf("Serial = %v; want %v", id.Serial, c.SerialNumber)
			}
			if !id.IssuedAt.Equal(at) || !id.NotAfter.Equal(at.Add(time.Hour)) {
				t.Errorf("IssuedAt, NotAfter = %s, %s; want %s, %s", id.IssuedAt, id.NotAfter, at, at.Add(time.Hour))
			}
			// The identity is a copy: changing it leaves the certificate alone.
			id.IPs[0][0] ^= 0xff
			id.Serial.SetInt64(0)
			if c.IPAddresses[0].Equal(id.IPs[0]) || c.SerialNumber.Sign() == 0 {
				t.Error("Identity shares memory with the certificate")
			}
		})
	}
}

func TestIdentityOfRefuses(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	u := func(s ...string) []*url.URL {
		var out []*url.URL
		for _, x := range s {
			out = append(out, mustURL(t, x))
		}
		return out
	}
	leaf := func(cn string, uris []*url.URL) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, URIs: uris}
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"nil", nil, "no certificate"},
		{"zero certificate", &x509.Certificate{}, "no flotilla://"},
		{"no URI", signTemplate(t, ca.CA, leaf("node1", nil)), "no flotilla://"},
		{"old-style certificate (Issue)", mustParseCert(t, mustIssue(t, ca.CA)), "DNS"},
		{"two identity URIs", signTemplate(t, ca.CA, leaf("node1", u("flotilla://server/node1", "flotilla://client/node1"))), "several"},
		{"the same identity URI twice", signTemplate(t, ca.CA, leaf("node1", u("flotilla://server/node1", "flotilla://server/node1"))), "several"},
		{"another URI too", signTemplate(t, ca.CA, leaf("node1", u("flotilla://server/node1", "spiffe://cluster/node1"))), "spiffe://"},
		{"another URI first", signTemplate(t, ca.CA, leaf("node1", u("https://example.com", "flotilla://server/node1"))), "https://"},
		{"wrong common name", signTemplate(t, ca.CA, leaf("node2", u("flotilla://server/node1"))), "common name differs"},
		{"empty common name", signTemplate(t, ca.CA, leaf("", u("flotilla://server/node1"))), "common name differs"},
		{"unknown role", signTemplate(t, ca.CA, leaf("node1", u("flotilla://admin/node1"))), `unknown role "admin"`},
		{"upper-case role", signTemplate(t, ca.CA, leaf("node1", u("flotilla://SERVER/node1"))), "unknown role"},
		{"no role", leaf("node1", u("flotilla:///node1")), `unknown role ""`},
		{"no name", signTemplate(t, ca.CA, leaf("", u("flotilla://server/"))), "empty"},
		{"invalid name", signTemplate(t, ca.CA, leaf("Node1", u("flotilla://server/Node1"))), "'N'"},
		{"name with a path", signTemplate(t, ca.CA, leaf("node1", u("flotilla://server/node1/x"))), "'/'"},
		{"port", leaf("node1", u("flotilla://server:7400/node1")), `unknown role "server:7400"`},
		{"query", signTemplate(t, ca.CA, leaf("node1", u("flotilla://server/node1?as=admin"))), "not in the form"},
		{"fragment", signTemplate(t, ca.CA, leaf("node1", u("flotilla://server/node1#x"))), "not in the form"},
		{"user", leaf("node1", u("flotilla://root@server/node1")), "not in the form"},
		{"escaped name", signTemplate(t, ca.CA, leaf("node1", u("flotilla://server/node%31"))), "not in the form"},
		{"opaque", leaf("node1", u("flotilla:server/node1")), "unknown role"},
		{"nil URI", leaf("node1", []*url.URL{nil}), "empty URI"},
		{"DNS SAN", signTemplate(t, ca.CA, &x509.Certificate{Subject: pkix.Name{CommonName: "node1"}, URIs: u("flotilla://server/node1"), DNSNames: []string{"*"}}), "DNS"},
		{"e-mail SAN", signTemplate(t, ca.CA, &x509.Certificate{Subject: pkix.Name{CommonName: "node1"}, URIs: u("flotilla://server/node1"), EmailAddresses: []string{"a@b.c"}}), "e-mail"},
		{"CA certificate", signTemplate(t, ca.CA, &x509.Certificate{Subject: pkix.Name{CommonName: "node1"}, URIs: u("flotilla://server/node1"), IsCA: true, BasicConstraintsValid: true}), "CA certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := IdentityOf(tc.cert)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("IdentityOf = %s, %v; want an error containing %q", id, err, tc.want)
			}
		})
	}
}

func mustIssue(t testing.TB, ca *CA) []byte {
	t.Helper()
	certPEM, _, err := ca.Issue("node1", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func TestIssuedBefore(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	issued := time.Now().Truncate(time.Second).Add(-time.Hour)
	clock := *ca.CA
	clock.now = func() time.Time { return issued.Add(300 * time.Millisecond) }
	certPEM, _, err := clock.IssueServer("node1", []net.IP{net.ParseIP("10.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityOf(mustParseCert(t, certPEM))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		removedAt time.Time
		want      bool
	}{
		{"removed a minute later", issued.Add(time.Minute), true},
		{"removed later in the same second", issued.Add(500 * time.Millisecond), true},
		{"removed at the start of that second", issued, false},
		{"removed a second earlier", issued.Add(-time.Second), false},
		{"removed within the backdate before", issued.Add(-2 * time.Minute), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := id.IssuedBefore(tc.removedAt); got != tc.want {
				t.Errorf("IssuedBefore(%s) = %v with IssuedAt %s; want %v", tc.removedAt, got, id.IssuedAt, tc.want)
			}
		})
	}
}

// checkIdentityInvariants fails unless id is what IdentityOf may return for c.
func checkIdentityInvariants(t *testing.T, c *x509.Certificate, id Identity) {
	t.Helper()
	if err := ValidNodeName(id.Name); err != nil {
		t.Fatalf("accepted an invalid name: %v", err)
	}
	if err := validRole(id.Role); err != nil {
		t.Fatalf("accepted an invalid role: %v", err)
	}
	if c.Subject.CommonName != id.Name {
		t.Fatalf("accepted CN %q for name %q", c.Subject.CommonName, id.Name)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != identityURI(id.Role, id.Name).String() {
		t.Fatalf("accepted URIs %v for %s", c.URIs, id)
	}
	if len(c.DNSNames) > 0 || len(c.EmailAddresses) > 0 || c.IsCA {
		t.Fatalf("accepted DNS %q, e-mail %q, IsCA %v", c.DNSNames, c.EmailAddresses, c.IsCA)
	}
}

// FuzzIdentityOf builds certificates from fuzzed names and URIs and checks
// IdentityOf never panics and accepts only well-formed identities.
func FuzzIdentityOf(f *testing.F) {
	ca := newTestCA(f, "flotilla")
	for _, seed := range []struct {
		cn, uri1, uri2, dns string
		isCA                bool
	}{
		{"node1", "flotilla://server/node1", "", "", false},
		{"web-1", "flotilla://client/web-1", "", "", false},
		{"node1", "flotilla://server/node1", "flotilla://client/node1", "", false},
		{"node2", "flotilla://server/node1", "", "", false},
		{"node1", "flotilla://admin/node1", "", "", false},
		{"node1", "flotilla://server/node1", "", "*", false},
		{"node1", "flotilla://server/node1", "", "", true},
		{"node1", "flotilla://server/node%31", "", "", false},
		{"", "", "", "", false},
	} {
		f.Add(seed.cn, seed.uri1, seed.uri2, seed.dns, seed.isCA)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, cn, uri1, uri2, dns string, isCA bool) {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Minute),
			NotAfter:     time.Now().Add(time.Hour),
			IsCA:         isCA, BasicConstraintsValid: isCA,
		}
		for _, s := range []string{uri1, uri2} {
			if s == "" {
				continue
			}
			u, err := url.Parse(s)
			if err != nil {
				return
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
		if dns != "" {
			tmpl.DNSNames = []string{dns}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
		if err != nil {
			return
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		id, err := IdentityOf(c)
		if err == nil {
			checkIdentityInvariants(t, c, id)
		}
	})
}

// FuzzIdentityOfDER feeds IdentityOf whatever x509 parses from fuzzed DER,
// seeded with certificates the CA issues.
func FuzzIdentityOfDER(f *testing.F) {
	ca := newTestCA(f, "flotilla")
	srv, _, err := ca.IssueServer("node1", []net.IP{net.ParseIP("10.0.0.1")}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	csr, _, err := NewCSR("web-1", nil)
	if err != nil {
		f.Fatal(err)
	}
	cli, err := ca.SignJoin(csr, "web-1", net.ParseIP("10.0.0.7"), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range [][]byte{srv, cli, mustIssue(f, ca.CA), ca.certPEM} {
		c, err := parseCert(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(c.Raw)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		if id, err := IdentityOf(c); err == nil {
			checkIdentityInvariants(t, c, id)
		}
	})
}
