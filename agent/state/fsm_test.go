package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/api"
)

// Commands, shortened for the tables below.

func createD(d api.Deployment) Command { return &CreateDeployment{Deployment: d} }
func updateD(d api.Deployment) Command { return &UpdateDeployment{Deployment: d} }
func deleteD(ns, name string) Command  { return &DeleteDeployment{Namespace: ns, Name: name} }
func removeD(ns, name string) Command  { return &RemoveDeployment{Namespace: ns, Name: name} }
func putP(pods ...api.Pod) Command     { return &PutPods{Pods: pods} }
func stopP(ids ...string) Command      { return &StopPods{IDs: ids} }
func removeP(ids ...string) Command    { return &RemovePods{IDs: ids} }

// removeOwnP is RemovePods as a node writes it: only its own pods go.
func removeOwnP(node string, ids ...string) Command { return &RemovePods{Node: node, IDs: ids} }

// statusP is the legacy one-pod status entry older agents wrote.
func statusP(id string, st api.PodStatus) Command { return &SetPodStatus{ID: id, Status: st} }

// statusesP is a node's status report on its pods.
func statusesP(node string, updates ...PodStatusUpdate) Command {
	return &SetPodStatuses{Node: node, Updates: updates}
}

func upsertN(n api.Node) Command   { return &UpsertNode{Node: n} }
func registerN(n api.Node) Command { return &RegisterNode{Node: n} }
func clusterC(podCIDR string, mask int) Command {
	return &SetClusterConfig{Config: ClusterConfig{PodCIDR: podCIDR, NodeMaskBits: mask}}
}
func nodeStatus(name, status string) Command { return &SetNodeStatus{Name: name, Status: status} }
func removeN(name string, at time.Time) Command {
	return &RemoveNode{Name: name, At: at}
}

