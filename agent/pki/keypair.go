package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
)

// Keypair is a node's current certificate and key with the cluster CA that
// verifies them and its peers. The TLS configurations it makes read the
// current certificate at every handshake, so a renewed one (Set) applies to
// new connections without restarting listeners or clients. It is safe for
// concurrent use.
type Keypair struct {
	caPEM []byte
	pool  *x509.CertPool
	cur   atomic.Pointer[keypairState]
}

// keypairState is one certificate; it is never modified once stored.
type keypairState struct {
	cert            tls.Certificate // Leaf set
	id              Identity
	certPEM, keyPEM []byte
}

// NewKeypair loads a node certificate and its key, checking now rather than
// at the first handshake on another machine that the certificate is signed
// by the CA in caPEM, currently valid for both TLS server and client use,
// and names a node (IdentityOf).
func NewKeypair(caPEM, certPEM, keyPEM []byte) (*Keypair, error) {
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, err
	}
	k := &Keypair{caPEM: bytes.Clone(caPEM), pool: pool}
	st, err := k.load(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	k.cur.Store(st)
	return k, nil
}

// Set replaces the certificate with a renewed one, checked as NewKeypair
// checks it. A certificate for another node name or role is refused: that is
// a different node, not a renewal. Handshakes already under way finish with
// the old certificate; later ones present the new one.
func (k *Keypair) Set(certPEM, keyPEM []byte) error {
	st, err := k.load(certPEM, keyPEM)
	if err != nil {
		return err
	}
	old := k.cur.Load()
	if st.id.Name != old.id.Name || st.id.Role != old.id.Role {
		return fmt.Errorf("pki: the new certificate is for %s but this node is %s; a renewed certificate keeps the node name and role", st.id, old.id)
	}
	k.cur.Store(st)
	return nil
}

func (k *Keypair) load(certPEM, keyPEM []byte) (*keypairState, error) {
	cert, err := keyPair(k.pool, certPEM, keyPEM, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		// keyPair parsed it once already; tls.X509KeyPair sets Leaf since Go 1.23.
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("pki: node certificate: %w", err)
		}
	}
	id, err := IdentityOf(cert.Leaf)
	if err != nil {
		return nil, err
	}
	return &keypairState{cert: cert, id: id, certPEM: bytes.Clone(certPEM), keyPEM: bytes.Clone(keyPEM)}, nil
}

// Identity returns the identity of the current certificate.
func (k *Keypair) Identity() Identity {
	id := k.cur.Load().id
	id.IPs = cloneIPs(id.IPs)
	return id
}

// Leaf returns the current certificate, parsed. It is shared: do not modify it.
func (k *Keypair) Leaf() *x509.Certificate { return k.cur.Load().cert.Leaf }

// CertPEM returns the current certificate, PEM-encoded.
func (k *Keypair) CertPEM() []byte { return bytes.Clone(k.cur.Load().certPEM) }

// KeyPEM returns the current certificate's private key, PEM-encoded.
func (k *Keypair) KeyPEM() []byte { return bytes.Clone(k.cur.Load().keyPEM) }

// CAPEM returns the CA certificates the keypair trusts, PEM-encoded.
func (k *Keypair) CAPEM() []byte { return bytes.Clone(k.caPEM) }

func (k *Keypair) current() *tls.Certificate { return &k.cur.Load().cert }

// PeerCheck decides whether a peer whose certificate verified against the
// cluster CA may talk to us: role rules ("only servers join raft"), the
// expected node ("the server at this address is node1"), revocation
// (IssuedBefore a removal time). It runs during every handshake, resumed
// ones included, and may be called concurrently; it should not block. A
// nil PeerCheck accepts any valid cluster identity.
type PeerCheck func(Identity) error

// RequireRole returns a PeerCheck that accepts only peers with role.
func RequireRole(role string) PeerCheck {
	return func(id Identity) error {
		if id.Role != role {
			return fmt.Errorf("it has role %s; only a %s may connect here", id.Role, role)
		}
		return nil
	}
}

// RequireNode returns a PeerCheck that accepts only the node name with role,
// such as the server a client meant to dial.
func RequireNode(role, name string) PeerCheck {
	return func(id Identity) error {
		if id.Role != role || id.Name != name {
			return fmt.Errorf("it is not %s/%s; check the address is that node's", role, name)
		}
		return nil
	}
}

