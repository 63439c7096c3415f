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
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

// The security block of a container and its pids_limit: what a container
// may change of its sandbox (api.Security).

// securityModel is one security block.
type securityModel struct {
	RunAsUser              types.Int64 `tfsdk:"run_as_user"`
	RunAsGroup             types.Int64 `tfsdk:"run_as_group"`
	ReadOnlyRootFilesystem types.Bool  `tfsdk:"read_only_root_filesystem"`
	Capabilities           types.List  `tfsdk:"capabilities"`
}

// capabilitiesModel is the capabilities block of a security block.
type capabilitiesModel struct {
	Add  types.List `tfsdk:"add"`
	Drop types.List `tfsdk:"drop"`
}

var (
	capabilitiesObjectType = types.ObjectType{AttrTypes: map[string]attr.Type{
		"add":  types.ListType{ElemType: types.StringType},
		"drop": types.ListType{ElemType: types.StringType},
	}}
	securityAttrTypes = map[string]attr.Type{
		"run_as_user":               types.Int64Type,
		"run_as_group":              types.Int64Type,
		"read_only_root_filesystem": types.BoolType,
		"capabilities":              types.ListType{ElemType: capabilitiesObjectType},
	}
	securityObjectType = types.ObjectType{AttrTypes: securityAttrTypes}
)

// pidsLimitAttribute is a container's pids_limit.
func pidsLimitAttribute() schema.Int64Attribute {
	return schema.Int64Attribute{
		MarkdownDescription: fmt.Sprintf("Processes and threads the container may have at once, 1 to %d; a fork "+
			"past it fails. Unset, the node's limit applies (`flotilla-agent --default-pids-limit`, %d by default).",
			api.MaxPidsLimit, api.DefaultPidsLimit),
		Optional:   true,
		Validators: []validator.Int64{int64validator.Between(1, api.MaxPidsLimit)},
	}
}

// securityBlock is the schema of a container's security block.
func securityBlock() schema.ListNestedBlock {
	atMostOne := []validator.List{listvalidator.SizeAtMost(1)}
	id := func(what, more string) schema.Int64Attribute {
		return schema.Int64Attribute{
			MarkdownDescription: fmt.Sprintf("%s, 0 to %d.%s", what, api.MaxUserID, more),
			Optional:            true,
			Validators:          []validator.Int64{int64validator.Between(0, api.MaxUserID)},
		}
	}
	capList := func(desc string, add bool) schema.ListAttribute {
		return schema.ListAttribute{
			MarkdownDescription: desc,
			ElementType:         types.StringType,
			Optional:            true,
			Validators: []validator.List{
				listvalidator.SizeAtMost(api.MaxCapabilities),
				listvalidator.UniqueValues(),
				listvalidator.ValueStringsAre(capabilityValidator{add: add}),
			},
		}
	}
	return schema.ListNestedBlock{
		MarkdownDescription: "Changes the container's sandbox. Without it, every container runs with Docker's default " +
			"seccomp profile, AppArmor's default profile on nodes with AppArmor, no-new-privileges, containerd's masked " +
			"and read-only `/proc` paths, a pids limit and Docker's default capabilities (`" +
			strings.Join(api.DefaultCapabilities(), "`, `") + "`), as the image's user. Privileged containers, host " +
			"mounts and host networking are not offered. At most one block.",
		Validators: atMostOne,
		NestedObject: schema.NestedBlockObject{
			Attributes: map[string]schema.Attribute{
				"run_as_user": id("Runs the container's processes as this uid instead of the image's user", " Their "+
					"primary group is the uid's in the image's `/etc/passwd` (0 if it has none), unless `run_as_group` is "+
					"set. A process that does not run as 0 has no capabilities in effect, as in Docker and Kubernetes."),
				"run_as_group": id("Runs the container's processes with this primary gid", ""),
				"read_only_root_filesystem": schema.BoolAttribute{
					MarkdownDescription: "Mounts the container's root file system read-only (`/dev/shm` and `/run` stay " +
						"writable, as small in-memory file systems). Defaults to `false`.",
					Optional: true,
					Computed: true,
					Default:  booldefault.StaticBool(false),
				},
			},
			Blocks: map[string]schema.Block{
				"capabilities": schema.ListNestedBlock{
					MarkdownDescription: "Linux capabilities to drop from Docker's default set and to add to it, named " +
						"as in Kubernetes: upper case, without the `CAP_` prefix (`NET_ADMIN`). Drop applies first, so " +
						"`drop = [\"ALL\"]` with `add = [\"NET_BIND_SERVICE\"]` leaves that one. At most one block.",
					Validators: atMostOne,
					NestedObject: schema.NestedBlockObject{
						Validators: []validator.Object{capabilitiesOverlapValidator{}},
						Attributes: map[string]schema.Attribute{
							"add": capList("Capabilities to add. Nodes run a container that adds any beyond Docker's "+
								"default set only if they allow them (`flotilla-agent --allow-capability`); elsewhere "+
								"its pods fail to start, saying so. `ALL` is refused.", true),
							"drop": capList("Capabilities to drop, or `ALL`.", false),
						},
					},
				},
			},
		},
	}
}

