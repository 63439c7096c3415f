package scheduler

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

// names returns a deterministic newName: "p1", "p2", ...
func names() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("p%d", n) }
}

func deployment(replicas int, gen uint64) api.Deployment {
	return api.Deployment{
		Namespace: "default", Name: "web", Replicas: replicas, Generation: gen,
		Labels: map[string]string{"app": "web"},
		Containers: []api.Container{{
			Name: "web", Image: fmt.Sprintf("nginx:%d", gen), Env: map[string]string{"A": "1"},
			CPURequest: 500, MemoryRequest: 256,
		}},
	}
}

func node(name string, cpu, mem int64) api.Node {
	return api.Node{Name: name, CPUMillis: cpu, MemoryMiB: mem, Status: api.NodeReady}
}

// running is a pod of web at gen on a node, created at index.
func running(name string, gen uint64, nodeName string, index uint64, ready bool) api.Pod {
	d := deployment(0, gen)
	return api.Pod{
		Namespace: "default", Name: name, Deployment: "web", Node: nodeName, Generation: gen,
		Labels: d.Labels, Containers: d.Containers, CreateIndex: index,
		Status: api.PodStatus{Phase: api.PodRunning, Ready: ready},
	}
}

func stopping(p api.Pod) api.Pod {
	p.Stop = true
	p.Status.Phase, p.Status.Ready = api.PodTerminating, false
	return p
}

// nodePods groups the non-stopped pods by node, as the caller does.
func nodePods(pods ...api.Pod) map[string][]api.Pod {
	m := map[string][]api.Pod{}
	for _, p := range pods {
		if !p.Stop {
			m[p.Node] = append(m[p.Node], p)
		}
	}
	return m
}

func input(d api.Deployment, nodes []api.Node, pods ...api.Pod) Input {
	return Input{Deployment: d, Pods: pods, Nodes: nodes, NodePods: nodePods(pods...)}
}

// placed renders the creates as "name@node".
func placed(p Plan) []string {
	var out []string
	for _, c := range p.Create {
		out = append(out, c.Name+"@"+c.Node)
	}
	return out
}

