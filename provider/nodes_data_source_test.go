package provider

import (
	"fmt"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/api"
)

const nodesAddr = "data.flotilla_nodes.all"

func TestNodesDataSource(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.setNodes(3, 1, "ready", false)
	f.mu.Lock()
	f.nodes[0].Status = "down"                                            // vm-2
	f.nodes[2].ReservedCPUMillis, f.nodes[2].ReservedMemoryMiB = 100, 256 // vm-0
	f.nodes[1].Unschedulable, f.nodes[1].Draining = true, true            // vm-1
	f.nodes[1].Conditions = []api.NodeCondition{{Type: api.NodeConditionDiskPressure, Message: "data dir 95% full"}}
	f.mu.Unlock()
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(map[string]string{api.EnvAddr: f.URL, api.EnvToken: f.Token}),
		Steps: []resource.TestStep{{
			Config: `data "flotilla_nodes" "all" {}`,
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("id"), knownvalue.StringExact(f.URL)),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("ready_count"), knownvalue.Int64Exact(2)),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("nodes"), knownvalue.ListSizeExact(3)),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("nodes").AtSliceIndex(0), knownvalue.ObjectExact(map[string]knownvalue.Check{
					"name":       knownvalue.StringExact("vm-0"),
					"address":    knownvalue.StringExact("10.0.1.10"),
					"pod_cidr":   knownvalue.StringExact("10.244.0.0/24"),
					"cpu_millis": knownvalue.Int64Exact(2000),
					"memory_mib": knownvalue.Int64Exact(4096),
					"status":     knownvalue.StringExact("ready"),
					"server":     knownvalue.Bool(true),
					"labels":     knownvalue.MapExact(map[string]knownvalue.Check{"zone": knownvalue.StringExact("a")}),

					"reserved_cpu_millis": knownvalue.Int64Exact(100),
					"reserved_memory_mib": knownvalue.Int64Exact(256),
					"unschedulable":       knownvalue.Bool(false),
					"draining":            knownvalue.Bool(false),
					"conditions":          knownvalue.MapExact(map[string]knownvalue.Check{}),
				})),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("nodes").AtSliceIndex(1).AtMapKey("conditions"),
					knownvalue.MapExact(map[string]knownvalue.Check{"DiskPressure": knownvalue.StringExact("data dir 95% full")})),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("nodes").AtSliceIndex(1).AtMapKey("unschedulable"), knownvalue.Bool(true)),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("nodes").AtSliceIndex(1).AtMapKey("draining"), knownvalue.Bool(true)),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("nodes").AtSliceIndex(1).AtMapKey("reserved_cpu_millis"), knownvalue.Int64Exact(0)),
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("nodes").AtSliceIndex(2).AtMapKey("status"), knownvalue.StringExact("down")),
			},
		}},
	})
}

// TestNodesDataSource_minReady waits through a fleet that first has no
// leader, then sees its nodes join one by one.
func TestNodesDataSource_minReady(t *testing.T) {
	t.Parallel()
	f := newFakeAgentTLS(t)
	f.setNodes(3, 3, "down", true)
	f.setUnavailable(2)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
data "flotilla_nodes" "all" {
  %s
  min_ready = 2
}
`, connectionBlock(f)),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(nodesAddr, tfjsonpath.New("ready_count"), knownvalue.Int64Exact(2)),
			},
		}},
	})
}

func TestNodesDataSource_minReadyTimeout(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.setNodes(2, 1, "down", false)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
data "flotilla_nodes" "all" {
  %s
  min_ready = 3
  timeouts {
    read = "1s"
  }
}
`, connectionBlock(f)),
			ExpectError: wrappedRE(`timed out after 1s waiting for 3 ready nodes at http://127\.0\.0\.1:\d+: 0 ready of 2 joined; vm-0 \(10\.0\.1\.10\) is down; vm-1 \(10\.0\.1\.11\) is down`),
		}},
	})
}
