package provider

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

// connectionBlock is an api_connection attribute for the fake f.
func connectionBlock(f *fakeAgent) string {
	ca := "null"
	if f.CAPEM != "" {
		ca = fmt.Sprintf("%q", f.CAPEM)
	}
	return fmt.Sprintf(`api_connection = {
    endpoint    = %q
    token       = %q
    ca_cert_pem = %s
  }`, f.URL, f.Token, ca)
}

func connDeploymentConfig(conn, extra string) string {
	return fmt.Sprintf(`
resource "flotilla_deployment" "web" {
  name     = "web"
  replicas = 2
  %s
  %s
  container {
    name  = "web"
    image = "nginx"
  }
}
`, conn, extra)
}

// TestDeploymentResource_connection creates a deployment through an
// api_connection to an https fleet that is still electing a leader, then
// points it at another fleet, which gets the deployment created.
func TestDeploymentResource_connection(t *testing.T) {
	t.Parallel()
	a, b := newFakeAgentTLS(t), newFakeAgent(t)
	a.setUnavailable(3)
	resource.UnitTest(t, resource.TestCase{
		// The provider's own address is never used.
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(b, "default/web"),
		Steps: []resource.TestStep{
			{
				Config: connDeploymentConfig(connectionBlock(a), ""),
				ConfigStateChecks: []statecheck.StateCheck{
					statusIs(webAddr, 2, 2, 2),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("api_connection").AtMapKey("endpoint"), knownvalue.StringExact(a.URL)),
					statecheck.ExpectSensitiveValue(webAddr, tfjsonpath.New("api_connection").AtMapKey("token")),
				},
				Check: resource.ComposeTestCheckFunc(
					checkCalls(a, createCall, 1),
					func(*terraform.State) error {
						// Three 503s while "electing", then the answer.
						if n := a.count("GET /v1/status"); n != 4 {
							return fmt.Errorf("%d GET /v1/status, want 4", n)
						}
						return nil
					},
				),
			},
			{
				// The cluster was replaced: the new fleet lacks the
				// deployment, so the update creates it there.
				Config: connDeploymentConfig(connectionBlock(b), ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(webAddr, tfjsonpath.New("generation")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{statusIs(webAddr, 2, 2, 2)},
				Check:             resource.ComposeTestCheckFunc(checkCalls(b, createCall, 1), checkCalls(b, "PUT ", 0), checkCalls(a, "PUT ", 0)),
			},
			{
				// Refresh and plan go to the new fleet: nothing to do.
				Config:   connDeploymentConfig(connectionBlock(b), ""),
				PlanOnly: true,
			},
		},
	})
}

// TestDeploymentResource_connectionWrongCA waits for a fleet whose
// certificate another CA signed, and reports the TLS error at the timeout.
func TestDeploymentResource_connectionWrongCA(t *testing.T) {
	t.Parallel()
	a := newFakeAgentTLS(t)
	otherCA, _, err := pki.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a.CAPEM = string(otherCA)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config: connDeploymentConfig(connectionBlock(a), `timeouts {
    create = "1s"
  }`),
			ExpectError: wrappedRE(`(?s)the fleet at https://127\.0\.0\.1:\d+ did not answer within 1s \(last error: .*certificate signed by unknown authority.*raise timeouts\.create`),
		}},
	})
	if n := a.count(createCall); n != 0 {
		t.Errorf("%d POST calls to a fleet that never answered", n)
	}
}

func TestDeploymentResource_connectionBadToken(t *testing.T) {
	t.Parallel()
	a := newFakeAgentTLS(t)
	a.Token = "other"
	conn := connectionBlock(a)
	a.Token = "s3cret"
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			// A 401 is not a booting fleet: fail at once, not at the timeout.
			Config:      connDeploymentConfig(conn, ""),
			ExpectError: wrappedRE(`the fleet at https://127\.0\.0\.1:\d+ refused the request: flotilla API: missing or invalid token \(HTTP 401\)`),
		}},
	})
}

func TestPodsDataSource_connection(t *testing.T) {
	t.Parallel()
	f := newFakeAgentTLS(t)
	f.seed(fakeWeb())
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
data "flotilla_pods" "web" {
  deployment = "web"
  %s
}
`, connectionBlock(f)),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("data.flotilla_pods.web", tfjsonpath.New("ips"), knownvalue.ListSizeExact(2)),
			},
		}},
	})
}

// fakeWeb is a rolled-out two-replica deployment for seeding a fake.
func fakeWeb() api.Deployment {
	return api.Deployment{Name: "web", Replicas: 2, Containers: []api.Container{{Name: "web", Image: "nginx"}}}
}
