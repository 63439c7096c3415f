package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
)

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCert parses the first CERTIFICATE block of certPEM.
func parseCert(certPEM []byte) (*x509.Certificate, error) {
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM \"CERTIFICATE\" block found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// parseKey parses the first private key block of keyPEM, in any of the
// encodings openssl and Go write.
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	for rest := keyPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", key)
		}
		return signer, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// checkPublicKey refuses key types and sizes TLS 1.3 peers should not trust.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA curve %s is not accepted; use P-256", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("a %d-bit RSA key is too weak; use ECDSA P-256 or RSA of at least 2048 bits", k.N.BitLen())
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("key type %T is not accepted; use ECDSA P-256", pub)
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// refuseCARequest fails if the CSR asks to be a CA or to sign certificates or
// CRLs. SignCSR never copies extensions, so this is about telling the
// requester plainly rather than quietly issuing less than was asked for.
func refuseCARequest(csr *x509.CertificateRequest) error {
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return fmt.Errorf("malformed basic constraints: %w", err)
			}
			if bc.IsCA {
				return errors.New("it asks for a CA certificate; the cluster CA only issues node certificates")
			}
		case ext.Id.Equal(oidKeyUsage):
			var ku asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &ku); err != nil {
				return fmt.Errorf("malformed key usage: %w", err)
			}
			// Bits 5 and 6 are keyCertSign and cRLSign (RFC 5280 4.2.1.3).
			if ku.At(5) == 1 || ku.At(6) == 1 {
				return errors.New("it asks to sign certificates or CRLs; the cluster CA only issues node certificates")
			}
		}
	}
	return nil
}

// subjectAltNames returns the SANs of a node certificate: the node name,
// loopback, and the extra names and addresses, without duplicates.
func subjectAltNames(nodeName string, ips []net.IP, dnsNames []string) ([]string, []net.IP, error) {
	if strings.TrimSpace(nodeName) == "" {
		return nil, nil, errors.New("pki: a node certificate needs a node name")
	}
	var names []string
	var addrs []net.IP
	seenName := map[string]bool{}
	addName := func(n string) {
		if k := strings.ToLower(n); !seenName[k] {
			seenName[k] = true
			names = append(names, n)
		}
	}
	addIP := func(ip net.IP) {
		for _, a := range addrs {
			if a.Equal(ip) {
				return
			}
		}
		addrs = append(addrs, ip)
	}
	if ip := net.ParseIP(nodeName); ip != nil {
		addIP(ip)
	} else {
		addName(nodeName)
	}
	addName("localhost")
	addIP(net.IPv4(127, 0, 0, 1))
	addIP(net.IPv6loopback)
	for i, ip := range ips {
		if ip == nil || ip.IsUnspecified() {
			// Usually a net.ParseIP that failed: better said now than
			// found out as a hostname mismatch on another machine.
			return nil, nil, fmt.Errorf("pki: IP SAN #%d for %q is %q, not a usable address", i, nodeName, ip)
		}
		addIP(ip)
	}
	for _, n := range dnsNames {
		if strings.TrimSpace(n) == "" {
			return nil, nil, fmt.Errorf("pki: empty DNS SAN for %q", nodeName)
		}
		addName(n)
	}
	return names, addrs, nil
}