// securityFromList converts a security block list (at most one element) to the API.
func securityFromList(ctx context.Context, l types.List) (*api.Security, diag.Diagnostics) {
	var diags diag.Diagnostics
	var ss []securityModel
	if !isKnown(l) {
		return nil, nil
	}
	diags.Append(l.ElementsAs(ctx, &ss, false)...)
	if diags.HasError() || len(ss) == 0 {
		return nil, diags
	}
	sm := ss[0]
	s := &api.Security{ReadOnlyRootFilesystem: sm.ReadOnlyRootFilesystem.ValueBool()}
	if isKnown(sm.RunAsUser) {
		v := sm.RunAsUser.ValueInt64()
		s.RunAsUser = &v
	}
	if isKnown(sm.RunAsGroup) {
		v := sm.RunAsGroup.ValueInt64()
		s.RunAsGroup = &v
	}
	var cs []capabilitiesModel
	if isKnown(sm.Capabilities) {
		diags.Append(sm.Capabilities.ElementsAs(ctx, &cs, false)...)
	}
	if len(cs) > 0 {
		s.Capabilities = &api.Capabilities{}
		diags.Append(cs[0].Add.ElementsAs(ctx, &s.Capabilities.Add, false)...)
		diags.Append(cs[0].Drop.ElementsAs(ctx, &s.Capabilities.Drop, false)...)
	}
	return s, diags
}

// securityValue is the block list of an API security: empty for none
// (Terraform represents absent blocks as an empty list). prior (the
// container's security in the prior state) decides between null and empty
// add and drop lists, which the API does not tell apart.
func securityValue(ctx context.Context, s *api.Security, prior types.List) (types.List, diag.Diagnostics) {
	if s == nil {
		return types.ListValue(securityObjectType, []attr.Value{})
	}
	var diags diag.Diagnostics
	var priorCaps capabilitiesModel
	priorCaps.Add, priorCaps.Drop = types.ListNull(types.StringType), types.ListNull(types.StringType)
	var ps []securityModel
	if isKnown(prior) {
		diags.Append(prior.ElementsAs(ctx, &ps, false)...)
	}
	if len(ps) > 0 && isKnown(ps[0].Capabilities) {
		var pcs []capabilitiesModel
		diags.Append(ps[0].Capabilities.ElementsAs(ctx, &pcs, false)...)
		if len(pcs) > 0 {
			priorCaps = pcs[0]
		}
	}
	caps := []attr.Value{}
	if c := s.Capabilities; c != nil {
		caps = append(caps, types.ObjectValueMust(capabilitiesObjectType.AttrTypes, map[string]attr.Value{
			"add":  stringListValue(c.Add, priorCaps.Add),
			"drop": stringListValue(c.Drop, priorCaps.Drop),
		}))
	}
	optional := func(v *int64) types.Int64 {
		if v == nil {
			return types.Int64Null()
		}
		return types.Int64Value(*v)
	}
	obj, ds := types.ObjectValue(securityAttrTypes, map[string]attr.Value{
		"run_as_user":               optional(s.RunAsUser),
		"run_as_group":              optional(s.RunAsGroup),
		"read_only_root_filesystem": types.BoolValue(s.ReadOnlyRootFilesystem),
		"capabilities":              types.ListValueMust(capabilitiesObjectType, caps),
	})
	diags.Append(ds...)
	l, ds := types.ListValue(securityObjectType, []attr.Value{obj})
	diags.Append(ds...)
	return l, diags
}

var (
	_ validator.String = capabilityValidator{}
	_ validator.Object = capabilitiesOverlapValidator{}
)

// capabilityValidator checks a capability name of an add (add) or drop
// list with api.ValidateCapability.
type capabilityValidator struct{ add bool }

func (v capabilityValidator) Description(context.Context) string {
	if v.add {
		return "must be a Linux capability, upper case without the CAP_ prefix (e.g. NET_ADMIN)"
	}
	return "must be a Linux capability, upper case without the CAP_ prefix (e.g. NET_RAW), or ALL"
}

func (v capabilityValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (v capabilityValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	checkString(req, resp, "Invalid capability", func(s string) error { return api.ValidateCapability(s, !v.add) })
}

// capabilitiesOverlapValidator refuses a capability both added and
// dropped, as api.Deployment.Validate does.
type capabilitiesOverlapValidator struct{}

func (capabilitiesOverlapValidator) Description(context.Context) string {
	return "a capability may be named in add or in drop, not both"
}

func (v capabilitiesOverlapValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (capabilitiesOverlapValidator) ValidateObject(ctx context.Context, req validator.ObjectRequest, resp *validator.ObjectResponse) {
	if !isKnown(req.ConfigValue) {
		return
	}
	attrs := req.ConfigValue.Attributes()
	add, okA := attrs["add"].(types.List)
	drop, okD := attrs["drop"].(types.List)
	if !okA || !okD || !isKnown(add) || !isKnown(drop) {
		return
	}
	dropped := map[string]bool{}
	for _, el := range drop.Elements() {
		if s, ok := el.(types.String); ok && isKnown(s) {
			dropped[s.ValueString()] = true
		}
	}
	for i, el := range add.Elements() {
		if s, ok := el.(types.String); ok && isKnown(s) && dropped[s.ValueString()] {
			p := req.Path.AtName("add").AtListIndex(i)
			resp.Diagnostics.AddAttributeError(p, "Capability added and dropped",
				fmt.Sprintf("%s: %q is also dropped; name it in one list only", p, s.ValueString()))
		}
	}
}
