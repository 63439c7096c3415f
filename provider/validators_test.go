package provider

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/flotilla-io/flotilla/api"
)

func TestNameValidatorMatchesAPI(t *testing.T) {
	for _, name := range []string{"web", "a", "web-1", "", "Web", "web_1", "-web", "web-", strings.Repeat("a", 52), strings.Repeat("a", 53)} {
		resp := &validator.StringResponse{}
		nameValidator{}.ValidateString(context.Background(), validator.StringRequest{
			Path:        path.Root("name"),
			ConfigValue: types.StringValue(name),
		}, resp)
		apiErr := api.ValidateName(name)
		if resp.Diagnostics.HasError() != (apiErr != nil) {
			t.Errorf("%q: validator error %v, api error %v", name, resp.Diagnostics, apiErr)
			continue
		}
		if apiErr != nil && !strings.Contains(resp.Diagnostics[0].Detail(), apiErr.Error()) {
			t.Errorf("%q: detail %q does not carry the API's message %q", name, resp.Diagnostics[0].Detail(), apiErr)
		}
	}
}

// wrappedRE compiles want with each space matching any white space, as
// terraform wraps long diagnostics.
func wrappedRE(want string) *regexp.Regexp {
	return regexp.MustCompile(strings.ReplaceAll(want, " ", `\s+`))
}

// validateProvider is a provider block that never gets contacted: every case
// below must fail before anything talks to an agent.
const validateProvider = `
provider "flotilla" {
  address = "http://127.0.0.1:1"
}
`

