package provider

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
)

// TestMain lets terraform-plugin-testing find the terraform binary without
// downloading one, and keeps terraform from phoning home.
func TestMain(m *testing.M) {
	if os.Getenv("CHECKPOINT_DISABLE") == "" {
		os.Setenv("CHECKPOINT_DISABLE", "1")
	}
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		if p, err := exec.LookPath("terraform"); err == nil {
			os.Setenv("TF_ACC_TERRAFORM_PATH", p)
		}
	}
	os.Exit(m.Run())
}

// testPollInterval keeps the rollout waits of unit tests short.
const testPollInterval = 20 * time.Millisecond

// providerFactories serves a provider whose environment is env (nil: empty)
// and which polls every testPollInterval.
func providerFactories(env map[string]string) map[string]func() (tfprotov6.ProviderServer, error) {
	return map[string]func() (tfprotov6.ProviderServer, error){
		"flotilla": providerserver.NewProtocol6WithError(&flotillaProvider{
			version:      "test",
			getenv:       func(k string) string { return env[k] },
			pollInterval: testPollInterval,
		}),
	}
}

// providerConfig is a provider block for the fake agent f.
func providerConfig(f *fakeAgent) string {
	return fmt.Sprintf(`
provider "flotilla" {
  address = %q
  token   = %q
}
`, f.URL, f.Token)
}

// TestProviderSchemas makes the framework validate every schema (defaults
// only on computed attributes and the like) without running terraform.
func TestProviderSchemas(t *testing.T) {
	srv, err := providerFactories(nil)["flotilla"]()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.GetProviderSchema(context.Background(), &tfprotov6.GetProviderSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range resp.Diagnostics {
		t.Errorf("schema diagnostic: %s: %s", d.Summary, d.Detail)
	}
	for _, name := range []string{"flotilla_deployment", "flotilla_cluster", "flotilla_service"} {
		if _, ok := resp.ResourceSchemas[name]; !ok {
			t.Errorf("resource %s missing", name)
		}
	}
	for _, name := range []string{"flotilla_pods", "flotilla_nodes", "flotilla_service_endpoints"} {
		if _, ok := resp.DataSourceSchemas[name]; !ok {
			t.Errorf("data source %s missing", name)
		}
	}
}

func TestResolveConnection(t *testing.T) {
	env := map[string]string{"FLOTILLA_ADDR": "http://env:7400", "FLOTILLA_TOKEN": "envtok"}
	tests := []struct {
		name      string
		cfg       providerModel
		env       map[string]string
		wantAddr  string
		wantToken string
	}{
		{"defaults", providerModel{Address: types.StringNull(), Token: types.StringNull()}, nil, "http://127.0.0.1:7400", ""},
		{"environment", providerModel{Address: types.StringNull(), Token: types.StringNull()}, env, "http://env:7400", "envtok"},
		{"attributes win", providerModel{Address: types.StringValue("https://cfg:1"), Token: types.StringValue("cfgtok")}, env, "https://cfg:1", "cfgtok"},
		{"mixed", providerModel{Address: types.StringValue("https://cfg:1"), Token: types.StringNull()}, env, "https://cfg:1", "envtok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := resolveConnection(tt.cfg, func(k string) string { return tt.env[k] })
			if c.Address != tt.wantAddr || c.Token != tt.wantToken {
				t.Errorf("got %q %q, want %q %q", c.Address, c.Token, tt.wantAddr, tt.wantToken)
			}
		})
	}
}

func TestResolveConnectionCACert(t *testing.T) {
	c := resolveConnection(providerModel{Address: types.StringValue("https://10.0.1.10:7400"), CACertPEM: types.StringValue("PEM")},
		func(string) string { return "" })
	if string(c.CACertPEM) != "PEM" {
		t.Errorf("CACertPEM = %q, want the provider's ca_cert_pem", c.CACertPEM)
	}
}

func TestProviderDataNotConfigured(t *testing.T) {
	for _, d := range []*providerData{nil, {}} {
		_, diags := d.apiClient()
		if !diags.HasError() {
			t.Fatal("want an error diagnostic")
		}
		if got := diags[0].Detail(); got != "provider is not configured: set address/token or FLOTILLA_ADDR/FLOTILLA_TOKEN" {
			t.Errorf("detail = %q", got)
		}
	}
}
