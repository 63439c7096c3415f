package provider

import (
	"context"
	"strconv"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

// serviceModel is the state and plan of flotilla_service.
type serviceModel struct {
	ID              types.String   `tfsdk:"id"`
	Name            types.String   `tfsdk:"name"`
	Namespace       types.String   `tfsdk:"namespace"`
	Selector        types.Map      `tfsdk:"selector"`
	Ports           types.List     `tfsdk:"port"`
	Type            types.String   `tfsdk:"type"`
	SessionAffinity types.String   `tfsdk:"session_affinity"`
	ClusterIP       types.String   `tfsdk:"cluster_ip"`
	Connection      types.Object   `tfsdk:"api_connection"`
	Timeouts        timeouts.Value `tfsdk:"timeouts"`
}

// servicePortModel is one port block of a service.
type servicePortModel struct {
	Name       types.String `tfsdk:"name"`
	Protocol   types.String `tfsdk:"protocol"`
	Port       types.Int64  `tfsdk:"port"`
	TargetPort types.String `tfsdk:"target_port"`
	NodePort   types.Int64  `tfsdk:"node_port"`
}

var (
	servicePortAttrTypes = map[string]attr.Type{
		"name":        types.StringType,
		"protocol":    types.StringType,
		"port":        types.Int64Type,
		"target_port": types.StringType,
		"node_port":   types.Int64Type,
	}
	servicePortObjectType = types.ObjectType{AttrTypes: servicePortAttrTypes}
)

// serviceID is the resource ID and import ID: "namespace/name".
func serviceID(ns, name string) string { return namespacedID(ns, name) }

// serviceSpecEqual reports whether two models ask the agent for the same
// service; timeouts and api_connection only change what Terraform does.
func serviceSpecEqual(a, b *serviceModel) bool {
	return a.Namespace.Equal(b.Namespace) && a.Name.Equal(b.Name) && a.Selector.Equal(b.Selector) &&
		a.Ports.Equal(b.Ports) && a.Type.Equal(b.Type) && a.SessionAffinity.Equal(b.SessionAffinity) &&
		a.ClusterIP.Equal(b.ClusterIP)
}

// toAPI builds the API request from a plan. Values still unknown (a
// cluster IP or node port to be assigned) go out as zero: the agent
// assigns them, or keeps the ones it gave.
func (m *serviceModel) toAPI(ctx context.Context) (*api.Service, diag.Diagnostics) {
	var diags diag.Diagnostics
	s := &api.Service{
		Namespace:       m.Namespace.ValueString(),
		Name:            m.Name.ValueString(),
		Type:            m.Type.ValueString(),
		SessionAffinity: m.SessionAffinity.ValueString(),
		ClusterIP:       m.ClusterIP.ValueString(),
	}
	if s.Namespace == "" {
		s.Namespace = api.DefaultNamespace
	}
	diags.Append(m.Selector.ElementsAs(ctx, &s.Selector, false)...)
	var ports []servicePortModel
	diags.Append(m.Ports.ElementsAs(ctx, &ports, false)...)
	for _, pm := range ports {
		proto := pm.Protocol.ValueString()
		if proto == "" {
			proto = defaultProtocol
		}
		s.Ports = append(s.Ports, api.ServicePort{
			Name:       pm.Name.ValueString(),
			Protocol:   proto,
			Port:       int(pm.Port.ValueInt64()),
			TargetPort: pm.TargetPort.ValueString(),
			NodePort:   int(pm.NodePort.ValueInt64()),
		})
	}
	return s, diags
}

// flattenService maps an API service to state. prior is the state before
// the read, the plan after a write, or the import stub; it decides between
// null and empty for port names, and carries what the API does not hold.
func flattenService(ctx context.Context, s *api.Service, prior *serviceModel) (serviceModel, diag.Diagnostics) {
	var diags diag.Diagnostics
	m := serviceModel{
		ID:              types.StringValue(serviceID(s.Namespace, s.Name)),
		Name:            types.StringValue(s.Name),
		Namespace:       types.StringValue(s.Namespace),
		Selector:        stringMapValue(s.Selector, prior.Selector),
		Type:            types.StringValue(orDefault(s.Type, api.ServiceClusterIP)),
		SessionAffinity: types.StringValue(orDefault(s.SessionAffinity, api.AffinityNone)),
		ClusterIP:       types.StringValue(s.ClusterIP),
		Connection:      prior.Connection,
		Timeouts:        prior.Timeouts,
	}
	if m.Connection.IsUnknown() || len(m.Connection.AttributeTypes(ctx)) == 0 {
		// An import stub: the connection comes from the configuration.
		m.Connection = types.ObjectNull(connectionAttrTypes)
	}
	var priorPorts []servicePortModel
	if isKnown(prior.Ports) {
		diags.Append(prior.Ports.ElementsAs(ctx, &priorPorts, false)...)
	}
	// port is a block: no blocks is an empty list, never null.
	ports := make([]attr.Value, 0, len(s.Ports))
	for i, p := range s.Ports {
		pp := servicePortModel{Name: types.StringNull()}
		if i < len(priorPorts) {
			pp = priorPorts[i]
		}
		target := p.TargetPort
		if target == "" {
			target = strconv.Itoa(p.Port) // what the agent does with it
		}
		nodePort := types.Int64Null()
		if p.NodePort != 0 {
			nodePort = types.Int64Value(int64(p.NodePort))
		}
		obj, ds := types.ObjectValue(servicePortAttrTypes, map[string]attr.Value{
			"name":        stringValue(p.Name, pp.Name),
			"protocol":    types.StringValue(p.Proto()),
			"port":        types.Int64Value(int64(p.Port)),
			"target_port": types.StringValue(target),
			"node_port":   nodePort,
		})
		diags.Append(ds...)
		ports = append(ports, obj)
	}
	list, ds := types.ListValue(servicePortObjectType, ports)
	diags.Append(ds...)
	m.Ports = list
	return m, diags
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// servicePortsOf decodes the known port blocks of a config or plan.
func servicePortsOf(ctx context.Context, l types.List, fn func(i int, p servicePortModel)) diag.Diagnostics {
	return knownBlocks(ctx, l, fn)
}
