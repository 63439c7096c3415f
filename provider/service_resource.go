package provider

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/flotilla-io/flotilla/api"
)

var (
	_ resource.Resource                   = (*serviceResource)(nil)
	_ resource.ResourceWithConfigure      = (*serviceResource)(nil)
	_ resource.ResourceWithImportState    = (*serviceResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*serviceResource)(nil)
	_ resource.ResourceWithValidateConfig = (*serviceResource)(nil)

	_ planmodifier.String = targetPortDefault{}
	_ planmodifier.Int64  = nodePortFromState{}
)

// NewServiceResource returns the flotilla_service resource.
func NewServiceResource() resource.Resource {
	return &serviceResource{plainResource[serviceModel, api.Service]{
		api: serviceAPI(),
		parts: func(m *serviceModel) modelParts[api.Service] {
			return modelParts[api.Service]{conn: m.Connection, ns: m.Namespace.ValueString(), name: m.Name.ValueString(), timeouts: m.Timeouts, toAPI: m.toAPI}
		},
		flatten:   flattenService,
		specEqual: serviceSpecEqual,
	}}
}

// serviceResource manages one service through the agent API.
type serviceResource struct {
	plainResource[serviceModel, api.Service]
}

func (r *serviceResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A stable virtual IP (and DNS name) in front of the pods its `selector` matches. " +
			"Every node load balances connections to `cluster_ip:port` (and, for type `node_port`, to any " +
			"node's address on `node_port`) over the ready pods, whichever deployment they belong to.",
		Attributes: map[string]schema.Attribute{
			"id": idAttribute(),
			"name": nameAttribute(fmt.Sprintf("Name of the service, a lower-case DNS label of at most %d "+
				"characters; it is also the service's DNS name. Changing it replaces the service.", api.MaxNameLen)),
			"namespace": namespaceAttribute("Namespace of the service; it selects pods of this namespace only. Defaults to `" +
				api.DefaultNamespace + "`. Changing it replaces the service."),
			"selector": schema.MapAttribute{
				MarkdownDescription: "The labels a pod must carry, every one of them, to receive the service's " +
					"traffic, e.g. a deployment's `labels`. At least one.",
				ElementType: types.StringType,
				Required:    true,
				Validators:  []validator.Map{mapvalidator.SizeAtLeast(1), labelsValidator{}},
			},
			"type": schema.StringAttribute{
				MarkdownDescription: "`" + api.ServiceClusterIP + "` (the default): reachable on `cluster_ip` from the " +
					"nodes and pods; `" + api.ServiceNodePort + "`: also on every node's addresses at each port's " +
					"`node_port`.",
				Optional:   true,
				Computed:   true,
				Default:    stringdefault.StaticString(api.ServiceClusterIP),
				Validators: []validator.String{stringvalidator.OneOf(api.ServiceClusterIP, api.ServiceNodePort)},
			},
			"session_affinity": schema.StringAttribute{
				MarkdownDescription: "`" + api.AffinityNone + "` (the default) spreads connections over the ready pods; `" +
					api.AffinityClientIP + "` keeps a client's connections (by source IP) on the same pod, for three hours after its last one, while that pod stays ready.",
				Optional:   true,
				Computed:   true,
				Default:    stringdefault.StaticString(api.AffinityNone),
				Validators: []validator.String{stringvalidator.OneOf(api.AffinityNone, api.AffinityClientIP)},
			},
			"cluster_ip": schema.StringAttribute{
				MarkdownDescription: "The service's virtual IPv4 address, in the cluster's `service_cidr`. Unset: a " +
					"free one is assigned on create. An address never changes, so setting a different one replaces " +
					"the service; one held by another service fails the apply, naming it.",
				Optional:   true,
				Computed:   true,
				Validators: []validator.String{ipv4Validator{}},
				// UseStateForUnknown first: an unset cluster_ip keeps the
				// assigned one instead of reading as a change.
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplace()},
			},
			"api_connection": resourceConnectionAttribute(" On create with an `api_connection`, the provider first waits " +
				"(up to the create timeout) for the fleet to answer and elect a leader, as its VMs may still be booting. " +
				"When the connection changes (e.g. the cluster was replaced), the next apply creates the service on " +
				"the new fleet if it is not there."),
		},
		Blocks: map[string]schema.Block{
			"port": schema.ListNestedBlock{
				MarkdownDescription: fmt.Sprintf("A port of the service; at least one, at most %d. A port and "+
					"protocol pair may appear once.", api.MaxServicePorts),
				Validators: []validator.List{
					listvalidator.IsRequired(), listvalidator.SizeAtLeast(1), listvalidator.SizeAtMost(api.MaxServicePorts),
				},
				NestedObject: schema.NestedBlockObject{
					Attributes: map[string]schema.Attribute{
						"name": schema.StringAttribute{
							MarkdownDescription: fmt.Sprintf("Name of the port, a lower-case DNS label of at most %d "+
								"characters; required when the service has several ports. It names the port's SRV "+
								"record, `_<name>._<protocol>.<service>.<namespace>.svc.<domain>`.", maxPortNameLen),
							Optional:   true,
							Validators: []validator.String{portNameValidator{}},
						},
						"protocol": schema.StringAttribute{
							MarkdownDescription: "`tcp` or `udp`. Defaults to `tcp`.",
							Optional:            true,
							Computed:            true,
							Default:             stringdefault.StaticString(defaultProtocol),
							Validators:          []validator.String{stringvalidator.OneOf("tcp", "udp")},
						},
						"port": schema.Int64Attribute{
							MarkdownDescription: "Port of the service's `cluster_ip`, 1 to 65535.",
							Required:            true,
							Validators:          []validator.Int64{int64validator.Between(1, 65535)},
						},
						"target_port": schema.StringAttribute{
							MarkdownDescription: "The pods' port connections go to: a number, or the `name` of a " +
								"container port (pods without a port of that name get none of this port's traffic). " +
								"Defaults to `port`.",
							Optional:      true,
							Computed:      true,
							Validators:    []validator.String{targetPortValidator{}},
							PlanModifiers: []planmodifier.String{targetPortDefault{}},
						},
						"node_port": schema.Int64Attribute{
							MarkdownDescription: fmt.Sprintf("For type `%s` only: the port of every node's addresses "+
								"that also reaches this port, in the cluster's node port range (%d-%d by default). "+
								"Unset: a free one is assigned, and kept while the port's `port` and `protocol` stay.",
								api.ServiceNodePort, api.DefaultNodePortMin, api.DefaultNodePortMax),
							Optional:      true,
							Computed:      true,
							Validators:    []validator.Int64{int64validator.Between(1, 65535)},
							PlanModifiers: []planmodifier.Int64{nodePortFromState{}},
						},
					},
				},
			},
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true}),
		},
	}
}