func TestReconcile(t *testing.T) {
	one := []api.Node{node("n1", 4000, 8192)}
	two := []api.Node{node("n1", 4000, 8192), node("n2", 4000, 8192)}
	other := func(name, nodeName string, cpu int64) api.Pod {
		return api.Pod{Namespace: "default", Name: name, Deployment: "db", Node: nodeName,
			Containers: []api.Container{{Name: "db", CPURequest: cpu, MemoryRequest: 128}}}
	}
	big := deployment(1, 1)
	big.Containers[0].CPURequest = 2000

	tests := []struct {
		name       string
		in         Input
		wantCreate []string
		wantStop   []string
		wantReason string // substring of the only reason
	}{
		{
			name:       "fresh create 3",
			in:         input(deployment(3, 1), one),
			wantCreate: []string{"web-p1@n1", "web-p2@n1", "web-p3@n1"},
		},
		{
			name:       "scale 3 to 5",
			in:         input(deployment(5, 1), one, running("web-a", 1, "n1", 1, true), running("web-b", 1, "n1", 2, true), running("web-c", 1, "n1", 3, true)),
			wantCreate: []string{"web-p1@n1", "web-p2@n1"},
		},
		{
			name: "scale 5 to 1 stops the newest",
			in: input(deployment(1, 1), one, running("web-a", 1, "n1", 1, true), running("web-b", 1, "n1", 2, true),
				running("web-c", 1, "n1", 3, true), running("web-d", 1, "n1", 4, true), running("web-e", 1, "n1", 5, true)),
			wantStop: []string{"default/web-e", "default/web-d", "default/web-c", "default/web-b"},
		},
		{
			name: "scale down stops not-ready pods first",
			in: input(deployment(2, 1), one, running("web-a", 1, "n1", 1, false), running("web-b", 1, "n1", 2, true),
				running("web-c", 1, "n1", 3, true)),
			wantStop: []string{"default/web-a"},
		},
		{
			name:     "steady state",
			in:       input(deployment(2, 1), one, running("web-a", 1, "n1", 1, true), running("web-b", 1, "n1", 2, false)),
			wantStop: nil,
		},
		{
			name:       "stopping pods do not count",
			in:         input(deployment(2, 1), one, running("web-a", 1, "n1", 1, true), stopping(running("web-b", 1, "n1", 2, true))),
			wantCreate: []string{"web-p1@n1"},
		},
		{
			name:       "a new name avoids a stopping pod's name",
			in:         input(deployment(1, 1), one, stopping(running("web-p1", 1, "n1", 1, true))),
			wantCreate: []string{"web-p2@n1"},
		},
		{
			name:       "rollout starts with one surge pod",
			in:         input(deployment(3, 2), one, running("web-a", 1, "n1", 1, true), running("web-b", 1, "n1", 2, true), running("web-c", 1, "n1", 3, true)),
			wantCreate: []string{"web-p1@n1"},
		},
		{
			name: "rollout waits while the new pod is not ready",
			in: input(deployment(3, 2), one, running("web-a", 1, "n1", 1, true), running("web-b", 1, "n1", 2, true),
				running("web-c", 1, "n1", 3, true), running("web-x", 2, "n1", 4, false)),
		},
		{
			name: "rollout stops one old pod per ready new pod and surges again",
			in: input(deployment(3, 2), one, running("web-a", 1, "n1", 1, true), running("web-b", 1, "n1", 2, true),
				running("web-c", 1, "n1", 3, true), running("web-x", 2, "n1", 4, true)),
			wantStop:   []string{"default/web-c"},
			wantCreate: []string{"web-p1@n1"},
		},
		{
			name: "rollout stops not-ready old pods at once",
			in: input(deployment(3, 2), one, running("web-a", 1, "n1", 1, false), running("web-b", 1, "n1", 2, false),
				running("web-c", 1, "n1", 3, true)),
			wantStop:   []string{"default/web-a", "default/web-b"},
			wantCreate: []string{"web-p1@n1", "web-p2@n1", "web-p3@n1"}, // with web-c: replicas+1
		},
		{
			name: "old pods on a down node count as not ready",
			in: input(deployment(1, 2), []api.Node{node("n1", 4000, 8192), {Name: "n2", Status: "down"}},
				running("web-a", 1, "n2", 1, true)),
			wantStop:   []string{"default/web-a"},
			wantCreate: []string{"web-p1@n1"},
		},
		{
			name: "delete stops every pod not already stopping",
			in: func() Input {
				d := deployment(3, 2)
				d.Deleting = true
				return input(d, one, running("web-a", 1, "n1", 1, true), running("web-b", 2, "n1", 2, false), stopping(running("web-c", 2, "n1", 3, true)))
			}(),
			wantStop: []string{"default/web-a", "default/web-b"},
		},
		{
			name: "replicas 0 stops everything, old and current",
			in: input(deployment(0, 2), one, running("web-a", 1, "n1", 1, true), running("web-b", 2, "n1", 2, true),
				running("web-c", 2, "n1", 3, false)),
			wantStop: []string{"default/web-c", "default/web-b", "default/web-a"},
		},
		{
			name:       "no node has the CPU",
			in:         input(big, []api.Node{node("n1", 1000, 8192), node("n2", 1500, 8192)}),
			wantReason: "cannot place 1 of 1 pods: 0/2 nodes available: 2 insufficient cpu",
		},
		{
			name:       "load counts other deployments' pods",
			in:         input(big, []api.Node{node("n1", 4000, 8192)}, other("db-a", "n1", 3000)),
			wantReason: "0/1 nodes available: 1 insufficient cpu",
		},
		{
			name:       "no node has the memory",
			in:         input(deployment(2, 1), []api.Node{node("n1", 4000, 300)}),
			wantCreate: []string{"web-p1@n1"},
			wantReason: "cannot place 1 of 2 pods: 0/1 nodes available: 1 insufficient memory",
		},
		{
			name:       "no ready node",
			in:         input(deployment(1, 1), []api.Node{{Name: "n1", CPUMillis: 4000, MemoryMiB: 8192, Status: "down"}}),
			wantReason: "0/1 nodes available: 1 not ready",
		},
		{
			name:       "spread across 2 nodes",
			in:         input(deployment(4, 1), two),
			wantCreate: []string{"web-p1@n1", "web-p2@n2", "web-p3@n1", "web-p4@n2"},
		},
		{
			name:       "spread counts existing pods",
			in:         input(deployment(3, 1), two, running("web-a", 1, "n1", 1, true), running("web-b", 1, "n1", 2, true)),
			wantCreate: []string{"web-p1@n2"},
		},
		{
			name:       "equal spread prefers the least requested CPU",
			in:         input(deployment(1, 1), two, other("db-a", "n1", 100)),
			wantCreate: []string{"web-p1@n2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := Reconcile(tt.in, names())
			if got := placed(plan); !reflect.DeepEqual(got, tt.wantCreate) {
				t.Errorf("create %v, want %v (plan: %v)", got, tt.wantCreate, plan)
			}
			if !reflect.DeepEqual(plan.Stop, tt.wantStop) {
				t.Errorf("stop %v, want %v (plan: %v)", plan.Stop, tt.wantStop, plan)
			}
			switch {
			case tt.wantReason == "" && len(plan.Reasons) > 0:
				t.Errorf("unexpected reasons %q", plan.Reasons)
			case tt.wantReason != "" && (len(plan.Reasons) != 1 || !strings.Contains(plan.Reasons[0], tt.wantReason)):
				t.Errorf("reasons %q, want one containing %q", plan.Reasons, tt.wantReason)
			}
		})
	}
}