// entry encodes c as a raft log entry, without validating it: tests feed
// the FSM entries the store would never propose.
func entry(t testing.TB, c Command) []byte {
	t.Helper()
	data, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// applyAt applies c to f as raft entry index and returns the FSM's answer.
func applyAt(t testing.TB, f *FSM, index uint64, c Command) any {
	t.Helper()
	return applyRaw(f, index, entry(t, c))
}

func applyRaw(f *FSM, index uint64, data []byte) any {
	return f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
}

// applyAll applies cmds as the next entries and fails on any error answer.
func applyAll(t testing.TB, f *FSM, cmds ...Command) {
	t.Helper()
	for i, c := range cmds {
		if err, ok := applyAt(t, f, f.Index()+1, c).(error); ok {
			t.Fatalf("setup command %d (%s): %v", i, c.Type(), err)
		}
	}
}

func web() api.Deployment {
	return api.Deployment{
		Namespace: "default", Name: "web", Replicas: 2,
		Labels: map[string]string{"app": "web"},
		Containers: []api.Container{{
			Name: "web", Image: "nginx:1", Env: map[string]string{"A": "1"},
			Ports: []api.Port{{ContainerPort: 80}}, CPURequest: 100, MemoryRequest: 64,
		}},
	}
}

func pod(name, deployment, node string) api.Pod {
	return api.Pod{
		Namespace: "default", Name: name, Deployment: deployment, Node: node, Generation: 1,
		Containers: web().Containers, Status: api.PodStatus{Phase: api.PodPending},
	}
}

// nodeRec is a node record that passes validation.
func nodeRec(name string) api.Node {
	return api.Node{Name: name, Address: "192.0.2.10", CPUMillis: 2000, MemoryMiB: 1024, Status: api.NodeReady}
}

func running() api.PodStatus {
	return api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.244.0.7"}
}

func podIDs(ps []api.Pod) []string {
	var out []string
	for i := range ps {
		out = append(out, ps[i].ID())
	}
	return out
}

var (
	t1 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 = t1.Add(time.Hour)
	t3 = t2.Add(time.Hour)
)

func TestFSMCommands(t *testing.T) {
	withImage := func(img string) api.Deployment { d := web(); d.Containers[0].Image = img; return d }
	tests := []struct {
		name    string
		setup   []Command
		cmd     Command
		wantErr error
		check   func(t *testing.T, f *FSM, resp any)
	}{
		{
			name: "create sets generation and indexes, ignores server fields",
			cmd: createD(func() api.Deployment {
				d := web()
				d.Generation, d.CreateIndex, d.Deleting, d.Status.Replicas = 7, 3, true, 9
				return d
			}()),
			check: func(t *testing.T, f *FSM, resp any) {
				d, _ := f.Deployment("default", "web")
				if d.Generation != 1 || d.CreateIndex != 1 || d.ModifyIndex != 1 || d.Deleting || d.Status.Replicas != 0 {
					t.Errorf("got generation %d create %d modify %d deleting %v status %+v", d.Generation, d.CreateIndex, d.ModifyIndex, d.Deleting, d.Status)
				}
				if !reflect.DeepEqual(resp, d) {
					t.Errorf("answer %+v differs from stored %+v", resp, d)
				}
			},
		},
		{name: "create existing", setup: []Command{createD(web())}, cmd: createD(web()), wantErr: ErrExists},
		{name: "create while deleting", setup: []Command{createD(web()), deleteD("default", "web")}, cmd: createD(web()), wantErr: ErrExists},
		{
			name: "create same name in another namespace", setup: []Command{createD(web())},
			cmd: createD(func() api.Deployment { d := web(); d.Namespace = "other"; return d }()),
			check: func(t *testing.T, f *FSM, _ any) {
				if n := len(f.Deployments("")); n != 2 {
					t.Errorf("%d deployments, want 2", n)
				}
			},
		},
		{name: "update missing", cmd: updateD(web()), wantErr: ErrNotFound},
		{name: "update deleting", setup: []Command{createD(web()), deleteD("default", "web")}, cmd: updateD(web()), wantErr: ErrNotFound},
		{
			name: "update replicas keeps generation", setup: []Command{createD(web())},
			cmd:   updateD(func() api.Deployment { d := web(); d.Replicas = 5; return d }()),
			check: wantDeployment(1, 5, 1, 2),
		},
		{name: "update image bumps generation", setup: []Command{createD(web())}, cmd: updateD(withImage("nginx:2")), check: wantDeployment(2, 2, 1, 2)},
		{
			name: "update env bumps generation", setup: []Command{createD(web())},
			cmd:   updateD(func() api.Deployment { d := web(); d.Containers[0].Env["B"] = "2"; return d }()),
			check: wantDeployment(2, 2, 1, 2),
		},
		{
			name: "update labels bumps generation", setup: []Command{createD(web())},
			cmd:   updateD(func() api.Deployment { d := web(); d.Labels["tier"] = "front"; return d }()),
			check: wantDeployment(2, 2, 1, 2),
		},
		{
			name: "update with nil instead of empty fields keeps generation",
			setup: []Command{createD(func() api.Deployment {
				d := web()
				d.Labels, d.Containers[0].Env, d.Containers[0].Command = map[string]string{}, map[string]string{}, []string{}
				return d
			}())},
			cmd: updateD(func() api.Deployment {
				d := web()
				d.Labels, d.Containers[0].Env, d.Containers[0].Command = nil, nil, nil
				return d
			}()),
			check: wantDeployment(1, 2, 1, 2),
		},
		{
			name: "update twice counts generations", setup: []Command{createD(web()), updateD(withImage("nginx:2"))},
			cmd: updateD(withImage("nginx:3")), check: wantDeployment(3, 2, 1, 3),
		},
		{
			name: "update back to an old image is a new generation", setup: []Command{createD(web()), updateD(withImage("nginx:2"))},
			cmd: updateD(web()), check: wantDeployment(3, 2, 1, 3),
		},
		{name: "delete missing", cmd: deleteD("default", "web"), wantErr: ErrNotFound},
		{
			name: "delete marks deleting", setup: []Command{createD(web())}, cmd: deleteD("default", "web"),
			check: func(t *testing.T, f *FSM, _ any) {
				d, ok := f.Deployment("default", "web")
				if !ok || !d.Deleting || d.ModifyIndex != 2 {
					t.Errorf("got %+v, %v; want deleting with modify index 2", d, ok)
				}
			},
		},
		{
			name: "delete twice is no error and keeps the index", setup: []Command{createD(web()), deleteD("default", "web")},
			cmd: deleteD("default", "web"),
			check: func(t *testing.T, f *FSM, _ any) {
				if d, _ := f.Deployment("default", "web"); !d.Deleting || d.ModifyIndex != 2 {
					t.Errorf("got deleting %v modify index %d; want true, 2", d.Deleting, d.ModifyIndex)
				}
			},
		},
		{name: "remove missing", cmd: removeD("default", "web"), wantErr: ErrNotFound},
		{name: "remove not deleting", setup: []Command{createD(web())}, cmd: removeD("default", "web"), wantErr: ErrConflict},
		{
			name:    "remove with pods left",
			setup:   []Command{createD(web()), putP(pod("web-a", "web", "n1")), stopP("default/web-a"), deleteD("default", "web")},
			cmd:     removeD("default", "web"),
			wantErr: ErrConflict,
		},
		{
			name:  "remove",
			setup: []Command{createD(web()), putP(pod("web-a", "web", "n1")), deleteD("default", "web"), removeP("default/web-a")},
			cmd:   removeD("default", "web"),
			check: func(t *testing.T, f *FSM, _ any) {
				if _, ok := f.Deployment("default", "web"); ok {
					t.Error("deployment still there")
				}
			},
		},
		{
			name: "put pods sets create index", setup: []Command{createD(web())},
			cmd: putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1")),
			check: func(t *testing.T, f *FSM, _ any) {
				ps := f.Pods(PodFilter{})
				if len(ps) != 2 || ps[0].Name != "web-a" || ps[0].CreateIndex != 2 || ps[1].CreateIndex != 2 {
					t.Errorf("got %+v", ps)
				}
			},
		},
		{
			name: "put pods with a taken id inserts none", setup: []Command{createD(web()), putP(pod("web-a", "web", "n1"))},
			cmd: putP(pod("web-b", "web", "n1"), pod("web-a", "web", "n1")), wantErr: ErrExists,
			check: func(t *testing.T, f *FSM, _ any) {
				if _, ok := f.Pod("default/web-b"); ok {
					t.Error("web-b was inserted by a failed entry")
				}
			},
		},
		{name: "put pods with a duplicate id", setup: []Command{createD(web())}, cmd: putP(pod("web-a", "web", "n1"), pod("web-a", "web", "n2")), wantErr: ErrExists},
		{name: "put pods of a missing deployment", cmd: putP(pod("web-a", "web", "n1")), wantErr: ErrNotFound},
		{
			name: "put pods of a deleting deployment", setup: []Command{createD(web()), deleteD("default", "web")},
			cmd: putP(pod("web-a", "web", "n1")), wantErr: ErrConflict,
		},
		{
			name: "stop pods", setup: []Command{createD(web()), putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1")), statusP("default/web-a", running())},
			cmd: stopP("default/web-a", "default/missing"),
			check: func(t *testing.T, f *FSM, _ any) {
				a, _ := f.Pod("default/web-a")
				if !a.Stop || a.Status.Phase != api.PodTerminating || a.Status.Ready {
					t.Errorf("web-a: stop %v phase %q ready %v", a.Stop, a.Status.Phase, a.Status.Ready)
				}
				if b, _ := f.Pod("default/web-b"); b.Stop {
					t.Error("web-b stopped")
				}
			},
		},
		{
			name: "set pod status (legacy entry)", setup: []Command{createD(web()), putP(pod("web-a", "web", "n1"))},
			cmd: statusP("default/web-a", api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.0.0.2", StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}),
			check: func(t *testing.T, f *FSM, _ any) {
				a, _ := f.Pod("default/web-a")
				if a.Status.Phase != api.PodRunning || !a.Status.Ready || a.Status.IP != "10.0.0.2" || a.Status.StartedAt.Year() != 2025 {
					t.Errorf("got %+v", a.Status)
				}
			},
		},
		{name: "set status of a missing pod", cmd: statusP("default/gone", api.PodStatus{Phase: api.PodRunning})},
		{
			name: "set status of a stopping pod keeps it terminating", setup: []Command{createD(web()), putP(pod("web-a", "web", "n1")), stopP("default/web-a")},
			cmd: statusP("default/web-a", api.PodStatus{Phase: api.PodRunning, Ready: true, Message: "still up"}),
			check: func(t *testing.T, f *FSM, _ any) {
				a, _ := f.Pod("default/web-a")
				if a.Status.Phase != api.PodTerminating || a.Status.Ready || a.Status.Message != "still up" {
					t.Errorf("got %+v", a.Status)
				}
			},
		},
		{
			name:  "set pod statuses of a node's own pods",
			setup: []Command{createD(web()), putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1"))},
			cmd: statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: running()},
				PodStatusUpdate{ID: "default/web-b", Status: api.PodStatus{Phase: api.PodFailed, Reason: api.ReasonErrImagePull}},
				PodStatusUpdate{ID: "default/gone", Status: running()}),
			check: func(t *testing.T, f *FSM, _ any) {
				if a, _ := f.Pod("default/web-a"); !reflect.DeepEqual(a.Status, running()) {
					t.Errorf("web-a status %+v", a.Status)
				}
				if b, _ := f.Pod("default/web-b"); b.Status.Phase != api.PodFailed || b.Status.Reason != api.ReasonErrImagePull {
					t.Errorf("web-b status %+v", b.Status)
				}
				if _, ok := f.Pod("default/gone"); ok {
					t.Error("a status report created a pod")
				}
			},
		},
		{
			name:  "set pod statuses ignores pods placed on another node",
			setup: []Command{createD(web()), putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n2"))},
			cmd: statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: running()},
				PodStatusUpdate{ID: "default/web-b", Status: api.PodStatus{Phase: api.PodFailed, Message: "n1 lies about n2's pod"}}),
			check: func(t *testing.T, f *FSM, _ any) {
				if a, _ := f.Pod("default/web-a"); a.Status.Phase != api.PodRunning {
					t.Errorf("web-a (on n1) status %+v; want running", a.Status)
				}
				if b, _ := f.Pod("default/web-b"); !reflect.DeepEqual(b.Status, pod("web-b", "web", "n2").Status) {
					t.Errorf("web-b (on n2) status changed by n1's report: %+v", b.Status)
				}
			},
		},
		{
			name:  "set pod statuses of a stopping pod keeps it terminating",
			setup: []Command{createD(web()), putP(pod("web-a", "web", "n1")), stopP("default/web-a")},
			cmd:   statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: running()}),
			check: func(t *testing.T, f *FSM, _ any) {
				if a, _ := f.Pod("default/web-a"); a.Status.Phase != api.PodTerminating || a.Status.Ready {
					t.Errorf("got %+v", a.Status)
				}
			},
		},
		{
			name: "remove pods", setup: []Command{createD(web()), putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1"))},
			cmd: removeP("default/web-a", "default/missing"),
			check: func(t *testing.T, f *FSM, _ any) {
				if ps := f.Pods(PodFilter{}); len(ps) != 1 || ps[0].Name != "web-b" {
					t.Errorf("got %+v", ps)
				}
			},
		},
		{
			name:  "remove pods of a node removes only that node's pods",
			setup: []Command{createD(web()), putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n2"), pod("web-c", "web", "n1"))},
			cmd:   removeOwnP("n1", "default/web-a", "default/web-b", "default/missing"),
			check: func(t *testing.T, f *FSM, _ any) {
				if got, want := podIDs(f.Pods(PodFilter{})), []string{"default/web-b", "default/web-c"}; !reflect.DeepEqual(got, want) {
					t.Errorf("pods left %v, want %v", got, want)
				}
			},
		},
		{
			name: "upsert node", cmd: upsertN(nodeRec("n1")),
			check: func(t *testing.T, f *FSM, _ any) {
				if n, ok := f.Node("n1"); !ok || n.CPUMillis != 2000 || n.ModifyIndex != 1 {
					t.Errorf("got %+v, %v", n, ok)
				}
			},
		},
		{
			name: "upsert node replaces it",
			setup: []Command{upsertN(func() api.Node {
				n := nodeRec("n1")
				n.Labels = map[string]string{"a": "b"}
				return n
			}())},
			cmd: upsertN(api.Node{Name: "n1", Address: "192.0.2.11", CPUMillis: 4000, Status: api.NodeDown}),
			check: func(t *testing.T, f *FSM, _ any) {
				n, _ := f.Node("n1")
				if n.CPUMillis != 4000 || n.Status != api.NodeDown || n.Labels != nil || n.ModifyIndex != 2 || n.Address != "192.0.2.11" {
					t.Errorf("got %+v", n)
				}
			},
		},
		{
			name: "remove node deletes the node and its pods and revokes its name",
			setup: []Command{upsertN(nodeRec("n1")), upsertN(nodeRec("n2")), createD(web()),
				putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n2"), pod("web-c", "web", "n1"))},
			cmd: removeN("n1", t1),
			check: func(t *testing.T, f *FSM, _ any) {
				if _, ok := f.Node("n1"); ok {
					t.Error("n1 is still registered")
				}
				if _, ok := f.Node("n2"); !ok {
					t.Error("n2 was removed too")
				}
				if got, want := podIDs(f.Pods(PodFilter{})), []string{"default/web-b"}; !reflect.DeepEqual(got, want) {
					t.Errorf("pods left %v, want %v", got, want)
				}
				if at, ok := f.Revoked("n1"); !ok || !at.Equal(t1) {
					t.Errorf("Revoked(n1) = %v, %v; want %v", at, ok, t1)
				}
				if _, ok := f.Revoked("n2"); ok {
					t.Error("n2 revoked")
				}
				if _, ok := f.Deployment("default", "web"); !ok {
					t.Error("the deployment went with the node")
				}
			},
		},
		{
			name: "remove an unknown node still revokes its name", cmd: removeN("never-joined", t1),
			check: func(t *testing.T, f *FSM, _ any) {
				if at, ok := f.Revoked("never-joined"); !ok || !at.Equal(t1) {
					t.Errorf("Revoked = %v, %v", at, ok)
				}
			},
		},
		{
			name: "a later remove node with an earlier time keeps the later time", setup: []Command{removeN("n1", t2)},
			cmd:   removeN("n1", t1),
			check: wantRevoked("n1", t2),
		},
		{
			name: "a later remove node with a later time moves the revocation", setup: []Command{removeN("n1", t2)},
			cmd:   removeN("n1", t3),
			check: wantRevoked("n1", t3),
		},
		{
			name: "a node registering again after its removal is not un-revoked", setup: []Command{upsertN(nodeRec("n1")), removeN("n1", t2)},
			cmd: upsertN(nodeRec("n1")),
			check: func(t *testing.T, f *FSM, resp any) {
				wantRevoked("n1", t2)(t, f, resp)
				if _, ok := f.Node("n1"); !ok {
					t.Error("n1 not registered")
				}
			},
		},
		{
			name:    "an invalid command is skipped",
			setup:   []Command{createD(web())},
			cmd:     createD(func() api.Deployment { d := web(); d.Name = "../x"; return d }()),
			wantErr: ErrInvalid,
			check: func(t *testing.T, f *FSM, _ any) {
				if n, last := f.Skipped(); n != 1 || !strings.Contains(last, "entry 2") {
					t.Errorf("Skipped() = %d, %q", n, last)
				}
				if ds := f.Deployments(""); len(ds) != 1 {
					t.Errorf("deployments %+v", ds)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM(nil)
			applyAll(t, f, tt.setup...)
			before, ch := f.Watch()
			resp := applyAt(t, f, before+1, tt.cmd)
			err, _ := resp.(error)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			// Every entry, failed or not, advances the index and wakes watchers.
			if f.Index() != before+1 {
				t.Errorf("index %d, want %d", f.Index(), before+1)
			}
			select {
			case <-ch:
			default:
				t.Error("Watch channel not closed by Apply")
			}
			if n, _ := f.Skipped(); n != 0 && !errors.Is(tt.wantErr, ErrInvalid) {
				t.Errorf("%d entries skipped", n)
			}
			if tt.check != nil {
				tt.check(t, f, resp)
			}
		})
	}
}

func wantDeployment(gen uint64, replicas int, createIndex, modifyIndex uint64) func(*testing.T, *FSM, any) {
	return func(t *testing.T, f *FSM, resp any) {
		t.Helper()
		d, ok := f.Deployment("default", "web")
		if !ok {
			t.Fatal("deployment missing")
		}
		if d.Generation != gen || d.Replicas != replicas || d.CreateIndex != createIndex || d.ModifyIndex != modifyIndex {
			t.Errorf("generation %d replicas %d create %d modify %d; want %d %d %d %d",
				d.Generation, d.Replicas, d.CreateIndex, d.ModifyIndex, gen, replicas, createIndex, modifyIndex)
		}
		if got, ok := resp.(api.Deployment); !ok || !reflect.DeepEqual(got, d) {
			t.Errorf("answer %+v differs from stored %+v", resp, d)
		}
	}
}

func wantRevoked(name string, at time.Time) func(*testing.T, *FSM, any) {
	return func(t *testing.T, f *FSM, _ any) {
		t.Helper()
		if got, ok := f.Revoked(name); !ok || !got.Equal(at) {
			t.Errorf("Revoked(%s) = %v, %v; want %v", name, got, ok, at)
		}
		if got := f.Revocations()[name]; !got.Equal(at) {
			t.Errorf("Revocations()[%s] = %v, want %v", name, got, at)
		}
	}
}

// recordingHandler keeps the messages and attributes of log records.
type recordingHandler struct {
	mu   sync.Mutex
	recs []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	h.recs = append(h.recs, b.String())
	h.mu.Unlock()
	return nil
}

func (h *recordingHandler) records() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.recs...)
}

// tables returns what f holds, index aside, for comparing states.
func tables(t *testing.T, f *FSM) snapshotData {
	t.Helper()
	var data snapshotData
	if err := json.Unmarshal(snapshotBytes(t, f), &data); err != nil {
		t.Fatal(err)
	}
	data.Index = 0
	return data
}

// TestFSMSkipsBadEntries feeds the FSM entries no store would propose: it
// must skip each one, the same way on every replica, and carry on.
func TestFSMSkipsBadEntries(t *testing.T) {
	valid := entry(t, createD(func() api.Deployment { d := web(); d.Name = "api"; return d }()))
	withBody := func(mt MessageType, body string) []byte { return append([]byte{byte(mt)}, body...) }
	hugeEnv := pod("web-x", "web", "n1")
	hugeEnv.Containers = api.CloneContainers(hugeEnv.Containers)
	hugeEnv.Containers[0].Env = map[string]string{"BIG": strings.Repeat("x", 100<<10)}
	tooManyIDs := make([]string, MaxIDs+1)
	for i := range tooManyIDs {
		tooManyIDs[i] = fmt.Sprintf("default/p%d", i)
	}

	tests := []struct {
		name string
		data []byte
		why  string // in the error and in Skipped's reason
	}{
		{"empty entry", nil, "empty raft entry"},
		{"unknown type byte", withBody(200, `{}`), "unknown message type 200"},
		{"type byte zero", withBody(0, `{}`), "unknown message type 0"},
		{"type byte only", []byte{byte(CreateDeploymentType)}, "does not decode"},
		{"truncated JSON body", valid[:len(valid)/2], "does not decode"},
		{"garbage body", withBody(CreateDeploymentType, "\xff\xfe\x00garbage"), "does not decode"},
		{"body of the wrong shape", withBody(CreateDeploymentType, `{"deployment":5}`), "does not decode"},
		{"trailing data after the body", append(bytes.Clone(valid), `{"x":1}`...), "does not decode"},
		{"null body", withBody(PutPodsType, `null`), "no pods"},
		{"deployment named ../x", entry(t, createD(func() api.Deployment { d := web(); d.Name = "../x"; return d }())), "invalid"},
		{"update of a deployment without containers", entry(t, updateD(api.Deployment{Namespace: "default", Name: "web"})), "at least one container"},
		{"delete with an invalid namespace", entry(t, deleteD("Default", "web")), "namespace"},
		{"pod with a 100 KiB env var", entry(t, putP(hugeEnv)), "must be at most"},
		{"pod on no node", entry(t, putP(pod("web-x", "web", ""))), "node"},
		{"stop of too many pods", entry(t, stopP(tooManyIDs...)), "at most 4096"},
		{"remove pods with a bad ID", entry(t, removeP("no-slash")), "not <namespace>/<name>"},
		{"remove pods for a bad node name", entry(t, removeOwnP("N1!", "default/web-a")), "node"},
		{"status of an unknown phase", entry(t, statusP("default/web-a", api.PodStatus{Phase: "sleepy"})), "not a pod phase"},
		{"statuses with no updates", entry(t, statusesP("n1")), "0 updates"},
		{"status with too many events", entry(t, statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: withEvents(running(), api.MaxEvents+1, nil)})), "events: 21 events"},
		{"status with an event of no time", entry(t, statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: withEvents(running(), 1, func(e *api.Event) { e.Time = time.Time{} })})), "events[0].time"},
		{"status with an event's message too long", entry(t, statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: withEvents(running(), 1, func(e *api.Event) { e.Message = strings.Repeat("x", 4<<10) })})), "events[0].message"},
		{"status with an event of an unknown type", entry(t, statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: withEvents(running(), 1, func(e *api.Event) { e.Type = "Fatal" })})), "events[0].type"},
		{"placed pod with a bad event", entry(t, putP(func() api.Pod {
			p := pod("web-x", "web", "n1")
			p.Status = withEvents(p.Status, 1, func(e *api.Event) { e.Reason = "no spaces allowed" })
			return p
		}())), "events[0].reason"},
		{"statuses without a node", entry(t, statusesP("", PodStatusUpdate{ID: "default/web-a", Status: running()})), "node"},
		{"node without an address", entry(t, upsertN(api.Node{Name: "n1"})), "address"},
		{"registration with a bad pod range", entry(t, registerN(func() api.Node { n := nodeRec("n2"); n.PodCIDR = "not-a-cidr"; return n }())), "pod_cidr"},
		{"node status that is not one", entry(t, nodeStatus("n1", "sleepy")), "sleepy"},
		{"invalid cluster config", entry(t, clusterC("10.244.0.0/16", 8)), "shorter than"},
		{"remove node without a time", entry(t, removeN("n1", time.Time{})), "time is not set"},
		{"remove node with a bad name", entry(t, removeN("../n1", t1)), "remove node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &recordingHandler{}
			f := NewFSM(slog.New(logs))
			applyAll(t, f, createD(web()), putP(pod("web-a", "web", "n1")), upsertN(nodeRec("n1")), clusterC("10.244.0.0/16", 24))
			want := tables(t, f)
			index, ch := f.Watch()

			var resp any
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Apply panicked: %v", r)
					}
				}()
				resp = applyRaw(f, index+1, tt.data)
			}()

			err, _ := resp.(error)
			if err == nil || !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), "skipped") {
				t.Errorf("answer %v; want an error saying the entry was skipped because %q", resp, tt.why)
			}
			if f.Index() != index+1 {
				t.Errorf("index %d after the bad entry, want %d", f.Index(), index+1)
			}
			select {
			case <-ch:
			default:
				t.Error("a skipped entry did not wake watchers")
			}
			if n, last := f.Skipped(); n != 1 || !strings.Contains(last, fmt.Sprintf("entry %d", index+1)) || !strings.Contains(last, tt.why) {
				t.Errorf("Skipped() = %d, %q", n, last)
			}
			if got := tables(t, f); !reflect.DeepEqual(got, want) {
				t.Errorf("a skipped entry changed the state:\n got %+v\nwant %+v", got, want)
			}
			if recs := logs.records(); len(recs) != 1 || !strings.HasPrefix(recs[0], "ERROR ") || !strings.Contains(recs[0], fmt.Sprintf("index=%d", index+1)) {
				t.Errorf("logged %q; want one error naming the entry", recs)
			}

			// The FSM goes on: later entries apply.
			if resp := applyRaw(f, index+2, valid); resp == nil || isError(resp) {
				t.Fatalf("the entry after a skipped one: %v", resp)
			}
			if _, ok := f.Deployment("default", "api"); !ok || f.Index() != index+2 {
				t.Errorf("later entry not applied (index %d)", f.Index())
			}
			if n, _ := f.Skipped(); n != 1 {
				t.Errorf("Skipped() = %d after a good entry", n)
			}
		})
	}
}

