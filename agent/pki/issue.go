package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"time"
)

// DefaultCertValidity is how long node certificates last. Agents renew them
// well before (RenewAt), so a removed node's certificate is useless within a
// week even if a peer misses the revocation.
const DefaultCertValidity = 7 * 24 * time.Hour

// RenewAt returns when an agent should renew a certificate valid from
// notBefore to notAfter: two thirds into its lifetime, which leaves a third
// (over two days by default) to retry. It is deterministic; callers that
// renew many nodes at once add jitter.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	if !notAfter.After(notBefore) {
		return notBefore
	}
	return notBefore.Add(notAfter.Sub(notBefore) / 3 * 2)
}

// IssueServer generates an ECDSA P-256 key and a server certificate for node
// name: common name name, the URI SAN flotilla://server/<name>, and as IP
// SANs exactly ips (at least one: the addresses peers dial it on). Only a
// holder of the CA key, that is a server, can make one. The certificate is
// valid for validity, but never past the CA's own expiry.
func (ca *CA) IssueServer(name string, ips []net.IP, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if err := ValidNodeName(name); err != nil {
		return nil, nil, err
	}
	if len(ips) == 0 {
		return nil, nil, fmt.Errorf("pki: the server certificate for %q needs at least one IP address; pass the addresses peers dial it on", name)
	}
	var addrs []net.IP
	for i, ip := range ips {
		if ip == nil || ip.IsUnspecified() {
			// Usually a net.ParseIP that failed, or a bind address.
			return nil, nil, fmt.Errorf("pki: IP #%d for the server certificate of %q is %q, not an address peers can dial; pass the node's advertised addresses", i, name, ip)
		}
		if !containsIP(addrs, ip) {
			addrs = append(addrs, ip)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key for %q: %w", name, err)
	}
	certPEM, err = ca.sign(name, nil, addrs, []*url.URL{identityURI(RoleServer, name)}, &key.PublicKey, validity)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// SignJoin signs the CSR of an agent joining as name (with the join token)
// from remoteIP, the address its connection comes from. It gets a client
// certificate: common name name, the URI SAN flotilla://client/<name> and
// the IP SAN remoteIP, nothing else, usable for both ends of TLS (clients
// serve an API and accept connections too).
//
// The request must be signed by its own key, have common name name, and ask
// for no SANs but, optionally, remoteIP: anything else is refused rather than
// quietly dropped, so a misbehaving agent finds out. Requests for a CA
// certificate or with a weak key are refused. Whether name may join (not
// already a server, not removed) is the caller's decision.
func (ca *CA) SignJoin(csrPEM []byte, name string, remoteIP net.IP, validity time.Duration) (certPEM []byte, err error) {
	if err := ValidNodeName(name); err != nil {
		return nil, fmt.Errorf("pki: join as %q: %w", name, err)
	}
	if remoteIP == nil || remoteIP.IsUnspecified() || remoteIP.IsMulticast() {
		return nil, fmt.Errorf("pki: join as %q: the agent's address %q is not one it can connect from; pass the IP of the request's connection", name, remoteIP)
	}
	if v4 := remoteIP.To4(); v4 != nil {
		remoteIP = v4 // an IPv4-mapped IPv6 address, as some listeners report
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if err := checkNodeCSR(csr, name, "join request"); err != nil {
		return nil, err
	}
	for _, ip := range csr.IPAddresses {
		if !ip.Equal(remoteIP) {
			return nil, fmt.Errorf("pki: the join request asks for IP %s; a joining agent gets a certificate for the IP it connects from (%s) only; make the CSR with no IPs or with that one", ip, remoteIP)
		}
	}
	return ca.sign(name, nil, []net.IP{remoteIP}, []*url.URL{identityURI(RoleClient, name)}, csr.PublicKey, validity)
}

// Renew signs a new certificate for the key of csrPEM with the name, role
// and IPs of cur, the identity of the requester's current certificate,
// which the caller has verified (it came from the peer's TLS handshake) and
// checked is not revoked. The request must have common name cur.Name and
// ask for no SANs but cur's IPs; it is refused otherwise, as are requests
// for a CA certificate or with a weak key. Changing addresses or role takes
// a new certificate from IssueServer or SignJoin, not a renewal.
func (ca *CA) Renew(cur Identity, csrPEM []byte, validity time.Duration) (certPEM []byte, err error) {
	if err := validRole(cur.Role); err != nil {
		return nil, fmt.Errorf("pki: renew %q: %w", cur.Name, err)
	}
	if err := ValidNodeName(cur.Name); err != nil {
		return nil, fmt.Errorf("pki: renew: %w", err)
	}
	for _, ip := range cur.IPs {
		if ip == nil || ip.IsUnspecified() {
			return nil, fmt.Errorf("pki: renew %s: the current certificate has the address %q; issue a new certificate instead", cur, ip)
		}
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if err := checkNodeCSR(csr, cur.Name, "renewal request"); err != nil {
		return nil, err
	}
	for _, ip := range csr.IPAddresses {
		if !containsIP(cur.IPs, ip) {
			return nil, fmt.Errorf("pki: the renewal request for %s asks for IP %s, which its current certificate does not have (%s); a renewal keeps the addresses, so make the CSR with none", cur, ip, ipList(cur.IPs))
		}
	}
	return ca.sign(cur.Name, nil, cloneIPs(cur.IPs), []*url.URL{identityURI(cur.Role, cur.Name)}, csr.PublicKey, validity)
}

// checkNodeCSR refuses a request that is not for name, asks for SANs other
// than IP addresses (which the callers check), for a CA certificate, or has
// a weak key. what names the request in messages.
func checkNodeCSR(csr *x509.CertificateRequest, name, what string) error {
	cn := csr.Subject.CommonName
	switch {
	case cn != name:
		return fmt.Errorf("pki: the %s is for node %.64q but must be for %q; make the CSR with NewCSR(%q, …)", what, cn, name, name)
	case len(csr.DNSNames) > 0:
		return fmt.Errorf("pki: the %s for %q asks for DNS names %.100q; node certificates carry no DNS names (peers check the IP and the node identity); make the CSR with NewCSR", what, name, csr.DNSNames)
	case len(csr.EmailAddresses) > 0:
		return fmt.Errorf("pki: the %s for %q asks for e-mail addresses, which node certificates do not carry; make the CSR with NewCSR", what, name)
	case len(csr.URIs) > 0:
		return fmt.Errorf("pki: the %s for %q asks for URI SANs; the CA sets the node's identity URI itself; make the CSR with NewCSR", what, name)
	}
	if err := refuseCARequest(csr); err != nil {
		return fmt.Errorf("pki: the %s for %q: %w", what, name, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return fmt.Errorf("pki: the %s for %q: %w", what, name, err)
	}
	return nil
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, a := range ips {
		if a.Equal(ip) {
			return true
		}
	}
	return false
}

func ipList(ips []net.IP) string {
	if len(ips) == 0 {
		return "none"
	}
	s := ""
	for i, ip := range ips {
		if i > 0 {
			s += ", "
		}
		s += ip.String()
	}
	return s
}
