package provider

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

// The validators below call or mirror api/validate.go so that plan-time
// errors read like the agent's own.

var (
	_ validator.String = nameValidator{}
	_ validator.String = imageValidator{}
	_ validator.String = addressValidator{}
	_ validator.String = envNameValidator{}
	_ validator.Int64  = memoryLimitValidator{}
	_ validator.String = ipv4Validator{}
	_ validator.String = cidrValidator{}
	_ validator.String = downloadURLValidator{}
	_ validator.String = sha256Validator{}
	_ validator.String = pemCertValidator{}
	_ validator.Map    = labelsValidator{}
	_ validator.String = topologyValidator{}
	_ validator.String = portNameValidator{}
	_ validator.String = targetPortValidator{}
)

// checkString is the ValidateString of a validator that calls one check
// of the api package: it reports the check's error on a known value at the
// attribute, under summary.
func checkString(req validator.StringRequest, resp *validator.StringResponse, summary string, check func(string) error) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := check(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, summary, fmt.Sprintf("%s: %s", req.Path, err))
	}
}

// nameValidator checks a namespace, deployment or container name with
// api.ValidateName: a lower-case DNS label of at most api.MaxNameLen characters.
type nameValidator struct{}

func (nameValidator) Description(context.Context) string {
	return fmt.Sprintf("must be a lower-case DNS label of at most %d characters", api.MaxNameLen)
}

func (v nameValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (nameValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	checkString(req, resp, "Invalid name", api.ValidateName)
}

// imageValidator checks a container image reference as the agent does:
// not empty and without white space.
type imageValidator struct{}

func (imageValidator) Description(context.Context) string {
	return "must be a non-empty image reference without white space"
}

func (v imageValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (imageValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	img := req.ConfigValue.ValueString()
	switch {
	case strings.TrimSpace(img) == "":
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid image", fmt.Sprintf("%s: must not be empty", req.Path))
	case strings.ContainsAny(img, " \t\n"):
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid image", fmt.Sprintf("%s: %q must not contain white space", req.Path, img))
	}
}

// envNameValidator checks an environment variable name (a key of env).
type envNameValidator struct{}

func (envNameValidator) Description(context.Context) string {
	return "environment variable names must be non-empty and contain no '=' or NUL"
}

func (v envNameValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (envNameValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if k := req.ConfigValue.ValueString(); k == "" || strings.ContainsAny(k, "=\x00") {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid environment variable name",
			fmt.Sprintf("%s: variable name %q is invalid", req.Path, k))
	}
}

// addressValidator checks the provider's address the way api.NewClient does.
type addressValidator struct{}

func (addressValidator) Description(context.Context) string {
	return "must be an http or https URL such as " + api.DefaultAddr
}

func (v addressValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (addressValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if req.ConfigValue.ValueString() == "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid flotilla agent address",
			"address must not be empty; omit it to use "+api.EnvAddr+" or "+api.DefaultAddr)
		return
	}
	if _, err := api.NewClient(&api.Config{Address: req.ConfigValue.ValueString()}); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid flotilla agent address", err.Error())
	}
}

// minMemoryLimitMiB is the smallest memory limit a container starts with.
const minMemoryLimitMiB = 4

// memoryLimitValidator accepts 0 (no limit, as in the API) or at least
// minMemoryLimitMiB.
type memoryLimitValidator struct{}

func (memoryLimitValidator) Description(context.Context) string {
	return fmt.Sprintf("must be 0 (no limit) or at least %d MiB", minMemoryLimitMiB)
}

func (v memoryLimitValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (memoryLimitValidator) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if v := req.ConfigValue.ValueInt64(); v > 0 && v < minMemoryLimitMiB {
		resp.Diagnostics.AddAttributeError(req.Path, "Memory limit too small",
			fmt.Sprintf("%s: %d MiB is too small to start a container; use at least %d", req.Path, v, minMemoryLimitMiB))
	}
}

// ipv4Validator checks an IPv4 address such as a server's private IP.
type ipv4Validator struct{}

func (ipv4Validator) Description(context.Context) string {
	return "must be an IPv4 address such as 10.0.1.10"
}

func (v ipv4Validator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (ipv4Validator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if a, err := netip.ParseAddr(s); err != nil || !a.Is4() {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid IPv4 address",
			fmt.Sprintf("%s: %q is not an IPv4 address such as 10.0.1.10 (IPv6 is not supported)", req.Path, s))
	}
}

// cidrValidator checks an IPv4 network in CIDR notation with no host bits set.
type cidrValidator struct{}

func (cidrValidator) Description(context.Context) string {
	return "must be an IPv4 network in CIDR notation such as 10.244.0.0/16"
}

func (v cidrValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (cidrValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !p.Addr().Is4():
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid CIDR",
			fmt.Sprintf("%s: %q is not an IPv4 network in CIDR notation such as 10.244.0.0/16", req.Path, s))
	case p.Masked() != p:
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid CIDR",
			fmt.Sprintf("%s: %q has host bits set; did you mean %s?", req.Path, s, p.Masked()))
	case p.Bits() > 24:
		resp.Diagnostics.AddAttributeError(req.Path, "CIDR too small",
			fmt.Sprintf("%s: %s is too small for a cluster; use a /24 or larger (e.g. a /16)", req.Path, s))
	}
}

