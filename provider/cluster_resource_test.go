package provider

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
	"github.com/hashicorp/terraform-plugin-testing/compare"
	tfresource "github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

const clusterAddr = "flotilla_cluster.main"

// clusterConfig is a cluster on one server whose API (127.0.0.1:1) refuses
// connections at once: refreshes must warn and keep going.
func clusterConfig(extra string) string {
	return fmt.Sprintf(`
resource "flotilla_cluster" "main" {
  name             = "prod"
  server_addresses = ["127.0.0.1"]
  api_port         = 1
  %s
}
`, extra)
}

func stringCheck(fn func(string) error) knownvalue.Check { return knownvalue.StringFunc(fn) }

func checkCACert(s string) error {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return errors.New("ca_cert_pem is not PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return err
	}
	if !c.IsCA || c.Subject.CommonName != "flotilla prod CA" {
		return fmt.Errorf("CA certificate: IsCA %v, CN %q", c.IsCA, c.Subject.CommonName)
	}
	return nil
}

func checkGossipKey(s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("gossip key %q: %d bytes, %v; want 32 bytes of base64", s, len(b), err)
	}
	return nil
}

func checkHexToken(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) < 16 {
		return fmt.Errorf("token %q is not hex of at least 16 bytes", s)
	}
	return nil
}

func TestClusterResource_lifecycle(t *testing.T) {
	t.Parallel()
	same := map[string]*compareSet{}
	for _, k := range []string{"ca_cert_pem", "ca_key_pem", "join_token", "gossip_key", "api_token"} {
		same[k] = &compareSet{same: statecheck.CompareValue(compare.ValuesSame()), differ: statecheck.CompareValue(compare.ValuesDiffer())}
	}
	secretChecks := func(kinds ...string) []statecheck.StateCheck {
		var out []statecheck.StateCheck
		for k, c := range same {
			for _, kind := range kinds {
				cv := c.same
				if kind == "differ" {
					cv = c.differ
				}
				out = append(out, cv.AddStateValue(clusterAddr, tfjsonpath.New(k)))
			}
		}
		return out
	}
	tfresource.UnitTest(t, tfresource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []tfresource.TestStep{
			{
				// Create calls nothing (wait_for_nodes = 0); the refresh
				// before the post-apply plan cannot reach the fleet, warns
				// and keeps nodes; that plan must be empty.
				Config: clusterConfig(""),
				ConfigPlanChecks: tfresource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("endpoint"), knownvalue.StringExact("https://127.0.0.1:1")),
					plancheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("servers"), knownvalue.Int64Exact(1)),
					plancheck.ExpectUnknownValue(clusterAddr, tfjsonpath.New("cloud_init_server")),
					plancheck.ExpectUnknownValue(clusterAddr, tfjsonpath.New("api_connection")),
				}},
				ConfigStateChecks: append([]statecheck.StateCheck{
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("id"), knownvalue.StringExact("prod")),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("pod_cidr"), knownvalue.StringExact("10.244.0.0/16")),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("service_cidr"), knownvalue.StringExact("10.96.0.0/16")),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("wait_for_nodes"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("nodes"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("ca_cert_pem"), stringCheck(checkCACert)),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("gossip_key"), stringCheck(checkGossipKey)),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("join_token"), stringCheck(checkHexToken)),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("api_token"), stringCheck(checkHexToken)),
					statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("api_connection").AtMapKey("endpoint"), knownvalue.StringExact("https://127.0.0.1:1")),
					statecheck.ExpectSensitiveValue(clusterAddr, tfjsonpath.New("ca_key_pem")),
					statecheck.ExpectSensitiveValue(clusterAddr, tfjsonpath.New("cloud_init_server")),
					statecheck.ExpectSensitiveValue(clusterAddr, tfjsonpath.New("api_connection")),
					statecheck.CompareValuePairs(clusterAddr, tfjsonpath.New("api_connection").AtMapKey("token"),
						clusterAddr, tfjsonpath.New("api_token"), compare.ValuesSame()),
					statecheck.CompareValuePairs(clusterAddr, tfjsonpath.New("api_connection").AtMapKey("ca_cert_pem"),
						clusterAddr, tfjsonpath.New("ca_cert_pem"), compare.ValuesSame()),
				}, secretChecks("same", "differ")...),
				Check: tfresource.ComposeTestCheckFunc(
					tfresource.TestCheckResourceAttrWith(clusterAddr, "cloud_init_server", userDataCheck("server", true)),
					tfresource.TestCheckResourceAttrWith(clusterAddr, "cloud_init_client", userDataCheck("client", false)),
					checkUserDataTokenHash,
				),
			},
			{
				// Settings that live in Terraform only: updated in place,
				// the user-data is known in the plan, the secrets stay.
				Config: clusterConfig(`agent_url = "https://releases.example.com/flotilla-agent"
  agent_sha256 = "` + strings.ToUpper(testAgentSHA256) + `"
  wait_for_nodes = 0
  timeouts {
    create = "1m"
  }`),
				ConfigPlanChecks: tfresource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(clusterAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("cloud_init_client"),
						knownvalue.StringRegexp(regexp.MustCompile(`FLOTILLA_AGENT_URL='https://releases.example.com/flotilla-agent'\s+`+
							`FLOTILLA_AGENT_SHA256='`+testAgentSHA256+`'`))),
					plancheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("cloud_init_server"),
						knownvalue.StringRegexp(regexp.MustCompile(`FLOTILLA_AGENT_SHA256='`+testAgentSHA256+`'`))),
					plancheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("api_connection").AtMapKey("endpoint"), knownvalue.StringExact("https://127.0.0.1:1")),
				}},
				ConfigStateChecks: secretChecks("same"),
				Check:             checkUserDataTokenHash,
			},
			{
				// A new address plan is a new cluster: new secrets.
				Config: clusterConfig(`pod_cidr = "10.50.0.0/16"`),
				ConfigPlanChecks: tfresource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(clusterAddr, plancheck.ResourceActionDestroyBeforeCreate),
					plancheck.ExpectUnknownValue(clusterAddr, tfjsonpath.New("ca_key_pem")),
				}},
				ConfigStateChecks: secretChecks("differ"),
			},
			{
				ResourceName:  clusterAddr,
				ImportState:   true,
				ImportStateId: "prod",
				ExpectError:   wrappedRE(`(?s)flotilla_cluster cannot be imported.*exist only in the Terraform state`),
			},
		},
	})
}

