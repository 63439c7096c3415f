package provider

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/datasource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

// defaultNodesReadTimeout bounds the wait for min_ready nodes.
const defaultNodesReadTimeout = 10 * time.Minute

var (
	_ datasource.DataSource              = (*nodesDataSource)(nil)
	_ datasource.DataSourceWithConfigure = (*nodesDataSource)(nil)
)

// NewNodesDataSource returns the flotilla_nodes data source.
func NewNodesDataSource() datasource.DataSource { return &nodesDataSource{} }

// nodesDataSource lists the nodes of a fleet, optionally waiting until
// enough of them are ready: the gate between a fleet's VMs and the
// deployments of a configuration that creates both.
type nodesDataSource struct {
	data *providerData
}

type nodesModel struct {
	ID         types.String   `tfsdk:"id"`
	Connection types.Object   `tfsdk:"api_connection"`
	MinReady   types.Int64    `tfsdk:"min_ready"`
	Nodes      types.List     `tfsdk:"nodes"`
	ReadyCount types.Int64    `tfsdk:"ready_count"`
	Timeouts   timeouts.Value `tfsdk:"timeouts"`
}

var nodeAttrTypes = map[string]attr.Type{
	"name":       types.StringType,
	"address":    types.StringType,
	"pod_cidr":   types.StringType,
	"cpu_millis": types.Int64Type,
	"memory_mib": types.Int64Type,
	"status":     types.StringType,
	"server":     types.BoolType,
	"labels":     types.MapType{ElemType: types.StringType},

	"unschedulable":       types.BoolType,
	"draining":            types.BoolType,
	"reserved_cpu_millis": types.Int64Type,
	"reserved_memory_mib": types.Int64Type,
	"conditions":          types.MapType{ElemType: types.StringType},
}

func (d *nodesDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_nodes"
}

func (d *nodesDataSource) Schema(ctx context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The nodes of a fleet as its agents see them now. With `min_ready` it waits until that " +
			"many nodes are ready, which is how a configuration that creates the VMs, the cluster and its " +
			"deployments in one apply makes the deployments wait for the nodes.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The API address the nodes were read from.",
				Computed:            true,
			},
			"api_connection": dataSourceConnectionAttribute(),
			"min_ready": schema.Int64Attribute{
				MarkdownDescription: "Wait until at least this many nodes are ready, retrying while the fleet " +
					"does not answer yet (VMs booting, no leader elected), for up to `timeouts.read` (default 10 " +
					"minutes). Unset: read once and fail if the fleet does not answer.",
				Optional:   true,
				Validators: []validator.Int64{int64validator.AtLeast(1)},
			},
			"ready_count": schema.Int64Attribute{
				MarkdownDescription: "Number of ready nodes.",
				Computed:            true,
			},
			"nodes": schema.ListNestedAttribute{
				MarkdownDescription: "The fleet's nodes, sorted by name.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"name":       schema.StringAttribute{Computed: true, MarkdownDescription: "Node name (the VM's host name unless set)."},
						"address":    schema.StringAttribute{Computed: true, MarkdownDescription: "Address other agents reach the node at."},
						"pod_cidr":   schema.StringAttribute{Computed: true, MarkdownDescription: "Range the node's pods get IPs from."},
						"cpu_millis": schema.Int64Attribute{Computed: true, MarkdownDescription: "CPU capacity in millicores."},
						"memory_mib": schema.Int64Attribute{Computed: true, MarkdownDescription: "Memory capacity in MiB."},
						"reserved_cpu_millis": schema.Int64Attribute{
							Computed: true,
							MarkdownDescription: "CPU in millicores kept for the system (the agent, containerd, the OS); " +
								"pods can request `cpu_millis - reserved_cpu_millis` in all.",
						},
						"reserved_memory_mib": schema.Int64Attribute{
							Computed: true,
							MarkdownDescription: "Memory in MiB kept for the system; pods can request " +
								"`memory_mib - reserved_memory_mib` in all.",
						},
						"unschedulable": schema.BoolAttribute{
							Computed: true,
							MarkdownDescription: "Whether the node is cordoned: it gets no new pods, and keeps the ones it runs " +
								"unless it is also `draining`. Only an operator sets it.",
						},
						"draining": schema.BoolAttribute{
							Computed: true,
							MarkdownDescription: "Whether the node is being drained: it is `unschedulable` and its pods are " +
								"moved to other nodes, one availability step per deployment at a time.",
						},
						"conditions": schema.MapAttribute{
							Computed:    true,
							ElementType: types.StringType,
							MarkdownDescription: "What the node reports wrong with itself, by type, each with its message: " +
								"`RuntimeUnhealthy` (containerd does not answer in time) and `DiskPressure` (the data " +
								"directory's file system is over the node's threshold; the node gets no new pods). Empty " +
								"when healthy.",
						},
						"status": schema.StringAttribute{Computed: true, MarkdownDescription: "`ready` or `down`."},
						"server": schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether the node is a server (holds the cluster state)."},
						"labels": schema.MapAttribute{
							Computed:            true,
							ElementType:         types.StringType,
							MarkdownDescription: "The node's labels.",
						},
					},
				},
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx),
		},
	}
}

