package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/api"
)

const svcAddr = "flotilla_service.web"

// svcConfig is a flotilla_service "web" with body, against the fake f.
func svcConfig(f *fakeAgent, body string) string {
	return providerConfig(f) + "resource \"flotilla_service\" \"web\" {\n" + body + "\n}\n"
}

// svcPath is a path into the service's state: strings are attribute
// names, ints list indexes.
func svcPath(steps ...any) tfjsonpath.Path {
	p := tfjsonpath.New(steps[0].(string))
	for _, s := range steps[1:] {
		switch s := s.(type) {
		case int:
			p = p.AtSliceIndex(s)
		case string:
			p = p.AtMapKey(s)
		}
	}
	return p
}

// checkService compares the service the fake holds for key with want.
func checkService(f *fakeAgent, key string, want api.Service) resource.TestCheckFunc {
	return func(*terraform.State) error {
		got, ok := f.service(key)
		if !ok {
			return fmt.Errorf("service %s not in the agent", key)
		}
		if !reflect.DeepEqual(got, want) {
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(want)
			return fmt.Errorf("agent has\n%s\nwant\n%s", a, b)
		}
		return nil
	}
}

func checkServiceGone(f *fakeAgent, keys ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, key := range keys {
			if _, ok := f.service(key); ok {
				return fmt.Errorf("service %s still exists in the agent", key)
			}
		}
		return nil
	}
}

const (
	svcOnePort = `
  name     = "web"
  selector = { app = "web" }
  port {
    port = 80
  }`
	svcTwoPorts = `
  name             = "web"
  selector         = { app = "web", tier = "front" }
  session_affinity = "client_ip"
  port {
    name        = "http"
    port        = 80
    target_port = "http"
  }
  port {
    name     = "dns"
    protocol = "udp"
    port     = 53
  }`
)

func TestServiceResource_lifecycle(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	twoPorts := api.Service{
		Namespace: "default", Name: "web", Selector: map[string]string{"app": "web", "tier": "front"},
		Type: api.ServiceClusterIP, SessionAffinity: api.AffinityClientIP, ClusterIP: "10.96.0.1",
		Ports: []api.ServicePort{
			{Name: "http", Protocol: "tcp", Port: 80, TargetPort: "http"},
			{Name: "dns", Protocol: "udp", Port: 53, TargetPort: "53"},
		},
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkServiceGone(f, "default/web", "default/api"),
		Steps: []resource.TestStep{
			{
				// Create: defaults and assigned values land in state, and
				// the plan after apply is empty (the framework checks).
				Config: svcConfig(f, svcOnePort),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectUnknownValue(svcAddr, svcPath("cluster_ip")),
					plancheck.ExpectKnownValue(svcAddr, svcPath("port", 0, "target_port"), knownvalue.StringExact("80")),
					plancheck.ExpectKnownValue(svcAddr, svcPath("port", 0, "node_port"), knownvalue.Null()),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("id"), knownvalue.StringExact("default/web")),
					statecheck.ExpectKnownValue(svcAddr, svcPath("namespace"), knownvalue.StringExact("default")),
					statecheck.ExpectKnownValue(svcAddr, svcPath("type"), knownvalue.StringExact("cluster_ip")),
					statecheck.ExpectKnownValue(svcAddr, svcPath("session_affinity"), knownvalue.StringExact("none")),
					statecheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.1")),
					statecheck.ExpectKnownValue(svcAddr, svcPath("port", 0), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"name":        knownvalue.Null(),
						"protocol":    knownvalue.StringExact("tcp"),
						"port":        knownvalue.Int64Exact(80),
						"target_port": knownvalue.StringExact("80"),
						"node_port":   knownvalue.Null(),
					})),
				},
				Check: checkService(f, "default/web", api.Service{
					Namespace: "default", Name: "web", Selector: map[string]string{"app": "web"},
					Type: api.ServiceClusterIP, SessionAffinity: api.AffinityNone, ClusterIP: "10.96.0.1",
					Ports: []api.ServicePort{{Protocol: "tcp", Port: 80, TargetPort: "80"}},
				}),
			},
			{
				// An update in place: the cluster IP stays known in the plan.
				Config: svcConfig(f, svcTwoPorts),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.1")),
					plancheck.ExpectKnownValue(svcAddr, svcPath("port", 1, "target_port"), knownvalue.StringExact("53")),
				}},
				Check: resource.ComposeTestCheckFunc(
					checkCalls(f, "PUT /v1/namespaces/default/services/web", 1),
					checkService(f, "default/web", twoPorts),
				),
			},
			{
				ResourceName:      svcAddr,
				ImportState:       true,
				ImportStateId:     "default/web",
				ImportStateVerify: true,
			},
			{
				ResourceName:      svcAddr,
				ImportState:       true,
				ImportStateId:     "web",
				ImportStateVerify: true,
			},
			{
				// Only timeouts change: nothing is sent.
				Config: svcConfig(f, svcTwoPorts+`
  timeouts {
    create = "1m"
  }`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionUpdate),
				}},
				Check: checkCalls(f, "PUT /v1/namespaces/default/services/web", 1),
			},
			{
				// Drift: someone changed the selector and a target port.
				PreConfig: func() {
					f.editService("default/web", func(s *api.Service) {
						s.Selector = map[string]string{"app": "other"}
						s.Ports[0].TargetPort = "8080"
					})
				},
				Config: svcConfig(f, svcTwoPorts),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.1")),
				}},
				Check: checkService(f, "default/web", twoPorts),
			},
			{
				// Drift: someone deleted it; the plan creates it again.
				PreConfig: func() { f.removeService("default/web") },
				Config:    svcConfig(f, svcTwoPorts),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionCreate),
				}},
				Check: checkCalls(f, "POST /v1/namespaces/default/services", 2),
			},
			{
				// A new name replaces it.
				Config: svcConfig(f, `name = "api"
  selector = { app = "web" }
  port {
    port = 80
  }`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("id"), knownvalue.StringExact("default/api")),
				},
				Check: checkServiceGone(f, "default/web"),
			},
		},
	})
	if n := f.count("DELETE /v1/namespaces/default/services/"); n != 2 {
		t.Errorf("%d DELETE calls, want 2 (the replacement and the destroy)", n)
	}
}

