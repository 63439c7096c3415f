package provider

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/api"
)

const webAddr = "flotilla_deployment.web"

// webConfig is a two-container deployment; extra is added to the resource.
func webConfig(f *fakeAgent, replicas int, image, extra string) string {
	return providerConfig(f) + fmt.Sprintf(`
resource "flotilla_deployment" "web" {
  name     = "web"
  replicas = %d
  labels = {
    app = "web"
  }
  %s

  container {
    name         = "web"
    image        = %q
    args         = []
    cpu_request  = 100
    cpu_limit    = 500
    memory_limit = 128
    env = {
      MODE = "prod"
    }
    port {
      container_port = 80
    }
    port {
      container_port = 53
      protocol       = "udp"
      name           = "dns"
    }
  }

  container {
    name    = "sidecar"
    image   = "busybox:1.36"
    command = ["sleep", "infinity"]
  }
}
`, replicas, extra, image)
}

func statusIs(addr string, replicas, ready, updated int64) statecheck.StateCheck {
	return statecheck.ExpectKnownValue(addr, tfjsonpath.New("status"), knownvalue.ObjectExact(map[string]knownvalue.Check{
		"replicas":         knownvalue.Int64Exact(replicas),
		"ready_replicas":   knownvalue.Int64Exact(ready),
		"updated_replicas": knownvalue.Int64Exact(updated),
	}))
}

// checkCalls asserts the fake saw n calls starting with prefix.
func checkCalls(f *fakeAgent, prefix string, n int) resource.TestCheckFunc {
	return func(*terraform.State) error {
		if got := f.count(prefix); got != n {
			return fmt.Errorf("%d %q calls, want %d", got, prefix, n)
		}
		return nil
	}
}

func checkGone(f *fakeAgent, key string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		if _, ok := f.deployment(key); ok {
			return fmt.Errorf("deployment %s still exists in the agent", key)
		}
		return nil
	}
}

func TestDeploymentResource_lifecycle(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/web"),
		Steps: []resource.TestStep{
			{
				// Create and wait for the rollout; defaults and explicit
				// empty values survive the round trip (the framework also
				// fails the step if the plan after apply is not empty).
				Config: webConfig(f, 2, "nginx:1.27", ""),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("id"), knownvalue.StringExact("default/web")),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("namespace"), knownvalue.StringExact("default")),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("generation"), knownvalue.Int64Exact(1)),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("wait_for_rollout"), knownvalue.Bool(true)),
					statusIs(webAddr, 2, 2, 2),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("container").AtSliceIndex(0).AtMapKey("port").AtSliceIndex(0).AtMapKey("protocol"), knownvalue.StringExact("tcp")),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("container").AtSliceIndex(0).AtMapKey("port").AtSliceIndex(0).AtMapKey("name"), knownvalue.Null()),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("container").AtSliceIndex(0).AtMapKey("args"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("container").AtSliceIndex(1).AtMapKey("env"), knownvalue.Null()),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("container").AtSliceIndex(1).AtMapKey("port"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("container").AtSliceIndex(1).AtMapKey("memory_limit"), knownvalue.Null()),
				},
				Check: resource.ComposeTestCheckFunc(
					checkCalls(f, "POST ", 1),
					func(*terraform.State) error {
						d, ok := f.deployment("default/web")
						if !ok || d.Replicas != 2 || len(d.Containers) != 2 || d.Containers[0].Ports[0].Protocol != "tcp" ||
							d.Containers[0].MemoryLimit != 128 || d.Labels["app"] != "web" {
							return fmt.Errorf("agent has %+v", d)
						}
						return nil
					},
				),
			},
			{
				// A spec change: status and generation become unknown.
				Config: webConfig(f, 3, "nginx:1.28", ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(webAddr, tfjsonpath.New("status")),
					plancheck.ExpectUnknownValue(webAddr, tfjsonpath.New("generation")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(webAddr, tfjsonpath.New("generation"), knownvalue.Int64Exact(2)),
					statusIs(webAddr, 3, 3, 3),
				},
				Check: checkCalls(f, "PUT ", 1),
			},
			{
				ResourceName:      webAddr,
				ImportState:       true,
				ImportStateId:     "default/web",
				ImportStateVerify: true,
			},
			{
				ResourceName:      webAddr,
				ImportState:       true,
				ImportStateId:     "web",
				ImportStateVerify: true,
			},
			{
				// Only Terraform-side settings change: no API call, and
				// the status stays known in the plan.
				Config: webConfig(f, 3, "nginx:1.28", `wait_for_rollout = false
  timeouts {
    update = "1m"
  }`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(webAddr, tfjsonpath.New("status").AtMapKey("ready_replicas"), knownvalue.Int64Exact(3)),
					plancheck.ExpectKnownValue(webAddr, tfjsonpath.New("generation"), knownvalue.Int64Exact(2)),
				}},
				Check: checkCalls(f, "PUT ", 1),
			},
			{
				// Drift: someone scaled the deployment to 5.
				PreConfig: func() { f.edit("default/web", func(d *api.Deployment) { d.Replicas = 5 }) },
				Config:    webConfig(f, 3, "nginx:1.28", `wait_for_rollout = false`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(webAddr, tfjsonpath.New("status")),
				}},
				Check: func(*terraform.State) error {
					if d, _ := f.deployment("default/web"); d.Replicas != 3 {
						return fmt.Errorf("replicas = %d, want 3 again", d.Replicas)
					}
					return nil
				},
			},
			{
				// Drift: someone deleted it.
				PreConfig: func() { f.remove("default/web") },
				Config:    webConfig(f, 3, "nginx:1.28", `wait_for_rollout = false`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionCreate),
				}},
				Check: checkCalls(f, "POST ", 2),
			},
		},
	})
	if n := f.count("DELETE "); n != 1 {
		t.Errorf("%d DELETE calls, want 1", n)
	}
}

