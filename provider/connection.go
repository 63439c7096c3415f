package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	dschema "github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	rschema "github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/flotilla-io/flotilla/api"
)

// connectionModel is the api_connection attribute of flotilla_deployment and the
// data sources, and the computed api_connection of flotilla_cluster: where a
// fleet's API is and how to trust and authenticate to it.
type connectionModel struct {
	Endpoint  types.String `tfsdk:"endpoint"`
	Token     types.String `tfsdk:"token"`
	CACertPEM types.String `tfsdk:"ca_cert_pem"`
}

var connectionAttrTypes = map[string]attr.Type{
	"endpoint":    types.StringType,
	"token":       types.StringType,
	"ca_cert_pem": types.StringType,
}

const (
	connectionDescription = "Where this object's fleet is and how to authenticate to it, overriding the provider's `address`, `token` and `ca_cert_pem`; " +
		"typically `api_connection = flotilla_cluster.NAME.api_connection`. While it is unknown (the cluster or its VMs " +
		"are created in the same apply) nothing calls the fleet at plan time."
	connectionEndpointDescription = "Base URL of an agent's API, e.g. `https://10.0.1.10:7400`."
	connectionTokenDescription    = "Bearer token of the API (flotilla_cluster's `api_token`)."
	connectionCADescription       = "PEM CA certificate the endpoint's TLS certificate is verified against " +
		"(flotilla_cluster's `ca_cert_pem`). Unset: the system's trusted CAs."
)

// resourceConnectionAttribute is the connection attribute of a resource.
func resourceConnectionAttribute(extra string) rschema.SingleNestedAttribute {
	return rschema.SingleNestedAttribute{
		MarkdownDescription: connectionDescription + extra,
		Optional:            true,
		Attributes: map[string]rschema.Attribute{
			"endpoint": rschema.StringAttribute{
				MarkdownDescription: connectionEndpointDescription,
				Required:            true,
				Validators:          []validator.String{addressValidator{}},
			},
			"token": rschema.StringAttribute{
				MarkdownDescription: connectionTokenDescription,
				Required:            true,
				Sensitive:           true,
			},
			"ca_cert_pem": rschema.StringAttribute{
				MarkdownDescription: connectionCADescription,
				Optional:            true,
				Validators:          []validator.String{pemCertValidator{}},
			},
		},
	}
}

// dataSourceConnectionAttribute is the connection attribute of a data source.
func dataSourceConnectionAttribute() dschema.SingleNestedAttribute {
	return dschema.SingleNestedAttribute{
		MarkdownDescription: connectionDescription + " A data source whose api_connection is unknown is read during apply.",
		Optional:            true,
		Attributes: map[string]dschema.Attribute{
			"endpoint": dschema.StringAttribute{
				MarkdownDescription: connectionEndpointDescription,
				Required:            true,
				Validators:          []validator.String{addressValidator{}},
			},
			"token": dschema.StringAttribute{
				MarkdownDescription: connectionTokenDescription,
				Required:            true,
				Sensitive:           true,
			},
			"ca_cert_pem": dschema.StringAttribute{
				MarkdownDescription: connectionCADescription,
				Optional:            true,
				Validators:          []validator.String{pemCertValidator{}},
			},
		},
	}
}

// connectionUnknown reports whether conn is set but not known yet, as when
// it comes from a flotilla_cluster created in the same apply.
func connectionUnknown(conn types.Object) bool {
	if conn.IsNull() {
		return false
	}
	if conn.IsUnknown() {
		return true
	}
	attrs := conn.Attributes()
	for _, k := range []string{"endpoint", "token", "ca_cert_pem"} {
		if v, ok := attrs[k]; !ok || v.IsUnknown() {
			return true
		}
	}
	return false
}

// connectionValue builds a known connection object.
func connectionValue(endpoint, token, caPEM types.String) types.Object {
	return types.ObjectValueMust(connectionAttrTypes, map[string]attr.Value{
		"endpoint": endpoint, "token": token, "ca_cert_pem": caPEM,
	})
}

// clientFor returns the client for conn, or the provider's client when conn
// is null. explicit reports that conn was used: its fleet may still be
// booting, so creates wait for it to answer.
func (d *providerData) clientFor(ctx context.Context, conn types.Object) (client *api.Client, explicit bool, diags diag.Diagnostics) {
	if conn.IsNull() {
		c, ds := d.apiClient()
		return c, false, ds
	}
	if connectionUnknown(conn) {
		diags.AddAttributeError(path.Root("api_connection"), "Connection not known yet",
			"api_connection's endpoint, token or CA is still unknown where the provider needs it; "+
				"this is a bug in the provider, please report it")
		return nil, true, diags
	}
	var m connectionModel
	diags.Append(conn.As(ctx, &m, basetypes.ObjectAsOptions{})...)
	if diags.HasError() {
		return nil, true, diags
	}
	c, err := api.NewClient(&api.Config{
		Address:   m.Endpoint.ValueString(),
		Token:     m.Token.ValueString(),
		CACertPEM: []byte(m.CACertPEM.ValueString()),
	})
	if err != nil {
		diags.AddAttributeError(path.Root("api_connection"), "Invalid connection", err.Error())
		return nil, true, diags
	}
	return c, true, nil
}

