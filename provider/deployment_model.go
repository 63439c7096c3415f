package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/flotilla-io/flotilla/api"
)

// deploymentModel is the state and plan of flotilla_deployment.
type deploymentModel struct {
	ID             types.String   `tfsdk:"id"`
	Name           types.String   `tfsdk:"name"`
	Namespace      types.String   `tfsdk:"namespace"`
	Replicas       types.Int64    `tfsdk:"replicas"`
	Labels         types.Map      `tfsdk:"labels"`
	WaitForRollout types.Bool     `tfsdk:"wait_for_rollout"`
	Generation     types.Int64    `tfsdk:"generation"`
	Status         types.Object   `tfsdk:"status"`
	Containers     types.List     `tfsdk:"container"`
	Connection     types.Object   `tfsdk:"api_connection"`
	Timeouts       timeouts.Value `tfsdk:"timeouts"`

	NodeSelector    types.Map    `tfsdk:"node_selector"`
	Placement       types.String `tfsdk:"placement"`
	AntiAffinity    types.List   `tfsdk:"anti_affinity"`
	MinReadySeconds types.Int64  `tfsdk:"min_ready_seconds"`
	SelfFencing     types.Bool   `tfsdk:"self_fencing"`
}

// antiAffinityModel is one anti_affinity block.
type antiAffinityModel struct {
	Labels   types.Map    `tfsdk:"labels"`
	Required types.Bool   `tfsdk:"required"`
	Topology types.String `tfsdk:"topology"`
}

// containerModel is one container block.
type containerModel struct {
	Name          types.String `tfsdk:"name"`
	Image         types.String `tfsdk:"image"`
	Command       types.List   `tfsdk:"command"`
	Args          types.List   `tfsdk:"args"`
	Env           types.Map    `tfsdk:"env"`
	Ports         types.List   `tfsdk:"port"`
	CPURequest    types.Int64  `tfsdk:"cpu_request"`
	CPULimit      types.Int64  `tfsdk:"cpu_limit"`
	MemoryRequest types.Int64  `tfsdk:"memory_request"`
	MemoryLimit   types.Int64  `tfsdk:"memory_limit"`

	LivenessProbe  types.List `tfsdk:"liveness_probe"`
	ReadinessProbe types.List `tfsdk:"readiness_probe"`

	PidsLimit types.Int64 `tfsdk:"pids_limit"`
	Security  types.List  `tfsdk:"security"`
}

// portModel is one port block of a container.
type portModel struct {
	ContainerPort types.Int64  `tfsdk:"container_port"`
	Protocol      types.String `tfsdk:"protocol"`
	Name          types.String `tfsdk:"name"`
	HostPort      types.Int64  `tfsdk:"host_port"`
}

// statusModel is the computed status attribute.
type statusModel struct {
	Replicas        types.Int64 `tfsdk:"replicas"`
	ReadyReplicas   types.Int64 `tfsdk:"ready_replicas"`
	UpdatedReplicas types.Int64 `tfsdk:"updated_replicas"`
}

const defaultProtocol = "tcp"

// topologyNode is the anti-affinity topology of a node, which the API also
// spells "".
const topologyNode = "node"

var (
	portAttrTypes = map[string]attr.Type{
		"container_port": types.Int64Type,
		"protocol":       types.StringType,
		"name":           types.StringType,
		"host_port":      types.Int64Type,
	}
	portObjectType = types.ObjectType{AttrTypes: portAttrTypes}

	containerAttrTypes = map[string]attr.Type{
		"name":            types.StringType,
		"image":           types.StringType,
		"command":         types.ListType{ElemType: types.StringType},
		"args":            types.ListType{ElemType: types.StringType},
		"env":             types.MapType{ElemType: types.StringType},
		"port":            types.ListType{ElemType: portObjectType},
		"cpu_request":     types.Int64Type,
		"cpu_limit":       types.Int64Type,
		"memory_request":  types.Int64Type,
		"memory_limit":    types.Int64Type,
		"liveness_probe":  types.ListType{ElemType: probeObjectType},
		"readiness_probe": types.ListType{ElemType: probeObjectType},
		"pids_limit":      types.Int64Type,
		"security":        types.ListType{ElemType: securityObjectType},
	}
	containerObjectType = types.ObjectType{AttrTypes: containerAttrTypes}

	antiAffinityAttrTypes = map[string]attr.Type{
		"labels":   types.MapType{ElemType: types.StringType},
		"required": types.BoolType,
		"topology": types.StringType,
	}
	antiAffinityObjectType = types.ObjectType{AttrTypes: antiAffinityAttrTypes}

	statusAttrTypes = map[string]attr.Type{
		"replicas":         types.Int64Type,
		"ready_replicas":   types.Int64Type,
		"updated_replicas": types.Int64Type,
	}
)

