package provider

import (
	"context"
	"regexp"
	"strings"
	"testing"

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
		{"bad timeout", `name = "web"
			container {
			  name  = "web"
			  image = "nginx"
			}
			timeouts {
			  create = "five minutes"
			}`, `(?i)duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resource.UnitTest(t, resource.TestCase{
				ProtoV6ProviderFactories: providerFactories(nil),
				Steps: []resource.TestStep{{
					Config:      validateProvider + "resource \"flotilla_deployment\" \"t\" {\n" + tt.config + "\n}\n",
					PlanOnly:    true,
					ExpectError: wrappedRE(tt.want),
				}},
			})
		})
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