func TestReconcileNewPodTemplate(t *testing.T) {
	d := deployment(1, 7)
	d.Containers[0].Command = []string{"nginx", "-g", "daemon off;"}
	plan := Reconcile(input(d, []api.Node{node("n1", 4000, 8192)}), names())
	if len(plan.Create) != 1 {
		t.Fatalf("plan %v", plan)
	}
	p := plan.Create[0]
	want := api.Pod{
		Namespace: "default", Name: "web-p1", Deployment: "web", Node: "n1", Generation: 7,
		Labels: d.Labels, Containers: d.Containers, Status: api.PodStatus{Phase: api.PodPending},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("new pod\n got %+v\nwant %+v", p, want)
	}
	// The pod must not share maps or slices with the deployment.
	p.Labels["app"] = "x"
	p.Containers[0].Env["A"] = "x"
	p.Containers[0].Command[0] = "x"
	if d.Labels["app"] != "web" || d.Containers[0].Env["A"] != "1" || d.Containers[0].Command[0] != "nginx" {
		t.Error("new pod shares data with the deployment")
	}
}

// sim plays the controller and the node around Reconcile: it applies each
// plan, lets stopped pods go away and new pods become ready if healthy.
type sim struct {
	t       *testing.T
	d       api.Deployment
	nodes   []api.Node
	pods    []api.Pod
	index   uint64
	names   func() string
	healthy func(api.Pod) bool
}

func newSim(t *testing.T, replicas int) *sim {
	s := &sim{t: t, d: deployment(replicas, 1), nodes: []api.Node{node("n1", 8000, 16384), node("n2", 8000, 16384)},
		names: names(), healthy: func(api.Pod) bool { return true }}
	s.settle()
	return s
}

func (s *sim) live() (live, ready, current int) {
	for _, p := range s.pods {
		if p.Stop {
			continue
		}
		live++
		if p.Status.Ready {
			ready++
		}
		if p.Generation == s.d.Generation {
			current++
		}
	}
	return live, ready, current
}

// step runs one reconcile and applies its plan, checking the rollout rules.
func (s *sim) step() Plan {
	s.t.Helper()
	_, readyBefore, _ := s.live()
	plan := Reconcile(input(s.d, s.nodes, s.pods...), s.names)
	for i := range s.pods {
		if slices.Contains(plan.Stop, s.pods[i].ID()) {
			s.pods[i] = stopping(s.pods[i])
		}
	}
	for _, p := range plan.Create {
		s.index++
		p.CreateIndex = s.index
		s.pods = append(s.pods, p)
	}
	live, ready, _ := s.live()
	if live > s.d.Replicas+1 {
		s.t.Errorf("%d live pods after %v; at most replicas+1 = %d", live, plan, s.d.Replicas+1)
	}
	if !s.d.Deleting && ready < min(readyBefore, s.d.Replicas) {
		s.t.Errorf("ready pods fell from %d to %d (replicas %d) with %v", readyBefore, ready, s.d.Replicas, plan)
	}
	return plan
}

