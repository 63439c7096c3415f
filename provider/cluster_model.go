package provider

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
	cloudinit "github.com/flotilla-io/flotilla/templates/cloud-init"
)

// clusterModel is the state and plan of flotilla_cluster.
type clusterModel struct {
	ID              types.String   `tfsdk:"id"`
	Name            types.String   `tfsdk:"name"`
	ServerAddresses types.List     `tfsdk:"server_addresses"`
	Servers         types.Int64    `tfsdk:"servers"`
	PodCIDR         types.String   `tfsdk:"pod_cidr"`
	ServiceCIDR     types.String   `tfsdk:"service_cidr"`
	APIPort         types.Int64    `tfsdk:"api_port"`
	Endpoint        types.String   `tfsdk:"endpoint"`
	AgentURL        types.String   `tfsdk:"agent_url"`
	AgentSHA256     types.String   `tfsdk:"agent_sha256"`
	WaitForNodes    types.Int64    `tfsdk:"wait_for_nodes"`
	CACertPEM       types.String   `tfsdk:"ca_cert_pem"`
	CAKeyPEM        types.String   `tfsdk:"ca_key_pem"`
	JoinToken       types.String   `tfsdk:"join_token"`
	GossipKey       types.String   `tfsdk:"gossip_key"`
	APIToken        types.String   `tfsdk:"api_token"`
	CloudInitServer types.String   `tfsdk:"cloud_init_server"`
	CloudInitClient types.String   `tfsdk:"cloud_init_client"`
	Nodes           types.List     `tfsdk:"nodes"`
	Connection      types.Object   `tfsdk:"api_connection"`
	Timeouts        timeouts.Value `tfsdk:"timeouts"`
}

// Defaults of flotilla_cluster.
const (
	defaultPodCIDR     = "10.244.0.0/16"
	defaultServiceCIDR = "10.96.0.0/16"
	defaultAPIPort     = 7400
	// maxServers bounds server_addresses: raft gains nothing from more
	// voters and every write waits for a majority of them.
	maxServers = 7
)

// clusterNodeAttrTypes are the attributes of an element of nodes.
var clusterNodeAttrTypes = map[string]attr.Type{
	"name":     types.StringType,
	"address":  types.StringType,
	"server":   types.BoolType,
	"status":   types.StringType,
	"pod_cidr": types.StringType,
}

var clusterNodeObjectType = types.ObjectType{AttrTypes: clusterNodeAttrTypes}

// clusterNodesValue is the nodes attribute of flotilla_cluster, sorted by name.
func clusterNodesValue(nodes []api.Node) types.List {
	elems := make([]attr.Value, 0, len(nodes))
	for _, n := range sortedNodes(nodes) {
		elems = append(elems, types.ObjectValueMust(clusterNodeAttrTypes, map[string]attr.Value{
			"name":     types.StringValue(n.Name),
			"address":  types.StringValue(n.Address),
			"server":   types.BoolValue(n.Server),
			"status":   types.StringValue(n.Status),
			"pod_cidr": types.StringValue(n.PodCIDR),
		}))
	}
	return types.ListValueMust(clusterNodeObjectType, elems)
}

// serverAddresses returns server_addresses and whether the list and all its
// elements are known.
func (m *clusterModel) serverAddresses(ctx context.Context) ([]string, bool, diag.Diagnostics) {
	if !isKnown(m.ServerAddresses) {
		return nil, false, nil
	}
	for _, e := range m.ServerAddresses.Elements() {
		if e.IsUnknown() {
			return nil, false, nil
		}
	}
	var out []string
	diags := m.ServerAddresses.ElementsAs(ctx, &out, false)
	return out, !diags.HasError(), diags
}