// testAgentSHA256 is an agent_sha256 for tests.
const testAgentSHA256 = "0f343b0931126a20f133d67c2b018a3b5e7c2a9c4d5e6f708192a3b4c5d6e7f8"

// checkUserDataTokenHash checks that neither role's user-data holds the API
// token and both hold its hash, as the agents read it.
func checkUserDataTokenHash(st *terraform.State) error {
	rs, ok := st.RootModule().Resources[clusterAddr]
	if !ok {
		return fmt.Errorf("%s not in state", clusterAddr)
	}
	attrs := rs.Primary.Attributes
	token := attrs["api_token"]
	if token == "" {
		return errors.New("api_token is empty")
	}
	sum := sha256.Sum256([]byte(token))
	hash := hex.EncodeToString(sum[:])
	for _, k := range []string{"cloud_init_server", "cloud_init_client"} {
		ud := attrs[k]
		if strings.Contains(ud, token) {
			return fmt.Errorf("%s contains the API token", k)
		}
		if !strings.Contains(ud, "- path: /etc/flotilla/api-token.sha256\n") || !strings.Contains(ud, `content: "`+hash+`\n"`) {
			return fmt.Errorf("%s does not write the API token's hash %s to /etc/flotilla/api-token.sha256", k, hash)
		}
	}
	return nil
}

// compareSet tracks one secret across steps: equal while it is kept,
// different once the cluster is replaced.
type compareSet struct {
	same, differ interface {
		AddStateValue(string, tfjsonpath.Path) statecheck.StateCheck
	}
}