// downloadURLValidator checks an https URL to download from: a plain-HTTP
// one is refused at plan time rather than fetched by every node.
type downloadURLValidator struct{}

func (downloadURLValidator) Description(context.Context) string {
	return "must be an https URL"
}

func (v downloadURLValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (downloadURLValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	u, err := url.Parse(s)
	switch {
	case err == nil && u.Scheme == "http" && u.Host != "":
		resp.Diagnostics.AddAttributeError(req.Path, "Plain-HTTP URL",
			fmt.Sprintf("%s: %q is plain HTTP; nodes download flotilla-agent over https only (use https://%s)", req.Path, s,
				strings.TrimPrefix(s, "http://")))
	case err != nil || u.Scheme != "https" || u.Host == "" || strings.ContainsAny(s, " \t\r\n"):
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid URL",
			fmt.Sprintf("%s: %q is not an https URL such as https://example.com/flotilla-agent", req.Path, s))
	}
}

// sha256Validator checks a SHA-256 in hex, as sha256sum prints it (upper
// case accepted; the user-data gets it in lower case).
type sha256Validator struct{}

func (sha256Validator) Description(context.Context) string {
	return "must be a SHA-256 checksum: 64 hex digits"
}

func (v sha256Validator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (sha256Validator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid SHA-256",
			fmt.Sprintf("%s: %q is not a SHA-256 checksum (64 hex digits, as sha256sum prints it)", req.Path, s))
	}
}

// pemCertValidator checks PEM text holding at least one X.509 certificate.
type pemCertValidator struct{}

func (pemCertValidator) Description(context.Context) string {
	return "must be a PEM-encoded certificate"
}

func (v pemCertValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (pemCertValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	rest := []byte(req.ConfigValue.ValueString())
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err == nil {
				return
			}
		}
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid CA certificate",
		fmt.Sprintf("%s: no PEM-encoded X.509 certificate found; pass flotilla_cluster's ca_cert_pem", req.Path))
}

// labelsValidator checks a label map (labels, node_selector, an
// anti-affinity rule's labels) with api.ValidateLabels.
type labelsValidator struct{}

func (labelsValidator) Description(context.Context) string {
	return fmt.Sprintf("at most %d labels; keys and values of at most %d letters, digits, '-', '_' or '.', "+
		"starting and ending with a letter or digit; keys not empty", api.MaxLabels, api.MaxLabelLen)
}

func (v labelsValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (labelsValidator) ValidateMap(ctx context.Context, req validator.MapRequest, resp *validator.MapResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	labels := map[string]string{}
	for k, v := range req.ConfigValue.Elements() {
		s, ok := v.(types.String)
		if !ok || s.IsUnknown() {
			continue // checked again once known
		}
		labels[k] = s.ValueString()
	}
	if err := api.ValidateLabels(labels); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid labels",
			fmt.Sprintf("%s: %s", req.Path, strings.ReplaceAll(err.Error(), "\n", "; ")))
	}
}

// topologyValidator checks an anti-affinity rule's topology: "node" or a
// node label key such as "zone".
type topologyValidator struct{}

func (topologyValidator) Description(context.Context) string {
	return `must be "node" or a node label key such as "zone"`
}

func (v topologyValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (topologyValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	t := req.ConfigValue.ValueString()
	if t == topologyNode || (t != "" && api.ValidateLabels(map[string]string{t: ""}) == nil) {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid topology",
		fmt.Sprintf("%s: %q must be \"node\" or a node label key such as %q", req.Path, t, api.TopologyZone))
}

// maxPortNameLen bounds port names, as Kubernetes does: a name is also the
// _<name> label of the service's SRV records.
const maxPortNameLen = 15

// portNameValidator checks a service port name: a DNS label of at most
// maxPortNameLen characters.
type portNameValidator struct{}

func (portNameValidator) Description(context.Context) string {
	return fmt.Sprintf("must be a lower-case DNS label of at most %d characters", maxPortNameLen)
}

func (v portNameValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (portNameValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	checkString(req, resp, "Invalid port name", func(s string) error { return api.ValidateDNSLabelLen(s, maxPortNameLen) })
}

// targetPortValidator checks a service's target port as the agent does: a
// port number, or the name of a container port.
type targetPortValidator struct{}

func (targetPortValidator) Description(context.Context) string {
	return fmt.Sprintf("must be a port number from 1 to 65535 or a container port name (a DNS label of at most %d characters)", maxPortNameLen)
}

func (v targetPortValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (targetPortValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 65535 {
			resp.Diagnostics.AddAttributeError(req.Path, "Invalid target port",
				fmt.Sprintf("%s: %d is out of range 1..65535", req.Path, n))
		}
		return
	}
	if err := api.ValidateDNSLabelLen(s, maxPortNameLen); err != nil || strings.Trim(s, "0123456789") == "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid target port",
			fmt.Sprintf("%s: %q is neither a port number from 1 to 65535 nor a container port name "+
				"(a lower-case DNS label of at most %d characters)", req.Path, s, maxPortNameLen))
	}
}
