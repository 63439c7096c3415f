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

// testCA is a CA made for one test, with its PEMs at hand.
type testCA struct {
	*CA
	certPEM, keyPEM []byte
}

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	certPEM, keyPEM, err := NewCA(cn, 24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	ca, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return &testCA{CA: ca, certPEM: certPEM, keyPEM: keyPEM}
}

func mustParseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCert(certPEM)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}

// verify checks cert against ca for both usages a node certificate has.
func verify(t *testing.T, caPEM, certPEM []byte) error {
	t.Helper()
	pool, err := certPool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParseCert(t, certPEM)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return err
		}
	}
	return nil
}

func TestNewCA(t *testing.T) {
	certPEM, keyPEM, err := NewCA("flotilla-test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParseCert(t, certPEM)
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.Subject.CommonName != "flotilla-test" {
		t.Errorf("CA certificate: IsCA=%v KeyUsage=%b CN=%q", c.IsCA, c.KeyUsage, c.Subject.CommonName)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if d := time.Until(c.NotAfter); d < 59*time.Minute || d > time.Hour {
		t.Errorf("CA expires in %s, want about 1h", d)
	}
	if !strings.Contains(string(keyPEM), "BEGIN PRIVATE KEY") {
		t.Errorf("CA key is not PKCS #8 PEM:\n%s", keyPEM)
	}
	for _, tc := range []struct {
		name     string
		cn       string
		validity time.Duration
	}{
		{"no common name", "", time.Hour},
		{"zero validity", "x", 0},
		{"negative validity", "x", -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := NewCA(tc.cn, tc.validity); err == nil {
				t.Error("NewCA succeeded; want an error")
			}
		})
	}
}

func TestLoadCARejects(t *testing.T) {
	ca := newTestCA(t, "a")
	other := newTestCA(t, "b")
	leafPEM, leafKeyPEM, err := ca.Issue("n1", nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name            string
		certPEM, keyPEM []byte
		want            string
	}{
		{"garbage certificate", []byte("nope"), ca.keyPEM, "no PEM"},
		{"garbage key", ca.certPEM, []byte("nope"), "no PEM"},
		{"key of another CA", ca.certPEM, other.keyPEM, "does not match"},
		{"leaf certificate", leafPEM, leafKeyPEM, "not a CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCA(tc.certPEM, tc.keyPEM)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadCA error = %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	for _, tc := range []struct {
		name      string
		nodeName  string
		ips       []net.IP
		dnsNames  []string
		validity  time.Duration
		wantDNS   []string
		wantIPs   []string
		maxExpiry time.Duration
	}{
		{
			name: "bare node name", nodeName: "node-1", validity: time.Hour,
			wantDNS: []string{"node-1", "localhost"}, wantIPs: []string{"127.0.0.1", "::1"}, maxExpiry: time.Hour,
		},
		{
			name: "extra addresses and names, deduplicated", nodeName: "node-2",
			ips:      []net.IP{net.ParseIP("10.0.0.2"), net.ParseIP("127.0.0.1"), net.ParseIP("fd00::2")},
			dnsNames: []string{"node-2.internal", "localhost"}, validity: time.Hour,
			wantDNS: []string{"node-2", "localhost", "node-2.internal"}, wantIPs: []string{"127.0.0.1", "::1", "10.0.0.2", "fd00::2"}, maxExpiry: time.Hour,
		},
		{
			name: "node named by its IP", nodeName: "10.0.0.3", validity: time.Hour,
			wantDNS: []string{"localhost"}, wantIPs: []string{"10.0.0.3", "127.0.0.1", "::1"}, maxExpiry: time.Hour,
		},
		{
			name: "validity capped at the CA's expiry", nodeName: "node-4", validity: 10 * 365 * 24 * time.Hour,
			wantDNS: []string{"node-4", "localhost"}, wantIPs: []string{"127.0.0.1", "::1"}, maxExpiry: 24 * time.Hour,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.Issue(tc.nodeName, tc.ips, tc.dnsNames, tc.validity)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				t.Fatalf("certificate and key do not pair: %v", err)
			}
			if err := verify(t, ca.certPEM, certPEM); err != nil {
				t.Fatalf("does not verify against its CA: %v", err)
			}
			c := mustParseCert(t, certPEM)
			if c.Subject.CommonName != tc.nodeName || c.IsCA {
				t.Errorf("CN=%q IsCA=%v; want CN=%q, not a CA", c.Subject.CommonName, c.IsCA, tc.nodeName)
			}
			if !slices.Equal(c.DNSNames, tc.wantDNS) {
				t.Errorf("DNS SANs = %q; want %q", c.DNSNames, tc.wantDNS)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("IP SANs = %q; want %q", ips, tc.wantIPs)
			}
			if d := time.Until(c.NotAfter); d > tc.maxExpiry {
				t.Errorf("expires in %s; want at most %s", d, tc.maxExpiry)
			}
		})
	}
}

