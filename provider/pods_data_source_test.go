package provider

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/api"
)

// TestPodsDataSource also covers the provider reading FLOTILLA_ADDR and
// FLOTILLA_TOKEN when the configuration has no provider block.
func TestPodsDataSource(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.seed(api.Deployment{Name: "web", Replicas: 3, Containers: []api.Container{{Name: "web", Image: "nginx"}}})
	f.seed(api.Deployment{Name: "other", Replicas: 1, Containers: []api.Container{{Name: "o", Image: "nginx"}}})
	f.edit("default/web", func(d *api.Deployment) { d.Status.ReadyReplicas = 2 })

	const addr = "data.flotilla_pods.web"
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(map[string]string{api.EnvAddr: f.URL, api.EnvToken: f.Token}),
		Steps: []resource.TestStep{{
			Config: `
data "flotilla_pods" "web" {
  deployment = "web"
}
`,
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("default/web")),
				statecheck.ExpectKnownValue(addr, tfjsonpath.New("namespace"), knownvalue.StringExact("default")),
				statecheck.ExpectKnownValue(addr, tfjsonpath.New("ips"), knownvalue.ListExact([]knownvalue.Check{
					knownvalue.StringExact("10.42.0.10"),
					knownvalue.StringExact("10.42.0.11"),
				})),
				statecheck.ExpectKnownValue(addr, tfjsonpath.New("pods"), knownvalue.ListSizeExact(3)),
				statecheck.ExpectKnownValue(addr, tfjsonpath.New("pods").AtSliceIndex(2), knownvalue.ObjectExact(map[string]knownvalue.Check{
					"name":          knownvalue.StringExact("web-0000000002"),
					"node":          knownvalue.StringExact("node-0"),
					"ip":            knownvalue.StringExact("10.42.0.12"),
					"phase":         knownvalue.StringExact("running"),
					"ready":         knownvalue.Bool(false),
					"restart_count": knownvalue.Int64Exact(2),
					"generation":    knownvalue.Int64Exact(2),
				})),
			},
		}},
	})
}
