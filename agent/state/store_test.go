package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// testConfig is a single voter on a free port in dir, with raft timings cut
// so tests elect a leader in a few hundred milliseconds.
func testConfig(t testing.TB, dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = "node-1"
	cfg.DataDir = dir
	cfg.RaftBindAddr = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
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

// snapshotOf is everything a store holds, for comparing before and after a restart.
type snapshotOf struct {
	Deployments []api.Deployment
	Pods        []api.Pod
	Nodes       []api.Node
}

func contents(s *Store) snapshotOf {
	return snapshotOf{s.Deployments(""), s.Pods(PodFilter{}), s.Nodes()}
}

func TestStoreWriteReadReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	s := openLeader(t, testConfig(t, dir))
	firstAddr := s.Leader()
	if firstAddr == "" || strings.HasSuffix(firstAddr, ":0") {
		t.Fatalf("Leader() = %q, want the address raft listens on", firstAddr)
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
	if err := s.UpsertNode(ctx, api.Node{Name: "node-1", CPUMillis: 4000, MemoryMiB: 8192, Status: "ready"}); err != nil {
		t.Fatal(err)
	}
	pods := []api.Pod{pod("web-a", "web", "node-1"), pod("web-b", "web", "node-1"), pod("other-a", "other", "node-1")}
	if err := s.PutPods(ctx, pods); err != nil {
		t.Fatal(err)
	}
	st := api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.88.0.5", StartedAt: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	if err := s.SetPodStatus(ctx, "default/web-a", st); err != nil {
		t.Fatal(err)
	}
	if err := s.StopPods(ctx, []string{"default/web-b", "default/nope"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDeployment(ctx, "default", "other"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemovePods(ctx, []string{"default/other-a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveDeployment(ctx, "default", "other"); err != nil {
		t.Fatal(err)
	}

	if p, ok := s.Pod("default/web-a"); !ok || !p.Status.StartedAt.Equal(st.StartedAt) || !p.Status.Ready {
		t.Errorf("web-a = %+v, %v", p, ok)
	}
	if p, _ := s.Pod("default/web-b"); !p.Stop || p.Status.Phase != api.PodTerminating {
		t.Errorf("web-b = %+v", p)
	}
	if _, ok := s.Deployment("default", "other"); ok {
		t.Error("removed deployment still there")
	}
	if ps := s.Pods(PodFilter{Deployment: "web", Node: "node-1"}); len(ps) != 2 {
		t.Errorf("Pods(web on node-1) = %d pods, want 2", len(ps))
	}
	if n, ok := s.Node("node-1"); !ok || n.CPUMillis != 4000 {
		t.Errorf("Node() = %+v, %v", n, ok)
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
	// Port 0 gave a new port; the node must have recorded it.
	if s2.Leader() == firstAddr || s2.Leader() != string(s2.localAddr) {
		t.Errorf("Leader() after reopen = %q (before %q, listening on %q)", s2.Leader(), firstAddr, s2.localAddr)
	}
	if cf := s2.raft.GetConfiguration(); cf.Error() != nil || len(cf.Configuration().Servers) != 1 ||
		cf.Configuration().Servers[0].Address != s2.localAddr {
		t.Errorf("raft configuration after reopen: %+v, %v", cf.Configuration(), cf.Error())
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

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"create existing", func() error { _, err := s.CreateDeployment(ctx, web()); return err }, ErrExists},
		{"update missing", func() error { _, err := s.UpdateDeployment(ctx, missing); return err }, ErrNotFound},
		{"delete missing", func() error { return s.DeleteDeployment(ctx, "default", "missing") }, ErrNotFound},
		{"remove not deleting", func() error { return s.RemoveDeployment(ctx, "default", "web") }, ErrConflict},
		{"pods of a missing deployment", func() error { return s.PutPods(ctx, []api.Pod{pod("x-a", "missing", "n1")}) }, ErrNotFound},
		{"canceled context", func() error { _, err := s.CreateDeployment(canceled, missing); return err }, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	for name, call := range map[string]func() error{
		"deployment without name": func() error { _, err := s.CreateDeployment(ctx, api.Deployment{Namespace: "default"}); return err },
		"pod without namespace":   func() error { return s.PutPods(ctx, []api.Pod{{Name: "x"}}) },
		"node without name":       func() error { return s.UpsertNode(ctx, api.Node{}) },
	} {
		if err := call(); err == nil {
			t.Errorf("%s: no error", name)
		}
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
	if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "no leader is known") {
		t.Errorf("write without a leader: %v", err)
	}
	if s.IsLeader() || s.Leader() != "" {
		t.Errorf("IsLeader %v Leader %q", s.IsLeader(), s.Leader())
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
	for name, mod := range map[string]func(*Config){
		"no node name":       func(c *Config) { c.NodeName = "" },
		"no data dir":        func(c *Config) { c.DataDir = "" },
		"unadvertisable":     func(c *Config) { c.RaftBindAddr = "0.0.0.0:7401" },
		"bad bind address":   func(c *Config) { c.RaftBindAddr = "localhost" },
		"lease > heartbeat":  func(c *Config) { c.LeaderLeaseTimeout = time.Second },
		"no snapshot retain": func(c *Config) { c.SnapshotRetain = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			mod(&cfg)
			if s, err := Open(context.Background(), cfg); err == nil {
				s.Close()
				t.Fatal("Open accepted the config")
			}
		})
	}
}

func TestStoreDefaultTimingsElectQuickly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.DataDir, cfg.RaftBindAddr = "node-1", t.TempDir(), "127.0.0.1:0"
	start := time.Now()
	openLeader(t, cfg)
	// A single voter elects itself after one to two HeartbeatTimeouts.
	if took := time.Since(start); took > 5*cfg.HeartbeatTimeout { // 1-2 expected; slack for loaded CI
		t.Errorf("first election took %s", took)
	} else {
		t.Logf("leader after %s", took)
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
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.raft.Stats()["last_snapshot_index"]; first == "0" {
		t.Fatal("no snapshot taken")
	}
	for i := 30; i < 40; i++ { // after the snapshot: replayed from the log
		d := web()
		d.Name = fmt.Sprintf("d%d", i)
		if _, err := s.CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpsertNode(ctx, api.Node{Name: "node-1", Status: "ready"}); err != nil {
		t.Fatal(err)
	}
	before, index := contents(s), s.Index()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openLeader(t, cfg)
	if after := contents(s2); !reflect.DeepEqual(after, before) {
		t.Errorf("state after snapshot and restart differs: %d deployments, want %d", len(after.Deployments), len(before.Deployments))
	}
	if s2.Index() != index {
		t.Errorf("index %d after restart, want %d", s2.Index(), index)
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