// deploymentID is the resource ID and import ID: "namespace/name".
func deploymentID(ns, name string) string { return namespacedID(ns, name) }

// specEqual reports whether two models ask the agent for the same deployment.
// Everything else (wait_for_rollout, timeouts, api_connection) only changes what
// Terraform does.
func specEqual(a, b *deploymentModel) bool {
	return a.Namespace.Equal(b.Namespace) && a.Name.Equal(b.Name) && a.Replicas.Equal(b.Replicas) &&
		a.Labels.Equal(b.Labels) && a.Containers.Equal(b.Containers) && !schedulingChanged(a, b) &&
		a.Placement.Equal(b.Placement) && a.MinReadySeconds.Equal(b.MinReadySeconds) && a.SelfFencing.Equal(b.SelfFencing)
}

// schedulingChanged reports whether b differs from a in what decides where,
// and whether, its pods fit: replicas, containers (requests, host ports),
// node_selector or anti_affinity.
func schedulingChanged(a, b *deploymentModel) bool {
	return !a.Replicas.Equal(b.Replicas) || !a.Containers.Equal(b.Containers) ||
		!a.NodeSelector.Equal(b.NodeSelector) || !a.AntiAffinity.Equal(b.AntiAffinity)
}

// toAPI builds the API request from a fully known plan.
func (m *deploymentModel) toAPI(ctx context.Context) (*api.Deployment, diag.Diagnostics) {
	var diags diag.Diagnostics
	d := &api.Deployment{
		Namespace: m.Namespace.ValueString(),
		Name:      m.Name.ValueString(),
		Replicas:  int(m.Replicas.ValueInt64()),
	}
	if d.Namespace == "" {
		d.Namespace = api.DefaultNamespace
	}
	diags.Append(m.Labels.ElementsAs(ctx, &d.Labels, false)...)
	diags.Append(m.NodeSelector.ElementsAs(ctx, &d.NodeSelector, false)...)
	// The defaults go out as the API's zero values (omitted in JSON), so a
	// configuration that does not use scheduling options sends what it did
	// before they existed, which agents that predate them accept.
	if p := m.Placement.ValueString(); p != api.PlacementSpread {
		d.Placement = p
	}
	if isKnown(m.MinReadySeconds) && m.MinReadySeconds.ValueInt64() != api.DefaultMinReadySeconds {
		v := int(m.MinReadySeconds.ValueInt64())
		d.MinReadySeconds = &v
	}
	d.SelfFencing = m.SelfFencing.ValueBool()
	var rules []antiAffinityModel
	diags.Append(m.AntiAffinity.ElementsAs(ctx, &rules, false)...)
	for _, rm := range rules {
		r := api.AntiAffinity{Required: rm.Required.ValueBool(), Topology: rm.Topology.ValueString()}
		diags.Append(rm.Labels.ElementsAs(ctx, &r.Labels, false)...)
		d.AntiAffinity = append(d.AntiAffinity, r)
	}
	var cs []containerModel
	diags.Append(m.Containers.ElementsAs(ctx, &cs, false)...)
	for _, cm := range cs {
		c := api.Container{
			Name:          cm.Name.ValueString(),
			Image:         cm.Image.ValueString(),
			CPURequest:    cm.CPURequest.ValueInt64(),
			CPULimit:      cm.CPULimit.ValueInt64(),
			MemoryRequest: cm.MemoryRequest.ValueInt64(),
			MemoryLimit:   cm.MemoryLimit.ValueInt64(),
		}
		diags.Append(cm.Command.ElementsAs(ctx, &c.Command, false)...)
		diags.Append(cm.Args.ElementsAs(ctx, &c.Args, false)...)
		diags.Append(cm.Env.ElementsAs(ctx, &c.Env, false)...)
		var ps []portModel
		diags.Append(cm.Ports.ElementsAs(ctx, &ps, false)...)
		for _, pm := range ps {
			proto := pm.Protocol.ValueString()
			if proto == "" {
				proto = defaultProtocol
			}
			c.Ports = append(c.Ports, api.Port{
				Name:          pm.Name.ValueString(),
				ContainerPort: int(pm.ContainerPort.ValueInt64()),
				Protocol:      proto,
				HostPort:      int(pm.HostPort.ValueInt64()),
			})
		}
		var ds diag.Diagnostics
		c.LivenessProbe, ds = probeFromList(ctx, cm.LivenessProbe)
		diags.Append(ds...)
		c.ReadinessProbe, ds = probeFromList(ctx, cm.ReadinessProbe)
		diags.Append(ds...)
		c.PidsLimit = cm.PidsLimit.ValueInt64()
		c.Security, ds = securityFromList(ctx, cm.Security)
		diags.Append(ds...)
		d.Containers = append(d.Containers, c)
	}
	return d, diags
}

