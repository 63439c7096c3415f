package provider

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/flotilla-io/flotilla/api"
)

// Validators of flotilla_ingress attributes: each calls the api package's
// own check, so plan-time errors read like the agent's. None quotes a key.

var (
	_ validator.String = ingressHostValidator{}
	_ validator.String = ingressPathValidator{}
	_ validator.String = tlsCertificateValidator{}
)

// ingressHostValidator checks a rule's or TLS entry's host with
// api.ValidateIngressHost.
type ingressHostValidator struct{}

func (ingressHostValidator) Description(context.Context) string {
	return "must be a lower-case DNS name such as app.example.com or *.example.com (no port, no IP address)"
}

func (v ingressHostValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (ingressHostValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	checkString(req, resp, "Invalid host", api.ValidateIngressHost)
}

// ingressPathValidator checks a rule's path with api.ValidateIngressPath.
type ingressPathValidator struct{}

func (ingressPathValidator) Description(context.Context) string {
	return fmt.Sprintf("must be a clean absolute URL path of at most %d characters, such as /api", api.MaxIngressPathLen)
}

func (v ingressPathValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (ingressPathValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	checkString(req, resp, "Invalid path", api.ValidateIngressPath)
}

// tlsCertificateValidator checks PEM text starting with an X.509
// certificate (a chain: the server's certificate first).
type tlsCertificateValidator struct{}

func (tlsCertificateValidator) Description(context.Context) string {
	return "must be a PEM certificate chain, the server's certificate first"
}

func (v tlsCertificateValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (tlsCertificateValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if len(s) > api.MaxIngressPEMBytes {
		resp.Diagnostics.AddAttributeError(req.Path, "Certificate too large",
			fmt.Sprintf("%s: %d bytes; at most %d", req.Path, len(s), api.MaxIngressPEMBytes))
		return
	}
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid certificate",
			fmt.Sprintf("%s: no PEM certificate (-----BEGIN CERTIFICATE-----) first; give the certificate chain, the server's certificate first", req.Path))
		return
	}
	if _, err := x509.ParseCertificate(b.Bytes); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid certificate", fmt.Sprintf("%s: the first certificate does not parse: %s", req.Path, err))
	}
}

// tlsKeyProblem describes what is wrong with a key, "" when it is one PEM
// private key of bounded size, without ever quoting it.
func tlsKeyProblem(s string) string {
	if len(s) > api.MaxIngressPEMBytes {
		return fmt.Sprintf("%d bytes; at most %d", len(s), api.MaxIngressPEMBytes)
	}
	b, _ := pem.Decode([]byte(s))
	if b == nil || !strings.HasSuffix(b.Type, "PRIVATE KEY") {
		return "not a PEM private key (-----BEGIN PRIVATE KEY----- or similar); the value is not shown"
	}
	return ""
}