// TestServiceResource_nodePort assigns node ports, keeps them per port and
// protocol across updates, and drops them with the type.
func TestServiceResource_nodePort(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	const twoPorts = `
  name     = "web"
  type     = "node_port"
  selector = { app = "web" }
  port {
    name      = "http"
    port      = 80
    node_port = 30080
  }
  port {
    name = "metrics"
    port = 9100
  }`
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkServiceGone(f, "default/web"),
		Steps: []resource.TestStep{
			{
				Config: svcConfig(f, twoPorts),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectKnownValue(svcAddr, svcPath("port", 0, "node_port"), knownvalue.Int64Exact(30080)),
					plancheck.ExpectUnknownValue(svcAddr, svcPath("port", 1, "node_port")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("type"), knownvalue.StringExact("node_port")),
					statecheck.ExpectKnownValue(svcAddr, svcPath("port", 1, "node_port"), knownvalue.Int64Exact(30000)),
				},
			},
			{
				// A new port in front: the others keep their node ports in
				// the plan although their indexes moved, and the new one
				// gets a free one, not the one metrics keeps.
				Config: svcConfig(f, `
  name     = "web"
  type     = "node_port"
  selector = { app = "web" }
  port {
    name = "https"
    port = 443
  }
  port {
    name      = "http"
    port      = 80
    node_port = 30080
  }
  port {
    name = "metrics"
    port = 9100
  }`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(svcAddr, svcPath("port", 0, "node_port")),
					plancheck.ExpectKnownValue(svcAddr, svcPath("port", 2, "node_port"), knownvalue.Int64Exact(30000)),
					plancheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.1")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("port", 0, "node_port"), knownvalue.Int64Exact(30001)),
				},
			},
			{
				ResourceName:      svcAddr,
				ImportState:       true,
				ImportStateId:     "default/web",
				ImportStateVerify: true,
			},
			{
				// Back to cluster_ip: no node ports, planned as such.
				Config: svcConfig(f, svcOnePort),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(svcAddr, svcPath("port", 0, "node_port"), knownvalue.Null()),
				}},
				Check: func(*terraform.State) error {
					if s, _ := f.service("default/web"); s.Type != api.ServiceClusterIP || s.Ports[0].NodePort != 0 {
						return fmt.Errorf("agent has %+v", s)
					}
					return nil
				},
			},
		},
	})
}

// TestServiceResource_clusterIP asks for addresses and node ports: a taken
// one fails naming its holder, a free one is used, and a different one
// replaces the service.
func TestServiceResource_clusterIP(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.seedService(api.Service{Name: "other", Selector: map[string]string{"app": "other"}, Type: api.ServiceNodePort,
		ClusterIP: "10.96.0.10", Ports: []api.ServicePort{{Port: 80, NodePort: 30080}}})
	withIP := func(ip string) string {
		return svcConfig(f, svcOnePort+"\n  cluster_ip = "+fmt.Sprintf("%q", ip))
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkServiceGone(f, "default/web"),
		Steps: []resource.TestStep{
			{
				Config:      withIP("10.96.0.10"),
				ExpectError: wrappedRE(regexp.QuoteMeta(`cluster_ip 10.96.0.10 is taken by service default/other`)),
			},
			{
				Config: svcConfig(f, `
  name     = "web"
  type     = "node_port"
  selector = { app = "web" }
  port {
    port      = 8080
    node_port = 30080
  }`),
				ExpectError: wrappedRE(regexp.QuoteMeta(`ports[0].node_port 30080 is taken by service default/other`)),
			},
			{
				Config: withIP("10.96.0.20"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.20")),
				},
			},
			{
				// Unset again: the address stays, nothing to do.
				Config: svcConfig(f, svcOnePort),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
			},
			{
				Config: withIP("10.96.0.21"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.21")),
				},
			},
		},
	})
}

