package provider

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

var (
	_ datasource.DataSource              = (*serviceEndpointsDataSource)(nil)
	_ datasource.DataSourceWithConfigure = (*serviceEndpointsDataSource)(nil)
)

// NewServiceEndpointsDataSource returns the flotilla_service_endpoints data source.
func NewServiceEndpointsDataSource() datasource.DataSource { return &serviceEndpointsDataSource{} }

// serviceEndpointsDataSource reads the pods a service sends traffic to.
type serviceEndpointsDataSource struct {
	data *providerData
}

type serviceEndpointsModel struct {
	ID         types.String `tfsdk:"id"`
	Namespace  types.String `tfsdk:"namespace"`
	Name       types.String `tfsdk:"name"`
	Addresses  types.List   `tfsdk:"addresses"`
	ReadyCount types.Int64  `tfsdk:"ready_count"`
	Connection types.Object `tfsdk:"api_connection"`
}

var (
	endpointPortAttrTypes = map[string]attr.Type{
		"name":     types.StringType,
		"protocol": types.StringType,
		"port":     types.Int64Type,
	}
	endpointAddressAttrTypes = map[string]attr.Type{
		"pod":   types.StringType,
		"node":  types.StringType,
		"ip":    types.StringType,
		"ready": types.BoolType,
		"ports": types.ListType{ElemType: types.ObjectType{AttrTypes: endpointPortAttrTypes}},
	}
)

func (d *serviceEndpointsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_service_endpoints"
}

func (d *serviceEndpointsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The endpoints of a service as the servers see them now: the pods its selector " +
			"matches, where they run, their IPs, the port each service port reaches on them, and whether they " +
			"get traffic.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "`namespace/name`.",
				Computed:            true,
			},
			"namespace": schema.StringAttribute{
				MarkdownDescription: "Namespace of the service. Defaults to `" + api.DefaultNamespace + "`.",
				Optional:            true,
				Computed:            true,
				Validators:          []validator.String{nameValidator{}},
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "Name of the service.",
				Required:            true,
				Validators:          []validator.String{nameValidator{}},
			},
			"addresses": schema.ListNestedAttribute{
				MarkdownDescription: "The pods the service selects that have an IP, ready or not, sorted by pod name.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"pod":  schema.StringAttribute{Computed: true, MarkdownDescription: "Pod name."},
						"node": schema.StringAttribute{Computed: true, MarkdownDescription: "Node the pod runs on."},
						"ip":   schema.StringAttribute{Computed: true, MarkdownDescription: "Pod IP."},
						"ready": schema.BoolAttribute{
							Computed: true,
							MarkdownDescription: "Whether connections go to it: the pod runs, is ready (readiness probe, " +
								"or `min_ready_seconds`) and is not stopping.",
						},
						"ports": schema.ListNestedAttribute{
							MarkdownDescription: "The pod's port for each service port, in the service's order; a " +
								"port whose named `target_port` the pod lacks is left out.",
							Computed: true,
							NestedObject: schema.NestedAttributeObject{
								Attributes: map[string]schema.Attribute{
									"name":     schema.StringAttribute{Computed: true, MarkdownDescription: "Name of the service port; empty if it has none."},
									"protocol": schema.StringAttribute{Computed: true, MarkdownDescription: "`tcp` or `udp`."},
									"port":     schema.Int64Attribute{Computed: true, MarkdownDescription: "The pod's port number."},
								},
							},
						},
					},
				},
			},
			"ready_count": schema.Int64Attribute{
				MarkdownDescription: "How many of `addresses` are ready.",
				Computed:            true,
			},
			"api_connection": dataSourceConnectionAttribute(),
		},
	}
}

func (d *serviceEndpointsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	configureData(req.ProviderData, &d.data, &resp.Diagnostics)
}

func (d *serviceEndpointsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m serviceEndpointsModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	client, _, diags := d.data.clientFor(ctx, m.Connection)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ns := orDefault(m.Namespace.ValueString(), api.DefaultNamespace)
	name := m.Name.ValueString()
	ep, err := client.GetEndpoints(ctx, ns, name)
	if err != nil {
		detail := fmt.Sprintf("read endpoints of service %s: %s", serviceID(ns, name), err)
		if api.IsNotFound(err) {
			detail += "; is the service created? Reference the flotilla_service (or add depends_on) so it is read after"
		}
		resp.Diagnostics.AddError("Could not read service endpoints", detail)
		return
	}
	addrs := append([]api.EndpointAddress(nil), ep.Addresses...)
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Pod < addrs[j].Pod })
	portType := types.ObjectType{AttrTypes: endpointPortAttrTypes}
	values := make([]attr.Value, 0, len(addrs))
	ready := 0
	for _, a := range addrs {
		if a.Ready {
			ready++
		}
		ports := make([]attr.Value, 0, len(a.Ports))
		for _, p := range a.Ports {
			ports = append(ports, types.ObjectValueMust(endpointPortAttrTypes, map[string]attr.Value{
				"name":     types.StringValue(p.Name),
				"protocol": types.StringValue(orDefault(p.Protocol, defaultProtocol)),
				"port":     types.Int64Value(int64(p.Port)),
			}))
		}
		values = append(values, types.ObjectValueMust(endpointAddressAttrTypes, map[string]attr.Value{
			"pod":   types.StringValue(a.Pod),
			"node":  types.StringValue(a.Node),
			"ip":    types.StringValue(a.IP),
			"ready": types.BoolValue(a.Ready),
			"ports": types.ListValueMust(portType, ports),
		}))
	}
	m.ID = types.StringValue(serviceID(ns, name))
	m.Namespace = types.StringValue(ns)
	m.Addresses = types.ListValueMust(types.ObjectType{AttrTypes: endpointAddressAttrTypes}, values)
	m.ReadyCount = types.Int64Value(int64(ready))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