// setComputed copies what the server decides into m.
func (m *deploymentModel) setComputed(d *api.Deployment) {
	m.ID = types.StringValue(deploymentID(d.Namespace, d.Name))
	m.Generation = types.Int64Value(int64(d.Generation))
	m.Status = statusValue(d.Status)
}

func statusValue(s api.DeploymentStatus) types.Object {
	return types.ObjectValueMust(statusAttrTypes, map[string]attr.Value{
		"replicas":         types.Int64Value(int64(s.Replicas)),
		"ready_replicas":   types.Int64Value(int64(s.ReadyReplicas)),
		"updated_replicas": types.Int64Value(int64(s.UpdatedReplicas)),
	})
}

// flattenDeployment maps an API deployment to state. prior is the state
// before the read (or the import stub); it decides between null and empty
// for values the API cannot tell apart, so a refresh after apply plans nothing.
func flattenDeployment(ctx context.Context, d *api.Deployment, prior *deploymentModel) (deploymentModel, diag.Diagnostics) {
	var diags diag.Diagnostics
	m := deploymentModel{
		Name:           types.StringValue(d.Name),
		Namespace:      types.StringValue(d.Namespace),
		Replicas:       types.Int64Value(int64(d.Replicas)),
		WaitForRollout: prior.WaitForRollout,
		Connection:     prior.Connection,
		Timeouts:       prior.Timeouts,
	}
	if m.Connection.IsUnknown() || len(m.Connection.AttributeTypes(ctx)) == 0 {
		// An import stub: the connection comes from the configuration.
		m.Connection = types.ObjectNull(connectionAttrTypes)
	}
	if m.WaitForRollout.IsNull() || m.WaitForRollout.IsUnknown() {
		m.WaitForRollout = types.BoolValue(true)
	}
	m.setComputed(d)
	m.Labels = stringMapValue(d.Labels, prior.Labels)
	m.NodeSelector = stringMapValue(d.NodeSelector, prior.NodeSelector)
	m.Placement = types.StringValue(d.Placement)
	if d.Placement == "" {
		m.Placement = types.StringValue(api.PlacementSpread)
	}
	m.MinReadySeconds = types.Int64Value(int64(d.MinReady()))
	m.SelfFencing = types.BoolValue(d.SelfFencing)
	rules, ds := antiAffinityValue(ctx, d.AntiAffinity, prior.AntiAffinity)
	diags.Append(ds...)
	m.AntiAffinity = rules

	priorContainers := map[string]containerModel{}
	if !prior.Containers.IsNull() && !prior.Containers.IsUnknown() {
		var pcs []containerModel
		diags.Append(prior.Containers.ElementsAs(ctx, &pcs, false)...)
		for _, pc := range pcs {
			priorContainers[pc.Name.ValueString()] = pc
		}
	}
	containers := make([]attr.Value, 0, len(d.Containers))
	for _, c := range d.Containers {
		pc, ok := priorContainers[c.Name]
		if !ok {
			pc = nullContainer()
		}
		v, ds := flattenContainer(ctx, c, pc)
		diags.Append(ds...)
		containers = append(containers, v)
	}
	list, ds := types.ListValue(containerObjectType, containers)
	diags.Append(ds...)
	m.Containers = list
	return m, diags
}