// userDataCheck checks the rendered user-data of a role.
func userDataCheck(role string, withKey bool) func(string) error {
	return func(s string) error {
		for _, want := range []string{"#cloud-config\n", "FLOTILLA_ROLE='" + role + "'", "FLOTILLA_RETRY_JOIN='127.0.0.1'",
			"FLOTILLA_API_PORT='1'", "path: /usr/local/lib/flotilla/bootstrap-node.sh"} {
			if !strings.Contains(s, want) {
				return fmt.Errorf("%s user-data lacks %q", role, want)
			}
		}
		if hasKey := strings.Contains(s, "/etc/flotilla/ca-key.pem"); hasKey != withKey {
			return fmt.Errorf("%s user-data: writes ca-key.pem = %v, want %v", role, hasKey, withKey)
		}
		return nil
	}
}

func TestClusterResource_waitForNodes(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.Token = "" // adopt the api_token the cluster generates
	f.setNodes(3, 1, "down", true)
	f.setUnavailable(2) // servers still electing a leader
	tfresource.UnitTest(t, tfresource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []tfresource.TestStep{{
			Config: fmt.Sprintf(`
resource "flotilla_cluster" "main" {
  name             = "prod"
  server_addresses = ["10.0.1.10"]
  endpoint         = %q
  wait_for_nodes   = 3
}
`, f.URL),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(clusterAddr, tfjsonpath.New("nodes"), knownvalue.ListExact([]knownvalue.Check{
					knownvalue.ObjectExact(map[string]knownvalue.Check{
						"name": knownvalue.StringExact("vm-0"), "address": knownvalue.StringExact("10.0.1.10"),
						"server": knownvalue.Bool(true), "status": knownvalue.StringExact("ready"),
						"pod_cidr": knownvalue.StringExact("10.244.0.0/24"),
					}),
					knownvalue.ObjectPartial(map[string]knownvalue.Check{"name": knownvalue.StringExact("vm-1"), "status": knownvalue.StringExact("ready")}),
					knownvalue.ObjectPartial(map[string]knownvalue.Check{"name": knownvalue.StringExact("vm-2"), "server": knownvalue.Bool(false)}),
				})),
			},
			Check: tfresource.ComposeTestCheckFunc(
				tfresource.TestCheckResourceAttrWith(clusterAddr, "api_token", func(v string) error {
					if v != f.token() {
						return errors.New("the wait did not send the cluster's api_token")
					}
					return nil
				}),
				func(*terraform.State) error {
					// 2 answered 503, then one node became ready per poll.
					if n := f.count("GET /v1/nodes"); n < 5 {
						return fmt.Errorf("%d GET /v1/nodes, want at least 5", n)
					}
					return nil
				},
			),
		}},
	})
}

func TestClusterResource_waitForNodesTimeout(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.Token = ""
	f.setNodes(2, 1, "down", false)
	tfresource.UnitTest(t, tfresource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []tfresource.TestStep{{
			Config: fmt.Sprintf(`
resource "flotilla_cluster" "main" {
  name             = "prod"
  server_addresses = ["10.0.1.10"]
  endpoint         = %q
  wait_for_nodes   = 2
  timeouts {
    create = "1s"
  }
}
`, f.URL),
			ExpectError: wrappedRE(`(?s)timed out after 1s waiting for 2 ready nodes at http://127\.0\.0\.1:\d+: 0 ready of 2 joined; vm-0 \(10\.0\.1\.10\) is down.*set wait_for_nodes = 0 and gate the deployments on data "flotilla_nodes"`),
		}},
	})
}

