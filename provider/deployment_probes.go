package provider

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

// The liveness_probe and readiness_probe blocks of a container. Every
// timing is optional+computed with Kubernetes' default, so the state shows
// what the agent applies and a probe read back (api.Probe.WithDefaults)
// equals the one planned: no null-versus-zero ambiguity to carry over from
// the prior state.

// probeModel is one liveness_probe or readiness_probe block.
type probeModel struct {
	HTTPGet             types.List  `tfsdk:"http_get"`
	TCPSocket           types.List  `tfsdk:"tcp_socket"`
	Exec                types.List  `tfsdk:"exec"`
	InitialDelaySeconds types.Int64 `tfsdk:"initial_delay_seconds"`
	PeriodSeconds       types.Int64 `tfsdk:"period_seconds"`
	TimeoutSeconds      types.Int64 `tfsdk:"timeout_seconds"`
	SuccessThreshold    types.Int64 `tfsdk:"success_threshold"`
	FailureThreshold    types.Int64 `tfsdk:"failure_threshold"`
}

type httpGetModel struct {
	Path types.String `tfsdk:"path"`
	Port types.Int64  `tfsdk:"port"`
}

type tcpSocketModel struct {
	Port types.Int64 `tfsdk:"port"`
}

type execModel struct {
	Command types.List `tfsdk:"command"`
}

// defaultProbePath is the path of an http_get probe that names none.
const defaultProbePath = "/"

var (
	httpGetObjectType   = types.ObjectType{AttrTypes: map[string]attr.Type{"path": types.StringType, "port": types.Int64Type}}
	tcpSocketObjectType = types.ObjectType{AttrTypes: map[string]attr.Type{"port": types.Int64Type}}
	execObjectType      = types.ObjectType{AttrTypes: map[string]attr.Type{"command": types.ListType{ElemType: types.StringType}}}

	probeAttrTypes = map[string]attr.Type{
		"http_get":              types.ListType{ElemType: httpGetObjectType},
		"tcp_socket":            types.ListType{ElemType: tcpSocketObjectType},
		"exec":                  types.ListType{ElemType: execObjectType},
		"initial_delay_seconds": types.Int64Type,
		"period_seconds":        types.Int64Type,
		"timeout_seconds":       types.Int64Type,
		"success_threshold":     types.Int64Type,
		"failure_threshold":     types.Int64Type,
	}
	probeObjectType = types.ObjectType{AttrTypes: probeAttrTypes}
)

