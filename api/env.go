package api

import (
	"fmt"
	"os"
	"strings"
)

// EnvCACert names the CA certificate an https agent's certificate is
// verified against: a PEM file's path, or the PEM itself (as the provider's
// ca_cert_pem takes it, e.g. from terraform output).
const EnvCACert = "FLOTILLA_CACERT"

// ConfigFromEnv is DefaultConfig read through getenv, with the CA of
// FLOTILLA_CACERT: what the CLI starts from before its flags.
func ConfigFromEnv(getenv func(string) string) (*Config, error) {
	c := &Config{Address: getenv(EnvAddr), Token: getenv(EnvToken)}
	if c.Address == "" {
		c.Address = DefaultAddr
	}
	if v := getenv(EnvCACert); v != "" {
		pem, err := ReadCACert(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvCACert, err)
		}
		c.CACertPEM = pem
	}
	return c, nil
}

// ReadCACert returns v when it is a PEM certificate, else the content of
// the file v names.
func ReadCACert(v string) ([]byte, error) {
	if strings.HasPrefix(strings.TrimSpace(v), "-----BEGIN") {
		return []byte(v), nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, fmt.Errorf("read the CA certificate: %w; give the path of the cluster's CA in PEM (flotilla_cluster's ca_cert_pem saved to a file)", err)
	}
	return b, nil
}

// ReadTokenFile returns the API token in file path, without surrounding
// white space.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the API token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("the token file %s is empty", path)
	}
	return tok, nil
}