func TestClusterResource_invalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, attrs, want string
	}{
		{"not an IP", `server_addresses = ["vm-1"]`, `"vm-1" is not an IPv4 address`},
		{"IPv6", `server_addresses = ["fd00::1"]`, `"fd00::1" is not an IPv4 address`},
		{"too many servers", `server_addresses = ["10.0.0.1","10.0.0.2","10.0.0.3","10.0.0.4","10.0.0.5","10.0.0.6","10.0.0.7","10.0.0.8"]`, `list must contain at least 1 elements and at most 7 elements`},
		{"duplicate server", `server_addresses = ["10.0.0.1", "10.0.0.1"]`, `This attribute contains duplicate values`},
		{"host bits", `server_addresses = ["10.0.0.1"]
  pod_cidr = "10.244.1.0/8"`, `"10.244.1.0/8" has host bits set; did you mean 10.0.0.0/8\?`},
		{"overlap", `server_addresses = ["10.0.0.1"]
  service_cidr = "10.244.128.0/17"`, `pod_cidr 10.244.0.0/16 and service_cidr 10.244.128.0/17 overlap`},
		{"server in pod range", `server_addresses = ["10.244.3.4"]`, `server_addresses\[0\] 10.244.3.4 is inside pod_cidr 10.244.0.0/16`},
		{"name", `name = "Prod_1"
  server_addresses = ["10.0.0.1"]`, `Invalid name`},
		{"agent_url", `server_addresses = ["10.0.0.1"]
  agent_url = "ftp://x/flotilla-agent"`, `agent_url: "ftp://x/flotilla-agent" is not an https URL`},
		{"plain-HTTP agent_url", `server_addresses = ["10.0.0.1"]
  agent_url    = "http://releases.example.com/flotilla-agent"
  agent_sha256 = "` + testAgentSHA256 + `"`,
			`(?s)Plain-HTTP URL.*agent_url = "http://releases.example.com/flotilla-agent".*agent_url: "http://releases.example.com/flotilla-agent" is plain HTTP; nodes download flotilla-agent over https only`},
		{"agent_url without agent_sha256", `server_addresses = ["10.0.0.1"]
  agent_url = "https://releases.example.com/flotilla-agent"`,
			`(?s)Missing agent_sha256.*agent_sha256: agent_url "https://releases.example.com/flotilla-agent" is set, so agent_sha256 must be too`},
		{"agent_sha256 without agent_url", `server_addresses = ["10.0.0.1"]
  agent_sha256 = "` + testAgentSHA256 + `"`, `agent_sha256: is set but agent_url is not`},
		{"short agent_sha256", `server_addresses = ["10.0.0.1"]
  agent_url    = "https://releases.example.com/flotilla-agent"
  agent_sha256 = "abc123"`, `agent_sha256: "abc123" is not a SHA-256 checksum`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name := `name = "prod"`
			if strings.Contains(tt.attrs, "name =") {
				name = ""
			}
			tfresource.UnitTest(t, tfresource.TestCase{
				ProtoV6ProviderFactories: providerFactories(nil),
				Steps: []tfresource.TestStep{{
					Config:      fmt.Sprintf("resource \"flotilla_cluster\" \"main\" {\n  %s\n  %s\n}\n", name, tt.attrs),
					PlanOnly:    true,
					ExpectError: wrappedRE(tt.want),
				}},
			})
		})
	}
}

// TestClusterResource_evenServersWarns calls ValidateConfig directly: the
// test framework cannot see warnings.
func TestClusterResource_evenServersWarns(t *testing.T) {
	ctx := context.Background()
	r := NewClusterResource().(*clusterResource)
	var sresp resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &sresp)
	typ := sresp.Schema.Type().TerraformType(ctx).(tftypes.Object)
	config := func(addrs ...string) tfsdk.Config {
		vals := map[string]tftypes.Value{}
		for k, at := range typ.AttributeTypes {
			vals[k] = tftypes.NewValue(at, nil)
		}
		list := []tftypes.Value{}
		for _, a := range addrs {
			list = append(list, tftypes.NewValue(tftypes.String, a))
		}
		vals["name"] = tftypes.NewValue(tftypes.String, "prod")
		vals["server_addresses"] = tftypes.NewValue(tftypes.List{ElementType: tftypes.String}, list)
		return tfsdk.Config{Schema: sresp.Schema, Raw: tftypes.NewValue(typ, vals)}
	}
	for _, tt := range []struct {
		addrs []string
		warn  bool
	}{
		{[]string{"10.0.0.1"}, false},
		{[]string{"10.0.0.1", "10.0.0.2"}, true},
		{[]string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}, false},
		{[]string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}, true},
	} {
		var resp resource.ValidateConfigResponse
		r.ValidateConfig(ctx, resource.ValidateConfigRequest{Config: config(tt.addrs...)}, &resp)
		if resp.Diagnostics.HasError() {
			t.Fatalf("%v: %v", tt.addrs, resp.Diagnostics)
		}
		warned := resp.Diagnostics.WarningsCount() == 1 &&
			strings.Contains(resp.Diagnostics.Warnings()[0].Detail(), "Use an odd number")
		if warned != tt.warn {
			t.Errorf("%d servers: warned = %v, want %v (%v)", len(tt.addrs), warned, tt.warn, resp.Diagnostics)
		}
	}
}

