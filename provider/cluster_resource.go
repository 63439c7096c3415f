package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

const (
	// defaultClusterCreateTimeout bounds wait_for_nodes.
	defaultClusterCreateTimeout = 10 * time.Minute
	// clusterReadTimeout bounds the node list a refresh asks for: the
	// servers may be unreachable from where terraform runs, and that must
	// not hold up every plan.
	clusterReadTimeout = 10 * time.Second
	// caValidity is how long the cluster CA is valid. Node certificates are
	// issued by the servers and renewed by the agents; the CA is not.
	caValidity = 10 * 365 * 24 * time.Hour
)

var (
	_ resource.Resource                   = (*clusterResource)(nil)
	_ resource.ResourceWithConfigure      = (*clusterResource)(nil)
	_ resource.ResourceWithImportState    = (*clusterResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*clusterResource)(nil)
	_ resource.ResourceWithValidateConfig = (*clusterResource)(nil)
)

// NewClusterResource returns the flotilla_cluster resource.
func NewClusterResource() resource.Resource { return &clusterResource{} }

// clusterResource is a fleet's identity and settings. It lives in Terraform
// state only: it generates the CA and the shared secrets and renders the
// cloud-init user-data that makes VMs join, and reads the fleet only to
// report its nodes. Creating it needs no agent, so the VMs can be created
// from its user-data in the same apply.
type clusterResource struct {
	data *providerData
}

func (r *clusterResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cluster"
}