// waitForFleet polls the API at c until it answers and knows a raft leader,
// so that a write succeeds. Connection errors, TLS handshake failures (an
// agent still getting its certificate, or an old VM at a reused address) and
// 5xx answers are retried until ctx ends: the VMs of a fleet created in the
// same apply are still booting. A 4xx answer (a wrong token) fails at once.
func waitForFleet(ctx context.Context, c *api.Client, every time.Duration) error {
	start := time.Now()
	var lastErr error
	lastMsg, lastLog := "", time.Time{}
	for {
		st, err := c.Status(ctx)
		switch {
		case err == nil && st.Leader != "":
			if lastErr != nil {
				tflog.Info(ctx, "the fleet at "+c.Address()+" answers", map[string]any{"waited": time.Since(start).Round(time.Second).String()})
			}
			return nil
		case err == nil:
			err = errors.New("the agent answers but no raft leader is elected yet (servers still joining?)")
		case ctx.Err() != nil:
		case !retryable(err):
			return fmt.Errorf("the fleet at %s refused the request: %w", c.Address(), err)
		}
		if ctx.Err() == nil {
			lastErr = err
			// Log when the reason changes, and every 30 s while it does not.
			if msg := err.Error(); msg != lastMsg || time.Since(lastLog) >= 30*time.Second {
				lastMsg, lastLog = msg, time.Now()
				tflog.Info(ctx, "waiting for the fleet at "+c.Address()+" to answer", map[string]any{
					"waited": time.Since(start).Round(time.Second).String(), "last_error": msg,
				})
			}
		}
		select {
		case <-ctx.Done():
			return fleetTimeoutError(ctx, c.Address(), time.Since(start), lastErr)
		case <-time.After(every):
		}
	}
}

func fleetTimeoutError(ctx context.Context, addr string, waited time.Duration, lastErr error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("interrupted after %s while waiting for the fleet at %s to answer", waited.Round(time.Second), addr)
	}
	msg := fmt.Sprintf("the fleet at %s did not answer within %s", addr, waited.Round(time.Second))
	if lastErr != nil {
		msg += fmt.Sprintf(" (last error: %v)", lastErr)
	}
	return errors.New(msg + ". Check that the server VMs booted and ran their cloud-init user-data " +
		"(/var/log/cloud-init-output.log, journalctl -u flotilla-agent), that this machine can reach the endpoint, " +
		"and that a majority of servers is up; if they are merely slow to boot, raise timeouts.create")
}

// readyNodes counts the nodes with status ready.
func readyNodes(nodes []api.Node) int {
	n := 0
	for _, nd := range nodes {
		if nd.Status == api.NodeReady {
			n++
		}
	}
	return n
}

// waitForNodes polls the node list at c until at least want nodes are ready
// and returns that list. Errors a booting fleet gives are retried as in
// waitForFleet; progress is logged whenever the count changes.
func waitForNodes(ctx context.Context, c *api.Client, want int, every time.Duration) ([]api.Node, error) {
	start := time.Now()
	var last []api.Node
	var lastErr error
	lastMsg, lastLog := "", time.Time{}
	for {
		nodes, err := c.ListNodes(ctx)
		var msg string
		switch {
		case err == nil:
			last, lastErr = nodes, nil
			ready := readyNodes(nodes)
			if ready >= want {
				tflog.Info(ctx, fmt.Sprintf("%d of %d nodes ready at %s", ready, len(nodes), c.Address()),
					map[string]any{"waited": time.Since(start).Round(time.Second).String()})
				return nodes, nil
			}
			msg = fmt.Sprintf("waiting for %d ready nodes at %s: %d ready of %d joined", want, c.Address(), ready, len(nodes))
		case ctx.Err() != nil:
		case !retryable(err):
			return last, fmt.Errorf("list nodes at %s: %w", c.Address(), err)
		default:
			lastErr = err
			msg = "waiting for the fleet at " + c.Address() + " to answer"
		}
		if msg != "" && (msg != lastMsg || time.Since(lastLog) >= 30*time.Second) {
			lastMsg, lastLog = msg, time.Now()
			fields := map[string]any{"waited": time.Since(start).Round(time.Second).String()}
			if err != nil {
				fields["last_error"] = err.Error()
			}
			tflog.Info(ctx, msg, fields)
		}
		select {
		case <-ctx.Done():
			return last, nodesTimeoutError(ctx, c.Address(), want, last, lastErr, time.Since(start))
		case <-time.After(every):
		}
	}
}

func nodesTimeoutError(ctx context.Context, addr string, want int, last []api.Node, lastErr error, waited time.Duration) error {
	status := "the fleet never answered"
	if last != nil {
		status = fmt.Sprintf("%d ready of %d joined", readyNodes(last), len(last))
		for _, n := range sortedNodes(last) {
			if n.Status != api.NodeReady {
				status += fmt.Sprintf("; %s (%s) is %s", n.Name, n.Address, n.Status)
			}
		}
	}
	if lastErr != nil {
		status += fmt.Sprintf("; last error: %v", lastErr)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("interrupted after %s while waiting for %d ready nodes at %s: %s", waited.Round(time.Second), want, addr, status)
	}
	return fmt.Errorf("timed out after %s waiting for %d ready nodes at %s: %s. Check that every VM booted and ran "+
		"its cloud-init user-data (/var/log/cloud-init-output.log, journalctl -u flotilla-agent) and can reach the "+
		"servers; nodes that never join are missing VMs or a wrong server_addresses", waited.Round(time.Second), want, addr, status)
}
