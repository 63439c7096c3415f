package provider

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/api"
)

func TestServiceEndpointsDataSource(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.seed(api.Deployment{Name: "web", Replicas: 3, Labels: map[string]string{"app": "web"}, Containers: []api.Container{{
		Name: "web", Image: "nginx", Ports: []api.Port{{Name: "http", ContainerPort: 8080, Protocol: "tcp"}},
	}}})
	f.seed(api.Deployment{Name: "other", Replicas: 1, Labels: map[string]string{"app": "other"},
		Containers: []api.Container{{Name: "o", Image: "nginx"}}})
	f.edit("default/web", func(d *api.Deployment) { d.Status.ReadyReplicas = 2 })
	f.seedService(api.Service{Name: "web", Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.7",
		Ports: []api.ServicePort{
			{Name: "http", Port: 80, TargetPort: "http"},
			{Name: "metrics", Port: 9100, TargetPort: "metrics"}, // no pod has it
			{Name: "dns", Protocol: "udp", Port: 53},
		}})

	const addr = "data.flotilla_service_endpoints.web"
	port := func(name, proto string, n int64) knownvalue.Check {
		return knownvalue.ObjectExact(map[string]knownvalue.Check{
			"name": knownvalue.StringExact(name), "protocol": knownvalue.StringExact(proto), "port": knownvalue.Int64Exact(n),
		})
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(map[string]string{api.EnvAddr: f.URL, api.EnvToken: f.Token}),
		Steps: []resource.TestStep{
			{
				Config: `
data "flotilla_service_endpoints" "web" {
  name = "web"
}
`,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("default/web")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("namespace"), knownvalue.StringExact("default")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("ready_count"), knownvalue.Int64Exact(2)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("addresses"), knownvalue.ListSizeExact(3)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("addresses").AtSliceIndex(2), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"pod":   knownvalue.StringExact("web-0000000002"),
						"node":  knownvalue.StringExact("node-0"),
						"ip":    knownvalue.StringExact("10.42.0.12"),
						"ready": knownvalue.Bool(false),
						"ports": knownvalue.ListExact([]knownvalue.Check{port("http", "tcp", 8080), port("dns", "udp", 53)}),
					})),
				},
			},
			{
				Config: `
data "flotilla_service_endpoints" "web" {
  namespace = "shop"
  name      = "web"
}
`,
				ExpectError: wrappedRE(`read endpoints of service shop/web: flotilla API: service shop/web not found \(HTTP 404\); is the service created\?`),
			},
		},
	})
}