func isError(v any) bool { _, ok := v.(error); return ok }

// TestFSMSkipsEntriesWhoseApplyPanics: a bug in an apply function, here
// reached through a snapshot whose cluster config no entry could have set,
// costs the entry, not the replica.
func TestFSMSkipsEntriesWhoseApplyPanics(t *testing.T) {
	snap := `{"version":3,"index":10,"deployments":[],"pods":[],"nodes":[],"cluster_config":{"pod_cidr":"10.0.0.0/8","node_mask_bits":-5}}`
	f := NewFSM(nil)
	if err := f.Restore(readCloser{strings.NewReader(snap)}); err != nil {
		t.Fatal(err)
	}
	want := tables(t, f)
	var resp any
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Apply panicked: %v", r)
			}
		}()
		resp = applyAt(t, f, 11, registerN(nodeRec("n1")))
	}()
	if err, _ := resp.(error); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("answer %v; want an error saying apply panicked", resp)
	}
	if n, last := f.Skipped(); n != 1 || !strings.Contains(last, "entry 11") {
		t.Errorf("Skipped() = %d, %q", n, last)
	}
	if f.Index() != 11 {
		t.Errorf("index %d, want 11", f.Index())
	}
	if got := tables(t, f); !reflect.DeepEqual(got, want) {
		t.Errorf("state changed by a panicking entry:\n got %+v\nwant %+v", got, want)
	}
	// The FSM still works (and its lock was released).
	applyAll(t, f, createD(web()))
	if _, ok := f.Deployment("default", "web"); !ok {
		t.Error("entry after the panic not applied")
	}
}

