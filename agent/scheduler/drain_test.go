package scheduler

import (
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// availability fails the test when a plan leaves a deployment with fewer
// than min(ready before, Replicas) - slack ready pods, or more than
// Replicas+1 live ones.
func availability(h *harness, slack int) {
	before := map[string]int{}
	h.check = func(d api.Deployment, plan Plan) {
		h.t.Helper()
		ready := h.readyPods(d.Name)
		if b, ok := before[d.Name]; ok && ready < min(b, d.Replicas)-slack {
			h.t.Errorf("%s: ready pods fell from %d to %d (replicas %d) with %v", d.Name, b, ready, d.Replicas, plan)
		}
		live := 0
		for _, p := range h.podsOf(d.Name) {
			if !p.Stop {
				live++
			}
		}
		if live > d.Replicas+1 {
			h.t.Errorf("%s: %d live pods after %v; at most replicas+1 = %d", d.Name, live, plan, d.Replicas+1)
		}
		before[d.Name] = h.readyPods(d.Name)
	}
}

// TestDrainOneStepAtATime drains a node and checks each step.
func TestDrainOneStepAtATime(t *testing.T) {
	h := newHarness(t, fleet(3)...)
	h.deploy(dep("web", 4))
	h.settle()
	if got := h.placement("web"); got != "n1:2 n2:1 n3:1" {
		t.Fatalf("placement before the drain %q", got)
	}
	availability(h, 1)
	h.setNode("n1", drain)

	var steps []string
	for range 10 {
		plan := h.step()["web"]
		h.progress()
		steps = append(steps, plan.String())
		if len(plan.Create)+len(plan.Stop) == 0 {
			break
		}
	}
	want := []string{
		"create web-p5 on n2 (generation 1); stop default/web-p4 (node drained)",
		"create web-p6 on n3 (generation 1); stop default/web-p1 (node drained)",
		"nothing to do",
	}
	if !reflect.DeepEqual(steps, want) {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
	if got := h.placement("web"); got != "n2:2 n3:2" {
		t.Errorf("placement after the drain %q, want the draining node empty", got)
	}
}

func TestDrain(t *testing.T) {
	tests := []struct {
		name    string
		nodes   []api.Node
		deps    []api.Deployment
		healthy func(api.Pod) bool // before the drain
		drain   string
		change  func(h *harness) // with the drain
		want    map[string]string
		reason  string // of web, after the drain
	}{
		{
			name:  "spread 2/2/2 moves off one node",
			nodes: fleet(3),
			deps:  []api.Deployment{dep("web", 6)},
			drain: "n1",
			want:  map[string]string{"web": "n2:3 n3:3"},
		},
		{
			name:  "every deployment moves at its own pace",
			nodes: fleet(3),
			deps:  []api.Deployment{dep("web", 3), dep("api", 5), dep("one", 1)},
			drain: "n1",
			want:  map[string]string{"web": "n2:2 n3:1", "api": "n2:3 n3:2", "one": "n3:1"},
		},
		{
			name:    "not-ready pods go at once",
			nodes:   fleet(2),
			deps:    []api.Deployment{dep("web", 4)},
			healthy: func(p api.Pod) bool { return p.Node != "n1" },
			drain:   "n1",
			want:    map[string]string{"web": "n2:4"},
		},
		{
			name:   "a pod that cannot move costs one step of availability, no more",
			nodes:  fleet(3),
			deps:   []api.Deployment{dep("web", 3, avoid("web", true, ""))},
			drain:  "n1",
			want:   map[string]string{"web": "n2:1 n3:1"},
			reason: "cannot place 1 of 3 pods: 0/3 nodes available: 2 anti-affinity, 1 draining",
		},
		{
			name:  "drain during a rollout",
			nodes: fleet(3),
			deps:  []api.Deployment{dep("web", 5)},
			drain: "n1",
			change: func(h *harness) {
				h.update("web", true, func(d *api.Deployment) { d.Containers[0].Image = "web:2" })
			},
			want: map[string]string{"web": "n2:3 n3:2"},
		},
		{
			name:  "drain and scale down",
			nodes: fleet(3),
			deps:  []api.Deployment{dep("web", 6)},
			drain: "n2",
			change: func(h *harness) {
				h.update("web", false, func(d *api.Deployment) { d.Replicas = 4 })
			},
			want: map[string]string{"web": "n1:2 n3:2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.nodes...)
			h.deploy(tt.deps...)
			h.healthy = tt.healthy
			h.settle()
			h.healthy = nil
			availability(h, 1)
			h.setNode(tt.drain, drain)
			if tt.change != nil {
				tt.change(h)
			}
			plans := h.settle()
			for name, want := range tt.want {
				if got := h.placement(name); got != want {
					t.Errorf("%s: placement %q, want %q", name, got, want)
				}
			}
			for _, p := range h.pods {
				if p.Node == tt.drain {
					t.Errorf("pod %s left on the drained node", p.ID())
				}
			}
			if got := strings.Join(plans["web"].Reasons, "; "); got != tt.reason {
				t.Errorf("web reasons %q, want %q", got, tt.reason)
			}
		})
	}
}

// TestDrainStopReasons: only the drain's own stops carry a reason.
func TestDrainStopReasons(t *testing.T) {
	d := dep("web", 2, func(d *api.Deployment) { d.Generation = 2 })
	old := podOn(dep("web", 2), "web-old", "n2") // a rollout stops it
	in := Input{
		Deployment: d,
		Nodes:      []api.Node{mkNode("n1", drain), mkNode("n2"), mkNode("n3")},
		Pods:       []api.Pod{podOn(d, "web-a", "n1"), podOn(d, "web-b", "n2"), old},
	}
	in.NodePods = map[string][]api.Pod{"n1": in.Pods[:1], "n2": in.Pods[1:]}
	plan := Reconcile(in, names())
	wantStop := []string{"default/web-old", "default/web-a"}
	if !reflect.DeepEqual(plan.Stop, wantStop) {
		t.Errorf("stop %v, want %v", plan.Stop, wantStop)
	}
	if want := map[string]string{"default/web-a": api.StopDrained}; !reflect.DeepEqual(plan.StopReasons, want) {
		t.Errorf("stop reasons %v, want %v", plan.StopReasons, want)
	}
	if got := placed(plan); !reflect.DeepEqual(got, []string{"web-p1@n3"}) {
		t.Errorf("create %v, want the replacement on n3", got)
	}
}

// TestRolloutKeepsAvailability: with no drain, a rollout over a fleet never
// has fewer than Replicas ready pods, and spreads the new ones.
func TestRolloutKeepsAvailability(t *testing.T) {
	h := newHarness(t, fleet(3)...)
	h.deploy(dep("web", 6), dep("api", 2, hostPortOpt(8080, "")))
	h.settle()
	availability(h, 0)
	for _, name := range []string{"web", "api"} {
		h.update(name, true, func(d *api.Deployment) { d.Containers[0].Image = d.Name + ":2" })
	}
	h.settle()
	if got := h.placement("web"); got != "n1:2 n2:2 n3:2" {
		t.Errorf("web placement %q, want 2/2/2", got)
	}
	if got := h.placement("api"); got != "n1:1 n2:1" && got != "n1:1 n3:1" && got != "n2:1 n3:1" {
		t.Errorf("api placement %q, want one pod per node", got)
	}
	for _, p := range h.pods {
		if p.Generation != 2 {
			t.Errorf("pod %s of generation %d left", p.ID(), p.Generation)
		}
	}
}