// probeBlock is the schema of liveness_probe (liveness) or readiness_probe.
func probeBlock(liveness bool) schema.ListNestedBlock {
	desc := "Checks whether the container is ready: until it succeeds `success_threshold` times in a row, and " +
		"after it fails `failure_threshold` times in a row, the pod is not ready (it gets no service traffic and " +
		"does not count as ready in a rollout). Without one, a container with a TCP `port` is ready once that " +
		"port accepts connections and one without once it runs, and a pod with no readiness probe at all only " +
		"after `min_ready_seconds`."
	successDesc := fmt.Sprintf("Consecutive successes, after a failure, for the probe to count as succeeded again; "+
		"1 to %d. Defaults to %d.", api.MaxProbeThreshold, api.DefaultProbeSuccessThreshold)
	successValidators := []validator.Int64{int64validator.Between(1, api.MaxProbeThreshold)}
	if liveness {
		desc = "Checks whether the container is alive: after `failure_threshold` failures in a row the container is " +
			"restarted (with back-off, as after a crash). Use it for a process that can hang without exiting; a " +
			"probe that is too strict restarts containers that are merely slow."
		successDesc = "Must be 1 for a liveness probe, as in Kubernetes. Defaults to 1."
		successValidators = []validator.Int64{livenessSuccessValidator{}}
	}
	desc += " Exactly one of `http_get`, `tcp_socket` and `exec` must be set. At most one block."
	seconds := func(what string, min, def int64) schema.Int64Attribute {
		return schema.Int64Attribute{
			MarkdownDescription: fmt.Sprintf("%s, in seconds; %d to %d. Defaults to %d.", what, min, api.MaxProbeSeconds, def),
			Optional:            true,
			Computed:            true,
			Default:             int64default.StaticInt64(def),
			Validators:          []validator.Int64{int64validator.Between(min, api.MaxProbeSeconds)},
		}
	}
	portAttr := func(what string) schema.Int64Attribute {
		return schema.Int64Attribute{
			MarkdownDescription: what + " on the pod's IP, 1 to 65535.",
			Required:            true,
			Validators:          []validator.Int64{int64validator.Between(1, 65535)},
		}
	}
	atMostOne := []validator.List{listvalidator.SizeAtMost(1)}
	return schema.ListNestedBlock{
		MarkdownDescription: desc,
		Validators:          atMostOne,
		NestedObject: schema.NestedBlockObject{
			Validators: []validator.Object{probeActionValidator{}},
			Attributes: map[string]schema.Attribute{
				"initial_delay_seconds": seconds("Time from the container's start to the first probe", 0, 0),
				"period_seconds":        seconds("Time between two probes", 1, api.DefaultProbePeriodSeconds),
				"timeout_seconds":       seconds("Time a probe may take before it counts as failed", 1, api.DefaultProbeTimeoutSeconds),
				"success_threshold": schema.Int64Attribute{
					MarkdownDescription: successDesc,
					Optional:            true,
					Computed:            true,
					Default:             int64default.StaticInt64(api.DefaultProbeSuccessThreshold),
					Validators:          successValidators,
				},
				"failure_threshold": schema.Int64Attribute{
					MarkdownDescription: fmt.Sprintf("Consecutive failures for the probe to count as failed; 1 to %d. "+
						"Defaults to %d.", api.MaxProbeThreshold, api.DefaultProbeFailureThreshold),
					Optional:   true,
					Computed:   true,
					Default:    int64default.StaticInt64(api.DefaultProbeFailureThreshold),
					Validators: []validator.Int64{int64validator.Between(1, api.MaxProbeThreshold)},
				},
			},
			Blocks: map[string]schema.Block{
				"http_get": schema.ListNestedBlock{
					MarkdownDescription: "Succeeds when `GET path` on the pod's IP and `port` answers with a status from 200 to 399.",
					Validators:          atMostOne,
					NestedObject: schema.NestedBlockObject{
						Attributes: map[string]schema.Attribute{
							"path": schema.StringAttribute{
								MarkdownDescription: fmt.Sprintf("Path to request, starting with `/`, at most %d "+
									"characters. Defaults to `/`.", api.MaxProbePathLen),
								Optional:   true,
								Computed:   true,
								Default:    stringdefault.StaticString(defaultProbePath),
								Validators: []validator.String{probePathValidator{}},
							},
							"port": portAttr("Port to request"),
						},
					},
				},
				"tcp_socket": schema.ListNestedBlock{
					MarkdownDescription: "Succeeds when the pod's IP accepts a TCP connection on `port`.",
					Validators:          atMostOne,
					NestedObject: schema.NestedBlockObject{
						Attributes: map[string]schema.Attribute{
							"port": portAttr("Port to connect to"),
						},
					},
				},
				"exec": schema.ListNestedBlock{
					MarkdownDescription: "Succeeds when `command`, run in the container, exits with 0.",
					Validators:          atMostOne,
					NestedObject: schema.NestedBlockObject{
						Attributes: map[string]schema.Attribute{
							"command": schema.ListAttribute{
								MarkdownDescription: "Program and arguments, run without a shell (use `[\"sh\", \"-c\", \"...\"]` for one).",
								ElementType:         types.StringType,
								Required:            true,
								Validators:          []validator.List{listvalidator.SizeBetween(1, api.MaxArgs)},
							},
						},
					},
				},
			},
		},
	}
}

// probeFromList converts a probe block list (at most one element) to the API.
func probeFromList(ctx context.Context, l types.List) (*api.Probe, diag.Diagnostics) {
	var diags diag.Diagnostics
	var ps []probeModel
	if !isKnown(l) {
		return nil, nil
	}
	diags.Append(l.ElementsAs(ctx, &ps, false)...)
	if diags.HasError() || len(ps) == 0 {
		return nil, diags
	}
	pm := ps[0]
	p := &api.Probe{
		InitialDelaySeconds: int(pm.InitialDelaySeconds.ValueInt64()),
		PeriodSeconds:       int(pm.PeriodSeconds.ValueInt64()),
		TimeoutSeconds:      int(pm.TimeoutSeconds.ValueInt64()),
		SuccessThreshold:    int(pm.SuccessThreshold.ValueInt64()),
		FailureThreshold:    int(pm.FailureThreshold.ValueInt64()),
	}
	var hs []httpGetModel
	diags.Append(pm.HTTPGet.ElementsAs(ctx, &hs, false)...)
	if len(hs) > 0 {
		p.HTTPGet = &api.HTTPGetProbe{Path: hs[0].Path.ValueString(), Port: int(hs[0].Port.ValueInt64())}
	}
	var ts []tcpSocketModel
	diags.Append(pm.TCPSocket.ElementsAs(ctx, &ts, false)...)
	if len(ts) > 0 {
		p.TCPSocket = &api.TCPSocketProbe{Port: int(ts[0].Port.ValueInt64())}
	}
	var es []execModel
	diags.Append(pm.Exec.ElementsAs(ctx, &es, false)...)
	if len(es) > 0 {
		p.Exec = &api.ExecProbe{}
		diags.Append(es[0].Command.ElementsAs(ctx, &p.Exec.Command, false)...)
	}
	return p, diags
}

