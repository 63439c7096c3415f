package provider

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
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
					checkCalls(f, createCall, 1),
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
				Check: checkCalls(f, createCall, 2),
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

// schedConfig is a deployment using every scheduling and probe option.
func schedConfig(f *fakeAgent) string {
	return providerConfig(f) + `
resource "flotilla_deployment" "sched" {
  name              = "sched"
  replicas          = 3
  placement         = "bin_pack"
  min_ready_seconds = 0
  self_fencing      = true
  labels = {
    app = "sched"
  }
  node_selector = {
    disk = "ssd"
  }

  anti_affinity {
    labels = {
      app = "sched"
    }
    required = true
  }
  anti_affinity {
    labels = {
      app = "db"
    }
    topology = "zone"
  }

  container {
    name  = "web"
    image = "nginx"
    port {
      container_port = 8080
      host_port      = 80
    }
    liveness_probe {
      http_get {
        port = 8080
      }
    }
    readiness_probe {
      http_get {
        path = "/healthz"
        port = 8080
      }
      initial_delay_seconds = 2
      period_seconds        = 5
      timeout_seconds       = 2
      success_threshold     = 2
      failure_threshold     = 6
    }
  }

  container {
    name  = "sidecar"
    image = "busybox"
    liveness_probe {
      exec {
        command = ["cat", "/tmp/alive"]
      }
    }
    readiness_probe {
      tcp_socket {
        port = 9000
      }
    }
  }
}
`
}

// schedPlain is schedConfig without any of the options: their defaults.
func schedPlain(f *fakeAgent) string {
	return providerConfig(f) + `
resource "flotilla_deployment" "sched" {
  name     = "sched"
  replicas = 3
  labels = {
    app = "sched"
  }
  container {
    name  = "web"
    image = "nginx"
    port {
      container_port = 8080
    }
  }
  container {
    name  = "sidecar"
    image = "busybox"
  }
}
`
}

// wantSched is what schedConfig sends the agent.
func wantSched() api.Deployment {
	zero := 0
	defaults := func(p api.Probe) *api.Probe { p = p.WithDefaults(); return &p }
	return api.Deployment{
		Namespace: "default", Name: "sched", Replicas: 3, Labels: map[string]string{"app": "sched"},
		NodeSelector: map[string]string{"disk": "ssd"},
		Placement:    api.PlacementBinPack,
		AntiAffinity: []api.AntiAffinity{
			{Labels: map[string]string{"app": "sched"}, Required: true},
			{Labels: map[string]string{"app": "db"}, Topology: "zone"},
		},
		MinReadySeconds: &zero,
		SelfFencing:     true,
		Containers: []api.Container{
			{
				Name: "web", Image: "nginx",
				Ports:         []api.Port{{ContainerPort: 8080, Protocol: "tcp", HostPort: 80}},
				LivenessProbe: defaults(api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/", Port: 8080}}),
				ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080},
					InitialDelaySeconds: 2, PeriodSeconds: 5, TimeoutSeconds: 2, SuccessThreshold: 2, FailureThreshold: 6},
			},
			{
				Name: "sidecar", Image: "busybox",
				LivenessProbe:  defaults(api.Probe{Exec: &api.ExecProbe{Command: []string{"cat", "/tmp/alive"}}}),
				ReadinessProbe: defaults(api.Probe{TCPSocket: &api.TCPSocketProbe{Port: 9000}}),
			},
		},
	}
}

// checkSpec compares the spec the agent holds for key with want.
func checkSpec(f *fakeAgent, key string, want api.Deployment) resource.TestCheckFunc {
	return func(*terraform.State) error {
		got, ok := f.deployment(key)
		if !ok {
			return fmt.Errorf("deployment %s not in the agent", key)
		}
		got.Generation, got.Status = 0, api.DeploymentStatus{}
		if !reflect.DeepEqual(got, want) {
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(want)
			return fmt.Errorf("agent has\n%s\nwant\n%s", a, b)
		}
		return nil
	}
}

const schedAddr = "flotilla_deployment.sched"

