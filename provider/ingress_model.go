package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

// ingressModel is the state and plan of flotilla_ingress.
type ingressModel struct {
	ID             types.String   `tfsdk:"id"`
	Name           types.String   `tfsdk:"name"`
	Namespace      types.String   `tfsdk:"namespace"`
	Rules          types.List     `tfsdk:"rule"`
	DefaultBackend types.List     `tfsdk:"default_backend"`
	TLS            types.List     `tfsdk:"tls"`
	SSLRedirect    types.Bool     `tfsdk:"ssl_redirect"`
	Connection     types.Object   `tfsdk:"api_connection"`
	Timeouts       timeouts.Value `tfsdk:"timeouts"`
}

type ingressRuleModel struct {
	Host  types.String `tfsdk:"host"`
	Paths types.List   `tfsdk:"path"`
}

type ingressPathModel struct {
	Path     types.String `tfsdk:"path"`
	Match    types.String `tfsdk:"match"`
	Service  types.String `tfsdk:"service"`
	Port     types.Int64  `tfsdk:"port"`
	PortName types.String `tfsdk:"port_name"`
}

type ingressBackendModel struct {
	Service  types.String `tfsdk:"service"`
	Port     types.Int64  `tfsdk:"port"`
	PortName types.String `tfsdk:"port_name"`
}

type ingressTLSModel struct {
	Hosts       types.List   `tfsdk:"hosts"`
	Certificate types.String `tfsdk:"certificate"`
	Key         types.String `tfsdk:"key"`
	KeySHA256   types.String `tfsdk:"key_sha256"`
}

var (
	ingressPathAttrTypes = map[string]attr.Type{
		"path":      types.StringType,
		"match":     types.StringType,
		"service":   types.StringType,
		"port":      types.Int64Type,
		"port_name": types.StringType,
	}
	ingressPathObjectType = types.ObjectType{AttrTypes: ingressPathAttrTypes}
	ingressRuleAttrTypes  = map[string]attr.Type{
		"host": types.StringType,
		"path": types.ListType{ElemType: ingressPathObjectType},
	}
	ingressRuleObjectType   = types.ObjectType{AttrTypes: ingressRuleAttrTypes}
	ingressBackendAttrTypes = map[string]attr.Type{
		"service":   types.StringType,
		"port":      types.Int64Type,
		"port_name": types.StringType,
	}
	ingressBackendObjectType = types.ObjectType{AttrTypes: ingressBackendAttrTypes}
	ingressTLSAttrTypes      = map[string]attr.Type{
		"hosts":       types.ListType{ElemType: types.StringType},
		"certificate": types.StringType,
		"key":         types.StringType,
		"key_sha256":  types.StringType,
	}
	ingressTLSObjectType = types.ObjectType{AttrTypes: ingressTLSAttrTypes}
)

// ingressSpecEqual reports whether two models ask the agent for the same
// ingress; timeouts and api_connection only change what Terraform does.
func ingressSpecEqual(a, b *ingressModel) bool {
	return a.Namespace.Equal(b.Namespace) && a.Name.Equal(b.Name) && a.Rules.Equal(b.Rules) &&
		a.DefaultBackend.Equal(b.DefaultBackend) && a.TLS.Equal(b.TLS) && a.SSLRedirect.Equal(b.SSLRedirect)
}

// toAPI builds the API request from a plan or configuration; unknown
// values go out as zero (callers check them first where it matters).
func (m *ingressModel) toAPI(ctx context.Context) (*api.Ingress, diag.Diagnostics) {
	var diags diag.Diagnostics
	in := &api.Ingress{
		Namespace:   orDefault(m.Namespace.ValueString(), api.DefaultNamespace),
		Name:        m.Name.ValueString(),
		SSLRedirect: m.SSLRedirect.ValueBool(),
	}
	var rules []ingressRuleModel
	if isKnown(m.Rules) {
		diags.Append(m.Rules.ElementsAs(ctx, &rules, false)...)
	}
	for _, rm := range rules {
		r := api.IngressRule{Host: rm.Host.ValueString()}
		var paths []ingressPathModel
		if isKnown(rm.Paths) {
			diags.Append(rm.Paths.ElementsAs(ctx, &paths, false)...)
		}
		for _, pm := range paths {
			r.Paths = append(r.Paths, api.IngressPath{
				Path:  pm.Path.ValueString(),
				Match: orDefault(pm.Match.ValueString(), api.PathPrefix),
				Backend: api.IngressBackend{
					Service: pm.Service.ValueString(), Port: int(pm.Port.ValueInt64()), PortName: pm.PortName.ValueString(),
				},
			})
		}
		in.Rules = append(in.Rules, r)
	}
	var backends []ingressBackendModel
	if isKnown(m.DefaultBackend) {
		diags.Append(m.DefaultBackend.ElementsAs(ctx, &backends, false)...)
	}
	if len(backends) > 0 {
		b := backends[0]
		in.DefaultBackend = &api.IngressBackend{Service: b.Service.ValueString(), Port: int(b.Port.ValueInt64()), PortName: b.PortName.ValueString()}
	}
	var tlsList []ingressTLSModel
	if isKnown(m.TLS) {
		diags.Append(m.TLS.ElementsAs(ctx, &tlsList, false)...)
	}
	for _, tm := range tlsList {
		t := api.IngressTLS{Certificate: tm.Certificate.ValueString(), Key: tm.Key.ValueString()}
		if isKnown(tm.Hosts) {
			diags.Append(tm.Hosts.ElementsAs(ctx, &t.Hosts, false)...)
		}
		in.TLS = append(in.TLS, t)
	}
	return in, diags
}

