package scheduler

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// benchFleet is n nodes of 4000m and 8192 MiB in 10 zones.
func benchFleet(n int) []api.Node {
	nodes := make([]api.Node, n)
	for i := range nodes {
		nodes[i] = mkNode(fmt.Sprintf("n%04d", i), zone(fmt.Sprintf("z%d", i%10)))
	}
	return nodes
}

// counter names pods without the cost of randomness.
func counter() func() string {
	n := 0
	return func() string { n++; return strconv.Itoa(n) }
}

// BenchmarkPlace places 10,000 pods of 100m and 128 MiB on 1,000 nodes, as
// the controller does: one Reconcile of a 10,000-replica deployment, or
// 100 of 100 replicas each, every placement counting against the next.
func BenchmarkPlace(b *testing.B) {
	const pods = 10000
	nodes := benchFleet(1000)
	for _, placement := range []string{api.PlacementSpread, api.PlacementBinPack} {
		for _, deployments := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/%dx%d", placement, deployments, pods/deployments), func(b *testing.B) {
				ds := make([]api.Deployment, deployments)
				for i := range ds {
					ds[i] = dep(fmt.Sprintf("d%03d", i), pods/deployments, func(d *api.Deployment) { d.Placement = placement })
				}
				for b.Loop() {
					nodePods := map[string][]api.Pod{}
					names := counter()
					placed := 0
					for _, d := range ds {
						plan := Reconcile(Input{Deployment: d, Nodes: nodes, NodePods: nodePods}, names)
						if len(plan.Reasons) > 0 {
							b.Fatal(plan.Reasons)
						}
						for _, p := range plan.Create {
							nodePods[p.Node] = append(nodePods[p.Node], p)
						}
						placed += len(plan.Create)
					}
					if placed != pods {
						b.Fatalf("placed %d pods, want %d", placed, pods)
					}
				}
				b.ReportMetric(float64(pods*b.N)/b.Elapsed().Seconds(), "placements/s")
			})
		}
	}
}