// TestDeploymentResource_schedulingAndProbes sends every scheduling and
// probe option to the agent, reads them back (import, drift), and removes
// them again.
func TestDeploymentResource_schedulingAndProbes(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	at := func(steps ...any) tfjsonpath.Path {
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
	plain := wantSched()
	plain.NodeSelector, plain.Placement, plain.AntiAffinity, plain.MinReadySeconds, plain.SelfFencing = nil, "", nil, nil, false
	plain.Containers = []api.Container{
		{Name: "web", Image: "nginx", Ports: []api.Port{{ContainerPort: 8080, Protocol: "tcp"}}},
		{Name: "sidecar", Image: "busybox"},
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/sched"),
		Steps: []resource.TestStep{
			{
				Config: schedConfig(f),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(schedAddr, at("placement"), knownvalue.StringExact("bin_pack")),
					statecheck.ExpectKnownValue(schedAddr, at("min_ready_seconds"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue(schedAddr, at("self_fencing"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue(schedAddr, at("node_selector"), knownvalue.MapExact(map[string]knownvalue.Check{"disk": knownvalue.StringExact("ssd")})),
					statecheck.ExpectKnownValue(schedAddr, at("anti_affinity", 0, "topology"), knownvalue.Null()),
					statecheck.ExpectKnownValue(schedAddr, at("anti_affinity", 1, "required"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue(schedAddr, at("container", 0, "port", 0, "host_port"), knownvalue.Int64Exact(80)),
					statecheck.ExpectKnownValue(schedAddr, at("container", 0, "liveness_probe", 0), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"http_get": knownvalue.ListExact([]knownvalue.Check{knownvalue.ObjectExact(map[string]knownvalue.Check{
							"path": knownvalue.StringExact("/"), "port": knownvalue.Int64Exact(8080),
						})}),
						"tcp_socket":            knownvalue.ListSizeExact(0),
						"exec":                  knownvalue.ListSizeExact(0),
						"initial_delay_seconds": knownvalue.Int64Exact(0),
						"period_seconds":        knownvalue.Int64Exact(10),
						"timeout_seconds":       knownvalue.Int64Exact(1),
						"success_threshold":     knownvalue.Int64Exact(1),
						"failure_threshold":     knownvalue.Int64Exact(3),
					})),
					statecheck.ExpectKnownValue(schedAddr, at("container", 1, "port"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(schedAddr, at("container", 1, "readiness_probe", 0, "tcp_socket", 0, "port"), knownvalue.Int64Exact(9000)),
				},
				Check: checkSpec(f, "default/sched", wantSched()),
			},
			{
				ResourceName:      schedAddr,
				ImportState:       true,
				ImportStateId:     "default/sched",
				ImportStateVerify: true,
			},
			{
				// Drift in every new field is seen and undone.
				PreConfig: func() {
					f.edit("default/sched", func(d *api.Deployment) {
						d.NodeSelector, d.Placement, d.MinReadySeconds, d.SelfFencing = nil, "", nil, false
						d.AntiAffinity[1].Topology = ""
						d.Containers[0].Ports[0].HostPort = 0
						d.Containers[0].ReadinessProbe.PeriodSeconds = 30
						d.Containers[1].LivenessProbe = nil
					})
				},
				Config: schedConfig(f),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(schedAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(schedAddr, tfjsonpath.New("generation")),
				}},
				Check: checkSpec(f, "default/sched", wantSched()),
			},
			{
				// Without the options: the agent gets their zero values
				// (what agents that predate them accept), the state their defaults.
				Config: schedPlain(f),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(schedAddr, at("placement"), knownvalue.StringExact("spread")),
					statecheck.ExpectKnownValue(schedAddr, at("min_ready_seconds"), knownvalue.Int64Exact(1)),
					statecheck.ExpectKnownValue(schedAddr, at("self_fencing"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue(schedAddr, at("node_selector"), knownvalue.Null()),
					statecheck.ExpectKnownValue(schedAddr, at("anti_affinity"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(schedAddr, at("container", 0, "port", 0, "host_port"), knownvalue.Null()),
					statecheck.ExpectKnownValue(schedAddr, at("container", 0, "liveness_probe"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(schedAddr, at("container", 0, "readiness_probe"), knownvalue.ListSizeExact(0)),
				},
				Check: checkSpec(f, "default/sched", plain),
			},
			{
				// Explicit defaults plan nothing.
				Config: strings.Replace(schedPlain(f), `replicas = 3`, `replicas = 3
  placement         = "spread"
  min_ready_seconds = 1
  self_fencing      = false`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
			},
			{
				ResourceName:      schedAddr,
				ImportState:       true,
				ImportStateId:     "sched",
				ImportStateVerify: true,
			},
		},
	})
}

// TestDeploymentResource_unschedulableFailsFast fails the apply as soon as
// the agent reports pods it cannot place, saying what to do.
func TestDeploymentResource_unschedulableFailsFast(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	const failure = "cannot place pods: cannot place 3 of 6 pods: 0/5 nodes available: 3 insufficient memory, 2 cordoned"
	f.failImages["nginx:huge"] = failure
	start := time.Now()
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/big"),
		Steps: []resource.TestStep{{
			Config: providerConfig(f) + `
resource "flotilla_deployment" "big" {
  name     = "big"
  replicas = 6
  container {
    name           = "app"
    image          = "nginx:huge"
    memory_request = 4096
  }
  timeouts {
    create = "2m"
  }
}
`,
			ExpectError: wrappedRE(regexp.QuoteMeta("rollout of default/big failed: " + failure + ". To make room, add nodes or free capacity, lower the containers' cpu_request or memory_request, uncordon nodes, or relax node_selector, anti_affinity or host_port.")),
		}},
	})
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("unschedulable rollout took %s to fail; want well under the 2m timeout", d)
	}
}