// ValidateConfig checks what single-attribute validators cannot: port
// names set and unique when there are several, ports and node ports
// unique, node ports only with type node_port. It mirrors
// api.Service.Validate so every error the agent would return shows up at
// plan time, with the attribute path.
func (r *serviceResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var ports types.List
	var typ types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("port"), &ports)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("type"), &typ)...)
	if resp.Diagnostics.HasError() {
		return
	}
	several := isKnown(ports) && len(ports.Elements()) > 1
	// Unset means the default, cluster_ip.
	nodePortsAllowed := typ.IsUnknown() || typ.ValueString() == api.ServiceNodePort
	seen := map[string]path.Path{}
	resp.Diagnostics.Append(servicePortsOf(ctx, ports, func(i int, p servicePortModel) {
		pp := path.Root("port").AtListIndex(i)
		switch {
		case p.Name.IsNull() && several:
			resp.Diagnostics.AddAttributeError(pp.AtName("name"), "Missing port name",
				fmt.Sprintf("%s: must be set when a service has several ports, to tell them apart", pp.AtName("name")))
		case isKnown(p.Name):
			unique(&resp.Diagnostics, seen, "name "+p.Name.ValueString(), pp.AtName("name"), "Duplicate port name",
				fmt.Sprintf("%q is used by another port of this service", p.Name.ValueString()))
		}
		if p.Protocol.IsUnknown() {
			return
		}
		proto := orDefault(p.Protocol.ValueString(), defaultProtocol)
		if isKnown(p.Port) {
			key := fmt.Sprintf("%d/%s", p.Port.ValueInt64(), proto)
			unique(&resp.Diagnostics, seen, "port "+key, pp.AtName("port"), "Duplicate port", key+" is also declared by")
		}
		if p.NodePort.IsNull() {
			return
		}
		np := pp.AtName("node_port")
		if !nodePortsAllowed {
			resp.Diagnostics.AddAttributeError(np, "Node port without type node_port", fmt.Sprintf(
				"%s: is only for type %q; set type = %q, or remove node_port", np, api.ServiceNodePort, api.ServiceNodePort))
			return
		}
		if isKnown(p.NodePort) {
			key := fmt.Sprintf("%d/%s", p.NodePort.ValueInt64(), proto)
			unique(&resp.Diagnostics, seen, "node port "+key, np, "Duplicate node port", key+" is also asked for by")
		}
	})...)
}

// unique records key at p in seen, or reports that another path has it.
// A message ending in "by" gets that path appended.
func unique(diags *diag.Diagnostics, seen map[string]path.Path, key string, p path.Path, summary, msg string) {
	other, dup := seen[key]
	if !dup {
		seen[key] = p
		return
	}
	if strings.HasSuffix(msg, " by") {
		msg += " " + other.String()
	}
	diags.AddAttributeError(p, summary, fmt.Sprintf("%s: %s", p, msg))
}

