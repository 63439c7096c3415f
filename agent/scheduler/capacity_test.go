package scheduler

import (
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

func TestCheckCapacity(t *testing.T) {
	web := dep("web", 6, request(1000, 1024))
	full := func(node string) []api.Pod { // four of web's pods fill a node
		var out []api.Pod
		for _, s := range []string{"a", "b", "c", "d"} {
			out = append(out, podOn(web, "web-"+node+s, node))
		}
		return out
	}
	tests := []struct {
		name  string
		nodes []api.Node
		pods  []api.Pod // on the fleet, of every deployment
		d     api.Deployment
		want  api.CapacityCheck
	}{
		{
			name:  "all fit",
			nodes: fleet(2),
			d:     web,
			want:  api.CapacityCheck{Replicas: 6, Placeable: 6},
		},
		{
			name:  "some fit",
			nodes: fleet(1),
			d:     web,
			want:  api.CapacityCheck{Replicas: 6, Placeable: 4, Reason: "0/1 nodes available: 1 insufficient cpu"},
		},
		{
			name:  "the deployment's own pods are left out",
			nodes: fleet(2),
			pods:  append(full("n1"), full("n2")...),
			d:     web,
			want:  api.CapacityCheck{Replicas: 6, Placeable: 6},
		},
		{
			name:  "other deployments' pods count",
			nodes: fleet(2),
			pods:  []api.Pod{podOn(dep("db", 1, request(3500, 512)), "db-a", "n1")},
			d:     web,
			want:  api.CapacityCheck{Replicas: 6, Placeable: 4, Reason: "0/2 nodes available: 2 insufficient cpu"},
		},
		{
			name:  "constraints apply",
			nodes: []api.Node{mkNode("n1", cordon), mkNode("n2", drain), mkNode("n3", status(api.NodeDown)), mkNode("n4")},
			d:     dep("web", 3, hostPortOpt(80, "")),
			want:  api.CapacityCheck{Replicas: 3, Placeable: 1, Reason: "0/4 nodes available: 1 cordoned, 1 draining, 1 host port 80/tcp in use, 1 not ready"},
		},
		{
			name:  "no replicas",
			nodes: fleet(1),
			d:     dep("web", 0),
			want:  api.CapacityCheck{},
		},
		{
			name: "no nodes",
			d:    web,
			want: api.CapacityCheck{Replicas: 6, Reason: "0/0 nodes available: the fleet has no nodes"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.nodes...)
			h.pods = tt.pods
			got := CheckCapacity(Input{Deployment: tt.d, Pods: h.podsOf(tt.d.Name), Nodes: tt.nodes, NodePods: h.nodePods()})
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