// FuzzFSMApply feeds arbitrary entries to Apply: whatever the bytes, it
// must not panic, must advance the index, and must either apply the entry
// or count it as skipped. The seed corpus runs with go test; run it longer
// with go test -fuzz FuzzFSMApply ./agent/state.
func FuzzFSMApply(f *testing.F) {
	seeds := []Command{
		createD(web()), updateD(web()), deleteD("default", "web"), removeD("default", "web"),
		putP(pod("web-b", "web", "n1")), stopP("default/web-a"), removeP("default/web-a"), removeOwnP("n1", "default/web-a"),
		statusP("default/web-a", running()), statusesP("n1", PodStatusUpdate{ID: "default/web-a", Status: running()}),
		upsertN(nodeRec("n2")), registerN(nodeRec("n3")), clusterC("10.1.0.0/16", 24), nodeStatus("n1", api.NodeDown),
		removeN("n1", t1), createD(api.Deployment{Namespace: "default", Name: "../x"}),
	}
	for _, c := range seeds {
		f.Add(entry(f, c))
	}
	for _, raw := range [][]byte{nil, {0}, {200, '{', '}'}, {byte(CreateDeploymentType), '{'}, {byte(PutPodsType), 'n', 'u', 'l', 'l'},
		{byte(RemoveNodeType), '{', '"', 'a', 't', '"', ':', '1', '}'}} {
		f.Add(raw)
	}
	setup := []Command{createD(web()), putP(pod("web-a", "web", "n1")), upsertN(nodeRec("n1")), clusterC("10.244.0.0/16", 24)}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM(nil)
		applyAll(t, fsm, setup...)
		index := fsm.Index()
		resp := applyRaw(fsm, index+1, data)
		if fsm.Index() != index+1 {
			t.Fatalf("index %d, want %d", fsm.Index(), index+1)
		}
		skipped, _ := fsm.Skipped()
		cmd, err := Decode(data)
		if err == nil {
			err = cmd.Validate()
		}
		if err != nil && (skipped != 1 || !isError(resp)) {
			t.Fatalf("an entry that does not decode or validate (%v) was not skipped: skipped %d, answer %v", err, skipped, resp)
		}
		if skipped > 1 {
			t.Fatalf("skipped %d entries for one", skipped)
		}
		// Whatever was applied can be snapshotted and restored.
		data2 := snapshotBytes(t, fsm)
		if err := NewFSM(nil).Restore(readCloser{bytes.NewReader(data2)}); err != nil {
			t.Fatalf("restore: %v", err)
		}
	})
}

