package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// testConfig is a single agent (no Keypair: raft's in-memory transport)
// with its state in dir, and raft timings cut so tests elect a leader in a
// few hundred milliseconds. Cluster members add a Keypair (testCluster).
func testConfig(t testing.TB, dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = "node-1"
	cfg.DataDir = dir
	cfg.RaftBindAddr = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.Logger = testLogger(t, slog.LevelWarn)
	return cfg
}

// openLeader opens a store and waits until it leads. The store is closed at
// the end of the test unless the test closes it first.
func openLeader(t testing.TB, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.IsLeader() {
		t.Fatal("WaitLeader returned but this single voter is not the leader")
	}
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
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

func nodeOf(name string) api.Node {
	return api.Node{Name: name, Address: "127.0.0.1", CPUMillis: 2000, MemoryMiB: 4096, Status: api.NodeReady}
}

// snapshotOf is everything a store holds, for comparing before and after a restart.
type snapshotOf struct {
	Deployments   []api.Deployment
	Pods          []api.Pod
	Nodes         []api.Node
	ClusterConfig state.ClusterConfig
	Revocations   map[string]time.Time
}

func contents(s *Store) snapshotOf {
	cc, _ := s.ClusterConfig()
	return snapshotOf{s.Deployments(""), s.Pods(state.PodFilter{}), s.Nodes(), cc, s.Revocations()}
}

func TestStoreWriteReadReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	s := openLeader(t, testConfig(t, dir))
	if s.Leader() == "" || s.LeaderID() != "node-1" || s.LocalID() != "node-1" {
		t.Fatalf("Leader() = %q, LeaderID() = %q", s.Leader(), s.LeaderID())
	}

	d, err := s.CreateDeployment(ctx, web())
	if err != nil {
		t.Fatal(err)
	}
	if d.Generation != 1 || d.CreateIndex == 0 || d.CreateIndex != d.ModifyIndex || d.CreateIndex != s.Index() {
		t.Errorf("created %+v; index %d", d, s.Index())
	}
	if got, ok := s.Deployment("default", "web"); !ok || !reflect.DeepEqual(got, d) {
		t.Errorf("Deployment() = %+v, %v; want %+v", got, ok, d)
	}
	d.Replicas = 3
	if d2, err := s.UpdateDeployment(ctx, d); err != nil || d2.Generation != 1 || d2.ModifyIndex <= d.CreateIndex {
		t.Errorf("replicas update: %+v, %v", d2, err)
	}
	d.Containers[0].Image = "nginx:2"
	if d2, err := s.UpdateDeployment(ctx, d); err != nil || d2.Generation != 2 {
		t.Errorf("image update: %+v, %v", d2, err)
	}
	other := web()
	other.Name = "other"
	if _, err := s.CreateDeployment(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertNode(ctx, nodeOf("node-1")); err != nil {
		t.Fatal(err)
	}
	pods := []api.Pod{pod("web-a", "web", "node-1"), pod("web-b", "web", "node-1"), pod("other-a", "other", "node-1"), pod("web-c", "web", "node-2")}
	if err := s.PutPods(ctx, pods); err != nil {
		t.Fatal(err)
	}
	st := api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.88.0.5", StartedAt: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	if err := s.SetPodStatus(ctx, "default/web-a", st); err != nil {
		t.Fatal(err)
	}
	// This agent reports on and removes its own pods only.
	if err := s.SetPodStatus(ctx, "default/web-c", st); err != nil {
		t.Fatal(err)
	}
	if err := s.StopPods(ctx, []string{"default/web-b", "default/nope"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDeployment(ctx, "default", "other"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemovePods(ctx, []string{"default/other-a", "default/web-c"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveDeployment(ctx, "default", "other"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetClusterConfig(ctx, state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RegisterNode(ctx, nodeOf("node-3")); err != nil || n.PodCIDR != "10.244.0.0/24" {
		t.Errorf("RegisterNode = %+v, %v", n, err)
	}
	if err := s.SetNodeStatus(ctx, "node-3", api.NodeLeft); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNode(ctx, "node-3"); err != nil {
		t.Fatal(err)
	}

	if p, ok := s.Pod("default/web-a"); !ok || !p.Status.StartedAt.Equal(st.StartedAt) || !p.Status.Ready {
		t.Errorf("web-a = %+v, %v", p, ok)
	}
	if p, _ := s.Pod("default/web-b"); !p.Stop || p.Status.Phase != api.PodTerminating {
		t.Errorf("web-b = %+v", p)
	}
	if p, ok := s.Pod("default/web-c"); !ok || p.Status.Phase != api.PodPending {
		t.Errorf("web-c, on another node, = %+v, %v; want it untouched", p, ok)
	}
	if _, ok := s.Deployment("default", "other"); ok {
		t.Error("removed deployment still there")
	}
	if ps := s.Pods(state.PodFilter{Deployment: "web", Node: "node-1"}); len(ps) != 2 {
		t.Errorf("Pods(web on node-1) = %d pods, want 2", len(ps))
	}
	if n, ok := s.Node("node-1"); !ok || n.CPUMillis != 2000 {
		t.Errorf("Node() = %+v, %v", n, ok)
	}
	if _, ok := s.Node("node-3"); ok {
		t.Error("removed node still there")
	}
	if at, ok := s.Revocations()["node-3"]; !ok || time.Since(at) > time.Minute {
		t.Errorf("node-3 revoked at %v, %v", at, ok)
	}
	if got := s.PodNodes([]string{"default/web-a", "default/web-c", "default/nope"}); !reflect.DeepEqual(got, map[string]string{"default/web-a": "node-1", "default/web-c": "node-2"}) {
		t.Errorf("PodNodes = %v", got)
	}

	before, index := contents(s), s.Index()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// The agent restarts: every acknowledged write must be back.
	s2 := openLeader(t, testConfig(t, dir))
	if after := contents(s2); !reflect.DeepEqual(after, before) {
		t.Errorf("state after reopen differs:\n got %+v\nwant %+v", after, before)
	}
	if s2.Index() != index {
		t.Errorf("index after reopen %d, want %d", s2.Index(), index)
	}
	if cf := s2.raft.GetConfiguration(); cf.Error() != nil || len(cf.Configuration().Servers) != 1 ||
		cf.Configuration().Servers[0].Address != s2.localAddr {
		t.Errorf("raft configuration after reopen: %+v, %v", cf.Configuration(), cf.Error())
	}
	if n, _ := s2.Skipped(); n != 0 {
		t.Errorf("%d entries skipped at replay", n)
	}
	if _, err := s2.CreateDeployment(ctx, other); err != nil {
		t.Errorf("write after reopen: %v", err)
	}
}

func TestStoreErrors(t *testing.T) {
	ctx := testCtx(t)
	s := openLeader(t, testConfig(t, t.TempDir()))
	if _, err := s.CreateDeployment(ctx, web()); err != nil {
		t.Fatal(err)
	}
	missing := web()
	missing.Name = "missing"
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	hugeEnv := pod("web-x", "web", "node-1")
	hugeEnv.Containers = api.CloneContainers(hugeEnv.Containers)
	hugeEnv.Containers[0].Env = map[string]string{"BIG": strings.Repeat("x", 100<<10)}

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"create existing", func() error { _, err := s.CreateDeployment(ctx, web()); return err }, state.ErrExists},
		{"update missing", func() error { _, err := s.UpdateDeployment(ctx, missing); return err }, state.ErrNotFound},
		{"delete missing", func() error { return s.DeleteDeployment(ctx, "default", "missing") }, state.ErrNotFound},
		{"remove not deleting", func() error { return s.RemoveDeployment(ctx, "default", "web") }, state.ErrConflict},
		{"pods of a missing deployment", func() error { return s.PutPods(ctx, []api.Pod{pod("x-a", "missing", "n1")}) }, state.ErrNotFound},
		{"status of a missing node", func() error { return s.SetNodeStatus(ctx, "nobody", api.NodeDown) }, state.ErrNotFound},
		{"register before the cluster config", func() error { _, err := s.RegisterNode(ctx, nodeOf("n1")); return err }, state.ErrConflict},
		{"canceled context", func() error { _, err := s.CreateDeployment(canceled, missing); return err }, context.Canceled},
		// Invalid writes are refused before they reach the log.
		{"deployment without name", func() error { _, err := s.CreateDeployment(ctx, api.Deployment{Namespace: "default"}); return err }, state.ErrInvalid},
		{"deployment named ../x", func() error {
			d := web()
			d.Name = "../x"
			_, err := s.CreateDeployment(ctx, d)
			return err
		}, state.ErrInvalid},
		{"pod without namespace", func() error { return s.PutPods(ctx, []api.Pod{{Name: "x"}}) }, state.ErrInvalid},
		{"pod with a 100 KiB env var", func() error { return s.PutPods(ctx, []api.Pod{hugeEnv}) }, state.ErrInvalid},
		{"node without name", func() error { return s.UpsertNode(ctx, api.Node{}) }, state.ErrInvalid},
		{"node without address", func() error { return s.UpsertNode(ctx, api.Node{Name: "n1"}) }, state.ErrInvalid},
		{"node status that is not one", func() error { return s.SetNodeStatus(ctx, "node-1", "sleepy") }, state.ErrInvalid},
		{"invalid cluster config", func() error {
			return s.SetClusterConfig(ctx, state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 8})
		}, state.ErrInvalid},
		{"remove node with a bad name", func() error { return s.RemoveNode(ctx, "Node_1") }, state.ErrInvalid},
		{"status with a bad pod ID", func() error { return s.SetPodStatus(ctx, "no-slash", api.PodStatus{}) }, state.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			index := s.Index()
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if errors.Is(tt.want, state.ErrInvalid) && s.Index() != index {
				t.Errorf("an invalid write reached the log (index %d, was %d)", s.Index(), index)
			}
		})
	}
	if n, last := s.Skipped(); n != 0 {
		t.Errorf("%d entries skipped (last: %s); invalid writes must not reach the FSM", n, last)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateDeployment(ctx, missing); err == nil {
		t.Error("write on a closed store succeeded")
	}
	if err := s.WaitLeader(ctx); err == nil {
		t.Error("WaitLeader on a closed store succeeded")
	}
}

func TestStoreWithoutBootstrapHasNoLeader(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = false
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.WaitLeader(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitLeader: %v, want deadline exceeded", err)
	}
	_, err = s.CreateDeployment(context.Background(), web())
	if !errors.Is(err, state.ErrNotLeader) || !strings.Contains(err.Error(), "no leader is known") {
		t.Errorf("write without a leader: %v", err)
	}
	if s.IsLeader() || s.Leader() != "" || s.HasState() {
		t.Errorf("IsLeader %v Leader %q HasState %v", s.IsLeader(), s.Leader(), s.HasState())
	}
}

func TestStoreDataDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	openLeader(t, testConfig(t, dir))
	_, err := Open(context.Background(), testConfig(t, dir))
	if err == nil || !strings.Contains(err.Error(), "another flotilla-agent") {
		t.Fatalf("second Open on the same data dir: %v", err)
	}
}

func TestStoreConfigErrors(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no node name", func(c *Config) { c.NodeName = "" }, "NodeName must be set"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir must be set"},
		{"unadvertisable", func(c *Config) { c.Keypair = ca.server(t, "node-1"); c.RaftBindAddr = "0.0.0.0:7401" }, "RaftAdvertiseAddr"},
		{"bad bind address", func(c *Config) { c.Keypair = ca.server(t, "node-1"); c.RaftBindAddr = "localhost" }, "not host:port"},
		{"certificate for another node", func(c *Config) { c.Keypair = ca.server(t, "node-2") }, `certificate is for "node-2"`},
		{"non-voter that bootstraps", func(c *Config) { c.Keypair = ca.client(t, "node-1"); c.NonVoter = true }, "cannot bootstrap"},
		{"non-voter without keypair", func(c *Config) { c.NonVoter, c.Bootstrap = true, false }, "NonVoter without Keypair"},
		{"lease > heartbeat", func(c *Config) { c.LeaderLeaseTimeout = time.Second }, "raft timing"},
		{"no snapshot retain", func(c *Config) { c.SnapshotRetain = 0 }, "SnapshotRetain"},
		{"negative multiplier", func(c *Config) { c.Multiplier = -1 }, "Multiplier"},
		{"multiplier too high", func(c *Config) { c.Multiplier = MaxMultiplier + 1 }, "Multiplier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			tt.mod(&cfg)
			s, err := Open(context.Background(), cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open accepted the config")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestStoreMultiplier checks the raft timings the store gives raft: the
// configured ones times Multiplier, and the store's own waits with them.
func TestStoreMultiplier(t *testing.T) {
	for _, tt := range []struct {
		multiplier int
		want       time.Duration // factor
	}{{0, 1}, {1, 1}, {3, 3}, {MaxMultiplier, MaxMultiplier}} {
		t.Run(fmt.Sprint(tt.multiplier), func(t *testing.T) {
			cfg := testConfig(t, "")
			cfg.InMemory = true
			cfg.Bootstrap = false // nothing to wait for
			cfg.Multiplier = tt.multiplier
			cfg.HeartbeatTimeout, cfg.ElectionTimeout = 200*time.Millisecond, 300*time.Millisecond
			s, err := Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rc := s.raft.ReloadableConfig()
			if rc.HeartbeatTimeout != tt.want*cfg.HeartbeatTimeout || rc.ElectionTimeout != tt.want*cfg.ElectionTimeout {
				t.Errorf("raft heartbeat %s election %s; want %s and %s", rc.HeartbeatTimeout, rc.ElectionTimeout,
					tt.want*cfg.HeartbeatTimeout, tt.want*cfg.ElectionTimeout)
			}
			if want := tt.want * cfg.ElectionTimeout; s.electionTimeout != want {
				t.Errorf("the store waits %s for a leader, want %s", s.electionTimeout, want)
			}
			if want := max(10*tt.want*cfg.ElectionTimeout, 10*time.Second); s.timeout != want {
				t.Errorf("the store's raft housekeeping timeout is %s, want %s", s.timeout, want)
			}
			// Only the failure detection scales: the other settings are as set.
			if rc.TrailingLogs != cfg.TrailingLogs || rc.SnapshotInterval != cfg.SnapshotInterval || rc.SnapshotThreshold != cfg.SnapshotThreshold {
				t.Errorf("snapshot settings %+v differ from the config's", rc)
			}
		})
	}
}

func TestStoreDefaultTimingsElectQuickly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.DataDir = "node-1", t.TempDir()
	start := time.Now()
	openLeader(t, cfg)
	// A single voter elects itself after one to two HeartbeatTimeouts.
	if took := time.Since(start); took > 5*cfg.HeartbeatTimeout { // 1-2 expected; slack for loaded CI
		t.Errorf("first election took %s", took)
	} else {
		t.Logf("leader after %s", took)
	}
}

// listeningSockets returns the local addresses of the TCP sockets this
// process listens on, from /proc; false where /proc is not Linux's.
func listeningSockets(t *testing.T) (map[string]bool, bool) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, false
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	out := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, false
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && fields[3] == "0A" && inodes[fields[9]] {
				out[fields[1]] = true
			}
		}
		f.Close()
	}
	return out, true
}

// TestStoreSingleAgentHasNoListener: a single agent's raft has no network
// listener at all, so nothing outside the process can append to its log.
func TestStoreSingleAgentHasNoListener(t *testing.T) {
	// An address the store would listen on if it listened: free now.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	before, procOK := listeningSockets(t)
	cfg := testConfig(t, t.TempDir())
	cfg.RaftBindAddr = addr
	s := openLeader(t, cfg)
	if _, err := s.CreateDeployment(testCtx(t), web()); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on %s, the single agent's RaftBindAddr", addr)
	}
	if strings.Contains(s.Leader(), ":") && !strings.HasPrefix(s.Leader(), "inmem:") {
		t.Errorf("the single agent's raft address is %q, a network address", s.Leader())
	}
	if !procOK {
		t.Log("no /proc: checked the bind address only")
		return
	}
	after, _ := listeningSockets(t)
	for a := range after {
		if !before[a] {
			t.Errorf("a TCP listener appeared on %s (hex, /proc/net/tcp) when the single agent opened", a)
		}
	}

	// The check sees a listener when there is one: a fleet member's.
	cfg2 := testConfig(t, t.TempDir())
	cfg2.Keypair = newTestCA(t).server(t, "node-1")
	s2, err := Open(context.Background(), cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	withFleet, _ := listeningSockets(t)
	if len(withFleet) <= len(after) {
		t.Errorf("no new listener found for a fleet member on %s; the /proc check does not work", s2.localAddr)
	}
}

func TestStoreConcurrentWritersSurviveRestart(t *testing.T) {
	const writers, perWriter = 16, 50
	dir := t.TempDir()
	ctx := testCtx(t)
	s := openLeader(t, testConfig(t, dir))

	var (
		mu    sync.Mutex
		acked []api.Deployment
		wg    sync.WaitGroup
		errs  = make(chan error, writers)
	)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				d := web()
				d.Name = fmt.Sprintf("w%d-%d", w, i)
				got, err := s.CreateDeployment(ctx, d)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				acked = append(acked, got)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(acked) != writers*perWriter {
		t.Fatalf("%d writes acknowledged, want %d", len(acked), writers*perWriter)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openLeader(t, testConfig(t, dir))
	indexes := map[uint64]bool{}
	for _, want := range acked {
		got, ok := s2.Deployment(want.Namespace, want.Name)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("after restart %s = %+v, %v; want %+v", want.Name, got, ok, want)
		}
		if indexes[want.CreateIndex] {
			t.Errorf("two writes share raft index %d", want.CreateIndex)
		}
		indexes[want.CreateIndex] = true
	}
	if n := len(s2.Deployments("")); n != writers*perWriter {
		t.Errorf("%d deployments after restart, want %d", n, writers*perWriter)
	}
}

func TestStoreSnapshotThenRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	cfg := testConfig(t, dir)
	cfg.TrailingLogs = 5 // so the snapshot truncates the log and restart needs it
	s := openLeader(t, cfg)
	for i := range 30 {
		d := web()
		d.Name = fmt.Sprintf("d%d", i)
		if _, err := s.CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RemoveNode(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if first := s.raft.Stats()["last_snapshot_index"]; first == "0" {
		t.Fatal("no snapshot taken")
	}
	for i := 30; i < 40; i++ { // after the snapshot: replayed from the log
		d := web()
		d.Name = fmt.Sprintf("d%d", i)
		if _, err := s.CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpsertNode(ctx, nodeOf("node-1")); err != nil {
		t.Fatal(err)
	}
	before, index := contents(s), s.Index()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openLeader(t, cfg)
	if after := contents(s2); !reflect.DeepEqual(after, before) {
		t.Errorf("state after snapshot and restart differs: %d deployments, want %d; revocations %v, want %v",
			len(after.Deployments), len(before.Deployments), after.Revocations, before.Revocations)
	}
	if s2.Index() != index {
		t.Errorf("index %d after restart, want %d", s2.Index(), index)
	}
}

// TestStoreRestartsWithBadEntriesInTheLog: entries the FSM cannot apply
// (written by a buggy or newer agent, or corrupted) are skipped at every
// replay; the agent starts, and everything valid around them is there.
func TestStoreRestartsWithBadEntriesInTheLog(t *testing.T) {
	invalid, err := state.Encode(&state.CreateDeployment{Deployment: api.Deployment{Namespace: "default", Name: "../x"}})
	if err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{
		{0xff, '{', '}'}, // unknown type
		{byte(state.CreateDeploymentType), '{', '"'}, // truncated body
		{byte(state.PutPodsType), 0x00, 0x01, 0x02},  // garbage body
		invalid,                                // fails validation
		{byte(state.RemoveNodeType), '{', '}'}, // no name, no time
		append([]byte{byte(state.SetNodeStatusType)}, `{"name":"node-1","status":"sleepy"}`...),
	}
	tests := []struct {
		name string
		// snapshot: when to take one: "" never, "before" the bad
		// entries (they are replayed from the log), "after" them (they
		// are in no log any more: the snapshot is the state).
		snapshot    string
		wantSkipped uint64 // at the replay
	}{
		{"no snapshot", "", uint64(len(bad))},
		{"snapshot before the bad entries", "before", uint64(len(bad))},
		{"snapshot after the bad entries", "after", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := testCtx(t)
			cfg := testConfig(t, dir)
			cfg.TrailingLogs = 1 // a snapshot truncates the log: replay starts from it
			s := openLeader(t, cfg)
			write := func(prefix string, n int) {
				t.Helper()
				for i := range n {
					d := web()
					d.Name = fmt.Sprintf("%s%d", prefix, i)
					if _, err := s.CreateDeployment(ctx, d); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.PutPods(ctx, []api.Pod{pod(prefix+"0-a", prefix+"0", "node-1")}); err != nil {
					t.Fatal(err)
				}
			}
			snapshot := func() {
				t.Helper()
				if err := s.raft.Snapshot().Error(); err != nil {
					t.Fatal(err)
				}
			}
			write("a", 5)
			if err := s.UpsertNode(ctx, nodeOf("node-1")); err != nil {
				t.Fatal(err)
			}
			if tt.snapshot == "before" {
				snapshot()
			}
			for i, data := range bad {
				f := s.raft.Apply(data, 0)
				if err := f.Error(); err != nil {
					t.Fatalf("bad entry %d: raft: %v", i, err)
				}
				if resp, ok := f.Response().(error); !ok || !strings.Contains(resp.Error(), "skipped") {
					t.Errorf("bad entry %d: the FSM answered %v; want a skip", i, f.Response())
				}
			}
			if n, _ := s.Skipped(); n != uint64(len(bad)) {
				t.Errorf("Skipped() = %d while running, want %d", n, len(bad))
			}
			write("b", 5)
			if err := s.RemoveNode(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
			if tt.snapshot == "after" {
				snapshot()
				// And a valid entry after the snapshot, replayed from the log.
				write("c", 1)
			}
			before, index := contents(s), s.Index()
			if len(before.Deployments) < 10 || len(before.Pods) < 2 || len(before.Revocations) != 1 {
				t.Fatalf("state before the restart is missing writes: %+v", before)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s2 := openLeader(t, cfg)
			if after := contents(s2); !reflect.DeepEqual(after, before) {
				t.Errorf("state after the restart differs:\n got %+v\nwant %+v", after, before)
			}
			if s2.Index() != index {
				t.Errorf("index %d after the restart, want %d", s2.Index(), index)
			}
			if n, last := s2.Skipped(); n != tt.wantSkipped {
				t.Errorf("Skipped() = %d (%s) after the restart, want %d", n, last, tt.wantSkipped)
			} else if n > 0 && !strings.Contains(last, "entry") {
				t.Errorf("Skipped's reason %q names no entry", last)
			}
			if _, err := s2.CreateDeployment(ctx, func() api.Deployment { d := web(); d.Name = "after"; return d }()); err != nil {
				t.Errorf("write after the restart: %v", err)
			}
		})
	}
}

func TestStoreChangedAndWaitIndex(t *testing.T) {
	ctx := testCtx(t)
	s := openLeader(t, testConfig(t, t.TempDir()))
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any write")
	default:
	}

	waited := make(chan error, 1)
	target := s.Index() + 1
	go func() { waited <- s.WaitIndex(ctx, target) }()

	if _, err := s.CreateDeployment(ctx, web()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("Changed not closed by a write")
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitIndex(%d): %v", target, err)
	}
	if s.Changed() == ch {
		t.Error("Changed returned the closed channel again")
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.WaitIndex(short, s.Index()+100); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitIndex for a future index: %v", err)
	}
}

// TestStoreLeaderKeepsItsTermAcrossWrites: a leader establishes its term
// once (one barrier), not again at every entry it applies: its leader loop
// runs on, and its writes append nothing but themselves to the log.
func TestStoreLeaderKeepsItsTermAcrossWrites(t *testing.T) {
	ctx := testCtx(t)
	s := openLeader(t, testConfig(t, t.TempDir()))
	starts := make(chan uint64, 100)
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunLeaderLoop(loopCtx, func(ctx context.Context) {
			starts <- s.Index()
			<-ctx.Done()
		})
	}()
	t.Cleanup(func() { stop(); <-done })
	select {
	case <-starts:
	case <-ctx.Done():
		t.Fatal("the leader loop did not start")
	}
	const writes = 20
	first := s.raft.LastIndex()
	for i := range writes {
		d := web()
		d.Name = fmt.Sprintf("d%d", i)
		if _, err := s.CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.raft.LastIndex() - first; got != writes {
		t.Errorf("%d writes appended %d raft entries; the leader re-established its term meanwhile", writes, got)
	}
	if len(starts) != 0 {
		t.Errorf("the leader loop restarted %d times during writes in one term", len(starts))
	}
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStoreInMemory(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.InMemory = true
	s := openLeader(t, cfg)
	if _, err := s.CreateDeployment(testCtx(t), web()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Deployment("default", "web"); !ok {
		t.Error("deployment not stored")
	}
}

// BenchmarkCreateDeployment measures acknowledged writes on real disk: each
// one is committed (fsynced) and applied before it returns.
func BenchmarkCreateDeployment(b *testing.B) {
	for _, mode := range []string{"sequential", "parallel"} {
		b.Run(mode, func(b *testing.B) {
			cfg := testConfig(b, b.TempDir())
			s := openLeader(b, cfg)
			ctx := context.Background()
			var seq sync.Mutex
			n := 0
			next := func() string {
				seq.Lock()
				defer seq.Unlock()
				n++
				return fmt.Sprintf("d%d", n)
			}
			b.ResetTimer()
			if mode == "sequential" {
				for b.Loop() {
					d := web()
					d.Name = next()
					if _, err := s.CreateDeployment(ctx, d); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(16) // 16 × GOMAXPROCS writers
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						d := web()
						d.Name = next()
						if _, err := s.CreateDeployment(ctx, d); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

func TestStoreCloseDuringWritesKeepsAcknowledgedOnes(t *testing.T) {
	dir := t.TempDir()
	s := openLeader(t, testConfig(t, dir))
	ctx := testCtx(t)

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				d := web()
				d.Name = fmt.Sprintf("w%d-%d", w, i)
				// No deadline: a write must not outlive Close.
				if _, err := s.CreateDeployment(context.Background(), d); err != nil {
					return // the store closed under us
				}
				mu.Lock()
				acked = append(acked, d.Name)
				mu.Unlock()
			}
		})
	}
	// Let some writes through, then pull the plug mid-stream.
	if err := s.WaitIndex(ctx, s.Index()+100); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	select {
	case <-writersDone:
	case <-time.After(5 * time.Second):
		t.Fatal("writers still blocked 5s after Close")
	}

	s2 := openLeader(t, testConfig(t, dir))
	for _, name := range acked {
		if _, ok := s2.Deployment("default", name); !ok {
			t.Errorf("acknowledged write %s lost in the restart", name)
		}
	}
	t.Logf("%d writes acknowledged before Close; %d deployments after restart", len(acked), len(s2.Deployments("")))
}

func TestStoreCloseAtAnyMoment(t *testing.T) {
	// Close before, during and after the election must neither hang nor
	// leave the data dir locked.
	dir := t.TempDir()
	for i := range 8 {
		s, err := Open(context.Background(), testConfig(t, dir))
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if wait := time.Duration(i) * 40 * time.Millisecond; wait > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			_ = s.WaitLeader(ctx)
			cancel()
		}
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("close %d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("close %d hangs", i)
		}
	}
}
