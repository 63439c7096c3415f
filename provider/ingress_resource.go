package provider

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

var (
	_ resource.Resource                   = (*ingressResource)(nil)
	_ resource.ResourceWithConfigure      = (*ingressResource)(nil)
	_ resource.ResourceWithImportState    = (*ingressResource)(nil)
	_ resource.ResourceWithValidateConfig = (*ingressResource)(nil)

	_ planmodifier.String = keySHA256FromKey{}
)

// NewIngressResource returns the flotilla_ingress resource.
func NewIngressResource() resource.Resource {
	return &ingressResource{plainResource[ingressModel, api.Ingress]{
		api: ingressAPI(),
		parts: func(m *ingressModel) modelParts[api.Ingress] {
			return modelParts[api.Ingress]{conn: m.Connection, ns: m.Namespace.ValueString(), name: m.Name.ValueString(), timeouts: m.Timeouts, toAPI: m.toAPI}
		},
		flatten:   flattenIngress,
		specEqual: ingressSpecEqual,
	}}
}

// ingressResource manages one ingress through the agent API. TLS keys go
// to the agent on every write and never come back: the state keeps the
// configured key (sensitive), and key_sha256, which the agent does return,
// tells a key changed outside Terraform. The API never returns keys, so an
// imported ingress has none in state: the next apply with the
// configuration's keys sends them (an update in place) and converges.
type ingressResource struct {
	plainResource[ingressModel, api.Ingress]
}

// backendAttributes are a backend's service and port, for a path and for
// default_backend.
func backendAttributes(what string) map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"service": schema.StringAttribute{
			MarkdownDescription: "Name of the service " + what + " go to, in the ingress's namespace. It may not " +
				"exist yet: until it does, or while it has no ready endpoint, those requests are answered 503.",
			Required:   true,
			Validators: []validator.String{nameValidator{}},
		},
		"port": schema.Int64Attribute{
			MarkdownDescription: "The service's `port` (a number). Set `port` or `port_name`, not both; neither " +
				"is needed when the service has a single port.",
			Optional:   true,
			Validators: []validator.Int64{int64validator.Between(1, 65535), int64validator.ConflictsWith(path.MatchRelative().AtParent().AtName("port_name"))},
		},
		"port_name": schema.StringAttribute{
			MarkdownDescription: "The `name` of one of the service's ports.",
			Optional:            true,
			Validators:          []validator.String{portNameValidator{}},
		},
	}
}