// ModifyPlan handles a change of api_connection: the fleet it now points at
// may not have the service, and would assign it its own cluster IP and
// node ports, so those not set in the configuration become unknown.
func (r *serviceResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || req.State.Raw.IsNull() {
		return
	}
	var plan, state serviceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || plan.Connection.Equal(state.Connection) {
		return
	}
	var cfgIP types.String
	var cfgPorts types.List
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("cluster_ip"), &cfgIP)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("port"), &cfgPorts)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if cfgIP.IsNull() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("cluster_ip"), types.StringUnknown())...)
	}
	if plan.Type.ValueString() != api.ServiceNodePort {
		return
	}
	resp.Diagnostics.Append(servicePortsOf(ctx, cfgPorts, func(i int, p servicePortModel) {
		if p.NodePort.IsNull() {
			resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx,
				path.Root("port").AtListIndex(i).AtName("node_port"), types.Int64Unknown())...)
		}
	})...)
}

// serviceAPI is how flotilla_service reaches its service.
func serviceAPI() apiObject[api.Service] {
	return apiObject[api.Service]{
		kind:   "service",
		key:    func(s *api.Service) (string, string) { return s.Namespace, s.Name },
		get:    (*api.Client).GetService,
		create: (*api.Client).CreateService,
		update: (*api.Client).UpdateService,
		delete: (*api.Client).DeleteService,
		// An address or node port it asks for is another service's.
		takenSummary: "Address or node port taken",
		takenHint:    "Choose another cluster_ip or node_port, or leave them unset to get free ones",
	}
}

// targetPortDefault plans an unset target_port as the port's own number,
// which is what the agent does with it.
type targetPortDefault struct{}

func (targetPortDefault) Description(context.Context) string {
	return "Defaults to the port's port."
}

func (m targetPortDefault) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (targetPortDefault) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	if !req.ConfigValue.IsNull() || !req.PlanValue.IsUnknown() {
		return
	}
	var port types.Int64
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, req.Path.ParentPath().AtName("port"), &port)...)
	if isKnown(port) {
		resp.PlanValue = types.StringValue(strconv.FormatInt(port.ValueInt64(), 10))
	}
}

// nodePortFromState plans an unset node_port as the agent will decide it,
// so a plan shows a real change only: none unless the type is node_port;
// the one the state has for the same port and protocol, which the agent
// keeps unless another port asks for it; otherwise unknown (a new one).
// UseStateForUnknown would not do: it goes by list index, not by port.
type nodePortFromState struct{}

func (nodePortFromState) Description(context.Context) string {
	return "Keeps the node port assigned to the same port and protocol."
}

func (m nodePortFromState) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (nodePortFromState) PlanModifyInt64(ctx context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if !req.ConfigValue.IsNull() || !req.PlanValue.IsUnknown() {
		return
	}
	var typ types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("type"), &typ)...)
	if resp.Diagnostics.HasError() || typ.IsUnknown() {
		return
	}
	if typ.ValueString() != api.ServiceNodePort {
		resp.PlanValue = types.Int64Null()
		return
	}
	if req.State.Raw.IsNull() {
		return // create: the agent assigns one
	}
	var stateType types.String
	var self types.Object
	var cfgPorts, statePorts types.List
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("type"), &stateType)...)
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, req.Path.ParentPath(), &self)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("port"), &cfgPorts)...)
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("port"), &statePorts)...)
	if resp.Diagnostics.HasError() || stateType.ValueString() != api.ServiceNodePort || !isKnown(self) || !isKnown(cfgPorts) {
		return
	}
	var me servicePortModel
	resp.Diagnostics.Append(self.As(ctx, &me, basetypes.ObjectAsOptions{})...)
	if resp.Diagnostics.HasError() || !isKnown(me.Port) || !isKnown(me.Protocol) {
		return
	}
	// Node ports the configuration asks for go to those ports first.
	asked := map[string]bool{}
	for _, el := range cfgPorts.Elements() {
		obj, ok := el.(types.Object)
		if !ok || !isKnown(obj) {
			return
		}
		var p servicePortModel
		resp.Diagnostics.Append(obj.As(ctx, &p, basetypes.ObjectAsOptions{})...)
		if resp.Diagnostics.HasError() || p.NodePort.IsUnknown() || p.Protocol.IsUnknown() {
			return
		}
		if isKnown(p.NodePort) {
			asked[fmt.Sprintf("%d/%s", p.NodePort.ValueInt64(), orDefault(p.Protocol.ValueString(), defaultProtocol))] = true
		}
	}
	resp.Diagnostics.Append(servicePortsOf(ctx, statePorts, func(_ int, sp servicePortModel) {
		if !isKnown(sp.NodePort) || !sp.Port.Equal(me.Port) || !sp.Protocol.Equal(me.Protocol) ||
			asked[fmt.Sprintf("%d/%s", sp.NodePort.ValueInt64(), me.Protocol.ValueString())] {
			return
		}
		resp.PlanValue = sp.NodePort
	})...)
}