func TestFSMReadsReturnCopies(t *testing.T) {
	f := NewFSM(nil)
	p := pod("web-a", "web", "n1")
	p.Status.Containers = []api.ContainerStatus{{Name: "web", LastLog: []string{"x"}}}
	p.Status = withEvents(p.Status, 1, nil)
	n1 := nodeRec("n1")
	n1.Labels = map[string]string{"a": "b"}
	applyAll(t, f, createD(web()), putP(p), upsertN(n1), removeN("gone", t1))

	d, _ := f.Deployment("default", "web")
	d.Labels["app"] = "changed"
	d.Containers[0].Env["A"] = "changed"
	d.Containers[0].Ports[0].ContainerPort = 1
	ds := f.Deployments("default")
	ds[0].Containers[0].Image = "changed"
	got, _ := f.Pod("default/web-a")
	got.Status.Containers[0].LastLog[0] = "changed"
	got.Status.Events[0].Message = "changed"
	got.Containers[0].Env["A"] = "changed"
	f.Pods(PodFilter{})[0].Labels = map[string]string{"x": "y"}
	n, _ := f.Node("n1")
	n.Labels["a"] = "changed"
	f.Nodes()[0].Labels["a"] = "changed"
	f.Revocations()["gone"] = t3
	f.PodNodes([]string{"default/web-a"})["default/web-a"] = "n9"

	if d, _ := f.Deployment("default", "web"); !reflect.DeepEqual(d.Labels, web().Labels) || !reflect.DeepEqual(d.Containers, web().Containers) {
		t.Errorf("deployment changed through a read: %+v", d)
	}
	if p2, _ := f.Pod("default/web-a"); p2.Status.Containers[0].LastLog[0] != "x" || p2.Containers[0].Env["A"] != "1" || p2.Status.Events[0].Message != "m" {
		t.Errorf("pod changed through a read: %+v", p2)
	}
	if n, _ := f.Node("n1"); n.Labels["a"] != "b" {
		t.Errorf("node changed through a read: %+v", n)
	}
	if at, _ := f.Revoked("gone"); !at.Equal(t1) {
		t.Errorf("revocation changed through a read: %v", at)
	}
}