func TestDeploymentResource_rolloutFailsFast(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	const failure = `pod default/bad-0000000000: pull "ghcr.io/acme/missing:1": not found; last log: none`
	f.failImages["ghcr.io/acme/missing:1"] = failure
	config := func(image string) string {
		return providerConfig(f) + fmt.Sprintf(`
resource "flotilla_deployment" "bad" {
  name = "bad"
  container {
    name  = "app"
    image = %q
  }
  timeouts {
    create = "2m"
  }
}
`, image)
	}
	var start time.Time
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/bad"),
		Steps: []resource.TestStep{
			{
				PreConfig:   func() { start = time.Now() },
				Config:      config("ghcr.io/acme/missing:1"),
				ExpectError: wrappedRE(regexp.QuoteMeta("rollout of default/bad failed: " + failure)),
			},
			{
				// The failed deployment was saved (tainted), so fixing the
				// image replaces it instead of failing with a conflict.
				PreConfig: func() {
					if d := time.Since(start); d > 30*time.Second {
						t.Errorf("failed rollout took %s to report; want well under the 2m timeout", d)
					}
				},
				Config: config("ghcr.io/acme/app:1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flotilla_deployment.bad", plancheck.ResourceActionDestroyBeforeCreate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{statusIs("flotilla_deployment.bad", 1, 1, 1)},
			},
		},
	})
}

func TestDeploymentResource_rolloutTimeout(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.stuckImages["nginx:never-ready"] = true
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/slow"),
		Steps: []resource.TestStep{{
			Config: providerConfig(f) + `
resource "flotilla_deployment" "slow" {
  name     = "slow"
  replicas = 2
  container {
    name  = "app"
    image = "nginx:never-ready"
  }
  timeouts {
    create = "1s"
  }
}
`,
			ExpectError: wrappedRE(`timed out after 1s waiting for the rollout of default/slow: 2/2 updated, 0 ready \(generation 1\)\. Check the deployment's pods`),
		}},
	})
}

func TestDeploymentResource_existsAlready(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.seed(api.Deployment{Name: "web", Replicas: 1, Containers: []api.Container{{Name: "web", Image: "nginx"}}})
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config:      webConfig(f, 1, "nginx", ""),
			ExpectError: wrappedRE(regexp.QuoteMeta(`deployment default/web exists already; import it with terraform import flotilla_deployment.NAME default/web`)),
		}},
	})
}

func TestDeploymentResource_badToken(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
provider "flotilla" {
  address = %q
  token   = "wrong"
}
resource "flotilla_deployment" "web" {
  name = "web"
  container {
    name  = "web"
    image = "nginx"
  }
}
`, f.URL),
			ExpectError: wrappedRE(`create deployment default/web: flotilla API: missing or invalid token \(HTTP 401\)`),
		}},
	})
}

// TestDeploymentResource_unknownAddress plans against a provider whose
// address is only known after apply, as when the cluster is created in the
// same run.
func TestDeploymentResource_unknownAddress(t *testing.T) {
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
resource "flotilla_deployment" "web" {
  name = "web"
  container {
    name  = "web"
    image = "nginx"
  }
}
`,
			PlanOnly:           true,
			ExpectNonEmptyPlan: true,
		}},
	})
}

// TestDeploymentResource_unknownAddressExisting plans changes to the
// provider's address for a deployment that exists: the refresh is skipped
// rather than failing the plan.
func TestDeploymentResource_unknownAddressExisting(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	resourceBlock := `
resource "flotilla_deployment" "web" {
  name = "web"
  container {
    name  = "web"
    image = "nginx"
  }
}
`
	unknownAddr := fmt.Sprintf(`
resource "terraform_data" "cluster" {
  input = %q
}
provider "flotilla" {
  address = terraform_data.cluster.output
  token   = %q
}
`, f.URL, f.Token)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/web"),
		Steps: []resource.TestStep{
			{Config: providerConfig(f) + resourceBlock},
			{
				Config:             unknownAddr + resourceBlock,
				PlanOnly:           true,
				ExpectNonEmptyPlan: true, // terraform_data is new
			},
			{
				Config: unknownAddr + resourceBlock,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionNoop),
				}},
			},
		},
	})
}
