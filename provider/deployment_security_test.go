package provider

import (
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/api"
)

const lockedAddr = "flotilla_deployment.locked"

// lockedConfig is a deployment whose containers use security and
// pids_limit: one every setting, one an empty capabilities add list.
func lockedConfig(f *fakeAgent) string {
	return providerConfig(f) + `
resource "flotilla_deployment" "locked" {
  name = "locked"
  container {
    name       = "web"
    image      = "nginx"
    pids_limit = 200
    security {
      run_as_user               = 1000
      run_as_group              = 0
      read_only_root_filesystem = true
      capabilities {
        drop = ["ALL"]
        add  = ["NET_BIND_SERVICE"]
      }
    }
  }
  container {
    name  = "side"
    image = "busybox"
    security {
      capabilities {
        add = []
      }
    }
  }
}
`
}

// lockedPlain is lockedConfig without pids_limit and security.
func lockedPlain(f *fakeAgent) string {
	return providerConfig(f) + `
resource "flotilla_deployment" "locked" {
  name = "locked"
  container {
    name  = "web"
    image = "nginx"
  }
  container {
    name  = "side"
    image = "busybox"
  }
}
`
}

func wantLocked() api.Deployment {
	uid, gid := int64(1000), int64(0)
	return api.Deployment{Namespace: "default", Name: "locked", Replicas: 1, Containers: []api.Container{
		{Name: "web", Image: "nginx", PidsLimit: 200, Security: &api.Security{
			RunAsUser: &uid, RunAsGroup: &gid, ReadOnlyRootFilesystem: true,
			Capabilities: &api.Capabilities{Drop: []string{"ALL"}, Add: []string{"NET_BIND_SERVICE"}},
		}},
		{Name: "side", Image: "busybox", Security: &api.Security{Capabilities: &api.Capabilities{}}},
	}}
}

// TestDeploymentResource_security sends every security setting and
// pids_limit to the agent, reads them back (import, drift), and removes
// them again: then the agent gets containers without them, whose spec
// (and so spec hash on the nodes) is what it was before they existed.
func TestDeploymentResource_security(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	web := tfjsonpath.New("container").AtSliceIndex(0)
	side := tfjsonpath.New("container").AtSliceIndex(1)
	plain := wantLocked()
	plain.Containers = []api.Container{{Name: "web", Image: "nginx"}, {Name: "side", Image: "busybox"}}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/locked"),
		Steps: []resource.TestStep{
			{
				Config: lockedConfig(f),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(lockedAddr, web.AtMapKey("pids_limit"), knownvalue.Int64Exact(200)),
					statecheck.ExpectKnownValue(lockedAddr, web.AtMapKey("security").AtSliceIndex(0), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"run_as_user":               knownvalue.Int64Exact(1000),
						"run_as_group":              knownvalue.Int64Exact(0),
						"read_only_root_filesystem": knownvalue.Bool(true),
						"capabilities": knownvalue.ListExact([]knownvalue.Check{knownvalue.ObjectExact(map[string]knownvalue.Check{
							"add":  knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("NET_BIND_SERVICE")}),
							"drop": knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("ALL")}),
						})}),
					})),
					statecheck.ExpectKnownValue(lockedAddr, side.AtMapKey("pids_limit"), knownvalue.Null()),
					statecheck.ExpectKnownValue(lockedAddr, side.AtMapKey("security").AtSliceIndex(0), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"run_as_user":               knownvalue.Null(),
						"run_as_group":              knownvalue.Null(),
						"read_only_root_filesystem": knownvalue.Bool(false),
						"capabilities": knownvalue.ListExact([]knownvalue.Check{knownvalue.ObjectExact(map[string]knownvalue.Check{
							"add":  knownvalue.ListSizeExact(0),
							"drop": knownvalue.Null(),
						})}),
					})),
				},
				Check: checkSpec(f, "default/locked", wantLocked()),
			},
			{
				ResourceName:      lockedAddr,
				ImportState:       true,
				ImportStateId:     "default/locked",
				ImportStateVerify: true,
			},
			{
				// Drift in every setting is seen and undone.
				PreConfig: func() {
					f.edit("default/locked", func(d *api.Deployment) {
						d.Containers[0].PidsLimit = 0
						d.Containers[0].Security.ReadOnlyRootFilesystem = false
						d.Containers[0].Security.RunAsGroup = nil
						d.Containers[0].Security.Capabilities.Add = []string{"SYS_ADMIN"}
						d.Containers[1].Security = nil
					})
				},
				Config: lockedConfig(f),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(lockedAddr, plancheck.ResourceActionUpdate),
				}},
				Check: checkSpec(f, "default/locked", wantLocked()),
			},
			{
				// Without them, the agent gets containers as before they existed.
				Config: lockedPlain(f),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(lockedAddr, web.AtMapKey("pids_limit"), knownvalue.Null()),
					statecheck.ExpectKnownValue(lockedAddr, web.AtMapKey("security"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(lockedAddr, side.AtMapKey("security"), knownvalue.ListSizeExact(0)),
				},
				Check: checkSpec(f, "default/locked", plain),
			},
			{
				// An explicit default plans nothing but the block, which is
				// a change of the container's spec.
				Config: strings.Replace(lockedPlain(f), `image = "nginx"`, `image = "nginx"
    security {
      read_only_root_filesystem = false
    }`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(lockedAddr, plancheck.ResourceActionUpdate),
				}},
			},
			{
				ResourceName:      lockedAddr,
				ImportState:       true,
				ImportStateId:     "default/locked",
				ImportStateVerify: true,
			},
		},
	})
}