func TestFSMListsAndFilters(t *testing.T) {
	f := NewFSM(nil)
	other := web()
	other.Namespace = "other"
	api2 := web()
	api2.Name = "api"
	p3 := pod("api-a", "api", "n2")
	p4 := pod("web-a", "web", "n1")
	p4.Namespace = "other"
	applyAll(t, f, createD(web()), createD(other), createD(api2),
		putP(pod("web-b", "web", "n1"), pod("web-a", "web", "n2"), p3, p4),
		upsertN(nodeRec("n2")), upsertN(nodeRec("n1")))

	for _, tt := range []struct {
		filter PodFilter
		want   []string
	}{
		{PodFilter{}, []string{"default/api-a", "default/web-a", "default/web-b", "other/web-a"}},
		{PodFilter{Namespace: "default"}, []string{"default/api-a", "default/web-a", "default/web-b"}},
		{PodFilter{Deployment: "web"}, []string{"default/web-a", "default/web-b", "other/web-a"}},
		{PodFilter{Namespace: "default", Deployment: "web"}, []string{"default/web-a", "default/web-b"}},
		{PodFilter{Node: "n2"}, []string{"default/api-a", "default/web-a"}},
		{PodFilter{Namespace: "nope"}, nil},
	} {
		if got := podIDs(f.Pods(tt.filter)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Pods(%+v) = %v, want %v", tt.filter, got, tt.want)
		}
	}
	var dkeys []string
	for _, d := range f.Deployments("") {
		dkeys = append(dkeys, deploymentKey(d.Namespace, d.Name))
	}
	if want := []string{"default/api", "default/web", "other/web"}; !reflect.DeepEqual(dkeys, want) {
		t.Errorf("Deployments(\"\") = %v, want %v", dkeys, want)
	}
	if ds := f.Deployments("other"); len(ds) != 1 {
		t.Errorf("Deployments(other) = %d, want 1", len(ds))
	}
	if ns := f.Nodes(); len(ns) != 2 || ns[0].Name != "n1" {
		t.Errorf("Nodes() = %+v", ns)
	}
	got := f.PodNodes([]string{"default/web-a", "other/web-a", "default/missing", "default/api-a"})
	if want := map[string]string{"default/web-a": "n2", "other/web-a": "n1", "default/api-a": "n2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("PodNodes = %v, want %v", got, want)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, canceled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.canceled {
		t.Fatalf("sink closed %v canceled %v", sink.closed, sink.canceled)
	}
	return sink.Bytes()
}

