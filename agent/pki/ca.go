package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// backdate is subtracted from NotBefore so a certificate is valid at once on
// a peer whose clock is a little behind the issuer's. IdentityOf adds it back
// to learn when a certificate was issued, so changing it shifts the issue
// time read from certificates already out there (and so revocation).
const backdate = 5 * time.Minute

// CA is a loaded certificate authority that can sign node certificates.
// It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	// now is the clock certificates are dated with; tests move it.
	now func() time.Time
}

// NewCA generates a self-signed CA: an ECDSA P-256 key and a certificate with
// IsCA and KeyUsageCertSign, valid for validity from now. It may only sign
// leaf certificates (MaxPathLen 0). Both results are PEM: a "CERTIFICATE"
// block and a PKCS #8 "PRIVATE KEY" block.
func NewCA(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return newCA(commonName, validity, time.Now())
}

func newCA(commonName string, validity time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	if commonName == "" {
		return nil, nil, errors.New("pki: a CA needs a common name")
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("pki: CA validity must be positive, got %s", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// LoadCA parses a CA certificate and its private key (PKCS #8, SEC 1 "EC
// PRIVATE KEY" or PKCS #1), and checks that they belong together and that
// the certificate may sign certificates.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("pki: certificate %q is not a CA (needs IsCA and KeyUsageCertSign); pass the cluster CA's certificate", cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: the CA key does not match the CA certificate %q; pass the key generated with it", cert.Subject.CommonName)
	}
	return &CA{cert: cert, certPEM: encodeCert(cert.Raw), key: key, now: time.Now}, nil
}

// CertPEM returns the CA certificate, PEM-encoded: what peers trust.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Issue generates an ECDSA P-256 key and a certificate for a node, usable
// both as a TLS server and as a TLS client. The common name is nodeName; the
// SANs are nodeName (as an IP if it parses as one, else a DNS name),
// "localhost", 127.0.0.1, ::1, and the given ips and dnsNames. The
// certificate is valid for validity, but never past the CA's own expiry.
//
// Deprecated: use IssueServer, which gives the certificate a role and a
// node identity and no DNS or loopback SANs.
func (ca *CA) Issue(nodeName string, ips []net.IP, dnsNames []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	names, addrs, err := subjectAltNames(nodeName, ips, dnsNames)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key for %q: %w", nodeName, err)
	}
	certPEM, err = ca.sign(nodeName, names, addrs, nil, &key.PublicKey, validity)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// SignCSR signs a certificate signing request such as NewCSR makes, after
// checking its signature. The certificate gets the request's common name,
// DNS and IP SANs, and both ServerAuth and ClientAuth; nothing else from the
// request is honoured. Requests for a CA certificate, for certificate-signing
// key usage, or for URI or e-mail SANs are refused, as are requests without a
// common name or with a weak key. Validity is capped at the CA's expiry.
//
// The requester chooses the names, so whoever may have a CSR signed (on
// servers: anyone holding the join token) can get a certificate any peer
// accepts, under any node's name. Without SANs the certificate can only act
// as a client: TLS matches hosts against SANs, never the common name.
//
// Deprecated: use SignJoin for joining agents (a client certificate for the
// name they join as and the address they connect from) or Renew.
func (ca *CA) SignCSR(csrPEM []byte, validity time.Duration) (certPEM []byte, err error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if csr.Subject.CommonName == "" {
		return nil, errors.New("pki: CSR has no common name; it must be the node name")
	}
	if len(csr.URIs) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("pki: CSR for %q asks for URI or e-mail SANs, which the cluster CA does not issue", csr.Subject.CommonName)
	}
	if err := refuseCARequest(csr); err != nil {
		return nil, fmt.Errorf("pki: CSR for %q: %w", csr.Subject.CommonName, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("pki: CSR for %q: %w", csr.Subject.CommonName, err)
	}
	for _, ip := range csr.IPAddresses {
		if ip.IsUnspecified() {
			return nil, fmt.Errorf("pki: CSR for %q asks for the unspecified address %s", csr.Subject.CommonName, ip)
		}
	}
	return ca.sign(csr.Subject.CommonName, csr.DNSNames, csr.IPAddresses, nil, csr.PublicKey, validity)
}

// sign issues a leaf certificate for pub with exactly the given names; the
// callers have checked them.
func (ca *CA) sign(cn string, dnsNames []string, ips []net.IP, uris []*url.URL, pub any, validity time.Duration) ([]byte, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("pki: certificate validity must be positive, got %s", validity)
	}
	now := ca.now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		// A leaf that outlives its CA would fail verification anyway.
		notAfter = ca.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("pki: the CA %q expired at %s; create a new cluster CA", ca.cert.Subject.CommonName, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		// TLS 1.3 only signs with the key (no RSA key transport).
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		URIs:                  uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate for %q: %w", cn, err)
	}
	return encodeCert(der), nil
}

// serialNumber returns a random 128-bit serial, as RFC 5280 and the CA/B
// baseline ask (unpredictable, positive, at most 20 bytes).
func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