// derive fills in what follows from the other attributes: servers, endpoint
// (unless configured), cloud-init user-data and connection. Each becomes
// unknown when what it follows from is not known yet (the secrets, before
// create). configEndpoint is the configured endpoint, null if unset.
func (m *clusterModel) derive(ctx context.Context, configEndpoint types.String) diag.Diagnostics {
	addrs, addrsKnown, diags := m.serverAddresses(ctx)
	if diags.HasError() {
		return diags
	}
	m.ID = m.Name
	m.Servers = types.Int64Unknown()
	if addrsKnown {
		m.Servers = types.Int64Value(int64(len(addrs)))
	}
	switch {
	case !configEndpoint.IsNull():
		m.Endpoint = configEndpoint
	case addrsKnown && len(addrs) > 0 && isKnown(m.APIPort):
		m.Endpoint = types.StringValue(defaultEndpoint(addrs[0], m.APIPort.ValueInt64()))
	default:
		m.Endpoint = types.StringUnknown()
	}

	m.CloudInitServer, m.CloudInitClient = types.StringUnknown(), types.StringUnknown()
	secretsKnown := isKnown(m.CACertPEM) && isKnown(m.CAKeyPEM) && isKnown(m.GossipKey) && isKnown(m.JoinToken) && isKnown(m.APIToken)
	inputsKnown := addrsKnown && isKnown(m.Name) && isKnown(m.PodCIDR) && isKnown(m.ServiceCIDR) && isKnown(m.APIPort) &&
		!m.AgentURL.IsUnknown() && !m.AgentSHA256.IsUnknown()
	if secretsKnown && inputsKnown {
		for _, role := range []string{cloudinit.RoleServer, cloudinit.RoleClient} {
			out, err := cloudinit.Render(m.cloudInitParams(role, addrs))
			if err != nil {
				diags.AddError("Could not render cloud-init user-data", err.Error())
				return diags
			}
			if role == cloudinit.RoleServer {
				m.CloudInitServer = types.StringValue(out)
			} else {
				m.CloudInitClient = types.StringValue(out)
			}
		}
	}

	m.Connection = types.ObjectUnknown(connectionAttrTypes)
	if isKnown(m.Endpoint) && isKnown(m.APIToken) && isKnown(m.CACertPEM) {
		m.Connection = connectionValue(m.Endpoint, m.APIToken, m.CACertPEM)
	}
	return diags
}

// defaultEndpoint is the API of the first server.
func defaultEndpoint(addr string, port int64) string {
	return "https://" + net.JoinHostPort(addr, strconv.FormatInt(port, 10))
}

// cloudInitParams are the user-data parameters of a role. Nodes get the API
// token's hash only; the token stays in state for api_connection.
func (m *clusterModel) cloudInitParams(role string, addrs []string) cloudinit.Params {
	return cloudinit.Params{
		ClusterName:     m.Name.ValueString(),
		Role:            role,
		ServerAddresses: addrs,
		PodCIDR:         m.PodCIDR.ValueString(),
		ServiceCIDR:     m.ServiceCIDR.ValueString(),
		APIPort:         int(m.APIPort.ValueInt64()),
		AgentURL:        m.AgentURL.ValueString(),
		AgentSHA256:     strings.ToLower(m.AgentSHA256.ValueString()),
		CACertPEM:       m.CACertPEM.ValueString(),
		CAKeyPEM:        m.CAKeyPEM.ValueString(),
		GossipKey:       m.GossipKey.ValueString(),
		JoinToken:       m.JoinToken.ValueString(),
		APITokenHash:    pki.TokenHash(m.APIToken.ValueString()),
	}
}

// checkNetworks reports what makes the cluster's address plan unworkable:
// overlapping pod and service ranges, or servers inside either (their
// traffic would be routed to pods).
func checkNetworks(podCIDR, serviceCIDR string, servers []string) []string {
	pod, perr := netip.ParsePrefix(podCIDR)
	svc, serr := netip.ParsePrefix(serviceCIDR)
	var problems []string
	if perr == nil && serr == nil && pod.Overlaps(svc) {
		problems = append(problems, fmt.Sprintf("pod_cidr %s and service_cidr %s overlap; pick disjoint ranges", pod, svc))
	}
	for i, s := range servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		for _, r := range []struct {
			name string
			p    netip.Prefix
			err  error
		}{{"pod_cidr", pod, perr}, {"service_cidr", svc, serr}} {
			if r.err == nil && r.p.Contains(a) {
				problems = append(problems, fmt.Sprintf("server_addresses[%s] %s is inside %s %s; the VMs' network must not overlap the cluster's ranges",
					strconv.Itoa(i), s, r.name, r.p))
			}
		}
	}
	return problems
}