// noCalls fails the plan check if the fake has been called at all.
type noCalls struct{ f *fakeAgent }

func (c noCalls) CheckPlan(_ context.Context, _ plancheck.CheckPlanRequest, resp *plancheck.CheckPlanResponse) {
	if n := c.f.count(""); n != 0 {
		resp.Error = fmt.Errorf("planning called the fleet %d times; nothing may call it while its endpoint is unknown", n)
	}
}

// TestOneApply creates the "VMs" (a terraform_data standing in for them,
// whose output is the endpoint), the cluster, a node gate and a deployment
// in one apply, as examples/cluster does: the plan must not call the fleet,
// the apply must wait for it to boot.
func TestOneApply(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.Token = ""                   // the cluster's generated api_token
	f.setNodes(3, 3, "down", true) // VMs joining one by one
	f.setUnavailable(3)            // and no leader at first
	const config = `
resource "terraform_data" "vms" {
  input = %q
}

resource "flotilla_cluster" "main" {
  name             = "one"
  server_addresses = ["10.0.1.10", "10.0.1.11", "10.0.1.12"]
  endpoint         = terraform_data.vms.output
}

data "flotilla_nodes" "all" {
  api_connection = flotilla_cluster.main.api_connection
  min_ready  = 3
  depends_on = [terraform_data.vms]
}

resource "flotilla_deployment" "web" {
  api_connection = flotilla_cluster.main.api_connection
  name       = "web"
  replicas   = 2
  container {
    name  = "web"
    image = "nginx"
  }
  depends_on = [data.flotilla_nodes.all]
}

data "flotilla_pods" "web" {
  api_connection = flotilla_cluster.main.api_connection
  deployment     = flotilla_deployment.web.name
}

# Results read through a sensitive connection are not sensitive themselves:
# outputs without sensitive = true work.
output "nodes" {
  value = data.flotilla_nodes.all.nodes[*].name
}

output "web_ips" {
  value = data.flotilla_pods.web.ips
}
`
	tfresource.UnitTest(t, tfresource.TestCase{
		// No provider block and no FLOTILLA_ADDR: the provider's own
		// client (127.0.0.1:7400) must never be used.
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/web"),
		Steps: []tfresource.TestStep{{
			Config: fmt.Sprintf(config, f.URL),
			ConfigPlanChecks: tfresource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
				noCalls{f},
				plancheck.ExpectUnknownValue(clusterAddr, tfjsonpath.New("api_connection")),
				plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionCreate),
				plancheck.ExpectResourceAction("data.flotilla_nodes.all", plancheck.ResourceActionRead),
			}},
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("data.flotilla_nodes.all", tfjsonpath.New("ready_count"), knownvalue.Int64Exact(3)),
				statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("id"), knownvalue.StringExact("default/web")),
				statusIs(webAddr, 2, 2, 2),
				statecheck.ExpectKnownValue("data.flotilla_pods.web", tfjsonpath.New("ips"), knownvalue.ListSizeExact(2)),
				statecheck.ExpectKnownOutputValue("nodes", knownvalue.ListExact([]knownvalue.Check{
					knownvalue.StringExact("vm-0"), knownvalue.StringExact("vm-1"), knownvalue.StringExact("vm-2"),
				})),
				statecheck.ExpectKnownOutputValue("web_ips", knownvalue.ListSizeExact(2)),
			},
			Check: tfresource.ComposeTestCheckFunc(
				checkCalls(f, createCall, 1),
				tfresource.TestCheckResourceAttrWith(clusterAddr, "api_token", func(v string) error {
					if v != f.token() {
						return errors.New("the fleet was not called with the cluster's api_token")
					}
					return nil
				}),
			),
		}},
	})
}
