package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

type fakeState struct{ pods []api.Pod }

func (f fakeState) Deployments(string) []api.Deployment { return []api.Deployment{{Name: "web"}} }
func (f fakeState) Pods(state.PodFilter) []api.Pod      { return f.pods }
func (f fakeState) IsLeader() bool                      { return true }
func (f fakeState) Index() uint64                       { return 42 }
func (f fakeState) Skipped() (uint64, string)           { return 1, "entry 7: bad" }

func TestStateCollector(t *testing.T) {
	st := fakeState{pods: []api.Pod{
		{Status: api.PodStatus{Phase: api.PodRunning, Ready: true, Containers: []api.ContainerStatus{{RestartCount: 2}}}},
		{Status: api.PodStatus{Phase: api.PodPending, Containers: []api.ContainerStatus{{RestartCount: 1}}}},
	}}
	want := `
# HELP flotilla_container_restarts Container restarts of the pods on this node, summed.
# TYPE flotilla_container_restarts gauge
flotilla_container_restarts 3
# HELP flotilla_pods Pods by phase, on this node.
# TYPE flotilla_pods gauge
flotilla_pods{phase="failed"} 0
flotilla_pods{phase="pending"} 1
flotilla_pods{phase="running"} 1
flotilla_pods{phase="terminating"} 0
# HELP flotilla_pods_ready Ready pods on this node.
# TYPE flotilla_pods_ready gauge
flotilla_pods_ready 1
# HELP flotilla_raft_applied_index Last raft index applied to this agent's state.
# TYPE flotilla_raft_applied_index gauge
flotilla_raft_applied_index 42
`
	err := testutil.CollectAndCompare(newStateCollector(st, "n1"), strings.NewReader(want),
		"flotilla_container_restarts", "flotilla_pods", "flotilla_pods_ready", "flotilla_raft_applied_index")
	if err != nil {
		t.Fatal(err)
	}
}
