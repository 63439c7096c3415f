package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
)

// NewCSR generates an ECDSA P-256 key and a certificate signing request for
// a node joining the cluster: common name nodeName, and the same SANs Issue
// would give (nodeName, "localhost", 127.0.0.1, ::1 and ips). A server signs
// it with SignCSR; the key never leaves the node. Both results are PEM.
func NewCSR(nodeName string, ips []net.IP) (csrPEM, keyPEM []byte, err error) {
	names, addrs, err := subjectAltNames(nodeName, ips, nil)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key for %q: %w", nodeName, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: nodeName},
		DNSNames:    names,
		IPAddresses: addrs,
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CSR for %q: %w", nodeName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}