// progress is the node's turn: stopped pods go away, new pods start.
func (s *sim) progress() {
	s.pods = slices.DeleteFunc(s.pods, func(p api.Pod) bool { return p.Stop })
	for i, p := range s.pods {
		if p.Status.Phase == api.PodPending {
			s.pods[i].Status.Phase = api.PodRunning
			s.pods[i].Status.Ready = s.healthy(p)
		}
	}
}

// settle reconciles until the plan is empty.
func (s *sim) settle() int {
	s.t.Helper()
	for i := range 50 {
		plan := s.step()
		s.progress()
		if len(plan.Create) == 0 && len(plan.Stop) == 0 {
			return i
		}
	}
	s.t.Fatal("no steady state after 50 steps")
	return 0
}

func TestRolloutStepByStep(t *testing.T) {
	s := newSim(t, 3)
	s.d.Generation = 2
	s.d.Containers[0].Image = "nginx:2"

	var steps []string
	for range 10 {
		plan := s.step()
		s.progress()
		steps = append(steps, plan.String())
		if len(plan.Create) == 0 && len(plan.Stop) == 0 {
			break
		}
	}
	wantSteps := []string{
		"create web-p4 on n2 (generation 2)",                      // surge: 4 live, 3 ready
		"create web-p5 on n1 (generation 2); stop default/web-p3", // p4 ready: one old goes, surge again
		"create web-p6 on n1 (generation 2); stop default/web-p2", // spread counts new pods only: 1 each, equal load, first name
		"stop default/web-p1",                                     // last old pod
		"nothing to do",
	}
	if !reflect.DeepEqual(steps, wantSteps) {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(wantSteps, "\n"))
	}
	if live, ready, current := s.live(); live != 3 || ready != 3 || current != 3 {
		t.Errorf("after rollout: %d live, %d ready, %d current; want 3 each", live, ready, current)
	}
}

func TestRolloutWithCrashingPodsKeepsOldOnes(t *testing.T) {
	s := newSim(t, 3)
	s.d.Generation = 2
	s.healthy = func(p api.Pod) bool { return p.Generation != 2 } // the new image crashes
	s.settle()
	live, ready, current := s.live()
	if live != 4 || ready != 3 || current != 1 {
		t.Errorf("%d live, %d ready, %d current; want the 3 old pods serving and 1 new one failing", live, ready, current)
	}

	// A fixed spec (generation 3) replaces the failing pod at once and
	// rolls out over the old ones.
	s.d.Generation = 3
	s.healthy = func(api.Pod) bool { return true }
	s.settle()
	if live, ready, current := s.live(); live != 3 || ready != 3 || current != 3 {
		t.Errorf("after the fix: %d live, %d ready, %d current; want 3 each", live, ready, current)
	}
}

func TestScaleAndDeleteConverge(t *testing.T) {
	s := newSim(t, 3)
	for _, replicas := range []int{5, 1, 0, 2} {
		s.d.Replicas = replicas
		s.settle()
		if live, ready, _ := s.live(); live != replicas || ready != replicas {
			t.Errorf("replicas %d: %d live, %d ready", replicas, live, ready)
		}
	}
	s.d.Deleting = true
	s.settle()
	if len(s.pods) != 0 {
		t.Errorf("%d pods left after delete", len(s.pods))
	}
}

func TestReconcileDeterministic(t *testing.T) {
	in := input(deployment(6, 2), []api.Node{node("n3", 4000, 8192), node("n1", 4000, 8192), node("n2", 4000, 8192)},
		running("web-c", 1, "n2", 3, true), running("web-a", 1, "n1", 1, true), running("web-b", 1, "n3", 2, false))
	want := Reconcile(in, names())
	for range 50 {
		slices.Reverse(in.Pods)
		slices.Reverse(in.Nodes)
		if got := Reconcile(in, names()); !reflect.DeepEqual(got, want) {
			t.Fatalf("plan changed with input order:\n got %v\nwant %v", got, want)
		}
	}
}