// history is a run of entries touching every table, failures and skipped
// entries included.
func history() []Command {
	var cmds []Command
	for i := range 5 {
		d := web()
		d.Name = fmt.Sprintf("d%d", i)
		cmds = append(cmds, createD(d))
		for j := range 3 {
			p := pod(fmt.Sprintf("d%d-%d", i, j), d.Name, fmt.Sprintf("n%d", j%2))
			p.Labels = map[string]string{"j": fmt.Sprint(j)}
			st := api.PodStatus{Phase: api.PodRunning, Ready: j > 0,
				Containers: []api.ContainerStatus{{Name: "web", State: api.ContainerRunning, LastLog: []string{"hello"}}}}
			cmds = append(cmds, putP(p), statusP(p.ID(), st), statusesP(p.Node, PodStatusUpdate{ID: p.ID(), Status: st}))
		}
		cmds = append(cmds, createD(d)) // fails: exists
		d.Containers[0].Image = "nginx:2"
		n := nodeRec(fmt.Sprintf("n%d", i))
		n.CPUMillis = 1000 * int64(i+1)
		cmds = append(cmds, updateD(d), upsertN(n))
		if i == 1 { // a node registered before the cluster has a range fails
			cmds = append(cmds, registerN(nodeRec("early")), clusterC("10.244.0.0/16", 24), clusterC("10.0.0.0/8", 16))
		}
		c := nodeRec(fmt.Sprintf("c%d", 4-i))
		c.Address = fmt.Sprintf("192.0.2.%d", i+1)
		cmds = append(cmds, registerN(c), nodeStatus(fmt.Sprintf("n%d", i), api.NodeDown))
		cmds = append(cmds, createD(api.Deployment{Namespace: "default", Name: "../x"})) // skipped: invalid
	}
	cmds = append(cmds, stopP("default/d1-0", "default/d1-1", "default/d1-2"), deleteD("default", "d1"),
		removeOwnP("n0", "default/d1-0", "default/d1-1", "default/d1-2"), removeP("default/d1-1"),
		removeD("default", "d1"), removeD("default", "d2"),
		removeN("c3", t2), removeN("c3", t1), removeN("n1", t3), removeN("ghost", t1))
	shop := withTLS(ing("shop", "shop.example.com", "/api"), testKey, "shop.example.com")
	cmds = append(cmds, &CreateIngress{Ingress: shop}, &CreateIngress{Ingress: ing("b", "shop.example.com", "/api")}, // fails: conflict
		&CreateIngress{Ingress: ing("c", "c.example.com", "/")}, &DeleteIngress{Namespace: "default", Name: "c"})
	shop.Rules[0].Paths = append(shop.Rules[0].Paths, api.IngressPath{Path: "/", Match: api.PathExact, Backend: api.IngressBackend{Service: "front"}})
	cmds = append(cmds, &UpdateIngress{Ingress: shop}, &CreateIngress{Ingress: ing("d", "", "/")})
	return cmds
}

func applyHistory(t *testing.T, f *FSM) {
	t.Helper()
	for i, c := range history() {
		applyAt(t, f, uint64(i+1), c)
	}
}

func TestFSMSnapshotRestore(t *testing.T) {
	f := NewFSM(nil)
	applyHistory(t, f)
	if len(f.revoked) != 3 || len(f.pods) == 0 || len(f.nodes) == 0 || f.clusterConfig == nil || len(f.ingresses) != 2 {
		t.Fatalf("history left too little to compare: %d revoked, %d pods, %d nodes", len(f.revoked), len(f.pods), len(f.nodes))
	}
	data := snapshotBytes(t, f)

	g := NewFSM(nil)
	applyAll(t, g, createD(web()), removeN("other", t1)) // state Restore must discard
	_, ch := g.Watch()
	if err := g.Restore(readCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Error("Restore did not wake watchers")
	}
	if g.Index() != f.Index() {
		t.Errorf("restored index %d, want %d", g.Index(), f.Index())
	}
	for _, tbl := range []struct {
		name      string
		got, want any
	}{
		{"deployments", g.deployments, f.deployments},
		{"pods", g.pods, f.pods},
		{"nodes", g.nodes, f.nodes},
		{"cluster config", g.clusterConfig, f.clusterConfig},
		{"revocations", g.Revocations(), f.Revocations()},
		{"ingresses", g.ingresses, f.ingresses},
		{"ingress claims", g.ing.claims, f.ing.claims},
		{"ingress bytes", g.ing.bytes, f.ing.bytes},
	} {
		if !reflect.DeepEqual(tbl.got, tbl.want) {
			t.Errorf("%s differ after restore:\n got %+v\nwant %+v", tbl.name, tbl.got, tbl.want)
		}
	}
	if _, ok := g.Deployment("default", "web"); ok {
		t.Error("state from before Restore survived")
	}
	if _, ok := g.Revoked("other"); ok {
		t.Error("a revocation from before Restore survived")
	}
	if at, ok := g.Revoked("c3"); !ok || !at.Equal(t2) {
		t.Errorf("Revoked(c3) after restore = %v, %v; want %v", at, ok, t2)
	}
	if !bytes.Equal(snapshotBytes(t, g), data) {
		t.Error("snapshot of the restored FSM differs from the original snapshot")
	}
}

func TestFSMRestoreRejectsBadSnapshots(t *testing.T) {
	for name, data := range map[string]string{
		"unknown version": `{"version":99}`,
		"version zero":    `{"version":0}`,
		"not JSON":        "\x00\x01garbage",
		"truncated":       `{"version":3,"deployments":[`,
		"empty":           ``,
	} {
		t.Run(name, func(t *testing.T) {
			f := NewFSM(nil)
			applyAll(t, f, createD(web()))
			if err := f.Restore(readCloser{strings.NewReader(data)}); err == nil {
				t.Fatal("restored a bad snapshot")
			}
			if _, ok := f.Deployment("default", "web"); !ok || f.Index() != 1 {
				t.Error("a refused snapshot changed the state")
			}
		})
	}
}

// TestFSMRestoresVersion2Snapshots: a snapshot from before revocations
// restores with none, and clears those the FSM had.
func TestFSMRestoresVersion2Snapshots(t *testing.T) {
	v2 := `{"version":2,"index":12,"deployments":[],"pods":[],"nodes":[{"name":"n1","address":"192.0.2.1","pod_cidr":"10.244.0.0/24","status":"ready"}],` +
		`"cluster_config":{"pod_cidr":"10.244.0.0/16","node_mask_bits":24}}`
	f := NewFSM(nil)
	applyAll(t, f, removeN("n9", t1))
	if err := f.Restore(readCloser{strings.NewReader(v2)}); err != nil {
		t.Fatal(err)
	}
	if r := f.Revocations(); len(r) != 0 {
		t.Errorf("revocations after restoring a version 2 snapshot: %v", r)
	}
	if cc, ok := f.ClusterConfig(); !ok || cc.PodCIDR != "10.244.0.0/16" || f.Index() != 12 {
		t.Errorf("cluster config %+v, %v; index %d", cc, ok, f.Index())
	}
	// It goes on from there: revocations and registrations apply.
	resp := applyAt(t, f, 13, registerN(nodeRec("n2")))
	if n, ok := resp.(api.Node); !ok || n.PodCIDR != "10.244.1.0/24" {
		t.Errorf("register after restore: %v", resp)
	}
	applyAll(t, f, removeN("n1", t2))
	if _, ok := f.Node("n1"); ok {
		t.Error("n1 not removed")
	}
	if at, ok := f.Revoked("n1"); !ok || !at.Equal(t2) {
		t.Errorf("Revoked(n1) = %v, %v", at, ok)
	}
	// And its next snapshot is the current version, with the revocation.
	var data snapshotData
	if err := json.Unmarshal(snapshotBytes(t, f), &data); err != nil {
		t.Fatal(err)
	}
	if data.Version != snapshotVersion || len(data.Revoked) != 1 || data.Revoked[0].Name != "n1" {
		t.Errorf("next snapshot: version %d, revoked %+v", data.Version, data.Revoked)
	}
}