func TestServiceResource_existsAlready(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.seedService(api.Service{Name: "web", Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.5",
		Ports: []api.ServicePort{{Port: 80}}})
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config:      svcConfig(f, svcOnePort),
			ExpectError: wrappedRE(regexp.QuoteMeta(`service default/web exists already; import it with terraform import flotilla_service.NAME default/web`)),
		}},
	})
}

// TestServiceResource_moveFleet points api_connection at another fleet: the
// service is created there, with that fleet's address, and the first fleet
// is left alone.
func TestServiceResource_moveFleet(t *testing.T) {
	t.Parallel()
	a, b := newFakeAgent(t), newFakeAgent(t)
	b.seedService(api.Service{Name: "taken", Selector: map[string]string{"app": "x"}, ClusterIP: "10.96.0.1",
		Ports: []api.ServicePort{{Port: 80}}})
	config := func(f *fakeAgent) string {
		return fmt.Sprintf(`
resource "flotilla_service" "web" {
  api_connection = {
    endpoint = %q
    token    = %q
  }
  %s
}
`, f.URL, f.Token, svcOnePort)
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkServiceGone(b, "default/web"),
		Steps: []resource.TestStep{
			{
				Config: config(a),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.1")),
				},
			},
			{
				Config: config(b),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(svcAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(svcAddr, svcPath("cluster_ip")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(svcAddr, svcPath("cluster_ip"), knownvalue.StringExact("10.96.0.2")),
				},
				Check: func(*terraform.State) error {
					if _, ok := a.service("default/web"); !ok {
						return fmt.Errorf("the first fleet's service was removed")
					}
					return nil
				},
			},
		},
	})
}

// TestServiceResource_unknownAddress plans against a provider whose address
// is only known after apply.
func TestServiceResource_unknownAddress(t *testing.T) {
	t.Parallel()
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config: `
resource "terraform_data" "cluster" {
  input = "http://127.0.0.1:1"
}
provider "flotilla" {
  address = terraform_data.cluster.output
}
resource "flotilla_service" "web" {` + svcOnePort + `
}
`,
			PlanOnly:           true,
			ExpectNonEmptyPlan: true,
		}},
	})
}