// probeValue is the block list of an API probe: empty for none (Terraform
// represents absent blocks as an empty list), timings with their defaults.
func probeValue(ctx context.Context, p *api.Probe) (types.List, diag.Diagnostics) {
	if p == nil {
		return types.ListValue(probeObjectType, []attr.Value{})
	}
	var diags diag.Diagnostics
	d := p.WithDefaults()
	httpGet := []attr.Value{}
	if d.HTTPGet != nil {
		path := d.HTTPGet.Path
		if path == "" {
			path = defaultProbePath
		}
		httpGet = append(httpGet, types.ObjectValueMust(httpGetObjectType.AttrTypes, map[string]attr.Value{
			"path": types.StringValue(path),
			"port": types.Int64Value(int64(d.HTTPGet.Port)),
		}))
	}
	tcpSocket := []attr.Value{}
	if d.TCPSocket != nil {
		tcpSocket = append(tcpSocket, types.ObjectValueMust(tcpSocketObjectType.AttrTypes, map[string]attr.Value{
			"port": types.Int64Value(int64(d.TCPSocket.Port)),
		}))
	}
	exec := []attr.Value{}
	if d.Exec != nil {
		cmd, ds := types.ListValueFrom(ctx, types.StringType, d.Exec.Command)
		diags.Append(ds...)
		exec = append(exec, types.ObjectValueMust(execObjectType.AttrTypes, map[string]attr.Value{"command": cmd}))
	}
	obj, ds := types.ObjectValue(probeAttrTypes, map[string]attr.Value{
		"http_get":              types.ListValueMust(httpGetObjectType, httpGet),
		"tcp_socket":            types.ListValueMust(tcpSocketObjectType, tcpSocket),
		"exec":                  types.ListValueMust(execObjectType, exec),
		"initial_delay_seconds": types.Int64Value(int64(d.InitialDelaySeconds)),
		"period_seconds":        types.Int64Value(int64(d.PeriodSeconds)),
		"timeout_seconds":       types.Int64Value(int64(d.TimeoutSeconds)),
		"success_threshold":     types.Int64Value(int64(d.SuccessThreshold)),
		"failure_threshold":     types.Int64Value(int64(d.FailureThreshold)),
	})
	diags.Append(ds...)
	l, ds := types.ListValue(probeObjectType, []attr.Value{obj})
	diags.Append(ds...)
	return l, diags
}

var (
	_ validator.Object = probeActionValidator{}
	_ validator.String = probePathValidator{}
	_ validator.Int64  = livenessSuccessValidator{}
)

// probeActionValidator checks that a probe block sets exactly one of
// http_get, tcp_socket and exec, as api.Deployment.Validate does.
type probeActionValidator struct{}

func (probeActionValidator) Description(context.Context) string {
	return "exactly one of http_get, tcp_socket and exec must be set"
}

func (probeActionValidator) MarkdownDescription(context.Context) string {
	return "exactly one of `http_get`, `tcp_socket` and `exec` must be set"
}

func (probeActionValidator) ValidateObject(_ context.Context, req validator.ObjectRequest, resp *validator.ObjectResponse) {
	if !isKnown(req.ConfigValue) {
		return
	}
	attrs := req.ConfigValue.Attributes()
	var set []string
	for _, name := range []string{"http_get", "tcp_socket", "exec"} {
		l, ok := attrs[name].(types.List)
		if !ok || l.IsUnknown() {
			return // a dynamic block not expanded yet: checked again at apply
		}
		if len(l.Elements()) > 0 {
			set = append(set, name)
		}
	}
	if len(set) == 1 {
		return
	}
	detail := fmt.Sprintf("%s: exactly one of http_get, tcp_socket and exec must be set, not %d", req.Path, len(set))
	if len(set) > 1 {
		detail += " (" + strings.Join(set, ", ") + ")"
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid probe", detail)
}

// probePathValidator checks an http_get probe's path as the agent does.
type probePathValidator struct{}

func (probePathValidator) Description(context.Context) string {
	return fmt.Sprintf("must start with / and be at most %d characters without white space", api.MaxProbePathLen)
}

func (v probePathValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (probePathValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if !isKnown(req.ConfigValue) {
		return
	}
	p := req.ConfigValue.ValueString()
	var msg string
	switch {
	case len(p) > api.MaxProbePathLen:
		msg = fmt.Sprintf("is %d characters; at most %d are allowed", len(p), api.MaxProbePathLen)
	case !strings.HasPrefix(p, "/"):
		msg = fmt.Sprintf("%q must start with /", p)
	case strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		msg = fmt.Sprintf("%q must not contain white space or control characters", p)
	default:
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid probe path", fmt.Sprintf("%s: %s", req.Path, msg))
}

// livenessSuccessValidator accepts only 1: a liveness probe that must
// succeed several times before it counts would leave a hung container up.
type livenessSuccessValidator struct{}

func (livenessSuccessValidator) Description(context.Context) string {
	return "must be 1 for a liveness probe"
}

func (v livenessSuccessValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (livenessSuccessValidator) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if !isKnown(req.ConfigValue) || req.ConfigValue.ValueInt64() == 1 {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid success_threshold",
		fmt.Sprintf("%s: %d: a liveness probe's must be 1, as in Kubernetes", req.Path, req.ConfigValue.ValueInt64()))
}