func TestFSMSnapshotIsolatedFromLaterApplies(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, createD(web()), putP(pod("web-a", "web", "n1")), removeN("n5", t1))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := snapshotBytes(t, f)
	applyAll(t, f, stopP("default/web-a"), upsertN(nodeRec("n1")), updateD(func() api.Deployment { d := web(); d.Replicas = 9; return d }()),
		removeN("n5", t3), removeN("n6", t1))
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.Bytes(), want) {
		t.Errorf("snapshot taken before later entries changed:\n got %s\nwant %s", sink.Bytes(), want)
	}
}

func TestFSMDeterministic(t *testing.T) {
	// The same entries must give the same state, byte for byte, on every
	// replica — including the answers given to the proposer and the
	// entries skipped.
	a, b := NewFSM(nil), NewFSM(nil)
	for i, c := range history() {
		ra := applyAt(t, a, uint64(i+1), c)
		rb := applyAt(t, b, uint64(i+1), c)
		if fmt.Sprint(ra) != fmt.Sprint(rb) {
			t.Fatalf("entry %d: answers differ: %v vs %v", i+1, ra, rb)
		}
	}
	na, _ := a.Skipped()
	nb, _ := b.Skipped()
	if na != nb || na == 0 {
		t.Errorf("skipped %d and %d entries; want the same, more than 0", na, nb)
	}
	for range 20 { // map order varies run to run; the encoding must not
		if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, b)) {
			t.Fatal("snapshots of identical histories differ")
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, c := range history() {
		data := entry(t, c)
		if MessageType(data[0]) != c.Type() {
			t.Errorf("%s: type byte %d", c.Type(), data[0])
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", c.Type(), err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s: decoded %+v, want %+v", c.Type(), got, c)
		}
	}
	for mt := range MessageType(RemoveNodeType + 1) {
		name := mt.String()
		parsed, ok := ParseMessageType(name)
		_, known := NewCommand(mt)
		if ok != known || (ok && parsed != mt) {
			t.Errorf("type %d: String %q parses to %d, %v; NewCommand knows it: %v", mt, name, parsed, ok, known)
		}
		if c, ok := NewCommand(mt); ok && c.Type() != mt {
			t.Errorf("NewCommand(%s) is a %s", mt, c.Type())
		}
	}
	if _, ok := ParseMessageType("no-such-write"); ok {
		t.Error("parsed an unknown type name")
	}
}

type readCloser struct{ io.Reader }

func (readCloser) Close() error { return nil }

// TestFSMNodeSchedule: only SetNodeSchedule cordons or drains a node; a
// node's own registration (or a dev agent's upsert) keeps what an operator
// set, and a stop records its reason.
func TestFSMNodeSchedule(t *testing.T) {
	f := NewFSM(nil)
	n := api.Node{Name: "c1", Address: "10.0.0.1", Status: api.NodeReady, CPUMillis: 1000, MemoryMiB: 1024}
	applyAll(t, f, clusterC("10.244.0.0/16", 24), registerN(n))
	if err, _ := applyAt(t, f, 10, &SetNodeSchedule{Name: "nope", Schedule: api.NodeSchedule{Draining: true}}).(error); !errors.Is(err, ErrNotFound) {
		t.Errorf("draining an unknown node: %v, want ErrNotFound", err)
	}
	applyAt(t, f, 11, &SetNodeSchedule{Name: "c1", Schedule: api.NodeSchedule{Draining: true}})
	got, _ := f.Node("c1")
	if !got.Unschedulable || !got.Draining {
		t.Fatalf("after a drain: %+v, want unschedulable and draining", got)
	}
	sneaky := n
	sneaky.Unschedulable, sneaky.Draining = false, false
	applyAt(t, f, 12, registerN(sneaky))
	applyAt(t, f, 13, upsertN(sneaky))
	if got, _ := f.Node("c1"); !got.Unschedulable || !got.Draining {
		t.Errorf("a registration undid the drain: %+v", got)
	}
	applyAt(t, f, 14, &SetNodeSchedule{Name: "c1"})
	if got, _ := f.Node("c1"); got.Unschedulable || got.Draining {
		t.Errorf("after uncordon: %+v", got)
	}
	fresh := api.Node{Name: "c2", Address: "10.0.0.2", Status: api.NodeReady, Unschedulable: true, Draining: true}
	applyAt(t, f, 15, registerN(fresh))
	if got, _ := f.Node("c2"); got.Unschedulable || got.Draining {
		t.Errorf("a node registered itself cordoned: %+v; only an operator sets it", got)
	}

	applyAll(t, f, createD(web()))
	p := api.Pod{Namespace: "default", Name: "web-a", Deployment: "web", Node: "c1", Generation: 1, Containers: web().Containers}
	applyAt(t, f, 20, putP(p))
	applyAt(t, f, 21, &StopPods{IDs: []string{p.ID()}, Reason: api.StopNodeLost})
	if got, _ := f.Pod(p.ID()); !got.Stop || got.StopReason != api.StopNodeLost {
		t.Errorf("stopped pod: stop %v reason %q", got.Stop, got.StopReason)
	}
}

// withEvents returns st with n valid events, each edited by edit if set.
func withEvents(st api.PodStatus, n int, edit func(*api.Event)) api.PodStatus {
	st.Events = nil
	for i := range n {
		e := api.Event{Time: t1.Add(time.Duration(i) * time.Second), Type: api.EventNormal, Reason: "Started", Message: "m"}
		if edit != nil {
			edit(&e)
		}
		st.Events = append(st.Events, e)
	}
	return st
}