func nullContainer() containerModel {
	return containerModel{
		Command: types.ListNull(types.StringType),
		Args:    types.ListNull(types.StringType),
		Env:     types.MapNull(types.StringType),
		Ports:   types.ListNull(portObjectType),
		// Security stays null: securityValue reads no prior from it.
		Security: types.ListNull(securityObjectType),
	}
}

// antiAffinityValue is the anti_affinity block list of rules. A topology
// the API leaves empty is the node's: it stays null, or "node" if the prior
// state said so.
func antiAffinityValue(ctx context.Context, rules []api.AntiAffinity, prior types.List) (types.List, diag.Diagnostics) {
	var diags diag.Diagnostics
	var priorRules []antiAffinityModel
	if isKnown(prior) {
		diags.Append(prior.ElementsAs(ctx, &priorRules, false)...)
	}
	elems := make([]attr.Value, 0, len(rules))
	for i, r := range rules {
		pt := types.StringNull()
		if i < len(priorRules) {
			pt = priorRules[i].Topology
		}
		topology := stringValue(r.Topology, pt)
		if (r.Topology == "" || r.Topology == topologyNode) && (pt.IsNull() || pt.ValueString() == topologyNode) {
			topology = pt // "", "node" and null all mean the node
		}
		obj, ds := types.ObjectValue(antiAffinityAttrTypes, map[string]attr.Value{
			"labels":   stringMapValue(r.Labels, types.MapNull(types.StringType)),
			"required": types.BoolValue(r.Required),
			"topology": topology,
		})
		diags.Append(ds...)
		elems = append(elems, obj)
	}
	l, ds := types.ListValue(antiAffinityObjectType, elems)
	diags.Append(ds...)
	return l, diags
}

func flattenContainer(ctx context.Context, c api.Container, prior containerModel) (types.Object, diag.Diagnostics) {
	var diags diag.Diagnostics
	var priorPorts []portModel
	if !prior.Ports.IsNull() && !prior.Ports.IsUnknown() {
		diags.Append(prior.Ports.ElementsAs(ctx, &priorPorts, false)...)
	}
	// port is a block: Terraform represents "no port blocks" as an empty
	// list, never null.
	ports := make([]attr.Value, 0, len(c.Ports))
	for i, p := range c.Ports {
		pp := portModel{Name: types.StringNull(), HostPort: types.Int64Null()}
		if i < len(priorPorts) {
			pp = priorPorts[i]
		}
		proto := p.Protocol
		if proto == "" {
			proto = defaultProtocol
		}
		ports = append(ports, types.ObjectValueMust(portAttrTypes, map[string]attr.Value{
			"container_port": types.Int64Value(int64(p.ContainerPort)),
			"protocol":       types.StringValue(proto),
			"name":           stringValue(p.Name, pp.Name),
			"host_port":      int64Value(int64(p.HostPort), pp.HostPort),
		}))
	}
	portList, ds := types.ListValue(portObjectType, ports)
	diags.Append(ds...)
	liveness, ds := probeValue(ctx, c.LivenessProbe)
	diags.Append(ds...)
	readiness, ds := probeValue(ctx, c.ReadinessProbe)
	diags.Append(ds...)
	security, ds := securityValue(ctx, c.Security, prior.Security)
	diags.Append(ds...)
	obj, ds := types.ObjectValue(containerAttrTypes, map[string]attr.Value{
		"name":            types.StringValue(c.Name),
		"image":           types.StringValue(c.Image),
		"command":         stringListValue(c.Command, prior.Command),
		"args":            stringListValue(c.Args, prior.Args),
		"env":             stringMapValue(c.Env, prior.Env),
		"port":            portList,
		"cpu_request":     int64Value(c.CPURequest, prior.CPURequest),
		"cpu_limit":       int64Value(c.CPULimit, prior.CPULimit),
		"memory_request":  int64Value(c.MemoryRequest, prior.MemoryRequest),
		"memory_limit":    int64Value(c.MemoryLimit, prior.MemoryLimit),
		"liveness_probe":  liveness,
		"readiness_probe": readiness,
		"pids_limit":      int64Value(c.PidsLimit, prior.PidsLimit),
		"security":        security,
	})
	diags.Append(ds...)
	return obj, diags
}