func (r *ingressResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "HTTP and HTTPS routing from outside the fleet to services, by host and path. " +
			"Every agent serves every ingress on its ingress ports and sends each request straight to one of " +
			"the service's ready endpoints.",
		Attributes: map[string]schema.Attribute{
			"id": idAttribute(),
			"name": nameAttribute(fmt.Sprintf("Name of the ingress, a lower-case DNS label of at most %d "+
				"characters. Changing it replaces the ingress.", api.MaxNameLen)),
			"namespace": namespaceAttribute("Namespace of the ingress; its backends are services of this namespace. " +
				"Defaults to `" + api.DefaultNamespace + "`. Changing it replaces the ingress."),
			"ssl_redirect": schema.BoolAttribute{
				MarkdownDescription: "Answer plain HTTP requests for the `tls` hosts with a permanent redirect " +
					"to HTTPS. Defaults to `false`.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"api_connection": resourceConnectionAttribute(" On create with an `api_connection`, the provider first waits " +
				"(up to the create timeout) for the fleet to answer and elect a leader, as its VMs may still be booting."),
		},
		Blocks: map[string]schema.Block{
			"rule": schema.ListNestedBlock{
				MarkdownDescription: fmt.Sprintf("Routes the requests for one host; at most %d. A host may have "+
					"one rule per ingress.", api.MaxIngressRules),
				Validators: []validator.List{listvalidator.SizeAtMost(api.MaxIngressRules)},
				NestedObject: schema.NestedBlockObject{
					Attributes: map[string]schema.Attribute{
						"host": schema.StringAttribute{
							MarkdownDescription: "The request's host, a DNS name such as `shop.example.com`, or " +
								"`*.example.com` for every name one label below `example.com`. Unset: any host.",
							Optional:   true,
							Validators: []validator.String{ingressHostValidator{}},
						},
					},
					Blocks: map[string]schema.Block{
						"path": schema.ListNestedBlock{
							MarkdownDescription: fmt.Sprintf("A path and the backend of the requests it matches; "+
								"at least one, at most %d. The longest matching path of the host wins; `exact` "+
								"beats `prefix` at the same length.", api.MaxIngressPaths),
							Validators: []validator.List{
								listvalidator.IsRequired(), listvalidator.SizeAtLeast(1), listvalidator.SizeAtMost(api.MaxIngressPaths),
							},
							NestedObject: schema.NestedBlockObject{
								Attributes: mergeAttributes(map[string]schema.Attribute{
									"path": schema.StringAttribute{
										MarkdownDescription: "An absolute URL path such as `/api`, without `//`, `.` or " +
											"`..` segments, quotes, spaces or semicolons (percent-encode them).",
										Required:   true,
										Validators: []validator.String{ingressPathValidator{}},
									},
									"match": schema.StringAttribute{
										MarkdownDescription: "`" + api.PathPrefix + "` (the default) matches the path and " +
											"everything below it by whole segments (`/api` matches `/api` and `/api/x`, not " +
											"`/apix`); `" + api.PathExact + "` matches the path only.",
										Optional:   true,
										Computed:   true,
										Default:    stringdefault.StaticString(api.PathPrefix),
										Validators: []validator.String{stringvalidator.OneOf(api.PathPrefix, api.PathExact)},
									},
								}, backendAttributes("the requests matching this path")),
							},
						},
					},
				},
			},
			"default_backend": schema.ListNestedBlock{
				MarkdownDescription: "Where requests no rule of any ingress matches go. At most one in the whole " +
					"cluster: a second ingress with one is refused, naming the first.",
				Validators: []validator.List{listvalidator.SizeAtMost(1)},
				NestedObject: schema.NestedBlockObject{
					Attributes: backendAttributes("unmatched requests"),
				},
			},
			"tls": schema.ListNestedBlock{
				MarkdownDescription: fmt.Sprintf("A certificate and its key for some hosts: HTTPS requests for "+
					"them are served with it (chosen by SNI); at most %d. A host may have one certificate in "+
					"the whole cluster.", api.MaxIngressTLS),
				Validators: []validator.List{listvalidator.SizeAtMost(api.MaxIngressTLS)},
				NestedObject: schema.NestedBlockObject{
					Attributes: map[string]schema.Attribute{
						"hosts": schema.ListAttribute{
							MarkdownDescription: "The hosts this certificate serves.",
							ElementType:         types.StringType,
							Required:            true,
							Validators: []validator.List{
								listvalidator.SizeAtLeast(1), listvalidator.SizeAtMost(api.MaxIngressTLSHosts),
								listvalidator.ValueStringsAre(ingressHostValidator{}),
							},
						},
						"certificate": schema.StringAttribute{
							MarkdownDescription: "The certificate chain, PEM, the server's certificate first.",
							Required:            true,
							Validators:          []validator.String{tlsCertificateValidator{}},
						},
						"key": schema.StringAttribute{
							MarkdownDescription: "The certificate's private key, PEM. Sensitive: never shown in " +
								"plans, never returned by the API nor logged. It is stored in the Terraform " +
								"state, as every sensitive value is, and on every agent (which terminates TLS).",
							Required:  true,
							Sensitive: true,
							// Checked in ValidateConfig, which reports at the
							// tls block: terraform prints the source lines of
							// an attribute's error, a literal key included.
						},
						"key_sha256": schema.StringAttribute{
							MarkdownDescription: "SHA-256 (hex) of `key`, as the agent reports it: a key changed " +
								"outside Terraform shows as a change of this attribute, which the next apply " +
								"undoes.",
							Computed:      true,
							PlanModifiers: []planmodifier.String{keySHA256FromKey{}},
						},
					},
				},
			},
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true}),
		},
	}
}