func TestIssueRejects(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	for _, tc := range []struct {
		name     string
		nodeName string
		ips      []net.IP
		dnsNames []string
		validity time.Duration
	}{
		{"empty node name", "", nil, nil, time.Hour},
		{"nil IP (a failed net.ParseIP)", "n", []net.IP{net.ParseIP("not-an-ip")}, nil, time.Hour},
		{"unspecified IP", "n", []net.IP{net.IPv4zero}, nil, time.Hour},
		{"empty DNS name", "n", nil, []string{""}, time.Hour},
		{"zero validity", "n", nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ca.Issue(tc.nodeName, tc.ips, tc.dnsNames, tc.validity); err == nil {
				t.Error("Issue succeeded; want an error")
			}
		})
	}
}

func TestIssueAfterCAExpiry(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	ca.now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	_, _, err := ca.Issue("n", nil, nil, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Issue error = %v; want one saying the CA expired", err)
	}
}

func TestSignCSRRoundTrip(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	ips := []net.IP{net.ParseIP("10.1.2.3")}
	csrPEM, keyPEM, err := NewCSR("client-1", ips)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignCSR(csrPEM, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("signed certificate does not pair with the CSR's key: %v", err)
	}
	if err := verify(t, ca.certPEM, certPEM); err != nil {
		t.Fatalf("does not verify against its CA: %v", err)
	}
	c := mustParseCert(t, certPEM)
	if c.Subject.CommonName != "client-1" || c.IsCA {
		t.Errorf("CN=%q IsCA=%v", c.Subject.CommonName, c.IsCA)
	}
	// NewCSR asks for the given IPs only: no DNS names, no loopback.
	if len(c.DNSNames) != 0 {
		t.Errorf("DNS SANs = %q; want none", c.DNSNames)
	}
	if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(ips[0]) {
		t.Errorf("IP SANs = %v; want only 10.1.2.3", c.IPAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v", c.ExtKeyUsage)
	}
}

func csrPEMFor(t *testing.T, tmpl *x509.CertificateRequest, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignCSRRejects(t *testing.T) {
	ca := newTestCA(t, "flotilla")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
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
	basicCA := pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: mustMarshal(struct{ IsCA bool }{true})}
	certSign := pkix.Extension{Id: oidKeyUsage, Critical: true, Value: mustMarshal(asn1.BitString{Bytes: []byte{0x04}, BitLength: 6})}

	good := csrPEMFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}}, key)
	block, _ := pem.Decode(good)
	tampered := slices.Clone(block.Bytes)
	tampered[len(tampered)-1] ^= 0xff // the last byte belongs to the signature
	badSig := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})

	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		csr  []byte
		want string
	}{
		{"not PEM", []byte("hello"), "no PEM"},
		{"a certificate, not a CSR", ca.certPEM, "no PEM"},
		{"bad signature", badSig, "signature"},
		{"CA request", csrPEMFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}, ExtraExtensions: []pkix.Extension{basicCA}}, key), "CA certificate"},
		{"certificate-signing key usage", csrPEMFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}, ExtraExtensions: []pkix.Extension{certSign}}, key), "sign certificates"},
		{"no common name", csrPEMFor(t, &x509.CertificateRequest{DNSNames: []string{"n"}}, key), "no common name"},
		{"URI SAN", csrPEMFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}, URIs: []*url.URL{{Scheme: "spiffe", Host: "x"}}}, key), "URI"},
		{"weak RSA key", csrPEMFor(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}}, weak), "too weak"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.SignCSR(tc.csr, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SignCSR error = %v; want one containing %q", err, tc.want)
			}
		})
	}
	// The checks above must be what refused them: the plain request signs.
	if _, err := ca.SignCSR(good, time.Hour); err != nil {
		t.Errorf("SignCSR of a good request: %v", err)
	}
}
