package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerTLS returns the configuration of a TLS server presenting the node
// certificate certPEM/keyPEM. Client certificates, when clientAuth asks for
// them, are verified against the CA in caPEM (and must carry ClientAuth).
// Use tls.VerifyClientCertIfGiven where some callers have no certificate yet
// (joining agents) and check r.TLS.VerifiedChains per request, or
// tls.RequireAndVerifyClientCert to refuse them at the handshake.
// TLS 1.3 is the minimum.
//
// Deprecated: use NewKeypair and (*Keypair).ServerTLS, which present renewed
// certificates without a restart and check the client's node identity.
func ServerTLS(caPEM, certPEM, keyPEM []byte, clientAuth tls.ClientAuthType) (*tls.Config, error) {
	if clientAuth < tls.NoClientCert || clientAuth > tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("pki: unknown client auth type %d", clientAuth)
	}
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, err
	}
	cert, err := keyPair(pool, certPEM, keyPEM, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   clientAuth,
	}, nil
}

// ClientTLS returns the configuration of a TLS client that trusts only the
// CA in caPEM and, when certPEM and keyPEM are given, presents that node
// certificate. Without them (an agent that is joining and has no
// certificate yet) it still verifies the server.
//
// The server is verified as usual for TLS: its chain must lead to the CA,
// and one of its SANs must equal the host that was dialed (a DNS name, or an
// IP address for "10.0.0.5:7401"). ServerName is deliberately left empty:
// net/http and tls.Dial fill it in from the address of each connection, so
// one configuration serves every peer. Callers that wrap a net.Conn with
// tls.Client themselves must Clone it and set ServerName.
//
// Deprecated: use NewKeypair and (*Keypair).ClientTLS, which present renewed
// certificates and check the server's node identity, or JoinTLS when the
// agent has no certificate yet.
func ClientTLS(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	switch {
	case len(certPEM) == 0 && len(keyPEM) == 0:
	case len(certPEM) == 0 || len(keyPEM) == 0:
		return nil, errors.New("pki: give both the node certificate and its key, or neither")
	default:
		cert, err := keyPair(pool, certPEM, keyPEM, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// PeerTLS returns one configuration that works both to dial and to accept
// connections between agents, as a raft stream layer needs: it presents the
// node certificate, trusts only the CA, and as a server requires and
// verifies the peer's certificate (tls.RequireAndVerifyClientCert). As a
// client it checks the server's SANs against the dialed host, as ClientTLS
// does: dial with tls.Dial or tls.Dialer (which fill in ServerName from the
// address), or Clone and set ServerName when wrapping a connection yourself.
//
// Deprecated: use NewKeypair and (*Keypair).PeerTLS, which present renewed
// certificates and check the peer's node identity and role.
func PeerTLS(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, err
	}
	cert, err := keyPair(pool, certPEM, keyPEM, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

func certPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("pki: no CA certificate found in the CA PEM; pass the cluster CA certificate flotilla_cluster generated")
	}
	return pool, nil
}

// keyPair loads a node certificate and checks, at start rather than at the
// first handshake on some other machine, that it is signed by the CA and is
// currently valid for each of usages. Keypair uses it too; it is not
// deprecated with ServerTLS, ClientTLS and PeerTLS.
func keyPair(pool *x509.CertPool, certPEM, keyPEM []byte, usages ...x509.ExtKeyUsage) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: node certificate and key: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("pki: node certificate: %w", err)
		}
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	// VerifyOptions.KeyUsages accepts a chain good for any one of them, so
	// each usage is checked on its own.
	for _, u := range usages {
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}})
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("pki: node certificate %q does not verify against the cluster CA: %w; issue it from this CA (or delete it so the agent gets a new one)", leaf.Subject.CommonName, err)
		}
	}
	return cert, nil
}
