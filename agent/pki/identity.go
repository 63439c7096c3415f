package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// Roles a node certificate can carry. Servers hold the CA key and take part
// in raft; clients run workloads and join with the join token.
const (
	RoleServer = api.RoleServer
	RoleClient = api.RoleClient
)

// identityScheme is the scheme of the one URI SAN that names a node:
// flotilla://<role>/<name>.
const identityScheme = "flotilla"

// Identity is who a node certificate speaks for, as IdentityOf reads it.
type Identity struct {
	// Name is the node name: the common name and the path of the identity URI.
	Name string
	// Role is RoleServer or RoleClient.
	Role string
	// IPs are the certificate's IP SANs, the addresses TLS clients check.
	IPs []net.IP
	// Serial is the certificate's serial number.
	Serial *big.Int
	// IssuedAt is when the CA signed the certificate (NotBefore plus the
	// backdate the CA applies), to the second. Revocation compares it with
	// a node's removal time (see IssuedBefore).
	IssuedAt time.Time
	// NotAfter is when the certificate expires.
	NotAfter time.Time
}

// IssuedBefore reports whether the certificate was issued before t: when t
// is the time a node was removed, whether the certificate is revoked.
// Certificates record seconds only and IssuedAt is rounded down, so a
// certificate issued in the same second as the removal counts as revoked
// (erring towards refusal). Servers' clocks are compared, so keep them in
// sync (NTP); the CA backdates by a few minutes for the same reason.
func (id Identity) IssuedBefore(t time.Time) bool { return id.IssuedAt.Before(t) }

// String returns "role/name", as the identity URI spells it.
func (id Identity) String() string { return id.Role + "/" + id.Name }

// identityURI returns flotilla://<role>/<name>.
func identityURI(role, name string) *url.URL {
	return &url.URL{Scheme: identityScheme, Host: role, Path: "/" + name}
}

func validRole(role string) error {
	switch role {
	case RoleServer, RoleClient:
		return nil
	}
	return fmt.Errorf("pki: unknown role %.32q; a node certificate's role is %q or %q", role, RoleServer, RoleClient)
}

// ValidNodeName checks that name can be a node name: a DNS label of 1 to 63
// lower-case letters, digits and '-', not starting or ending with '-'. Node
// names appear in certificates, URIs and DNS, so they are kept that plain.
func ValidNodeName(name string) error {
	const rule = "use 1 to 63 lower-case letters, digits and '-', not starting or ending with '-'"
	switch {
	case name == "":
		return errors.New("pki: the node name is empty; " + rule)
	case len(name) > 63:
		return fmt.Errorf("pki: node name %.80q is %d characters long; %s", name, len(name), rule)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("pki: node name %.80q starts or ends with '-'; %s", name, rule)
	}
	for _, c := range name {
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' {
			continue
		}
		return fmt.Errorf("pki: node name %.80q has the character %q; %s", name, c, rule)
	}
	return nil
}

// IdentityOf reads the identity of a node certificate: its common name, its
// one flotilla://<role>/<name> URI SAN, and its IP SANs. It does not verify
// the certificate (TLS or x509.Verify does that first); it refuses one that
// does not name exactly one valid node: no or several identity URIs, an
// unknown role, a common name that differs from the URI's name, an invalid
// node name, DNS or e-mail SANs, other URIs, or a CA certificate.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("pki: no certificate")
	}
	cn := cert.Subject.CommonName
	// %.64q: the common name comes from whoever made the certificate.
	fail := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("pki: certificate %.64q is not a flotilla node certificate: "+format+"; use one issued by the cluster CA (IssueServer, SignJoin or Renew)", append([]any{cn}, args...)...)
	}
	if cert.IsCA {
		return fail("it is a CA certificate")
	}
	if dns := cert.DNSNames; len(dns) > 0 {
		return fail("it has DNS SANs %.64q; node certificates name hosts by IP only", dns[:min(len(dns), 3)])
	}
	if len(cert.EmailAddresses) > 0 {
		return fail("it has e-mail SANs; node certificates name hosts by IP only")
	}
	var id *url.URL
	for _, u := range cert.URIs {
		switch {
		case u == nil:
			return fail("it has an empty URI SAN")
		case u.Scheme != identityScheme:
			return fail("it has the URI SAN %.100q; only one %s:// URI is allowed", u.String(), identityScheme)
		case id != nil:
			return fail("it has several %s:// URI SANs", identityScheme)
		}
		id = u
	}
	if id == nil {
		return fail("it has no %s://<role>/<name> URI SAN", identityScheme)
	}
	role, name := id.Host, ""
	if len(id.Path) > 0 && id.Path[0] == '/' {
		name = id.Path[1:]
	}
	if err := validRole(role); err != nil {
		return fail("%s", strings.TrimPrefix(err.Error(), "pki: "))
	}
	if err := ValidNodeName(name); err != nil {
		return fail("%s", strings.TrimPrefix(err.Error(), "pki: "))
	}
	// Anything else in the URI (user, port, query, fragment, escapes) would
	// be a second way of writing an identity: accept the canonical form only.
	if want := identityURI(role, name).String(); id.String() != want {
		return fail("its identity URI %.100q is not in the form %q", id.String(), want)
	}
	if cn != name {
		return fail("its common name differs from the node name %q in its identity URI", name)
	}
	var serial *big.Int
	if cert.SerialNumber != nil {
		serial = new(big.Int).Set(cert.SerialNumber)
	}
	return Identity{
		Name:     name,
		Role:     role,
		IPs:      cloneIPs(cert.IPAddresses),
		Serial:   serial,
		IssuedAt: cert.NotBefore.Add(backdate),
		NotAfter: cert.NotAfter,
	}, nil
}

func cloneIPs(ips []net.IP) []net.IP {
	if ips == nil {
		return nil
	}
	out := make([]net.IP, len(ips))
	for i, ip := range ips {
		out[i] = slices.Clone(ip)
	}
	return out
}