// verifyPeer reads the identity of the peer's verified certificate and runs
// check on it. Only a verified chain counts: an unverified certificate
// (tls.RequestClientCert, tls.RequireAnyClientCert) is refused, not trusted.
func verifyPeer(cs tls.ConnectionState, check PeerCheck) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("pki: the peer's certificate was not verified against the cluster CA; use tls.VerifyClientCertIfGiven or tls.RequireAndVerifyClientCert")
	}
	id, err := IdentityOf(cs.VerifiedChains[0][0])
	if err != nil {
		return err
	}
	if check == nil {
		return nil
	}
	if err := check(id); err != nil {
		return fmt.Errorf("pki: peer %s refused: %w", id, err)
	}
	return nil
}

// ServerTLS returns the configuration of a TLS server presenting the
// current certificate. Client certificates, when clientAuth asks for them,
// must verify against the CA (with ClientAuth usage), name a node
// (IdentityOf) and pass check. With tls.VerifyClientCertIfGiven a caller
// without a certificate (a joining agent) completes the handshake: handlers
// decide per request with PeerIdentity. tls.RequireAndVerifyClientCert
// refuses such callers at the handshake; tls.NoClientCert asks for no
// certificate. Client auth types that do not verify certificates refuse
// every certificate given. TLS 1.3 is the minimum.
func (k *Keypair) ServerTLS(clientAuth tls.ClientAuthType, check PeerCheck) *tls.Config {
	var authErr error
	if clientAuth < tls.NoClientCert || clientAuth > tls.RequireAndVerifyClientCert {
		// No error result to report it with: fail every handshake instead.
		authErr = fmt.Errorf("pki: unknown client auth type %d; use tls.NoClientCert, tls.VerifyClientCertIfGiven or tls.RequireAndVerifyClientCert", clientAuth)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if authErr != nil {
				return nil, authErr
			}
			return k.current(), nil
		},
		ClientCAs:  k.pool,
		ClientAuth: clientAuth,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // allowed by clientAuth, or the handshake has failed already
			}
			return verifyPeer(cs, check)
		},
	}
}

// ClientTLS returns the configuration of a TLS client presenting the current
// certificate. The server's certificate must verify against the CA, have the
// dialed host among its IP SANs, name a node (IdentityOf) and pass check
// (such as RequireNode(RoleServer, "node1")).
//
// ServerName is deliberately left empty: net/http, tls.Dial and tls.Dialer
// fill it in from the address of each connection, so one configuration
// serves every peer and the server's IP SAN is checked against the address
// dialed. Callers that wrap a net.Conn with tls.Client themselves must Clone
// it and set ServerName.
func (k *Keypair) ClientTLS(check PeerCheck) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    k.pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return k.current(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error { return verifyPeer(cs, check) },
	}
}

// PeerTLS returns one configuration that works both to dial and to accept
// connections between agents, as a raft stream layer needs. Both ways it
// presents the current certificate and requires the peer's, which must
// verify against the CA, name a node and pass check (for raft,
// RequireRole(RoleServer) plus revocation). As a client it also checks the
// server's IP SANs against the dialed host, as ClientTLS does.
func (k *Keypair) PeerTLS(check PeerCheck) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return k.current(), nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return k.current(), nil
		},
		RootCAs:          k.pool,
		ClientCAs:        k.pool,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error { return verifyPeer(cs, check) },
	}
}

// JoinTLS returns the configuration an agent without a certificate dials a
// server with to join: it presents no certificate and accepts only a server
// whose certificate verifies against the CA in caPEM, has the dialed host
// among its IP SANs (ServerName is left empty, as in ClientTLS), and has role
// server, so the join token goes to no one else.
func JoinTLS(caPEM []byte) (*tls.Config, error) {
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, err
	}
	check := RequireRole(RoleServer)
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		RootCAs:          pool,
		VerifyConnection: func(cs tls.ConnectionState) error { return verifyPeer(cs, check) },
	}, nil
}

// PeerIdentity returns the identity of the peer's verified certificate on a
// connection (for an HTTP handler, r.TLS), or false when the peer presented
// none or it does not name a node.
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	id, err := IdentityOf(cs.VerifiedChains[0][0])
	if err != nil {
		return Identity{}, false
	}
	return id, true
}