func (d *nodesDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	configureData(req.ProviderData, &d.data, &resp.Diagnostics)
}

func (d *nodesDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m nodesModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	client, _, diags := d.data.clientFor(ctx, m.Connection)
	resp.Diagnostics.Append(diags...)
	timeout, diags := m.Timeouts.Read(ctx, defaultNodesReadTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	var nodes []api.Node
	var err error
	if isKnown(m.MinReady) {
		opCtx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		nodes, err = waitForNodes(opCtx, client, int(m.MinReady.ValueInt64()), d.data.poll())
		if err != nil {
			resp.Diagnostics.AddError("Not enough ready nodes", err.Error())
			return
		}
	} else if nodes, err = client.ListNodes(ctx); err != nil {
		resp.Diagnostics.AddError("Could not list nodes", fmt.Sprintf("list nodes at %s: %s", client.Address(), err))
		return
	}
	list, diags := nodesDetailValue(nodes)
	resp.Diagnostics.Append(diags...)
	m.ID = types.StringValue(client.Address())
	m.Nodes = list
	m.ReadyCount = types.Int64Value(int64(readyNodes(nodes)))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// nodesDetailValue is the nodes attribute of flotilla_nodes, sorted by name.
func nodesDetailValue(nodes []api.Node) (types.List, diag.Diagnostics) {
	nodes = sortedNodes(nodes)
	elems := make([]attr.Value, 0, len(nodes))
	for _, n := range nodes {
		labels := make(map[string]attr.Value, len(n.Labels))
		for k, v := range n.Labels {
			labels[k] = types.StringValue(v)
		}
		conds := make(map[string]attr.Value, len(n.Conditions))
		for _, c := range n.Conditions {
			conds[c.Type] = types.StringValue(c.Message)
		}
		elems = append(elems, types.ObjectValueMust(nodeAttrTypes, map[string]attr.Value{
			"name":       types.StringValue(n.Name),
			"address":    types.StringValue(n.Address),
			"pod_cidr":   types.StringValue(n.PodCIDR),
			"cpu_millis": types.Int64Value(n.CPUMillis),
			"memory_mib": types.Int64Value(n.MemoryMiB),
			"status":     types.StringValue(n.Status),
			"server":     types.BoolValue(n.Server),
			"labels":     types.MapValueMust(types.StringType, labels),

			"unschedulable":       types.BoolValue(n.Unschedulable),
			"draining":            types.BoolValue(n.Draining),
			"reserved_cpu_millis": types.Int64Value(n.ReservedCPUMillis),
			"reserved_memory_mib": types.Int64Value(n.ReservedMemoryMiB),
			"conditions":          types.MapValueMust(types.StringType, conds),
		}))
	}
	return types.ListValue(types.ObjectType{AttrTypes: nodeAttrTypes}, elems)
}

// sortedNodes returns a copy of nodes sorted by name.
func sortedNodes(nodes []api.Node) []api.Node {
	out := append([]api.Node(nil), nodes...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
