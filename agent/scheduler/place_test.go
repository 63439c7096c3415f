package scheduler

import (
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// TestPlacement settles deployments on a fleet and checks where the last
// one's pods end up and why the rest could not be placed.
func TestPlacement(t *testing.T) {
	db := dep("db", 1, request(1000, 1024))
	tests := []struct {
		name     string
		nodes    []api.Node
		existing []api.Pod
		d        api.Deployment
		want     string // placement of d
		reason   string // the only reason, exactly; "" for none
	}{
		{
			name:  "spread 2/2/2",
			nodes: fleet(3),
			d:     dep("web", 6),
			want:  "n1:2 n2:2 n3:2",
		},
		{
			name:  "zone spread: 2 per zone",
			nodes: []api.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("b1", zone("b")), mkNode("b2", zone("b"))},
			d:     dep("web", 4),
			want:  "a1:1 a2:1 b1:1 b2:1",
		},
		{
			name:  "zone spread before node spread",
			nodes: []api.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("a3", zone("a")), mkNode("b1", zone("b"))},
			d:     dep("web", 4),
			want:  "a1:1 a2:1 b1:2",
		},
		{
			name:  "a node without a zone is a zone of its own",
			nodes: []api.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("x")},
			d:     dep("web", 4),
			want:  "a1:1 a2:1 x:2",
		},
		{
			name:     "spread counts existing pods",
			nodes:    fleet(2),
			existing: []api.Pod{podOn(dep("web", 3), "web-a", "n1"), podOn(dep("web", 3), "web-b", "n1")},
			d:        dep("web", 3),
			want:     "n1:2 n2:1",
		},
		{
			name:     "equal spread prefers the least requested",
			nodes:    fleet(2),
			existing: []api.Pod{podOn(db, "db-a", "n1")},
			d:        dep("web", 1),
			want:     "n2:1",
		},
		{
			name:     "least requested weighs capacity",
			nodes:    []api.Node{mkNode("n1", capacity(8000, 16384)), mkNode("n2")},
			existing: []api.Pod{podOn(dep("db", 1, request(500, 512)), "db-a", "n1")}, // n1 is 1/16 requested, n2 empty but small
			d:        dep("web", 1, request(1000, 1024)),
			want:     "n1:1",
		},
		{
			name:  "bin pack fills the first node",
			nodes: fleet(3),
			d:     dep("web", 5, request(1000, 1024), binPack),
			want:  "n1:4 n2:1",
		},
		{
			name:     "bin pack fills the most requested node",
			nodes:    fleet(3),
			existing: []api.Pod{podOn(db, "db-a", "n2")},
			d:        dep("web", 3, request(1000, 1024), binPack),
			want:     "n2:3",
		},
		{
			name:     "bin pack honours soft anti-affinity",
			nodes:    fleet(3),
			existing: []api.Pod{podOn(db, "db-a", "n2")},
			d:        dep("web", 3, request(1000, 1024), binPack, avoid("db", false, "")),
			want:     "n1:3",
		},
		{
			name:  "node selector",
			nodes: []api.Node{mkNode("n1"), mkNode("n2", label("disk", "ssd")), mkNode("n3", label("disk", "hdd"))},
			d:     dep("web", 2, selector("disk", "ssd")),
			want:  "n2:2",
		},
		{
			name:   "node selector mismatch",
			nodes:  []api.Node{mkNode("n1"), mkNode("n2", label("disk", "hdd"))},
			d:      dep("web", 1, selector("disk", "ssd")),
			reason: "cannot place 1 of 1 pods: 0/2 nodes available: 2 node selector mismatch",
		},
		{
			name:   "not ready, cordoned and draining nodes get nothing",
			nodes:  []api.Node{mkNode("n1", status(api.NodeDown)), mkNode("n2", status(api.NodeLeft)), mkNode("n3", cordon), mkNode("n4", drain)},
			d:      dep("web", 2),
			reason: "cannot place 2 of 2 pods: 0/4 nodes available: 2 not ready, 1 cordoned, 1 draining",
		},
		{
			name: "a node under disk pressure gets nothing",
			nodes: []api.Node{mkNode("n1", func(n *api.Node) {
				n.Conditions = []api.NodeCondition{{Type: api.NodeConditionDiskPressure, Message: "data dir 95% full"}}
			}), mkNode("n2", func(n *api.Node) {
				n.Conditions = []api.NodeCondition{{Type: api.NodeConditionRuntimeUnhealthy}}
			})},
			d:    dep("web", 2),
			want: "n2:2",
		},
		{
			name: "disk pressure is a reason",
			nodes: []api.Node{mkNode("n1", func(n *api.Node) {
				n.Conditions = []api.NodeCondition{{Type: api.NodeConditionDiskPressure}}
			})},
			d:      dep("web", 1),
			reason: "cannot place 1 of 1 pods: 0/1 nodes available: 1 disk pressure",
		},
		{
			name:   "insufficient cpu",
			nodes:  []api.Node{mkNode("n1", capacity(1000, 8192)), mkNode("n2", capacity(1500, 8192))},
			d:      dep("web", 1, request(2000, 256)),
			reason: "cannot place 1 of 1 pods: 0/2 nodes available: 2 insufficient cpu",
		},
		{
			name:   "insufficient memory, partly placed",
			nodes:  fleet(1, capacity(4000, 300)),
			d:      dep("web", 2, request(100, 256)),
			want:   "n1:1",
			reason: "cannot place 1 of 2 pods: 0/1 nodes available: 1 insufficient memory",
		},
		{
			name:     "load counts other deployments' pods",
			nodes:    fleet(1),
			existing: []api.Pod{podOn(dep("db", 1, request(3000, 128)), "db-a", "n1")},
			d:        dep("web", 1, request(2000, 128)),
			reason:   "cannot place 1 of 1 pods: 0/1 nodes available: 1 insufficient cpu",
		},
		{
			name:   "reserved resources are not allocatable",
			nodes:  []api.Node{mkNode("n1", capacity(1000, 8192), reserve(600, 0)), mkNode("n2", capacity(1000, 1024), reserve(0, 1000))},
			d:      dep("web", 2, request(500, 128)),
			reason: "cannot place 2 of 2 pods: 0/2 nodes available: 1 insufficient cpu, 1 insufficient memory",
		},
		{
			name:  "reserve leaves the rest",
			nodes: fleet(1, capacity(1000, 8192), reserve(500, 0)),
			d:     dep("web", 2, request(250, 128)),
			want:  "n1:2",
		},
		{
			name:   "parts sort by count, then phrase",
			nodes:  []api.Node{mkNode("n1", cordon), mkNode("n2", capacity(0, 8192)), mkNode("n3", capacity(4000, 0)), mkNode("n4", capacity(4000, 0)), mkNode("n5", cordon)},
			d:      dep("web", 1),
			reason: "cannot place 1 of 1 pods: 0/5 nodes available: 2 cordoned, 2 insufficient memory, 1 insufficient cpu",
		},
		{
			name:     "host port in use",
			nodes:    fleet(3),
			existing: []api.Pod{podOn(dep("lb", 1, hostPortOpt(8080, "")), "lb-a", "n1")},
			d:        dep("web", 3, hostPortOpt(8080, "tcp")),
			want:     "n2:1 n3:1",
			reason:   "cannot place 1 of 3 pods: 0/3 nodes available: 3 host port 8080/tcp in use",
		},
		{
			name:     "host port of another protocol is free",
			nodes:    fleet(1),
			existing: []api.Pod{podOn(dep("dns", 1, hostPortOpt(53, "udp")), "dns-a", "n1")},
			d:        dep("web", 1, hostPortOpt(53, "")),
			want:     "n1:1",
		},
		{
			name:   "one pod per node with a host port",
			nodes:  fleet(2),
			d:      dep("web", 3, hostPortOpt(9000, "udp")),
			want:   "n1:1 n2:1",
			reason: "cannot place 1 of 3 pods: 0/2 nodes available: 2 host port 9000/udp in use",
		},
		{
			name:     "required anti-affinity against another deployment",
			nodes:    fleet(3),
			existing: []api.Pod{podOn(db, "db-a", "n1")},
			d:        dep("web", 4, avoid("db", true, "")),
			want:     "n2:2 n3:2",
		},
		{
			name:   "required anti-affinity with itself: one per node",
			nodes:  fleet(2),
			d:      dep("web", 3, avoid("web", true, "node")),
			want:   "n1:1 n2:1",
			reason: "cannot place 1 of 3 pods: 0/2 nodes available: 2 anti-affinity",
		},
		{
			name:   "required zone anti-affinity: one per zone",
			nodes:  []api.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("b1", zone("b")), mkNode("x")},
			d:      dep("web", 4, avoid("web", true, api.TopologyZone)),
			want:   "a1:1 b1:1 x:1",
			reason: "cannot place 1 of 4 pods: 0/4 nodes available: 4 anti-affinity",
		},
		{
			name:     "required zone anti-affinity against another deployment",
			nodes:    []api.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("b1", zone("b"))},
			existing: []api.Pod{podOn(db, "db-a", "a1")},
			d:        dep("web", 2, avoid("db", true, api.TopologyZone)),
			want:     "b1:2",
		},
		{
			name:     "required anti-affinity both ways: a placed pod's rule keeps others off its node",
			nodes:    fleet(3),
			existing: []api.Pod{podOn(dep("db", 1, avoid("web", true, "")), "db-a", "n1")},
			d:        dep("web", 4),
			want:     "n2:2 n3:2",
		},
		{
			name:     "required anti-affinity both ways, by zone",
			nodes:    []api.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("b1", zone("b"))},
			existing: []api.Pod{podOn(dep("db", 1, avoid("web", true, api.TopologyZone)), "db-a", "a1")},
			d:        dep("web", 2),
			want:     "b1:2",
		},
		{
			name:     "a placed pod's soft anti-affinity does not bind others",
			nodes:    fleet(1),
			existing: []api.Pod{podOn(dep("db", 1, avoid("web", false, "")), "db-a", "n1")},
			d:        dep("web", 1),
			want:     "n1:1",
		},
		{
			name:     "both ways: nowhere left",
			nodes:    fleet(1),
			existing: []api.Pod{podOn(dep("db", 1, avoid("web", true, "")), "db-a", "n1")},
			d:        dep("web", 1),
			reason:   "cannot place 1 of 1 pods: 0/1 nodes available: 1 anti-affinity",
		},
		{
			name:     "soft anti-affinity prefers other nodes",
			nodes:    fleet(3),
			existing: []api.Pod{podOn(db, "db-a", "n1")},
			d:        dep("web", 2, avoid("db", false, "")),
			want:     "n2:1 n3:1",
		},
		{
			name:     "soft anti-affinity yields to spread",
			nodes:    fleet(3),
			existing: []api.Pod{podOn(db, "db-a", "n1")},
			d:        dep("web", 3, avoid("db", false, "")),
			want:     "n1:1 n2:1 n3:1",
		},
		{
			name:     "soft zone anti-affinity",
			nodes:    []api.Node{mkNode("a1", zone("a")), mkNode("a2", zone("a")), mkNode("b1", zone("b"))},
			existing: []api.Pod{podOn(db, "db-a", "a1")},
			d:        dep("web", 1, avoid("db", false, api.TopologyZone)),
			want:     "b1:1",
		},
		{
			name:     "first failing constraint counts",
			nodes:    []api.Node{mkNode("n1", status(api.NodeDown), cordon), mkNode("n2", cordon, label("disk", "ssd")), mkNode("n3", capacity(0, 0)), mkNode("n4", label("disk", "ssd"))},
			existing: []api.Pod{podOn(db, "db-a", "n4")},
			d:        dep("web", 1, selector("disk", "ssd"), avoid("db", true, "")),
			reason:   "cannot place 1 of 1 pods: 0/4 nodes available: 1 anti-affinity, 1 cordoned, 1 node selector mismatch, 1 not ready",
		},
		{
			name:   "no nodes",
			d:      dep("web", 1),
			reason: "cannot place 1 of 1 pods: 0/0 nodes available: the fleet has no nodes",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.nodes...)
			h.pods = tt.existing
			h.deploy(tt.d)
			plan := h.settle()[tt.d.Name]
			if got := h.placement(tt.d.Name); got != tt.want {
				t.Errorf("placement %q, want %q", got, tt.want)
			}
			switch {
			case tt.reason == "" && len(plan.Reasons) > 0:
				t.Errorf("unexpected reasons %q", plan.Reasons)
			case tt.reason != "" && (len(plan.Reasons) != 1 || plan.Reasons[0] != tt.reason):
				t.Errorf("reasons %q, want [%q]", plan.Reasons, tt.reason)
			}
		})
	}
}