// The API omits empty values (omitempty, 0 = unset). The helpers below turn
// "absent" back into whatever the prior state had: an explicit empty value
// stays empty, anything else becomes null.

func stringListValue(v []string, prior types.List) types.List {
	if len(v) == 0 && !(isKnown(prior) && len(prior.Elements()) == 0) {
		return types.ListNull(types.StringType)
	}
	elems := make([]attr.Value, len(v))
	for i, s := range v {
		elems[i] = types.StringValue(s)
	}
	return types.ListValueMust(types.StringType, elems)
}

func stringMapValue(v map[string]string, prior types.Map) types.Map {
	if len(v) == 0 && !(isKnown(prior) && len(prior.Elements()) == 0) {
		return types.MapNull(types.StringType)
	}
	elems := make(map[string]attr.Value, len(v))
	for k, s := range v {
		elems[k] = types.StringValue(s)
	}
	return types.MapValueMust(types.StringType, elems)
}

func int64Value(v int64, prior types.Int64) types.Int64 {
	if v == 0 && !(isKnown(prior) && prior.ValueInt64() == 0) {
		return types.Int64Null()
	}
	return types.Int64Value(v)
}

func stringValue(v string, prior types.String) types.String {
	if v == "" && !(isKnown(prior) && prior.ValueString() == "") {
		return types.StringNull()
	}
	return types.StringValue(v)
}

func isKnown(v attr.Value) bool { return v != nil && !v.IsNull() && !v.IsUnknown() }

// knownBlocks decodes the known elements of a list of nested blocks,
// calling fn with each one's index. Unknown blocks are skipped: they are
// checked again once their values are known.
func knownBlocks[T any](ctx context.Context, l types.List, fn func(i int, v T)) diag.Diagnostics {
	var diags diag.Diagnostics
	if !isKnown(l) {
		return nil
	}
	for i, el := range l.Elements() {
		obj, ok := el.(types.Object)
		if !ok || !isKnown(obj) {
			continue
		}
		var v T
		diags.Append(obj.As(ctx, &v, basetypes.ObjectAsOptions{})...)
		if diags.HasError() {
			return diags
		}
		fn(i, v)
	}
	return diags
}

// containersOf decodes the known container blocks of a config or plan.
func containersOf(ctx context.Context, l types.List, fn func(i int, c containerModel)) diag.Diagnostics {
	return knownBlocks(ctx, l, fn)
}

// portsOf decodes the known port blocks of a container.
func portsOf(ctx context.Context, l types.List, fn func(j int, p portModel)) diag.Diagnostics {
	return knownBlocks(ctx, l, fn)
}

// progress describes how far a rollout got, for logs and errors.
func progress(d *api.Deployment) string {
	if d == nil {
		return "no status was read yet"
	}
	return fmt.Sprintf("%d/%d updated, %d ready", d.Status.UpdatedReplicas, d.Replicas, d.Status.ReadyReplicas)
}
