package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
)

// NewCSR generates an ECDSA P-256 key and a certificate signing request for
// node name: common name name and, as IP SANs, exactly ips (none is fine: the
// CA decides the addresses). A server signs it with SignJoin or Renew; the key
// never leaves the node. Both results are PEM.
func NewCSR(name string, ips []net.IP) (csrPEM, keyPEM []byte, err error) {
	if err := ValidNodeName(name); err != nil {
		return nil, nil, err
	}
	for i, ip := range ips {
		if ip == nil || ip.IsUnspecified() {
			// Usually a net.ParseIP that failed.
			return nil, nil, fmt.Errorf("pki: IP #%d for the CSR of %q is %q, not a usable address", i, name, ip)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key for %q: %w", name, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: name},
		IPAddresses: ips,
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CSR for %q: %w", name, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// parseCSR decodes a PEM CSR and checks it was signed by its own key.
func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("pki: no PEM \"CERTIFICATE REQUEST\" block in the CSR")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: CSR signature is invalid (the request was not signed by its own key): %w", err)
	}
	return csr, nil
}