// flattenIngress maps an API ingress (redacted: no keys) to state. prior is
// the state before the read, the plan after a write, or the import stub:
// TLS keys come from it, by position, since the API never returns them;
// key_sha256 comes from the API, so a key changed outside Terraform shows
// as a change of key_sha256 in the next plan.
func flattenIngress(ctx context.Context, in *api.Ingress, prior *ingressModel) (ingressModel, diag.Diagnostics) {
	var diags diag.Diagnostics
	m := ingressModel{
		ID:          types.StringValue(namespacedID(in.Namespace, in.Name)),
		Name:        types.StringValue(in.Name),
		Namespace:   types.StringValue(in.Namespace),
		SSLRedirect: types.BoolValue(in.SSLRedirect),
		Connection:  prior.Connection,
		Timeouts:    prior.Timeouts,
	}
	if m.Connection.IsUnknown() || len(m.Connection.AttributeTypes(ctx)) == 0 {
		// An import stub: the connection comes from the configuration.
		m.Connection = types.ObjectNull(connectionAttrTypes)
	}
	var priorRules []ingressRuleModel
	if isKnown(prior.Rules) {
		diags.Append(prior.Rules.ElementsAs(ctx, &priorRules, false)...)
	}
	rules := make([]attr.Value, 0, len(in.Rules))
	for i, r := range in.Rules {
		var priorPaths []ingressPathModel
		priorHost := types.StringNull()
		if i < len(priorRules) {
			priorHost = priorRules[i].Host
			if isKnown(priorRules[i].Paths) {
				diags.Append(priorRules[i].Paths.ElementsAs(ctx, &priorPaths, false)...)
			}
		}
		paths := make([]attr.Value, 0, len(r.Paths))
		for j, p := range r.Paths {
			pp := ingressPathModel{Port: types.Int64Null(), PortName: types.StringNull()}
			if j < len(priorPaths) {
				pp = priorPaths[j]
			}
			obj, ds := types.ObjectValue(ingressPathAttrTypes, map[string]attr.Value{
				"path":      types.StringValue(p.Path),
				"match":     types.StringValue(p.MatchType()),
				"service":   types.StringValue(p.Backend.Service),
				"port":      int64Value(int64(p.Backend.Port), pp.Port),
				"port_name": stringValue(p.Backend.PortName, pp.PortName),
			})
			diags.Append(ds...)
			paths = append(paths, obj)
		}
		pl, ds := types.ListValue(ingressPathObjectType, paths)
		diags.Append(ds...)
		obj, ds := types.ObjectValue(ingressRuleAttrTypes, map[string]attr.Value{
			"host": stringValue(r.Host, priorHost),
			"path": pl,
		})
		diags.Append(ds...)
		rules = append(rules, obj)
	}
	// Blocks: none is an empty list, never null.
	rl, ds := types.ListValue(ingressRuleObjectType, rules)
	diags.Append(ds...)
	m.Rules = rl

	backends := []attr.Value{}
	if b := in.DefaultBackend; b != nil {
		var prev []ingressBackendModel
		if isKnown(prior.DefaultBackend) {
			diags.Append(prior.DefaultBackend.ElementsAs(ctx, &prev, false)...)
		}
		pb := ingressBackendModel{Port: types.Int64Null(), PortName: types.StringNull()}
		if len(prev) > 0 {
			pb = prev[0]
		}
		obj, ds := types.ObjectValue(ingressBackendAttrTypes, map[string]attr.Value{
			"service":   types.StringValue(b.Service),
			"port":      int64Value(int64(b.Port), pb.Port),
			"port_name": stringValue(b.PortName, pb.PortName),
		})
		diags.Append(ds...)
		backends = append(backends, obj)
	}
	bl, ds := types.ListValue(ingressBackendObjectType, backends)
	diags.Append(ds...)
	m.DefaultBackend = bl

	var priorTLS []ingressTLSModel
	if isKnown(prior.TLS) {
		diags.Append(prior.TLS.ElementsAs(ctx, &priorTLS, false)...)
	}
	tlsVals := make([]attr.Value, 0, len(in.TLS))
	for i, t := range in.TLS {
		key := types.StringNull() // after an import: the key is not readable
		if i < len(priorTLS) && isKnown(priorTLS[i].Key) {
			key = priorTLS[i].Key
		}
		hosts := make([]attr.Value, 0, len(t.Hosts))
		for _, h := range t.Hosts {
			hosts = append(hosts, types.StringValue(h))
		}
		hl, ds := types.ListValue(types.StringType, hosts)
		diags.Append(ds...)
		obj, ds := types.ObjectValue(ingressTLSAttrTypes, map[string]attr.Value{
			"hosts":       hl,
			"certificate": types.StringValue(t.Certificate),
			"key":         key,
			"key_sha256":  types.StringValue(t.KeySHA256),
		})
		diags.Append(ds...)
		tlsVals = append(tlsVals, obj)
	}
	tl, ds := types.ListValue(ingressTLSObjectType, tlsVals)
	diags.Append(ds...)
	m.TLS = tl
	return m, diags
}