func mergeAttributes(a, b map[string]schema.Attribute) map[string]schema.Attribute {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// ValidateConfig checks what single-attribute validators cannot, with the
// attribute's path: something to route, hosts and paths once per ingress,
// port or port_name, TLS hosts once, and each certificate and key a pair.
// Then, once everything is known, api.Ingress.Validate runs as the agent
// would, so no error the agent would return waits for apply.
func (r *ingressResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m ingressModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// No blocks of a kind reads as null or empty.
	if !m.Rules.IsUnknown() && len(m.Rules.Elements()) == 0 && !m.DefaultBackend.IsUnknown() && len(m.DefaultBackend.Elements()) == 0 {
		resp.Diagnostics.AddAttributeError(path.Root("rule"), "Nothing to route",
			"an ingress needs at least one rule block or a default_backend block")
	}
	hosts := map[string]path.Path{}
	resp.Diagnostics.Append(knownBlocks(ctx, m.Rules, func(i int, rm ingressRuleModel) {
		rp := path.Root("rule").AtListIndex(i)
		if !rm.Host.IsUnknown() {
			host := rm.Host.ValueString()
			label := host
			if host == "" {
				label = "(any host)"
			}
			unique(&resp.Diagnostics, hosts, host, rp.AtName("host"), "Duplicate host",
				label+" has another rule in this ingress; put its paths in one rule. It is also given by")
		}
		paths := map[string]path.Path{}
		resp.Diagnostics.Append(knownBlocks(ctx, rm.Paths, func(j int, pm ingressPathModel) {
			pp := rp.AtName("path").AtListIndex(j)
			if isKnown(pm.Path) && !pm.Match.IsUnknown() {
				k := orDefault(pm.Match.ValueString(), api.PathPrefix) + " " + pm.Path.ValueString()
				unique(&resp.Diagnostics, paths, k, pp.AtName("path"), "Duplicate path", k+" appears twice in this rule; it is also given by")
			}
		})...)
	})...)
	tlsHosts := map[string]path.Path{}
	resp.Diagnostics.Append(knownBlocks(ctx, m.TLS, func(i int, tm ingressTLSModel) {
		tp := path.Root("tls").AtListIndex(i)
		if isKnown(tm.Hosts) {
			var hs []types.String
			resp.Diagnostics.Append(tm.Hosts.ElementsAs(ctx, &hs, false)...)
			for j, h := range hs {
				if isKnown(h) {
					unique(&resp.Diagnostics, tlsHosts, h.ValueString(), tp.AtName("hosts").AtListIndex(j), "Duplicate TLS host",
						h.ValueString()+" has another certificate in this ingress; it is also named by")
				}
			}
		}
		if !isKnown(tm.Key) {
			return
		}
		// Errors about the key go on the block, never the attribute.
		if msg := tlsKeyProblem(tm.Key.ValueString()); msg != "" {
			resp.Diagnostics.AddAttributeError(tp, "Invalid key", fmt.Sprintf("%s: %s", tp.AtName("key"), msg))
			return
		}
		if isKnown(tm.Certificate) {
			if _, err := tls.X509KeyPair([]byte(tm.Certificate.ValueString()), []byte(tm.Key.ValueString())); err != nil {
				resp.Diagnostics.AddAttributeError(tp, "Certificate and key do not fit", fmt.Sprintf(
					"%s: the certificate and key are not a PEM pair that fits (%s); give the certificate chain and its private key",
					tp, keyPairError(err)))
			}
		}
	})...)
	if resp.Diagnostics.HasError() || !req.Config.Raw.IsFullyKnown() {
		return
	}
	in, diags := m.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	if diags.HasError() {
		return
	}
	if err := in.Validate(); err != nil {
		resp.Diagnostics.AddError("Invalid ingress", "the agent would refuse this ingress: "+
			strings.ReplaceAll(terraformFieldNames(err.Error()), "\n", "; "))
	}
}

// terraformFieldNames renames the API's field paths in an error to this
// resource's block names.
func terraformFieldNames(s string) string {
	return strings.NewReplacer("rules[", "rule[", ".paths[", ".path[", ".backend.", ".").Replace(s)
}

// keyPairError describes a crypto/tls error without any of its input.
func keyPairError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "tls: ")
	if strings.Contains(msg, "-----") {
		return "unreadable PEM"
	}
	return msg
}

// ingressAPI is how flotilla_ingress reaches its ingress.
func ingressAPI() apiObject[api.Ingress] {
	return apiObject[api.Ingress]{
		kind:   "ingress",
		key:    func(in *api.Ingress) (string, string) { return in.Namespace, in.Name },
		get:    (*api.Client).GetIngress,
		create: (*api.Client).CreateIngress,
		update: (*api.Client).UpdateIngress,
		delete: (*api.Client).DeleteIngress,
		// Another ingress holds a route, TLS host or the default backend.
		takenSummary: "Ingress conflicts with another",
		takenHint:    "Change the host, path or TLS host, or the other ingress",
	}
}

// keySHA256FromKey plans key_sha256 as the digest of the configured key,
// which is what the agent will report: a plan shows a change exactly when
// the key changes, here or outside Terraform.
type keySHA256FromKey struct{}

func (keySHA256FromKey) Description(context.Context) string {
	return "The SHA-256 of the configured key."
}

func (m keySHA256FromKey) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (keySHA256FromKey) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	var key types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, req.Path.ParentPath().AtName("key"), &key)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if isKnown(key) {
		resp.PlanValue = types.StringValue(api.KeyDigest(key.ValueString()))
	}
}
