package state

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/api"
)

// cmd is one command to apply to an FSM in a test.
type cmd struct {
	t    MessageType
	body any
}

func createD(d api.Deployment) cmd { return cmd{CreateDeploymentType, DeploymentRequest{d}} }
func updateD(d api.Deployment) cmd { return cmd{UpdateDeploymentType, DeploymentRequest{d}} }
func deleteD(ns, name string) cmd  { return cmd{DeleteDeploymentType, DeploymentNameRequest{ns, name}} }
func removeD(ns, name string) cmd  { return cmd{RemoveDeploymentType, DeploymentNameRequest{ns, name}} }
func putP(pods ...api.Pod) cmd     { return cmd{PutPodsType, PutPodsRequest{pods}} }
func stopP(ids ...string) cmd      { return cmd{StopPodsType, PodIDsRequest{ids}} }
func removeP(ids ...string) cmd    { return cmd{RemovePodsType, PodIDsRequest{ids}} }
func statusP(id string, st api.PodStatus) cmd {
	return cmd{SetPodStatusType, SetPodStatusRequest{id, st}}
}
func upsertN(n api.Node) cmd   { return cmd{UpsertNodeType, UpsertNodeRequest{n}} }
func registerN(n api.Node) cmd { return cmd{RegisterNodeType, RegisterNodeRequest{n}} }
func clusterC(podCIDR string, mask int) cmd {
	return cmd{SetClusterConfigType, SetClusterConfigRequest{ClusterConfig{PodCIDR: podCIDR, NodeMaskBits: mask}}}
}
func nodeStatus(name, status string) cmd {
	return cmd{SetNodeStatusType, SetNodeStatusRequest{name, status}}
}

// applyAt applies c to f as raft entry index and returns the FSM's answer.
func applyAt(t testing.TB, f *fsm, index uint64, c cmd) any {
	t.Helper()
	data, err := encodeCommand(c.t, c.body)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
}