func (r *clusterResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	computedString := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{MarkdownDescription: desc, Computed: true}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A Flotilla fleet's identity and settings: its name, network ranges and servers. It " +
			"generates the cluster's CA, join token, gossip key and API token (kept in Terraform state) and renders " +
			"the cloud-init user-data that installs flotilla-agent on fresh Debian or Ubuntu VMs and joins them to the " +
			"fleet. Nothing calls the fleet to create it, so VMs, cluster and deployments can be created in one " +
			"`terraform apply`. Changing `name`, `server_addresses`, `pod_cidr` or `service_cidr` replaces the " +
			"cluster: new secrets, new user-data, so new VMs.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The cluster's name.",
				Computed:            true,
				PlanModifiers:       keep,
			},
			"name": schema.StringAttribute{
				MarkdownDescription: fmt.Sprintf("Name of the cluster, a lower-case DNS label of at most %d characters; "+
					"also the common name of its CA. Changing it replaces the cluster.", api.MaxNameLen),
				Required:      true,
				Validators:    []validator.String{nameValidator{}},
				PlanModifiers: replace,
			},
			"server_addresses": schema.ListAttribute{
				MarkdownDescription: fmt.Sprintf("Private IPv4 addresses of the server VMs, 1 to %d, an odd number "+
					"(1, 3 or 5) so that a majority survives failures. Give the server VMs these as static private IPs: "+
					"they are known before the VMs exist, which is what lets one apply create the VMs and the cluster. "+
					"Agents join through them and servers bootstrap once all of them are up. Changing it replaces the "+
					"cluster.", maxServers),
				ElementType: types.StringType,
				Required:    true,
				Validators: []validator.List{
					listvalidator.SizeBetween(1, maxServers),
					listvalidator.UniqueValues(),
					listvalidator.ValueStringsAre(ipv4Validator{}),
				},
				PlanModifiers: []planmodifier.List{listplanmodifier.RequiresReplace()},
			},
			"servers": schema.Int64Attribute{
				MarkdownDescription: "Number of servers: the length of `server_addresses`.",
				Computed:            true,
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
			"pod_cidr": schema.StringAttribute{
				MarkdownDescription: "IPv4 range pod IPs come from; each node gets a slice of it. Defaults to `" +
					defaultPodCIDR + "`. Must not overlap `service_cidr` or the VMs' network. Changing it replaces the cluster.",
				Optional:      true,
				Computed:      true,
				Default:       stringdefault.StaticString(defaultPodCIDR),
				Validators:    []validator.String{cidrValidator{}},
				PlanModifiers: replace,
			},
			"service_cidr": schema.StringAttribute{
				MarkdownDescription: "IPv4 range reserved for service addresses. Defaults to `" + defaultServiceCIDR +
					"`. Changing it replaces the cluster.",
				Optional:      true,
				Computed:      true,
				Default:       stringdefault.StaticString(defaultServiceCIDR),
				Validators:    []validator.String{cidrValidator{}},
				PlanModifiers: replace,
			},
			"api_port": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("Port of every agent's HTTPS API. Defaults to `%d`.", defaultAPIPort),
				Optional:            true,
				Computed:            true,
				Default:             int64default.StaticInt64(defaultAPIPort),
				Validators:          []validator.Int64{int64validator.Between(1, 65535)},
			},
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "URL of the fleet's API that `api_connection`, `wait_for_nodes` and refreshes use. " +
					"Defaults to `https://<server_addresses[0]>:<api_port>`. The agents' certificates are issued for " +
					"their own advertise addresses only, so TLS verification passes only for an endpoint at one of " +
					"those (any agent's, not only a server's).",
				Optional:   true,
				Computed:   true,
				Validators: []validator.String{addressValidator{}},
			},
			"agent_url": schema.StringAttribute{
				MarkdownDescription: "`https://` URL the user-data downloads the `flotilla-agent` binary from (with " +
					"curl, retrying) when the image lacks `/usr/local/bin/flotilla-agent` or has a binary whose SHA-256 " +
					"is not `agent_sha256`. Requires `agent_sha256`. Unset: the image must have the binary.",
				Optional:   true,
				Validators: []validator.String{downloadURLValidator{}},
			},
			"agent_sha256": schema.StringAttribute{
				MarkdownDescription: "SHA-256 of the binary at `agent_url`, 64 hex digits (`sha256sum` prints it). " +
					"Required with `agent_url`. A node checks the download before it makes it executable or runs it; " +
					"on a mismatch it deletes the download and its boot fails with `checksum mismatch` in " +
					"`/var/log/cloud-init-output.log`. Changing it changes the user-data.",
				Optional:   true,
				Validators: []validator.String{sha256Validator{}},
			},
			"wait_for_nodes": schema.Int64Attribute{
				MarkdownDescription: "When above 0, create waits (up to `timeouts.create`, default 10 minutes) until " +
					"the fleet at `endpoint` reports this many ready nodes, retrying while it does not answer. Only " +
					"useful when the nodes' VMs do not take their user-data from this resource: VMs that do are created " +
					"after it, so in a one-apply configuration keep 0 and gate on `data.flotilla_nodes` with " +
					"`min_ready` instead. Defaults to `0`.",
				Optional:   true,
				Computed:   true,
				Default:    int64default.StaticInt64(0),
				Validators: []validator.Int64{int64validator.AtLeast(0)},
			},
			"ca_cert_pem": schema.StringAttribute{
				MarkdownDescription: "The cluster CA's certificate (PEM, ECDSA P-256, valid 10 years). Agents' API, " +
					"RPC and gossip certificates chain to it.",
				Computed:      true,
				PlanModifiers: keep,
			},
			"ca_key_pem": schema.StringAttribute{
				MarkdownDescription: "The cluster CA's private key (PEM). Only servers get it, to sign joining agents' certificates.",
				Computed:            true,
				Sensitive:           true,
				PlanModifiers:       keep,
			},
			"join_token": schema.StringAttribute{
				MarkdownDescription: "Token an agent presents to a server to get its certificate.",
				Computed:            true,
				Sensitive:           true,
				PlanModifiers:       keep,
			},
			"gossip_key": schema.StringAttribute{
				MarkdownDescription: "Key (base64, 32 bytes) encrypting the agents' gossip.",
				Computed:            true,
				Sensitive:           true,
				PlanModifiers:       keep,
			},
			"api_token": schema.StringAttribute{
				MarkdownDescription: "Bearer token of every agent's API, for Terraform (`api_connection`) and " +
					"operators. It is not in the user-data: nodes get only its SHA-256 " +
					"(`/etc/flotilla/api-token.sha256`), which agents check tokens against.",
				Computed:      true,
				Sensitive:     true,
				PlanModifiers: keep,
			},
			"cloud_init_server": schema.StringAttribute{
				MarkdownDescription: "cloud-init user-data (`#cloud-config`) for the server VMs: pass it as their " +
					"`user_data`. It holds the CA key, the join token and the gossip key, and the API token's hash " +
					"(not the token); see Secrets above.",
				Computed:  true,
				Sensitive: true,
			},
			"cloud_init_client": schema.StringAttribute{
				MarkdownDescription: "cloud-init user-data for client VMs (nodes that only run pods). Holds the join " +
					"token, the gossip key and the API token's hash: neither the CA key nor the API token.",
				Computed:  true,
				Sensitive: true,
			},
			"nodes": schema.ListNestedAttribute{
				MarkdownDescription: "The fleet's nodes, sorted by name, as of the last create wait or refresh that " +
					"reached `endpoint`; a refresh that cannot reach it keeps the previous list and warns. Empty " +
					"after a create without `wait_for_nodes`.",
				Computed:      true,
				PlanModifiers: []planmodifier.List{listplanmodifier.UseStateForUnknown()},
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"name":     computedString("Node name."),
						"address":  computedString("Address other agents reach the node at."),
						"server":   schema.BoolAttribute{MarkdownDescription: "Whether the node is a server.", Computed: true},
						"status":   computedString("`ready` or `down`."),
						"pod_cidr": computedString("Range the node's pods get IPs from."),
					},
				},
			},
			"api_connection": schema.SingleNestedAttribute{
				MarkdownDescription: "`endpoint`, `api_token` and `ca_cert_pem` in one object, for " +
					"`api_connection = flotilla_cluster.NAME.api_connection` on deployments and data sources. Unknown until " +
					"the cluster is created, so they are planned without calling the fleet.",
				Computed:  true,
				Sensitive: true,
				Attributes: map[string]schema.Attribute{
					"endpoint":    computedString("Same as `endpoint`."),
					"token":       schema.StringAttribute{MarkdownDescription: "Same as `api_token`.", Computed: true, Sensitive: true},
					"ca_cert_pem": computedString("Same as `ca_cert_pem`."),
				},
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true}),
		},
	}
}

