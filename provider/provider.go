package provider

import (
	"context"
	"os"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/flotilla-io/flotilla/api"
)

// defaultPollInterval is how often resources poll the agent while they wait
// for a rollout or a deletion.
const defaultPollInterval = 250 * time.Millisecond

var _ provider.Provider = (*flotillaProvider)(nil)

// flotillaProvider is the flotilla provider. Its fields are fixed at
// construction so tests can swap the environment and the poll interval.
type flotillaProvider struct {
	version      string
	getenv       func(string) string
	pollInterval time.Duration
}

// providerModel is the provider block.
type providerModel struct {
	Address   types.String `tfsdk:"address"`
	Token     types.String `tfsdk:"token"`
	CACertPEM types.String `tfsdk:"ca_cert_pem"`
}

// New returns a constructor of the provider, as providerserver.Serve wants it.
func New(version string) func() provider.Provider {
	return func() provider.Provider {
		return &flotillaProvider{version: version, getenv: os.Getenv, pollInterval: defaultPollInterval}
	}
}

func (p *flotillaProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "flotilla"
	resp.Version = p.version
}

func (p *flotillaProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Manages workloads on a [Flotilla](https://github.com/flotilla-io/flotilla) cluster " +
			"through the HTTP API of any of its agents.",
		Attributes: map[string]schema.Attribute{
			"address": schema.StringAttribute{
				MarkdownDescription: "Base URL of a flotilla-agent API, e.g. `http://10.0.0.5:7400`. " +
					"Defaults to the `" + api.EnvAddr + "` environment variable, then `" + api.DefaultAddr + "`.",
				Optional:   true,
				Validators: []validator.String{addressValidator{}},
			},
			"token": schema.StringAttribute{
				MarkdownDescription: "Bearer token for the agent API. Defaults to the `" + api.EnvToken + "` environment variable.",
				Optional:            true,
				Sensitive:           true,
			},
			"ca_cert_pem": schema.StringAttribute{
				MarkdownDescription: "PEM CA certificate an `https` address's certificate is verified against, " +
					"e.g. `flotilla_cluster.NAME.ca_cert_pem` (a fleet's agents serve the API with certificates of the " +
					"cluster's CA). Unset: the system's trusted CAs.",
				Optional:   true,
				Validators: []validator.String{pemCertValidator{}},
			},
		},
	}
}

func (p *flotillaProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var cfg providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	data := &providerData{pollInterval: p.pollInterval, configUnknown: cfg.Address.IsUnknown() || cfg.Token.IsUnknown() || cfg.CACertPEM.IsUnknown()}
	resp.ResourceData, resp.DataSourceData = data, data

	// The address may come from a resource that does not exist yet (a
	// cluster created in the same run). Planning must still work then;
	// anything that needs the API reports providerNotConfigured.
	if data.configUnknown {
		tflog.Info(ctx, "flotilla provider address or token is unknown until apply; planning without an API client")
		if req.ClientCapabilities.DeferralAllowed {
			// Terraform versions that support deferred actions postpone
			// everything of this provider to a later plan instead.
			resp.Deferred = &provider.Deferred{Reason: provider.DeferredReasonProviderConfigUnknown}
		}
		return
	}
	conf := resolveConnection(cfg, p.getenv)
	client, err := api.NewClient(conf)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("address"), "Invalid flotilla agent address", err.Error())
		return
	}
	data.client = client
	tflog.Debug(ctx, "configured flotilla API client", map[string]any{"address": client.Address(), "token_set": conf.Token != ""})
}

// resolveConnection applies the precedence attribute > environment > default.
func resolveConnection(cfg providerModel, getenv func(string) string) *api.Config {
	c := &api.Config{Address: cfg.Address.ValueString(), Token: cfg.Token.ValueString(), CACertPEM: []byte(cfg.CACertPEM.ValueString())}
	if c.Address == "" {
		c.Address = getenv(api.EnvAddr)
	}
	if c.Address == "" {
		c.Address = api.DefaultAddr
	}
	if c.Token == "" {
		c.Token = getenv(api.EnvToken)
	}
	return c
}

func (p *flotillaProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{NewDeploymentResource, NewClusterResource, NewServiceResource, NewIngressResource}
}

func (p *flotillaProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{NewPodsDataSource, NewNodesDataSource, NewServiceEndpointsDataSource}
}

// providerData is what Configure hands to resources and data sources.
type providerData struct {
	// client is nil when the provider's connection details were unknown
	// at plan time.
	client       *api.Client
	pollInterval time.Duration
	// configUnknown is set while planning with an address or token that
	// is only known after apply.
	configUnknown bool
}

// apiClient returns the provider's agent client or a diagnostic saying how
// to configure one. Resources and data sources with a connection attribute
// get their client from clientFor, which falls back to this one.
func (d *providerData) apiClient() (*api.Client, diag.Diagnostics) {
	var diags diag.Diagnostics
	if d == nil || d.client == nil {
		diags.AddError("Flotilla provider not configured",
			"provider is not configured: set address/token or FLOTILLA_ADDR/FLOTILLA_TOKEN")
		return nil, diags
	}
	return d.client, nil
}

// poll returns the interval between two polls of the agent.
func (d *providerData) poll() time.Duration {
	if d == nil || d.pollInterval <= 0 {
		return defaultPollInterval
	}
	return d.pollInterval
}

// providerDataFrom converts the ProviderData a resource or data source gets
// in Configure; nil means the provider is not configured yet.
func providerDataFrom(in any) (*providerData, diag.Diagnostics) {
	var diags diag.Diagnostics
	if in == nil {
		return nil, nil
	}
	d, ok := in.(*providerData)
	if !ok {
		diags.AddError("Unexpected provider data",
			"expected *providerData from the flotilla provider; this is a bug in the provider, please report it")
		return nil, diags
	}
	return d, nil
}
