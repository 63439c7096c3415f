// Package cloudinit renders the cloud-init user-data that turns a fresh
// Debian or Ubuntu VM into a Flotilla node, from the files next to it:
// user-data.yaml.tftpl (a Go text/template) and bootstrap-node.sh, the
// script the user-data installs and runs. The flotilla_cluster resource
// renders it into cloud_init_server and cloud_init_client; the acceptance
// lab runs bootstrap-node.sh itself, and TestAccOneApply boots lab nodes
// from the rendered user-data (acceptance/lab/cmd/labboot).
//
// It only renders text: it must not generate secrets, read files at run
// time or talk to agents.
package cloudinit

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"text/template"

	"github.com/flotilla-io/flotilla/api"
)

// Roles of a node.
const (
	RoleServer = api.RoleServer
	RoleClient = api.RoleClient
)

//go:embed user-data.yaml.tftpl
var userDataTemplate string

//go:embed bootstrap-node.sh
var bootstrapScript string

// tmpl is parsed once; a template that does not parse is a build defect,
// caught by the tests.
var tmpl = template.Must(template.New("user-data").Option("missingkey=error").Funcs(template.FuncMap{
	"indent": indent,
	"quote":  yamlQuote,
	"shq":    shellQuote,
	"join":   strings.Join,
}).Parse(userDataTemplate))

// Params is what the user-data of one role is rendered from.
type Params struct {
	ClusterName string
	// Role is RoleServer or RoleClient. Only servers get the CA key.
	Role string
	// ServerAddresses are the servers' IPv4 addresses: the retry-join list,
	// and their count is the servers' bootstrap-expect.
	ServerAddresses []string
	PodCIDR         string
	ServiceCIDR     string
	APIPort         int
	// AgentURL is the https URL the script downloads flotilla-agent from
	// if the image lacks it (or has another release); empty means the
	// image must have /usr/local/bin/flotilla-agent.
	AgentURL string
	// AgentSHA256 is the lower-case hex SHA-256 of the binary at AgentURL;
	// required with it. The script installs nothing that does not match.
	AgentSHA256 string

	CACertPEM string
	CAKeyPEM  string
	GossipKey string
	JoinToken string
	// APITokenHash is the lower-case hex SHA-256 of the API token (what
	// pki.TokenHash returns). Nodes get only the hash: the token itself
	// stays in Terraform state, and user-data that leaks (metadata service,
	// console logs) does not grant access to the API.
	APITokenHash string
}

// BootstrapScript returns bootstrap-node.sh as embedded in the user-data.
func BootstrapScript() string { return bootstrapScript }

// Render returns the #cloud-config user-data for p.
func Render(p Params) (string, error) {
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("render cloud-init user-data: %w", err)
	}
	data := struct {
		Params
		Script string
	}{p, bootstrapScript}
	if p.Role != RoleServer {
		data.CAKeyPEM = ""
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render cloud-init user-data: %w", err)
	}
	return b.String(), nil
}

// validate rejects what would make invalid YAML or a broken node; the
// provider's schema validators report the same with attribute paths.
func (p *Params) validate() error {
	var errs []error
	if p.Role != RoleServer && p.Role != RoleClient {
		errs = append(errs, fmt.Errorf("role %q must be %s or %s", p.Role, RoleServer, RoleClient))
	}
	if len(p.ServerAddresses) == 0 {
		errs = append(errs, errors.New("no server addresses"))
	}
	for _, a := range p.ServerAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("server address %q: %w", a, err))
		}
	}
	for _, c := range []struct{ name, v string }{{"pod CIDR", p.PodCIDR}, {"service CIDR", p.ServiceCIDR}} {
		if _, err := netip.ParsePrefix(c.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", c.name, c.v, err))
		}
	}
	if p.APIPort < 1 || p.APIPort > 65535 {
		errs = append(errs, fmt.Errorf("API port %d is not between 1 and 65535", p.APIPort))
	}
	secrets := []struct{ name, v string }{
		{"CA certificate", p.CACertPEM}, {"gossip key", p.GossipKey}, {"join token", p.JoinToken},
	}
	if p.Role == RoleServer {
		secrets = append(secrets, struct{ name, v string }{"CA key", p.CAKeyPEM})
	}
	for _, s := range secrets {
		if strings.TrimSpace(s.v) == "" {
			errs = append(errs, fmt.Errorf("the %s is empty", s.name))
		}
	}
	if !IsSHA256(p.APITokenHash) {
		errs = append(errs, errors.New("the API token hash is not a SHA-256 (64 lower-case hex digits)"))
	}
	switch {
	case strings.ContainsAny(p.AgentURL, "\n\r"):
		errs = append(errs, errors.New("the agent URL contains a line break"))
	case p.AgentURL != "" && !strings.HasPrefix(p.AgentURL, "https://"):
		errs = append(errs, fmt.Errorf("the agent URL %q is not an https URL", p.AgentURL))
	}
	switch {
	case p.AgentSHA256 != "" && !IsSHA256(p.AgentSHA256):
		errs = append(errs, fmt.Errorf("the agent checksum %q is not a SHA-256 (64 lower-case hex digits)", p.AgentSHA256))
	case p.AgentURL != "" && p.AgentSHA256 == "":
		errs = append(errs, errors.New("an agent URL needs the agent's SHA-256: the script installs no binary it cannot check"))
	}
	return errors.Join(errs...)
}

// IsSHA256 reports whether s is a SHA-256 in lower-case hex, as sha256sum
// prints it.
func IsSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// indent indents every line of s by n spaces for a YAML literal block
// scalar. The block adds the final line break back, so the file written
// ends with exactly one.
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

// yamlQuote returns s as a double-quoted YAML scalar (JSON strings are).
func yamlQuote(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

// shellQuote returns s in single quotes for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
