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
	_ datasource.DataSource              = (*podsDataSource)(nil)
	_ datasource.DataSourceWithConfigure = (*podsDataSource)(nil)
)

// NewPodsDataSource returns the flotilla_pods data source.
func NewPodsDataSource() datasource.DataSource { return &podsDataSource{} }

// podsDataSource lists the pods of one deployment.
type podsDataSource struct {
	data *providerData
}

type podsModel struct {
	ID         types.String `tfsdk:"id"`
	Namespace  types.String `tfsdk:"namespace"`
	Deployment types.String `tfsdk:"deployment"`
	Pods       types.List   `tfsdk:"pods"`
	IPs        types.List   `tfsdk:"ips"`
	Connection types.Object `tfsdk:"api_connection"`
}

var podAttrTypes = map[string]attr.Type{
	"name":          types.StringType,
	"node":          types.StringType,
	"ip":            types.StringType,
	"phase":         types.StringType,
	"ready":         types.BoolType,
	"restart_count": types.Int64Type,
	"generation":    types.Int64Type,
}

func (d *podsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_pods"
}

func (d *podsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The pods of a deployment as the agent sees them now: where they run, their IPs " +
			"and whether they are ready.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "`namespace/deployment`.",
				Computed:            true,
			},
			"namespace": schema.StringAttribute{
				MarkdownDescription: "Namespace of the deployment. Defaults to `" + api.DefaultNamespace + "`.",
				Optional:            true,
				Computed:            true,
				Validators:          []validator.String{nameValidator{}},
			},
			"deployment": schema.StringAttribute{
				MarkdownDescription: "Name of the deployment.",
				Required:            true,
				Validators:          []validator.String{nameValidator{}},
			},
			"pods": schema.ListNestedAttribute{
				MarkdownDescription: "The deployment's pods, sorted by name.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"name":  schema.StringAttribute{Computed: true, MarkdownDescription: "Pod name."},
						"node":  schema.StringAttribute{Computed: true, MarkdownDescription: "Node the pod is scheduled on."},
						"ip":    schema.StringAttribute{Computed: true, MarkdownDescription: "Pod IP; empty until its network is set up."},
						"phase": schema.StringAttribute{Computed: true, MarkdownDescription: "`pending`, `running`, `failed` or `terminating`."},
						"ready": schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether all containers are ready."},
						"restart_count": schema.Int64Attribute{
							Computed:            true,
							MarkdownDescription: "Restarts summed over the pod's containers.",
						},
						"generation": schema.Int64Attribute{
							Computed:            true,
							MarkdownDescription: "Deployment generation the pod runs.",
						},
					},
				},
			},
			"api_connection": dataSourceConnectionAttribute(),
			"ips": schema.ListAttribute{
				MarkdownDescription: "IPs of the ready pods, in pod name order.",
				ElementType:         types.StringType,
				Computed:            true,
			},
		},
	}
}

func (d *podsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	configureData(req.ProviderData, &d.data, &resp.Diagnostics)
}

func (d *podsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m podsModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	client, _, diags := d.data.clientFor(ctx, m.Connection)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ns := m.Namespace.ValueString()
	if ns == "" {
		ns = api.DefaultNamespace
	}
	dep := m.Deployment.ValueString()
	pods, err := client.ListPods(ctx, ns, dep)
	if err != nil {
		resp.Diagnostics.AddError("Could not list pods", fmt.Sprintf("list pods of deployment %s/%s: %s", ns, dep, err))
		return
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })

	podValues := make([]attr.Value, 0, len(pods))
	ips := make([]attr.Value, 0, len(pods))
	for _, p := range pods {
		if p.Deployment != "" && p.Deployment != dep {
			continue // the filter is the server's job; be safe anyway
		}
		restarts := 0
		for _, c := range p.Status.Containers {
			restarts += c.RestartCount
		}
		podValues = append(podValues, types.ObjectValueMust(podAttrTypes, map[string]attr.Value{
			"name":          types.StringValue(p.Name),
			"node":          types.StringValue(p.Node),
			"ip":            types.StringValue(p.Status.IP),
			"phase":         types.StringValue(p.Status.Phase),
			"ready":         types.BoolValue(p.Status.Ready),
			"restart_count": types.Int64Value(int64(restarts)),
			"generation":    types.Int64Value(int64(p.Generation)),
		}))
		if p.Status.Ready && p.Status.IP != "" && !p.Stop {
			ips = append(ips, types.StringValue(p.Status.IP))
		}
	}
	m.ID = types.StringValue(ns + "/" + dep)
	m.Namespace = types.StringValue(ns)
	m.Pods = types.ListValueMust(types.ObjectType{AttrTypes: podAttrTypes}, podValues)
	m.IPs = types.ListValueMust(types.StringType, ips)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