func (r *clusterResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	configureData(req.ProviderData, &r.data, &resp.Diagnostics)
}

// ValidateConfig checks that agent_url comes with agent_sha256, checks the
// address plan as a whole and warns about an even number of servers.
func (r *clusterResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m clusterModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// Unknown values are checked again when they are known (at apply).
	switch {
	case isKnown(m.AgentURL) && m.AgentSHA256.IsNull():
		resp.Diagnostics.AddAttributeError(path.Root("agent_sha256"), "Missing agent_sha256",
			fmt.Sprintf("agent_sha256: agent_url %q is set, so agent_sha256 must be too: nodes run flotilla-agent as root "+
				"with the cluster's secrets and install no binary they cannot check. Set it to the SHA-256 of that "+
				"binary (sha256sum flotilla-agent_linux_amd64).", m.AgentURL.ValueString()))
	case m.AgentURL.IsNull() && isKnown(m.AgentSHA256):
		resp.Diagnostics.AddAttributeError(path.Root("agent_sha256"), "agent_sha256 without agent_url",
			"agent_sha256: is set but agent_url is not; the checksum is of the binary at agent_url. Set agent_url, or "+
				"remove agent_sha256 if the VMs' image has flotilla-agent.")
	}
	addrs, known, diags := m.serverAddresses(ctx)
	resp.Diagnostics.Append(diags...)
	if !known {
		return
	}
	if n := len(addrs); n > 0 && n%2 == 0 {
		resp.Diagnostics.AddAttributeWarning(path.Root("server_addresses"), "Even number of servers",
			fmt.Sprintf("%d servers tolerate no more failures than %d: a majority of %d must be up for the cluster to "+
				"accept writes. Use an odd number (1, 3 or 5).", n, n-1, n/2+1))
	}
	pod, svc := defaultPodCIDR, defaultServiceCIDR
	if !m.PodCIDR.IsNull() {
		pod = m.PodCIDR.ValueString()
	}
	if !m.ServiceCIDR.IsNull() {
		svc = m.ServiceCIDR.ValueString()
	}
	if m.PodCIDR.IsUnknown() || m.ServiceCIDR.IsUnknown() {
		return
	}
	for _, p := range checkNetworks(pod, svc, addrs) {
		resp.Diagnostics.AddAttributeError(path.Root("pod_cidr"), "Overlapping networks", p)
	}
}

// ModifyPlan computes servers, endpoint, the user-data and connection as far
// as they are known: on update with the secrets from state, so the plan
// shows the exact user-data and stays empty when nothing changed. It never
// calls the fleet.
func (r *clusterResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy
	}
	var plan clusterModel
	var configEndpoint types.String
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("endpoint"), &configEndpoint)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(plan.derive(ctx, configEndpoint)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.Plan.Set(ctx, &plan)...)
}

