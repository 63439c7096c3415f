package api

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Ingress routes HTTP and HTTPS requests arriving at any agent's ingress
// ports to services, by host and path, as a Kubernetes Ingress does. Every
// agent serves every ingress: requests go straight to the service's ready
// endpoints, not through its virtual IP.
type Ingress struct {
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	Rules     []IngressRule `json:"rules,omitempty"`
	// DefaultBackend serves requests no rule matches (of any ingress: two
	// ingresses with a default backend conflict).
	DefaultBackend *IngressBackend `json:"default_backend,omitempty"`
	TLS            []IngressTLS    `json:"tls,omitempty"`
	// SSLRedirect answers plain HTTP requests for the TLS hosts with a
	// permanent redirect to HTTPS.
	SSLRedirect bool `json:"ssl_redirect,omitempty"`

	CreateIndex uint64 `json:"create_index,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
}

// IngressRule routes the requests for one host (every host when empty).
type IngressRule struct {
	// Host is a DNS name, or "*.example.com" for every name one label
	// below example.com. Empty matches any host.
	Host  string        `json:"host,omitempty"`
	Paths []IngressPath `json:"paths"`
}

// Path match types.
const (
	PathPrefix = "prefix"
	PathExact  = "exact"
)

// IngressPath sends requests whose path matches to a backend. Prefix
// matching is by whole path segments, as Kubernetes' Prefix type: /api
// matches /api and /api/x, not /apix. The longest matching path wins; exact
// beats prefix at the same length.
type IngressPath struct {
	Path    string         `json:"path"`
	Match   string         `json:"match,omitempty"` // PathPrefix (default) or PathExact
	Backend IngressBackend `json:"backend"`
}

// MatchType returns the path's match, PathPrefix when unset.
func (p IngressPath) MatchType() string {
	if p.Match == "" {
		return PathPrefix
	}
	return p.Match
}

// IngressBackend is a service of the ingress's namespace and one of its
// ports, by number or name.
type IngressBackend struct {
	Service string `json:"service"`
	// Port is the service's port number; PortName its port's name. One of
	// them is required unless the service has a single port.
	Port     int    `json:"port,omitempty"`
	PortName string `json:"port_name,omitempty"`
}

// IngressTLS terminates TLS for Hosts with a certificate chain and its key,
// both PEM. The key is a secret: the API accepts it on writes and never
// returns it (KeySHA256 tells a changed key from an unchanged one); the
// agents that serve the ingress receive it, and nobody logs it.
type IngressTLS struct {
	Hosts       []string `json:"hosts"`
	Certificate string   `json:"certificate"`
	Key         string   `json:"key,omitempty"`
	// KeySHA256 is the hex SHA-256 of Key, set by the servers.
	KeySHA256 string `json:"key_sha256,omitempty"`
}

// KeyDigest returns the hex SHA-256 of a PEM key, as KeySHA256 holds it.
func KeyDigest(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ID returns "namespace/name".
func (in *Ingress) ID() string { return in.Namespace + "/" + in.Name }

// Redacted returns a copy of the ingress without TLS keys, as the API
// answers it.
func (in *Ingress) Redacted() *Ingress {
	out := *in
	out.TLS = make([]IngressTLS, len(in.TLS))
	for i, t := range in.TLS {
		t.Hosts = append([]string(nil), t.Hosts...)
		if t.Key != "" {
			t.KeySHA256 = KeyDigest(t.Key)
		}
		t.Key = ""
		out.TLS[i] = t
	}
	if len(in.TLS) == 0 {
		out.TLS = nil
	}
	return &out
}

// Bounds of an ingress.
const (
	MaxIngressRules     = 100
	MaxIngressPaths     = 100 // per rule
	MaxIngressTLS       = 50
	MaxIngressTLSHosts  = 50 // per TLS entry
	MaxIngressPathLen   = 1024
	MaxIngressPEMBytes  = 64 << 10 // a certificate chain or a key
	MaxIngressHostLen   = 253
	DefaultIngressHTTP  = 8080
	DefaultIngressHTTPS = 8443
)

// Validate checks an ingress as a user submitted it (TLS keys included),
// naming each offending field by its path.
func (in *Ingress) Validate() error {
	if err := in.ValidateFields(); err != nil {
		return err
	}
	var errs []error
	field := fieldErrors(&errs)
	for i, t := range in.TLS {
		if t.Key == "" {
			field(fmt.Sprintf("tls[%d].key", i), errors.New("is required"))
			continue
		}
		// Parsing proves the pair fits; errors never quote the key.
		if _, err := tls.X509KeyPair([]byte(t.Certificate), []byte(t.Key)); err != nil {
			field(fmt.Sprintf("tls[%d]", i), fmt.Errorf("the certificate and key are not a PEM pair that fits (%s); give the certificate chain and its private key", certError(err)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Under the API's body and the raft entry bounds (1 MiB), with room for
	// what the servers add.
	return checkEncodedSize("ingress", in, MaxSpecBytes*3)
}

// certError describes a crypto/tls parse error without any of the input.
func certError(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "-----") {
		return "unreadable PEM"
	}
	return strings.TrimPrefix(msg, "tls: ")
}

// ValidateFields checks everything but the TLS key pairs, for agents that
// receive ingresses and for answers without keys.
func (in *Ingress) ValidateFields() error {
	var errs []error
	field := fieldErrors(&errs)
	field("namespace", ValidateName(in.Namespace))
	field("name", ValidateName(in.Name))
	if len(in.Rules) == 0 && in.DefaultBackend == nil {
		field("rules", errors.New("an ingress needs at least one rule or a default_backend"))
	}
	if len(in.Rules) > MaxIngressRules {
		field("rules", fmt.Errorf("%d rules; at most %d are allowed", len(in.Rules), MaxIngressRules))
	}
	hosts := map[string]bool{}
	for i, r := range in.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		if r.Host != "" {
			field(path+".host", ValidateIngressHost(r.Host))
		}
		if hosts[r.Host] {
			field(path+".host", fmt.Errorf("%q has another rule in this ingress; put its paths in one rule", TruncateText(r.Host, 60)))
		}
		hosts[r.Host] = true
		if len(r.Paths) == 0 {
			field(path+".paths", errors.New("must have at least one path"))
		}
		if len(r.Paths) > MaxIngressPaths {
			field(path+".paths", fmt.Errorf("%d paths; at most %d are allowed", len(r.Paths), MaxIngressPaths))
		}
		seen := map[string]bool{}
		for j, p := range r.Paths {
			pp := fmt.Sprintf("%s.paths[%d]", path, j)
			field(pp+".path", ValidateIngressPath(p.Path))
			switch p.Match {
			case "", PathPrefix, PathExact:
			default:
				field(pp+".match", fmt.Errorf("%q must be %q or %q", TruncateText(p.Match, 20), PathPrefix, PathExact))
			}
			k := p.MatchType() + " " + p.Path
			if seen[k] {
				field(pp+".path", fmt.Errorf("%s %q appears twice in this rule", p.MatchType(), TruncateText(p.Path, 60)))
			}
			seen[k] = true
			validateBackend(field, pp+".backend", p.Backend)
		}
	}
	if in.DefaultBackend != nil {
		validateBackend(field, "default_backend", *in.DefaultBackend)
	}
	if len(in.TLS) > MaxIngressTLS {
		field("tls", fmt.Errorf("%d entries; at most %d are allowed", len(in.TLS), MaxIngressTLS))
	}
	tlsHosts := map[string]bool{}
	for i, t := range in.TLS {
		path := fmt.Sprintf("tls[%d]", i)
		if len(t.Hosts) == 0 {
			field(path+".hosts", errors.New("must name at least one host"))
		}
		if len(t.Hosts) > MaxIngressTLSHosts {
			field(path+".hosts", fmt.Errorf("%d hosts; at most %d are allowed", len(t.Hosts), MaxIngressTLSHosts))
		}
		for j, h := range t.Hosts {
			field(fmt.Sprintf("%s.hosts[%d]", path, j), ValidateIngressHost(h))
			if tlsHosts[h] {
				field(fmt.Sprintf("%s.hosts[%d]", path, j), fmt.Errorf("%q has another certificate in this ingress", TruncateText(h, 60)))
			}
			tlsHosts[h] = true
		}
		if t.Certificate == "" {
			field(path+".certificate", errors.New("is required (PEM)"))
		}
		if len(t.Certificate) > MaxIngressPEMBytes {
			field(path+".certificate", fmt.Errorf("%d bytes; at most %d", len(t.Certificate), MaxIngressPEMBytes))
		}
		if len(t.Key) > MaxIngressPEMBytes {
			field(path+".key", fmt.Errorf("%d bytes; at most %d", len(t.Key), MaxIngressPEMBytes))
		}
	}
	return errors.Join(errs...)
}

func validateBackend(field func(string, error), path string, b IngressBackend) {
	field(path+".service", ValidateName(b.Service))
	if b.Port != 0 && (b.Port < 1 || b.Port > 65535) {
		field(path+".port", fmt.Errorf("%d is out of range 1..65535", b.Port))
	}
	if b.PortName != "" {
		field(path+".port_name", ValidateDNSLabelLen(b.PortName, 15))
		if b.Port != 0 {
			field(path+".port_name", errors.New("give port or port_name, not both"))
		}
	}
}

// ValidateIngressHost checks a host of a rule or a TLS entry: lower-case DNS
// labels, optionally "*." first; no port, no IP address.
func ValidateIngressHost(h string) error {
	if len(h) > MaxIngressHostLen {
		return fmt.Errorf("%d characters; at most %d", len(h), MaxIngressHostLen)
	}
	name := strings.TrimPrefix(h, "*.")
	labels := strings.Split(name, ".")
	if len(labels) < 2 && name != h {
		return fmt.Errorf("%q: a wildcard needs a domain below it, such as *.example.com", TruncateText(h, 60))
	}
	for _, l := range labels {
		if err := ValidateDNSLabel(l); err != nil {
			return fmt.Errorf("%q must be a lower-case DNS name such as app.example.com or *.example.com (no port, no IP address): %w", TruncateText(h, 60), err)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("%q looks like an IP address; ingress rules route by DNS name", TruncateText(h, 60))
	}
	return nil
}

// ValidateIngressPath checks a rule's path: absolute, bounded, and made only
// of URL path characters, so it is safe to write into a proxy's
// configuration without quoting (no quotes, semicolons, braces, dollar
// signs, backslashes, spaces or control characters).
func ValidateIngressPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q must start with /", TruncateText(p, 60))
	}
	if len(p) > MaxIngressPathLen {
		return fmt.Errorf("%d characters; at most %d", len(p), MaxIngressPathLen)
	}
	for _, c := range p {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("-._~!&()*+,=:@/%", c):
		default:
			return fmt.Errorf("%q: character %q is not allowed in an ingress path (use percent-encoding)", TruncateText(p, 60), c)
		}
	}
	if strings.Contains(p, "//") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") || strings.Contains(p, "/./") || strings.HasSuffix(p, "/.") {
		return fmt.Errorf("%q must be a clean path (no //, . or .. segments)", TruncateText(p, 60))
	}
	return nil
}

// IngressConflict reports whether two ingresses claim the same host and
// path (same match type), the same TLS host, or both have a default
// backend, and describes the first clash for an error naming both.
func IngressConflict(a, b *Ingress) (string, bool) {
	if a.DefaultBackend != nil && b.DefaultBackend != nil {
		return "both have a default_backend", true
	}
	paths := map[string]bool{}
	for _, r := range a.Rules {
		for _, p := range r.Paths {
			paths[r.Host+" "+p.MatchType()+" "+p.Path] = true
		}
	}
	for _, r := range b.Rules {
		for _, p := range r.Paths {
			if paths[r.Host+" "+p.MatchType()+" "+p.Path] {
				host := r.Host
				if host == "" {
					host = "any host"
				}
				return fmt.Sprintf("both route %s %s %s", host, p.MatchType(), p.Path), true
			}
		}
	}
	hosts := map[string]bool{}
	for _, t := range a.TLS {
		for _, h := range t.Hosts {
			hosts[h] = true
		}
	}
	for _, t := range b.TLS {
		for _, h := range t.Hosts {
			if hosts[h] {
				return fmt.Sprintf("both have a TLS certificate for %s", h), true
			}
		}
	}
	return "", false
}