// TestServiceResource_invalidConfig checks that input errors show up at
// plan time, naming the attribute.
func TestServiceResource_invalidConfig(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   string
	}{
		{"bad name", `name = "Web"
			selector = { app = "web" }
			port {
			  port = 80
			}`, `name: "Web" must be lower-case letters`},
		{"no selector", `name = "web"
			port {
			  port = 80
			}`, `The argument "selector" is required`},
		{"empty selector", `name = "web"
			selector = {}
			port {
			  port = 80
			}`, `selector map must contain at least 1 elements`},
		{"bad selector", `name = "web"
			selector = { "app name" = "web" }
			port {
			  port = 80
			}`, `selector: key "app name" must be`},
		{"no port", `name = "web"
			selector = { app = "web" }`, `Block port must have a configuration value`},
		{"port zero", `name = "web"
			selector = { app = "web" }
			port {
			  port = 0
			}`, `port\[0\]\.port value must be between 1 and 65535, got: 0`},
		{"port too large", `name = "web"
			selector = { app = "web" }
			port {
			  port = 65536
			}`, `port\[0\]\.port value must be between 1 and 65535, got: 65536`},
		{"bad protocol", `name = "web"
			selector = { app = "web" }
			port {
			  port     = 80
			  protocol = "sctp"
			}`, `port\[0\]\.protocol value must be one of: \["tcp" "udp"\]`},
		{"bad type", `name = "web"
			type = "load_balancer"
			selector = { app = "web" }
			port {
			  port = 80
			}`, `type value must be one of: \["cluster_ip" "node_port"\]`},
		{"bad session affinity", `name = "web"
			session_affinity = "cookie"
			selector = { app = "web" }
			port {
			  port = 80
			}`, `session_affinity value must be one of: \["none" "client_ip"\]`},
		{"port name too long", `name = "web"
			selector = { app = "web" }
			port {
			  name = "metrics-exporter"
			  port = 80
			}`, `port\[0\]\.name: "metrics-exporter" is 16 characters; at most 15`},
		{"port name upper case", `name = "web"
			selector = { app = "web" }
			port {
			  name = "HTTP"
			  port = 80
			}`, `port\[0\]\.name: "HTTP" must be lower-case`},
		{"unnamed ports", `name = "web"
			selector = { app = "web" }
			port {
			  name = "http"
			  port = 80
			}
			port {
			  port = 443
			}`, `port\[1\]\.name: must be set when a service has several ports`},
		{"duplicate port names", `name = "web"
			selector = { app = "web" }
			port {
			  name = "http"
			  port = 80
			}
			port {
			  name = "http"
			  port = 8080
			}`, `port\[1\]\.name: "http" is used by another port of this service`},
		{"duplicate ports", `name = "web"
			selector = { app = "web" }
			port {
			  name = "a"
			  port = 80
			}
			port {
			  name     = "b"
			  port     = 80
			  protocol = "tcp"
			}`, `port\[1\]\.port: 80/tcp is also declared by port\[0\]\.port`},
		{"bad target port number", `name = "web"
			selector = { app = "web" }
			port {
			  port        = 80
			  target_port = "70000"
			}`, `port\[0\]\.target_port: 70000 is out of range 1..65535`},
		{"bad target port name", `name = "web"
			selector = { app = "web" }
			port {
			  port        = 80
			  target_port = "Http"
			}`, `port\[0\]\.target_port: "Http" is neither a port number from 1 to 65535 nor a container port name`},
		{"node port without type", `name = "web"
			selector = { app = "web" }
			port {
			  port      = 80
			  node_port = 30080
			}`, `port\[0\]\.node_port: is only for type "node_port"; set type = "node_port"`},
		{"node port out of range", `name = "web"
			type = "node_port"
			selector = { app = "web" }
			port {
			  port      = 80
			  node_port = 70000
			}`, `port\[0\]\.node_port value must be between 1 and 65535`},
		{"duplicate node ports", `name = "web"
			type = "node_port"
			selector = { app = "web" }
			port {
			  name      = "a"
			  port      = 80
			  node_port = 30080
			}
			port {
			  name      = "b"
			  port      = 81
			  node_port = 30080
			}`, `port\[1\]\.node_port: 30080/tcp is also asked for by port\[0\]\.node_port`},
		{"bad cluster ip", `name = "web"
			cluster_ip = "10.96.0"
			selector = { app = "web" }
			port {
			  port = 80
			}`, `cluster_ip: "10.96.0" is not an IPv4 address`},
		{"ipv6 cluster ip", `name = "web"
			cluster_ip = "fd00::10"
			selector = { app = "web" }
			port {
			  port = 80
			}`, `cluster_ip: "fd00::10" is not an IPv4 address`},
	}
	testPlanErrors(t, "flotilla_service", tests)
}

// TestServicePortValidatorsMatchAPI accepts exactly the port names and
// target ports the agent does.
func TestServicePortValidatorsMatchAPI(t *testing.T) {
	ctx := context.Background()
	for _, v := range []string{"http", "h2c", "a", "web-1", "80", "1", "65535", "0", "65536", "080", "Http", "-http",
		"http_1", strings.Repeat("a", 15), strings.Repeat("a", 16), "99999999999999999999", ""} {
		for _, tc := range []struct {
			attr  string
			check func(validator.StringRequest, *validator.StringResponse)
			port  api.ServicePort
		}{
			{"name", func(req validator.StringRequest, resp *validator.StringResponse) {
				portNameValidator{}.ValidateString(ctx, req, resp)
			}, api.ServicePort{Name: v, Port: 80}},
			{"target_port", func(req validator.StringRequest, resp *validator.StringResponse) {
				targetPortValidator{}.ValidateString(ctx, req, resp)
			}, api.ServicePort{Port: 80, TargetPort: v}},
		} {
			resp := &validator.StringResponse{}
			tc.check(validator.StringRequest{Path: path.Root(tc.attr), ConfigValue: types.StringValue(v)}, resp)
			s := api.Service{Namespace: "default", Name: "web", Selector: map[string]string{"app": "web"}, Ports: []api.ServicePort{tc.port}}
			apiErr := s.Validate()
			// "" is the API's spelling of unset; in a configuration, unset is null.
			wantErr := apiErr != nil || v == ""
			if resp.Diagnostics.HasError() != wantErr {
				t.Errorf("%s %q: validator error %v, api error %v", tc.attr, v, resp.Diagnostics, apiErr)
			}
		}
	}
}