func (r *clusterResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan clusterModel
	var configEndpoint types.String
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("endpoint"), &configEndpoint)...)
	timeout, diags := plan.Timeouts.Create(ctx, defaultClusterCreateTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := plan.Name.ValueString()
	resp.Diagnostics.Append(generateSecrets(&plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(plan.derive(ctx, configEndpoint)...)
	plan.Nodes = clusterNodesValue(nil)
	// Save before waiting: the secrets exist only here.
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	tflog.Info(ctx, "generated the cluster's CA and secrets", map[string]any{"cluster": name, "endpoint": plan.Endpoint.ValueString()})
	want := plan.WaitForNodes.ValueInt64()
	if want <= 0 {
		return
	}
	client, err := clusterClient(&plan)
	if err != nil {
		resp.Diagnostics.AddError("Invalid endpoint", err.Error())
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nodes, err := waitForNodes(opCtx, client, int(want), r.data.poll())
	if nodes != nil {
		plan.Nodes = clusterNodesValue(nodes)
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	}
	if err != nil {
		resp.Diagnostics.AddError("Nodes not ready", fmt.Sprintf("%s.\n\nVMs that take their user_data from this "+
			"flotilla_cluster are only created after it, so wait_for_nodes cannot be met in the configuration that "+
			"creates them: set wait_for_nodes = 0 and gate the deployments on data \"flotilla_nodes\" with min_ready. "+
			"The cluster's secrets are saved, but this failed create marks it tainted and replacing it would generate "+
			"new ones: if its VMs exist and are merely slow, run terraform untaint on this resource.", err))
	}
}

// generateSecrets fills in the CA and the shared secrets of a new cluster.
func generateSecrets(m *clusterModel) diag.Diagnostics {
	var diags diag.Diagnostics
	caPEM, keyPEM, err := pki.NewCA("flotilla "+m.Name.ValueString()+" CA", caValidity)
	if err != nil {
		diags.AddError("Could not generate the cluster CA", err.Error())
		return diags
	}
	gossip, err := pki.GossipKey()
	if err != nil {
		diags.AddError("Could not generate the gossip key", err.Error())
		return diags
	}
	join, err := pki.JoinToken()
	if err != nil {
		diags.AddError("Could not generate the join token", err.Error())
		return diags
	}
	apiToken, err := pki.JoinToken()
	if err != nil {
		diags.AddError("Could not generate the API token", err.Error())
		return diags
	}
	m.CACertPEM, m.CAKeyPEM = types.StringValue(string(caPEM)), types.StringValue(string(keyPEM))
	m.GossipKey, m.JoinToken, m.APIToken = types.StringValue(gossip), types.StringValue(join), types.StringValue(apiToken)
	return diags
}

// clusterClient is a client of the cluster's own API.
func clusterClient(m *clusterModel) (*api.Client, error) {
	cfg := &api.Config{Address: m.Endpoint.ValueString(), Token: m.APIToken.ValueString(), CACertPEM: []byte(m.CACertPEM.ValueString())}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", cfg.Address, err)
	}
	return c, nil
}

// Read refreshes nodes. The fleet may be unreachable (VMs not booted yet,
// or terraform running outside their network): that keeps the previous
// list with a warning instead of failing the plan.
func (r *clusterResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state clusterModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	client, err := clusterClient(&state)
	if err != nil {
		resp.Diagnostics.AddWarning("Could not read the cluster's nodes", err.Error())
		return
	}
	rctx, cancel := context.WithTimeout(ctx, clusterReadTimeout)
	defer cancel()
	nodes, err := client.ListNodes(rctx)
	if err != nil {
		resp.Diagnostics.AddWarning("Could not read the cluster's nodes", fmt.Sprintf(
			"list nodes at %s: %s.\n\nKeeping the node list of the last successful read. This is expected while the "+
				"servers' VMs are being created or replaced, or when terraform runs where it cannot reach %s.",
			client.Address(), err, client.Address()))
		return
	}
	state.Nodes = clusterNodesValue(nodes)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update changes only what lives in Terraform (api_port, endpoint,
// agent_url, agent_sha256, wait_for_nodes, timeouts): the secrets stay, the user-data and
// connection follow.
func (r *clusterResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state clusterModel
	var configEndpoint types.String
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("endpoint"), &configEndpoint)...)
	if resp.Diagnostics.HasError() {
		return
	}
	plan.CACertPEM, plan.CAKeyPEM = state.CACertPEM, state.CAKeyPEM
	plan.GossipKey, plan.JoinToken, plan.APIToken = state.GossipKey, state.JoinToken, state.APIToken
	resp.Diagnostics.Append(plan.derive(ctx, configEndpoint)...)
	if !isKnown(plan.Nodes) {
		plan.Nodes = state.Nodes
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// Delete forgets the cluster: it exists only in state. Its agents run until
// their VMs are destroyed, which Terraform does as they depend on it.
func (r *clusterResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var name types.String
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("name"), &name)...)
	tflog.Info(ctx, "removing the cluster's secrets from state; its agents keep running until their VMs are destroyed",
		map[string]any{"cluster": name.ValueString()})
}

// ImportState refuses: the secrets exist only in the state of the
// configuration that created the cluster.
func (r *clusterResource) ImportState(_ context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resp.Diagnostics.AddError("flotilla_cluster cannot be imported", fmt.Sprintf(
		"cannot import %q: a flotilla_cluster is the CA key, join token, gossip key and API token this resource "+
			"generated, and they exist only in the Terraform state of the configuration that created it; no agent "+
			"hands them out, so there is nothing to import them from. To manage an existing fleet from another "+
			"configuration, read its endpoint, api_token and ca_cert_pem from that state (terraform_remote_state) and "+
			"pass them as api_connection to flotilla_deployment and the data sources, or set the provider's address, "+
			"token and ca_cert_pem.", req.ID))
}