// applyAll applies cmds as entries 1..n and fails on any error answer.
func applyAll(t testing.TB, f *fsm, cmds ...cmd) {
	t.Helper()
	for i, c := range cmds {
		if err, ok := applyAt(t, f, f.index+1, c).(error); ok {
			t.Fatalf("setup command %d (%s): %v", i, c.t, err)
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

func TestFSMCommands(t *testing.T) {
	withImage := func(img string) api.Deployment { d := web(); d.Containers[0].Image = img; return d }
	tests := []struct {
		name    string
		setup   []cmd
		cmd     cmd
		wantErr error
		check   func(t *testing.T, f *fsm, resp any)
	}{
		{
			name: "create sets generation and indexes, ignores server fields",
			cmd: createD(func() api.Deployment {
				d := web()
				d.Generation, d.CreateIndex, d.Deleting, d.Status.Replicas = 7, 3, true, 9
				return d
			}()),
			check: func(t *testing.T, f *fsm, resp any) {
				d, _ := f.deployment("default", "web")
				if d.Generation != 1 || d.CreateIndex != 1 || d.ModifyIndex != 1 || d.Deleting || d.Status.Replicas != 0 {
					t.Errorf("got generation %d create %d modify %d deleting %v status %+v", d.Generation, d.CreateIndex, d.ModifyIndex, d.Deleting, d.Status)
				}
				if !reflect.DeepEqual(resp, d) {
					t.Errorf("answer %+v differs from stored %+v", resp, d)
				}
			},
		},
		{name: "create existing", setup: []cmd{createD(web())}, cmd: createD(web()), wantErr: ErrExists},
		{name: "create while deleting", setup: []cmd{createD(web()), deleteD("default", "web")}, cmd: createD(web()), wantErr: ErrExists},
		{
			name: "create same name in another namespace", setup: []cmd{createD(web())},
			cmd: createD(func() api.Deployment { d := web(); d.Namespace = "other"; return d }()),
			check: func(t *testing.T, f *fsm, _ any) {
				if n := len(f.listDeployments("")); n != 2 {
					t.Errorf("%d deployments, want 2", n)
				}
			},
		},
		{name: "update missing", cmd: updateD(web()), wantErr: ErrNotFound},
		{name: "update deleting", setup: []cmd{createD(web()), deleteD("default", "web")}, cmd: updateD(web()), wantErr: ErrNotFound},
		{
			name: "update replicas keeps generation", setup: []cmd{createD(web())},
			cmd:   updateD(func() api.Deployment { d := web(); d.Replicas = 5; return d }()),
			check: wantDeployment(1, 5, 1, 2),
		},
		{name: "update image bumps generation", setup: []cmd{createD(web())}, cmd: updateD(withImage("nginx:2")), check: wantDeployment(2, 2, 1, 2)},
		{
			name: "update env bumps generation", setup: []cmd{createD(web())},
			cmd:   updateD(func() api.Deployment { d := web(); d.Containers[0].Env["B"] = "2"; return d }()),
			check: wantDeployment(2, 2, 1, 2),
		},
		{
			name: "update labels bumps generation", setup: []cmd{createD(web())},
			cmd:   updateD(func() api.Deployment { d := web(); d.Labels["tier"] = "front"; return d }()),
			check: wantDeployment(2, 2, 1, 2),
		},
		{
			name: "update with nil instead of empty fields keeps generation",
			setup: []cmd{createD(func() api.Deployment {
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
			name: "update twice counts generations", setup: []cmd{createD(web()), updateD(withImage("nginx:2"))},
			cmd: updateD(withImage("nginx:3")), check: wantDeployment(3, 2, 1, 3),
		},
		{
			name: "update back to an old image is a new generation", setup: []cmd{createD(web()), updateD(withImage("nginx:2"))},
			cmd: updateD(web()), check: wantDeployment(3, 2, 1, 3),
		},
		{name: "delete missing", cmd: deleteD("default", "web"), wantErr: ErrNotFound},
		{
			name: "delete marks deleting", setup: []cmd{createD(web())}, cmd: deleteD("default", "web"),
			check: func(t *testing.T, f *fsm, _ any) {
				d, ok := f.deployment("default", "web")
				if !ok || !d.Deleting || d.ModifyIndex != 2 {
					t.Errorf("got %+v, %v; want deleting with modify index 2", d, ok)
				}
			},
		},
		{
			name: "delete twice is no error and keeps the index", setup: []cmd{createD(web()), deleteD("default", "web")},
			cmd: deleteD("default", "web"),
			check: func(t *testing.T, f *fsm, _ any) {
				if d, _ := f.deployment("default", "web"); !d.Deleting || d.ModifyIndex != 2 {
					t.Errorf("got deleting %v modify index %d; want true, 2", d.Deleting, d.ModifyIndex)
				}
			},
		},
		{name: "remove missing", cmd: removeD("default", "web"), wantErr: ErrNotFound},
		{name: "remove not deleting", setup: []cmd{createD(web())}, cmd: removeD("default", "web"), wantErr: ErrConflict},
		{
			name:    "remove with pods left",
			setup:   []cmd{createD(web()), putP(pod("web-a", "web", "n1")), stopP("default/web-a"), deleteD("default", "web")},
			cmd:     removeD("default", "web"),
			wantErr: ErrConflict,
		},
		{
			name:  "remove",
			setup: []cmd{createD(web()), putP(pod("web-a", "web", "n1")), deleteD("default", "web"), removeP("default/web-a")},
			cmd:   removeD("default", "web"),
			check: func(t *testing.T, f *fsm, _ any) {
				if _, ok := f.deployment("default", "web"); ok {
					t.Error("deployment still there")
				}
			},
		},
		{
			name: "put pods sets create index", setup: []cmd{createD(web())},
			cmd: putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1")),
			check: func(t *testing.T, f *fsm, _ any) {
				ps := f.listPods(PodFilter{})
				if len(ps) != 2 || ps[0].Name != "web-a" || ps[0].CreateIndex != 2 || ps[1].CreateIndex != 2 {
					t.Errorf("got %+v", ps)
				}
			},
		},
		{
			name: "put pods with a taken id inserts none", setup: []cmd{createD(web()), putP(pod("web-a", "web", "n1"))},
			cmd: putP(pod("web-b", "web", "n1"), pod("web-a", "web", "n1")), wantErr: ErrExists,
			check: func(t *testing.T, f *fsm, _ any) {
				if _, ok := f.pod("default/web-b"); ok {
					t.Error("web-b was inserted by a failed entry")
				}
			},
		},
		{name: "put pods with a duplicate id", setup: []cmd{createD(web())}, cmd: putP(pod("web-a", "web", "n1"), pod("web-a", "web", "n2")), wantErr: ErrExists},
		{name: "put pods of a missing deployment", cmd: putP(pod("web-a", "web", "n1")), wantErr: ErrNotFound},
		{
			name: "put pods of a deleting deployment", setup: []cmd{createD(web()), deleteD("default", "web")},
			cmd: putP(pod("web-a", "web", "n1")), wantErr: ErrConflict,
		},
		{
			name: "stop pods", setup: []cmd{createD(web()), putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1")), statusP("default/web-a", api.PodStatus{Phase: api.PodRunning, Ready: true})},
			cmd: stopP("default/web-a", "default/missing"),
			check: func(t *testing.T, f *fsm, _ any) {
				a, _ := f.pod("default/web-a")
				if !a.Stop || a.Status.Phase != api.PodTerminating || a.Status.Ready {
					t.Errorf("web-a: stop %v phase %q ready %v", a.Stop, a.Status.Phase, a.Status.Ready)
				}
				if b, _ := f.pod("default/web-b"); b.Stop {
					t.Error("web-b stopped")
				}
			},
		},
		{
			name: "set pod status", setup: []cmd{createD(web()), putP(pod("web-a", "web", "n1"))},
			cmd: statusP("default/web-a", api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.0.0.2", StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}),
			check: func(t *testing.T, f *fsm, _ any) {
				a, _ := f.pod("default/web-a")
				if a.Status.Phase != api.PodRunning || !a.Status.Ready || a.Status.IP != "10.0.0.2" || a.Status.StartedAt.Year() != 2025 {
					t.Errorf("got %+v", a.Status)
				}
			},
		},
		{name: "set status of a missing pod", cmd: statusP("default/gone", api.PodStatus{Phase: api.PodRunning})},
		{
			name: "set status of a stopping pod keeps it terminating", setup: []cmd{createD(web()), putP(pod("web-a", "web", "n1")), stopP("default/web-a")},
			cmd: statusP("default/web-a", api.PodStatus{Phase: api.PodRunning, Ready: true, Message: "still up"}),
			check: func(t *testing.T, f *fsm, _ any) {
				a, _ := f.pod("default/web-a")
				if a.Status.Phase != api.PodTerminating || a.Status.Ready || a.Status.Message != "still up" {
					t.Errorf("got %+v", a.Status)
				}
			},
		},
		{
			name: "remove pods", setup: []cmd{createD(web()), putP(pod("web-a", "web", "n1"), pod("web-b", "web", "n1"))},
			cmd: removeP("default/web-a", "default/missing"),
			check: func(t *testing.T, f *fsm, _ any) {
				if ps := f.listPods(PodFilter{}); len(ps) != 1 || ps[0].Name != "web-b" {
					t.Errorf("got %+v", ps)
				}
			},
		},
		{
			name: "upsert node", cmd: upsertN(api.Node{Name: "n1", CPUMillis: 2000, Status: "ready"}),
			check: func(t *testing.T, f *fsm, _ any) {
				if n, ok := f.node("n1"); !ok || n.CPUMillis != 2000 || n.ModifyIndex != 1 {
					t.Errorf("got %+v, %v", n, ok)
				}
			},
		},
		{
			name: "upsert node replaces it", setup: []cmd{upsertN(api.Node{Name: "n1", CPUMillis: 2000, Status: "ready", Labels: map[string]string{"a": "b"}})},
			cmd: upsertN(api.Node{Name: "n1", CPUMillis: 4000, Status: "down"}),
			check: func(t *testing.T, f *fsm, _ any) {
				n, _ := f.node("n1")
				if n.CPUMillis != 4000 || n.Status != "down" || n.Labels != nil || n.ModifyIndex != 2 {
					t.Errorf("got %+v", n)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM()
			applyAll(t, f, tt.setup...)
			before, ch := f.watch()
			resp := applyAt(t, f, before+1, tt.cmd)
			err, _ := resp.(error)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			// Every entry, failed or not, advances the index and wakes watchers.
			if f.index != before+1 {
				t.Errorf("index %d, want %d", f.index, before+1)
			}
			select {
			case <-ch:
			default:
				t.Error("Changed channel not closed by Apply")
			}
			if tt.check != nil {
				tt.check(t, f, resp)
			}
		})
	}
}

func wantDeployment(gen uint64, replicas int, createIndex, modifyIndex uint64) func(*testing.T, *fsm, any) {
	return func(t *testing.T, f *fsm, resp any) {
		t.Helper()
		d, ok := f.deployment("default", "web")
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

func TestFSMPanicsOnUnreadableEntries(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":        nil,
		"unknown type": {200, '{', '}'},
		"bad json":     {byte(CreateDeploymentType), '{'},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Apply did not panic")
				}
			}()
			newFSM().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		})
	}
}

func TestFSMReadsReturnCopies(t *testing.T) {
	f := newFSM()
	p := pod("web-a", "web", "n1")
	p.Status.Containers = []api.ContainerStatus{{Name: "web", LastLog: []string{"x"}}}
	applyAll(t, f, createD(web()), putP(p), upsertN(api.Node{Name: "n1", Labels: map[string]string{"a": "b"}}))

	d, _ := f.deployment("default", "web")
	d.Labels["app"] = "changed"
	d.Containers[0].Env["A"] = "changed"
	d.Containers[0].Ports[0].ContainerPort = 1
	ds := f.listDeployments("default")
	ds[0].Containers[0].Image = "changed"
	got, _ := f.pod("default/web-a")
	got.Status.Containers[0].LastLog[0] = "changed"
	got.Containers[0].Env["A"] = "changed"
	f.listPods(PodFilter{})[0].Labels = map[string]string{"x": "y"}
	n, _ := f.node("n1")
	n.Labels["a"] = "changed"

	if d, _ := f.deployment("default", "web"); !reflect.DeepEqual(d.Labels, web().Labels) || !reflect.DeepEqual(d.Containers, web().Containers) {
		t.Errorf("deployment changed through a read: %+v", d)
	}
	if p2, _ := f.pod("default/web-a"); p2.Status.Containers[0].LastLog[0] != "x" || p2.Containers[0].Env["A"] != "1" {
		t.Errorf("pod changed through a read: %+v", p2)
	}
	if n, _ := f.node("n1"); n.Labels["a"] != "b" {
		t.Errorf("node changed through a read: %+v", n)
	}
}

func TestFSMListsAndFilters(t *testing.T) {
	f := newFSM()
	other := web()
	other.Namespace = "other"
	api2 := web()
	api2.Name = "api"
	p3 := pod("api-a", "api", "n2")
	p4 := pod("web-a", "web", "n1")
	p4.Namespace = "other"
	applyAll(t, f, createD(web()), createD(other), createD(api2),
		putP(pod("web-b", "web", "n1"), pod("web-a", "web", "n2"), p3, p4),
		upsertN(api.Node{Name: "n2"}), upsertN(api.Node{Name: "n1"}))

	names := func(ps []api.Pod) (out []string) {
		for i := range ps {
			out = append(out, ps[i].ID())
		}
		return out
	}
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
		if got := names(f.listPods(tt.filter)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Pods(%+v) = %v, want %v", tt.filter, got, tt.want)
		}
	}
	var dkeys []string
	for _, d := range f.listDeployments("") {
		dkeys = append(dkeys, deploymentKey(d.Namespace, d.Name))
	}
	if want := []string{"default/api", "default/web", "other/web"}; !reflect.DeepEqual(dkeys, want) {
		t.Errorf("Deployments(\"\") = %v, want %v", dkeys, want)
	}
	if ds := f.listDeployments("other"); len(ds) != 1 {
		t.Errorf("Deployments(other) = %d, want 1", len(ds))
	}
	if ns := f.listNodes(); len(ns) != 2 || ns[0].Name != "n1" {
		t.Errorf("Nodes() = %+v", ns)
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

func snapshotBytes(t *testing.T, f *fsm) []byte {
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

// history is a run of commands touching every table, failures included.
func history() []cmd {
	var cmds []cmd
	for i := range 5 {
		d := web()
		d.Name = fmt.Sprintf("d%d", i)
		cmds = append(cmds, createD(d))
		for j := range 3 {
			p := pod(fmt.Sprintf("d%d-%d", i, j), d.Name, fmt.Sprintf("n%d", j%2))
			p.Labels = map[string]string{"j": fmt.Sprint(j)}
			cmds = append(cmds, putP(p), statusP(p.ID(), api.PodStatus{Phase: api.PodRunning, Ready: j > 0,
				Containers: []api.ContainerStatus{{Name: "web", State: api.ContainerRunning, LastLog: []string{"hello"}}}}))
		}
		cmds = append(cmds, createD(d)) // fails: exists
		d.Containers[0].Image = "nginx:2"
		cmds = append(cmds, updateD(d), upsertN(api.Node{Name: fmt.Sprintf("n%d", i), CPUMillis: 1000 * int64(i+1), Status: "ready"}))
		if i == 1 { // a node registered before the cluster has a range fails
			cmds = append(cmds, registerN(api.Node{Name: "early"}), clusterC("10.244.0.0/16", 24), clusterC("10.0.0.0/8", 16))
		}
		cmds = append(cmds, registerN(api.Node{Name: fmt.Sprintf("c%d", 4-i), Address: fmt.Sprintf("192.0.2.%d", i), Status: "ready"}),
			nodeStatus(fmt.Sprintf("n%d", i), "down"))
	}
	cmds = append(cmds, stopP("default/d1-0", "default/d1-1", "default/d1-2"), deleteD("default", "d1"),
		removeP("default/d1-0", "default/d1-1", "default/d1-2"), removeD("default", "d1"), removeD("default", "d2"))
	return cmds
}

func applyHistory(t *testing.T, f *fsm) {
	t.Helper()
	for i, c := range history() {
		applyAt(t, f, uint64(i+1), c)
	}
}

func TestFSMSnapshotRestore(t *testing.T) {
	f := newFSM()
	applyHistory(t, f)
	data := snapshotBytes(t, f)

	g := newFSM()
	applyAll(t, g, createD(web())) // state Restore must discard
	_, ch := g.watch()
	if err := g.Restore(readCloser{bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Error("Restore did not wake watchers")
	}
	if g.index != f.index {
		t.Errorf("restored index %d, want %d", g.index, f.index)
	}
	for _, tbl := range []struct {
		name      string
		got, want any
	}{
		{"deployments", g.deployments, f.deployments},
		{"pods", g.pods, f.pods},
		{"nodes", g.nodes, f.nodes},
		{"cluster config", g.clusterConfig, f.clusterConfig},
	} {
		if !reflect.DeepEqual(tbl.got, tbl.want) {
			t.Errorf("%s differ after restore:\n got %+v\nwant %+v", tbl.name, tbl.got, tbl.want)
		}
	}
	if _, ok := g.deployment("default", "web"); ok {
		t.Error("state from before Restore survived")
	}
	if !bytes.Equal(snapshotBytes(t, g), data) {
		t.Error("snapshot of the restored FSM differs from the original snapshot")
	}
}

func TestFSMRestoreRejectsOtherVersions(t *testing.T) {
	err := newFSM().Restore(readCloser{bytes.NewReader([]byte(`{"version":99}`))})
	if err == nil {
		t.Fatal("restored a snapshot of an unknown version")
	}
}

func TestFSMSnapshotIsolatedFromLaterApplies(t *testing.T) {
	f := newFSM()
	applyAll(t, f, createD(web()), putP(pod("web-a", "web", "n1")))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := snapshotBytes(t, f)
	applyAll(t, f, stopP("default/web-a"), upsertN(api.Node{Name: "n1"}), updateD(func() api.Deployment { d := web(); d.Replicas = 9; return d }()))
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
	// replica — including the answers given to the proposer.
	a, b := newFSM(), newFSM()
	for i, c := range history() {
		ra := applyAt(t, a, uint64(i+1), c)
		rb := applyAt(t, b, uint64(i+1), c)
		if fmt.Sprint(ra) != fmt.Sprint(rb) {
			t.Fatalf("entry %d: answers differ: %v vs %v", i+1, ra, rb)
		}
	}
	for range 20 { // map order varies run to run; the encoding must not
		if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, b)) {
			t.Fatal("snapshots of identical histories differ")
		}
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
