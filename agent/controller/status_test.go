package controller

import (
	"context"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

func pod(name string, gen uint64, ready bool, cs ...api.ContainerStatus) api.Pod {
	return api.Pod{Name: name, Generation: gen, Containers: []api.Container{{Name: "app", Image: "demo:v2"}},
		Status: api.PodStatus{Ready: ready, Containers: cs}}
}

func TestComputeStatus(t *testing.T) {
	dep := api.Deployment{Namespace: "default", Name: "web", Replicas: 2, Generation: 2}
	tests := []struct {
		name          string
		pods          []api.Pod
		unschedulable string
		want          api.DeploymentStatus
		failure       string
	}{
		{name: "complete", pods: []api.Pod{pod("a", 2, true), pod("b", 2, true)},
			want: api.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, UpdatedReadyReplicas: 2, Complete: true}},
		{name: "rolling", pods: []api.Pod{pod("a", 1, true), pod("b", 1, true), pod("c", 2, false)},
			want: api.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1, ReadyReplicas: 2}},
		{name: "stopping pods do not count", pods: []api.Pod{pod("a", 2, true), pod("b", 2, true), {Name: "c", Generation: 1, Stop: true}},
			want: api.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, UpdatedReadyReplicas: 2, Complete: true}},
		{name: "image pull fails fast", pods: []api.Pod{pod("a", 2, false, api.ContainerStatus{Name: "app", Reason: api.ReasonErrImagePull, Message: "not found"})},
			want: api.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1}, failure: `container "app": image "demo:v2" cannot be pulled: not found`},
		{name: "one crash is not a loop", pods: []api.Pod{pod("a", 2, false, api.ContainerStatus{Name: "app", Reason: api.ReasonCrashLoopBackOff, RestartCount: 1, LastExitCode: 137})},
			want: api.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1}},
		{name: "crash loop names exit code and log", pods: []api.Pod{pod("a", 2, false, api.ContainerStatus{Name: "app", Reason: api.ReasonCrashLoopBackOff, RestartCount: 3, LastExitCode: 3, LastLog: []string{"boom"}})},
			want: api.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1}, failure: "exited with code 3 (restarted 3 times); last log lines:\n  boom"},
		{name: "a transient create failure is not a failure", pods: []api.Pod{pod("a", 2, false, api.ContainerStatus{Name: "app", Reason: api.ReasonContainerCreating, Message: "attempt 1 failed; retrying: create container x: already exists"})},
			want: api.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1}},
		{name: "one OOM kill is not a failure", pods: []api.Pod{pod("a", 2, false, api.ContainerStatus{Name: "app", Reason: api.ReasonOOMKilled, RestartCount: 1, LastExitCode: 137})},
			want: api.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1}},
		{name: "OOM kills name the limit", pods: []api.Pod{func() api.Pod {
			p := pod("a", 2, false, api.ContainerStatus{Name: "app", Reason: api.ReasonOOMKilled, RestartCount: 3, LastExitCode: 137})
			p.Containers[0].MemoryLimit = 64
			return p
		}()},
			want: api.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1}, failure: `container "app" was killed for going over its memory limit of 64 MiB (OOMKilled), 3 times`},
		{name: "old generation failures do not fail the rollout", pods: []api.Pod{pod("a", 1, false, api.ContainerStatus{Name: "app", Reason: api.ReasonErrImagePull})},
			want: api.DeploymentStatus{Replicas: 1}},
		{name: "unschedulable", pods: nil, unschedulable: "no node has 4000m CPU free",
			want: api.DeploymentStatus{}, failure: "cannot place pods: no node has 4000m CPU free"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ComputeStatus(dep, tt.pods, tt.unschedulable)
			failure := got.Failure
			got.Failure = ""
			if got != tt.want {
				t.Errorf("status = %+v, want %+v", got, tt.want)
			}
			if (tt.failure == "") != (failure == "") || !strings.Contains(failure, tt.failure) {
				t.Errorf("failure = %q, want it to contain %q", failure, tt.failure)
			}
		})
	}
}

type statusStore struct{ pods []api.Pod }

func (statusStore) IsLeader() bool                                         { return true }
func (statusStore) Changed() <-chan struct{}                               { return nil }
func (statusStore) Deployments(string) []api.Deployment                    { return nil }
func (statusStore) Deployment(string, string) (api.Deployment, bool)       { return api.Deployment{}, false }
func (statusStore) Changes(uint64) ([]string, bool, uint64)                { return nil, true, 1 }
func (statusStore) NodePods() map[string][]api.Pod                         { return nil }
func (s statusStore) Pods(state.PodFilter) []api.Pod                       { return s.pods }
func (statusStore) Nodes() []api.Node                                      { return nil }
func (statusStore) PutPods(context.Context, []api.Pod) error               { return nil }
func (statusStore) StopPods(context.Context, []string) error               { return nil }
func (statusStore) RemoveDeployment(context.Context, string, string) error { return nil }
func (statusStore) StopPodsWithReason(context.Context, []string, string) error {
	return nil
}
func (statusStore) ForgetPods(context.Context, []string) error { return nil }
func (statusStore) ClusterConfig() (state.ClusterConfig, bool) { return state.ClusterConfig{}, false }

func TestStatusesMatchesStatus(t *testing.T) {
	st := statusStore{pods: []api.Pod{
		{Namespace: "default", Name: "web-a", Deployment: "web", Generation: 1, Status: api.PodStatus{Ready: true}},
		{Namespace: "default", Name: "api-a", Deployment: "api", Generation: 1},
		{Namespace: "prod", Name: "web-b", Deployment: "web", Generation: 1, Status: api.PodStatus{Ready: true}},
	}}
	c := New(Config{Store: st})
	ds := []api.Deployment{
		{Namespace: "default", Name: "web", Replicas: 1, Generation: 1},
		{Namespace: "default", Name: "api", Replicas: 1, Generation: 1},
		{Namespace: "prod", Name: "web", Replicas: 2, Generation: 1},
	}
	got := c.Statuses(ds)
	for i, d := range ds {
		var pods []api.Pod
		for _, p := range st.pods {
			if p.Namespace == d.Namespace && p.Deployment == d.Name {
				pods = append(pods, p)
			}
		}
		if want := ComputeStatus(d, pods, ""); got[i] != want {
			t.Errorf("%s/%s: Statuses = %+v, want %+v", d.Namespace, d.Name, got[i], want)
		}
	}
}