// TestDeploymentResource_invalidConfig checks that input errors show up at
// plan time, naming the attribute.
func TestDeploymentResource_invalidConfig(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   string
	}{
		{"upper-case name", `name = "Web"
			container {
			  name  = "web"
			  image = "nginx"
			}`, `"Web" must be lower-case letters`},
		{"long name", `name = "` + strings.Repeat("a", 53) + `"
			container {
			  name  = "web"
			  image = "nginx"
			}`, `is 53 characters; at most 52`},
		{"bad namespace", `name = "web"
			namespace = "Prod"
			container {
			  name  = "web"
			  image = "nginx"
			}`, `namespace: "Prod" must be`},
		{"replicas out of range", `name = "web"
			replicas = 1001
			container {
			  name  = "web"
			  image = "nginx"
			}`, `replicas value must be between 0 and 1000`},
		{"no container", `name = "web"`, `Block container must have a configuration value`},
		{"bad container name", `name = "web"
			container {
			  name  = "my_app"
			  image = "nginx"
			}`, `container\[0\]\.name: "my_app" must be lower-case`},
		{"duplicate container names", `name = "web"
			container {
			  name  = "app"
			  image = "nginx"
			}
			container {
			  name  = "app"
			  image = "busybox"
			}`, `container\[1\]\.name: "app" is used by another container`},
		{"empty image", `name = "web"
			container {
			  name  = "web"
			  image = " "
			}`, `container\[0\]\.image: must not be empty`},
		{"image with space", `name = "web"
			container {
			  name  = "web"
			  image = "nginx latest"
			}`, `must not contain white space`},
		{"port zero", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  port {
			    container_port = 0
			  }
			}`, `container_port value must be between 1 and 65535`},
		{"port too large", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  port {
			    container_port = 70000
			  }
			}`, `between 1 and 65535, got: 70000`},
		{"bad protocol", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  port {
			    container_port = 80
			    protocol       = "sctp"
			  }
			}`, `protocol value must be one of`},
		{"duplicate port", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  port {
			    container_port = 80
			  }
			}
			container {
			  name  = "sidecar"
			  image = "envoy"
			  port {
			    container_port = 80
			    protocol       = "tcp"
			  }
			}`, `container\[1\]\.port\[0\]\.container_port: 80/tcp is also declared by\s+container\[0\]\.port\[0\]\.container_port`},
		{"cpu request above limit", `name = "web"
			container {
			  name        = "web"
			  image       = "nginx"
			  cpu_request = 500
			  cpu_limit   = 250
			}`, `container\[0\]\.cpu_request: 500m exceeds cpu_limit 250m`},
		{"memory request above limit", `name = "web"
			container {
			  name           = "web"
			  image          = "nginx"
			  memory_request = 512
			  memory_limit   = 256
			}`, `container\[0\]\.memory_request: 512 MiB exceeds memory_limit 256 MiB`},
		{"memory limit too small", `name = "web"
			container {
			  name         = "web"
			  image        = "nginx"
			  memory_limit = 2
			}`, `2 MiB is too small to start a container; use at least 4`},
		{"negative cpu", `name = "web"
			container {
			  name      = "web"
			  image     = "nginx"
			  cpu_limit = -1
			}`, `cpu_limit value must be at least 0`},
		{"bad env name", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  env = {
			    "A=B" = "c"
			  }
			}`, `variable name "A=B" is invalid`},
		{"bad host port", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  port {
			    container_port = 80
			    host_port      = 70000
			  }
			}`, `host_port value must be between 1 and 65535`},
		{"duplicate host port", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  port {
			    container_port = 80
			    host_port      = 8080
			  }
			}
			container {
			  name  = "sidecar"
			  image = "envoy"
			  port {
			    container_port = 81
			    host_port      = 8080
			  }
			}`, `container\[1\]\.port\[0\]\.host_port: 8080/tcp is also declared by\s+container\[0\]\.port\[0\]\.host_port`},
		{"bad placement", `name = "web"
			placement = "random"
			container {
			  name  = "web"
			  image = "nginx"
			}`, `placement value must be one of: \["spread" "bin_pack"\]`},
		{"min_ready_seconds too large", `name = "web"
			min_ready_seconds = 3601
			container {
			  name  = "web"
			  image = "nginx"
			}`, `min_ready_seconds value must be between 0 and 3600`},
		{"bad node_selector", `name = "web"
			node_selector = {
			  "disk type" = "ssd"
			}
			container {
			  name  = "web"
			  image = "nginx"
			}`, `node_selector: key "disk type" must be 1 to 63 letters`},
		{"bad label", `name = "web"
			labels = {
			  app = "my web"
			}
			container {
			  name  = "web"
			  image = "nginx"
			}`, `labels: value "my web" of "app" must be`},
		{"anti_affinity without labels", `name = "web"
			anti_affinity {
			  labels = {}
			}
			container {
			  name  = "web"
			  image = "nginx"
			}`, `anti_affinity\[0\]\.labels map must contain at least 1 elements`},
		{"anti_affinity bad topology", `name = "web"
			anti_affinity {
			  labels   = { app = "web" }
			  topology = "rack room"
			}
			container {
			  name  = "web"
			  image = "nginx"
			}`, `anti_affinity\[0\]\.topology: "rack room" must be "node" or a node label key such as "zone"`},
		{"too many anti_affinity", `name = "web"
			dynamic "anti_affinity" {
			  for_each = range(17)
			  content {
			    labels = { app = "a${anti_affinity.value}" }
			  }
			}
			container {
			  name  = "web"
			  image = "nginx"
			}`, `anti_affinity list must contain at most 16 elements`},
		{"probe without action", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  liveness_probe {
			    period_seconds = 5
			  }
			}`, `container\[0\]\.liveness_probe\[0\]: exactly one of http_get, tcp_socket and exec must be set, not 0`},
		{"probe with two actions", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  readiness_probe {
			    http_get {
			      port = 80
			    }
			    tcp_socket {
			      port = 80
			    }
			  }
			}`, `container\[0\]\.readiness_probe\[0\]: exactly one of http_get, tcp_socket and exec must be set, not 2 \(http_get, tcp_socket\)`},
		{"two probes", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  readiness_probe {
			    exec {
			      command = ["true"]
			    }
			  }
			  readiness_probe {
			    exec {
			      command = ["true"]
			    }
			  }
			}`, `readiness_probe list must contain at most 1 elements`},
		{"probe port zero", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  readiness_probe {
			    tcp_socket {
			      port = 0
			    }
			  }
			}`, `readiness_probe\[0\]\.tcp_socket\[0\]\.port value must be between 1 and 65535`},
		{"probe path without slash", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  readiness_probe {
			    http_get {
			      path = "healthz"
			      port = 80
			    }
			  }
			}`, `http_get\[0\]\.path: "healthz" must start with /`},
		{"probe empty command", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  liveness_probe {
			    exec {
			      command = []
			    }
			  }
			}`, `exec\[0\]\.command list must contain at least 1 elements`},
		{"probe period zero", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  readiness_probe {
			    tcp_socket {
			      port = 80
			    }
			    period_seconds = 0
			  }
			}`, `period_seconds value must be between 1 and 3600, got: 0`},
		{"probe delay too long", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  readiness_probe {
			    tcp_socket {
			      port = 80
			    }
			    initial_delay_seconds = 3601
			  }
			}`, `initial_delay_seconds value must be between 0 and 3600`},
		{"probe failure threshold too high", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  readiness_probe {
			    tcp_socket {
			      port = 80
			    }
			    failure_threshold = 101
			  }
			}`, `failure_threshold value must be between 1 and 100`},
		{"liveness success threshold", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  liveness_probe {
			    tcp_socket {
			      port = 80
			    }
			    success_threshold = 2
			  }
			}`, `liveness_probe\[0\]\.success_threshold: 2: a liveness probe's must be 1`},
		{"pids limit zero", `name = "web"
			container {
			  name       = "web"
			  image      = "nginx"
			  pids_limit = 0
			}`, `container\[0\]\.pids_limit value must be between 1 and 4194304, got: 0`},
		{"two security blocks", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {}
			  security {}
			}`, `security list must contain at most 1 elements`},
		{"negative uid", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {
			    run_as_user = -1
			  }
			}`, `security\[0\]\.run_as_user value must be between 0 and 2147483647, got: -1`},
		{"gid beyond runc's", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {
			    run_as_group = 2147483648
			  }
			}`, `security\[0\]\.run_as_group value must be between 0 and 2147483647`},
		{"unknown capability", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {
			    capabilities {
			      add = ["NET_ADMIN", "FLY"]
			    }
			  }
			}`, `capabilities\[0\]\.add\[1\]: "FLY" is not a Linux capability`},
		{"CAP_ prefix", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {
			    capabilities {
			      drop = ["CAP_NET_RAW"]
			    }
			  }
			}`, `capabilities\[0\]\.drop\[0\]: "CAP_NET_RAW": write "NET_RAW"`},
		{"add ALL", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {
			    capabilities {
			      add = ["ALL"]
			    }
			  }
			}`, `add\[0\]: adding "ALL" would make the container privileged`},
		{"capability twice", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {
			    capabilities {
			      drop = ["KILL", "KILL"]
			    }
			  }
			}`, `contains duplicate values of: "KILL"`},
		{"capability added and dropped", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			  security {
			    capabilities {
			      add  = ["KILL"]
			      drop = ["KILL"]
			    }
			  }
			}`, `capabilities\[0\]\.add\[0\]: "KILL" is also dropped`},
		{"bad timeout", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			}
			timeouts {
			  create = "five minutes"
			}`, `(?i)duration`},
	}
	testPlanErrors(t, "flotilla_deployment", tests)
}

// TestCapabilityValidatorMatchesAPI accepts exactly the capability names
// the agent does, in add and in drop.
func TestCapabilityValidatorMatchesAPI(t *testing.T) {
	names := append(api.KnownCapabilities(), "ALL", "", "net_admin", "CAP_NET_ADMIN", "Net_Admin", "GOD", "NET_ADMIN ")
	for _, add := range []bool{true, false} {
		for _, n := range names {
			resp := &validator.StringResponse{}
			capabilityValidator{add: add}.ValidateString(context.Background(), validator.StringRequest{
				Path:        path.Root("add").AtListIndex(0),
				ConfigValue: types.StringValue(n),
			}, resp)
			apiErr := api.ValidateCapability(n, !add)
			if resp.Diagnostics.HasError() != (apiErr != nil) {
				t.Errorf("%q (add %v): validator error %v, api error %v", n, add, resp.Diagnostics, apiErr)
				continue
			}
			if apiErr != nil && !strings.Contains(resp.Diagnostics[0].Detail(), apiErr.Error()) {
				t.Errorf("%q: detail %q does not carry the API's message %q", n, resp.Diagnostics[0].Detail(), apiErr)
			}
		}
	}
}

// TestTopologyValidatorMatchesAPI accepts exactly the topologies the agent does.
func TestTopologyValidatorMatchesAPI(t *testing.T) {
	for _, topology := range []string{"node", "zone", "topology.flotilla.io-rack", "rack_1", "", "rack room", "-zone", strings.Repeat("a", 64)} {
		resp := &validator.StringResponse{}
		topologyValidator{}.ValidateString(context.Background(), validator.StringRequest{
			Path:        path.Root("topology"),
			ConfigValue: types.StringValue(topology),
		}, resp)
		d := api.Deployment{Namespace: "default", Name: "web", Replicas: 1, Containers: []api.Container{{Name: "web", Image: "nginx"}},
			AntiAffinity: []api.AntiAffinity{{Labels: map[string]string{"a": "b"}, Topology: topology}}}
		apiErr := d.Validate()
		// "" is the API's spelling of the default; in a configuration the
		// default is an unset topology.
		wantErr := apiErr != nil || topology == ""
		if resp.Diagnostics.HasError() != wantErr {
			t.Errorf("%q: validator error %v, api error %v", topology, resp.Diagnostics, apiErr)
		}
	}
}

// TestLabelsValidatorMatchesAPI accepts exactly the labels the agent does.
func TestLabelsValidatorMatchesAPI(t *testing.T) {
	many := map[string]string{}
	for i := range api.MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, labels := range []map[string]string{
		{"app": "web"}, {"app": ""}, {"a.b_c-d": "E.f"}, {"": "v"}, {"k": "a b"}, {"-k": "v"}, {"k": strings.Repeat("v", 64)}, many,
	} {
		elems := map[string]attr.Value{}
		for k, v := range labels {
			elems[k] = types.StringValue(v)
		}
		resp := &validator.MapResponse{}
		labelsValidator{}.ValidateMap(context.Background(), validator.MapRequest{
			Path:        path.Root("labels"),
			ConfigValue: types.MapValueMust(types.StringType, elems),
		}, resp)
		apiErr := api.ValidateLabels(labels)
		if resp.Diagnostics.HasError() != (apiErr != nil) {
			t.Errorf("%v: validator error %v, api error %v", labels, resp.Diagnostics, apiErr)
		}
	}
}

func TestProvider_invalidConfig(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   string
	}{
		{"bad scheme", `provider "flotilla" {
			  address = "ftp://agent:7400"
			}`, `scheme must be http or https`},
		{"empty address", `provider "flotilla" {
			  address = ""
			}`, `address must not be empty`},
		{"pods with bad deployment name", validateProvider + `data "flotilla_pods" "p" {
			  deployment = "Web"
			}`, `deployment: "Web" must be lower-case`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resource.UnitTest(t, resource.TestCase{
				ProtoV6ProviderFactories: providerFactories(nil),
				Steps: []resource.TestStep{{
					Config: tt.config + `
						resource "flotilla_deployment" "t" {
						  name = "web"
						  container {
						    name  = "web"
						    image = "nginx"
						  }
						}`,
					PlanOnly:    true,
					ExpectError: wrappedRE(tt.want),
				}},
			})
		})
	}
}

// testPlanErrors plans each test's config as the body of a resource of
// type typ, with the provider of validateProvider, and expects the plan to
// fail with the error want matches.
func testPlanErrors(t *testing.T, typ string, tests []struct{ name, config, want string }) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resource.UnitTest(t, resource.TestCase{
				ProtoV6ProviderFactories: providerFactories(nil),
				Steps: []resource.TestStep{{
					Config:      validateProvider + "resource \"" + typ + "\" \"t\" {\n" + tt.config + "\n}\n",
					PlanOnly:    true,
					ExpectError: wrappedRE(tt.want),
				}},
			})
		})
	}
}
