package scheduler

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// TestPlacementDeterministic: the plan does not depend on the order of
// nodes, pods or a node's pods, with every ranking rule in play.
func TestPlacementDeterministic(t *testing.T) {
	var nodes []api.Node
	for i := range 12 {
		opts := []nodeOpt{zone(fmt.Sprintf("z%d", i%3)), capacity(int64(2000+500*(i%4)), 8192)}
		if i == 5 {
			opts = append(opts, drain)
		}
		nodes = append(nodes, mkNode(fmt.Sprintf("n%02d", i), opts...))
	}
	db := dep("db", 4)
	h := newHarness(t, nodes...)
	for i := range 4 {
		h.pods = append(h.pods, podOn(db, fmt.Sprintf("db-%d", i), nodes[i*3].Name))
	}
	web := dep("web", 20, request(300, 256), avoid("db", false, api.TopologyZone), avoid("web", false, ""))
	h.deploy(web)
	h.settle()
	h.setNode("n01", drain)
	h.update("web", true, func(d *api.Deployment) { d.Replicas = 18; d.Containers[0].Image = "web:2" })

	for _, placement := range []string{"", api.PlacementBinPack} {
		d := h.deployments[0]
		d.Placement = placement
		in := Input{Deployment: d, Pods: h.podsOf("web"), Nodes: h.nodes, NodePods: h.nodePods()}
		fresh := func() func() string { // unlike names(), not yet used by the harness
			n := 0
			return func() string { n++; return fmt.Sprintf("q%d", n) }
		}
		want := Reconcile(in, fresh())
		if len(want.Create) == 0 || len(want.Stop) == 0 {
			t.Fatalf("%q: plan %v does too little to show anything", placement, want)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 30 {
			rng.Shuffle(len(in.Nodes), func(i, j int) { in.Nodes[i], in.Nodes[j] = in.Nodes[j], in.Nodes[i] })
			rng.Shuffle(len(in.Pods), func(i, j int) { in.Pods[i], in.Pods[j] = in.Pods[j], in.Pods[i] })
			for _, ps := range in.NodePods {
				rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
			}
			if got := Reconcile(in, fresh()); !reflect.DeepEqual(got, want) {
				t.Fatalf("%q: plan changed with input order:\n got %v\nwant %v", placement, got, want)
			}
		}
	}
}

// TestOddInput: nil maps, zero capacity, overcommitted nodes and pods on
// unknown nodes neither panic nor place pods where they do not fit.
func TestOddInput(t *testing.T) {
	zero := dep("zero", 2, request(0, 0))
	tests := []struct {
		name   string
		in     Input
		want   []string
		reason string
	}{
		{
			name: "nothing at all",
			in:   Input{},
		},
		{
			name:   "nil maps and a zero-capacity node",
			in:     Input{Deployment: api.Deployment{Name: "x", Replicas: 1, Containers: []api.Container{{CPURequest: 1}}}, Nodes: []api.Node{{Name: "n1", Status: api.NodeReady}}},
			reason: "cannot place 1 of 1 pods: 0/1 nodes available: 1 insufficient cpu",
		},
		{
			name: "a pod without requests fits an overcommitted node",
			in: Input{Deployment: zero, Nodes: []api.Node{mkNode("n1", capacity(100, 100))},
				NodePods: map[string][]api.Pod{"n1": {podOn(dep("db", 1, request(5000, 5000)), "db-a", "n1")}}},
			want: []string{"zero-p1@n1", "zero-p2@n1"},
		},
		{
			name:   "reserve above capacity",
			in:     Input{Deployment: dep("web", 1), Nodes: []api.Node{mkNode("n1", reserve(5000, 0)), mkNode("n2", reserve(0, 9000))}},
			reason: "cannot place 1 of 1 pods: 0/2 nodes available: 1 insufficient cpu, 1 insufficient memory",
		},
		{
			name: "pods on unknown nodes and an empty anti-affinity rule",
			in: Input{
				Deployment: dep("web", 2, func(d *api.Deployment) { d.AntiAffinity = []api.AntiAffinity{{Topology: "rack"}} }),
				Pods:       []api.Pod{podOn(dep("web", 1), "web-a", "gone")},
				Nodes:      fleet(2),
				NodePods:   map[string][]api.Pod{"gone": {podOn(dep("web", 1), "web-a", "gone")}},
			},
			want: []string{"web-p1@n1"},
		},
		{
			name:   "negative replicas",
			in:     Input{Deployment: dep("web", -1), Nodes: fleet(1)},
			reason: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := Reconcile(tt.in, names())
			if got := placed(plan); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("create %v, want %v", got, tt.want)
			}
			if got := fmt.Sprint(plan.Reasons); tt.reason != "" && got != "["+tt.reason+"]" || tt.reason == "" && len(plan.Reasons) > 0 {
				t.Errorf("reasons %s, want %q", got, tt.reason)
			}
			_ = CheckCapacity(tt.in)
		})
	}
}
