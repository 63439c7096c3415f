package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/api"
)

// testCA is a throwaway cluster CA for a test's raft peers.
type testCA struct {
	ca  *pki.CA
	pem []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("flotilla test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca, pem: certPEM}
}

var loopback = net.IPv4(127, 0, 0, 1)

// server returns a server's keypair for name: what IssueServer gives a
// server, here for 127.0.0.1 unless ips are given.
func (c *testCA) server(t testing.TB, name string, ips ...net.IP) *pki.Keypair {
	t.Helper()
	if len(ips) == 0 {
		ips = []net.IP{loopback}
	}
	certPEM, keyPEM, err := c.ca.IssueServer(name, ips, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.NewKeypair(c.pem, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// client returns a client agent's keypair for name, as joining gives it:
// a CSR signed with SignJoin for the address it connects from.
func (c *testCA) client(t testing.TB, name string) *pki.Keypair {
	t.Helper()
	csrPEM, keyPEM, err := pki.NewCSR(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.ca.SignJoin(csrPEM, name, loopback, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.NewKeypair(c.pem, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// testLogger logs to the test's output until the test ends, then drops
// lines: transport goroutines of closed peers may log a little later.
func testLogger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testLogWriter{w: t.Output()}
	t.Cleanup(func() {
		w.mu.Lock()
		w.w = io.Discard
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testLogWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *testLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

// testCluster runs Stores in one process, on loopback, over TLS, with
// their logs in temporary dirs. It is also the stores' Forwarder, doing in
// process what the agents' RPC does once it authorized a write: the
// command and the Reply cross as JSON, so only what the wire carries
// arrives, and the leader's ApplyLocal proposes it.
type testCluster struct {
	t  testing.TB
	ca *testCA

	// mods change every member's config, after config's defaults.
	mods []func(*Config)

	mu     sync.Mutex
	stores map[string]*Store
}

var _ Forwarder = (*testCluster)(nil)

func newTestCluster(t testing.TB) *testCluster {
	return &testCluster{t: t, ca: newTestCA(t), stores: map[string]*Store{}}
}

func (c *testCluster) Forward(ctx context.Context, leaderID string, cmd state.Command) (Reply, error) {
	c.mu.Lock()
	s := c.stores[leaderID]
	c.mu.Unlock()
	if s == nil {
		return Reply{}, fmt.Errorf("no agent named %q", leaderID)
	}
	return viaWire(ctx, cmd, s.ApplyLocal)
}

// viaWire hands cmd to apply as the RPC does: encoded, decoded by its
// type's name into a new command, and the reply encoded and decoded.
func viaWire(ctx context.Context, cmd state.Command, apply func(context.Context, state.Command) Reply) (Reply, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return Reply{}, err
	}
	t, ok := state.ParseMessageType(cmd.Type().String())
	if !ok {
		return Reply{}, fmt.Errorf("no such write %s", cmd.Type())
	}
	got, _ := state.NewCommand(t)
	if err := json.Unmarshal(body, got); err != nil {
		return Reply{}, err
	}
	b, err := json.Marshal(apply(ctx, got))
	if err != nil {
		return Reply{}, err
	}
	var reply Reply
	err = json.Unmarshal(b, &reply)
	return reply, err
}

// config is a cluster member's config: a keypair (a server certificate,
// or a client certificate for a non-voter), a free port, no bootstrap, and
// the default raft timings, which the failover time measured here depends
// on. (testConfig's shorter ones make a leader of two voters on a loaded
// two-core machine step down now and then: its 50ms lease runs out.)
func (c *testCluster) config(name string, nonVoter bool) Config {
	def := DefaultConfig()
	cfg := testConfig(c.t, c.t.TempDir())
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = def.HeartbeatTimeout, def.ElectionTimeout, def.LeaderLeaseTimeout
	cfg.NodeName = name
	cfg.Bootstrap = false
	cfg.NonVoter = nonVoter
	if nonVoter {
		cfg.Keypair = c.ca.client(c.t, name)
	} else {
		cfg.Keypair = c.ca.server(c.t, name)
	}
	cfg.Forwarder = c
	cfg.Logger = testLogger(c.t, slog.LevelWarn)
	return cfg
}

// open opens a member; mods change its config first.
func (c *testCluster) open(name string, nonVoter bool, mods ...func(*Config)) *Store {
	c.t.Helper()
	cfg := c.config(name, nonVoter)
	for _, mod := range slices.Concat(c.mods, mods) {
		mod(&cfg)
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = s.Close() })
	c.mu.Lock()
	c.stores[name] = s
	c.mu.Unlock()
	return s
}

// startServers opens n servers and has each bootstrap the cluster on its
// own, as agents do once they see --bootstrap-expect servers; each gets the
// list in another order, which must not matter.
func (c *testCluster) startServers(n int) []*Store {
	c.t.Helper()
	stores := make([]*Store, n)
	var servers []Server
	for i := range stores {
		stores[i] = c.open(fmt.Sprintf("server-%d", i+1), false)
		servers = append(servers, Server{ID: stores[i].LocalID(), Address: string(stores[i].localAddr), Voter: true})
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range stores {
		list := append(slices.Clone(servers[i:]), servers[:i]...)
		wg.Go(func() { errs[i] = s.BootstrapServers(list) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Fatal(err)
	}
	return stores
}

// waitLeader polls until exactly one of stores leads and all of them know
// it, and returns it.
func waitLeader(t testing.TB, stores ...*Store) *Store {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for ; time.Now().Before(deadline); <-poll.C {
		var leaders []*Store
		agree := true
		for _, s := range stores {
			if s.IsLeader() {
				leaders = append(leaders, s)
			}
			agree = agree && s.LeaderID() != "" && s.LeaderID() == stores[0].LeaderID()
		}
		if len(leaders) == 1 && agree && leaders[0].LeaderID() == leaders[0].LocalID() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := leaders[0].WaitLeader(ctx) // its barrier is done
			cancel()
			if err == nil {
				return leaders[0]
			}
		}
	}
	for _, s := range stores {
		t.Logf("%s: state %s, leader %q", s.LocalID(), s.raft.State(), s.LeaderID())
	}
	t.Fatal("no single leader all stores agree on within 10s")
	return nil
}

// waitReplicated waits until every store applied what from has.
func waitReplicated(t testing.TB, from *Store, stores ...*Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range stores {
		if err := s.WaitIndex(ctx, from.Index()); err != nil {
			t.Fatalf("%s: %v", s.LocalID(), err)
		}
	}
}

func followersOf(leader *Store, stores []*Store) []*Store {
	var out []*Store
	for _, s := range stores {
		if s != leader {
			out = append(out, s)
		}
	}
	return out
}

// eventually polls cond every few milliseconds until it holds or within
// runs out, and says whether it held.
func eventually(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	poll := time.NewTicker(2 * time.Millisecond)
	defer poll.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-poll.C
	}
	return true
}

func TestClusterBootstrapIsIdempotent(t *testing.T) {
	c := newTestCluster(t)
	stores := c.startServers(3)
	leader := waitLeader(t, stores...)
	want, err := leader.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 3 {
		t.Fatalf("servers %+v", want)
	}
	for i, srv := range want {
		if srv.ID != fmt.Sprintf("server-%d", i+1) || !srv.Voter || srv.Address != string(stores[i].localAddr) {
			t.Errorf("server %d = %+v", i, srv)
		}
	}
	for _, s := range stores {
		if !s.HasState() {
			t.Errorf("%s: HasState false after bootstrap", s.LocalID())
		}
		// Again, as an agent restarting with state on disk does.
		if err := s.BootstrapServers(want); err != nil {
			t.Errorf("%s: second bootstrap: %v", s.LocalID(), err)
		}
		if got, err := s.Servers(); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: servers %+v, %v; want %+v", s.LocalID(), got, err, want)
		}
	}

	other := want[0]
	other.ID = "server-9"
	for name, list := range map[string][]Server{
		"without itself":    {other},
		"empty":             nil,
		"twice":             {want[0], want[0]},
		"self non-voter":    {{ID: "server-1", Address: want[0].Address}},
		"bad address":       {{ID: "server-1", Address: "nowhere", Voter: true}},
		"shared address":    {want[0], other},
		"server without ID": {want[0], {Address: "127.0.0.1:1", Voter: true}},
	} {
		if err := stores[0].BootstrapServers(list); err == nil {
			t.Errorf("bootstrap %s: no error", name)
		}
	}
}

// TestClusterReplicatesAndForwards runs three TLS servers and a client
// (non-voter) through what a fleet does: writes on the leader, writes on
// followers forwarded to it, pod ranges, and membership changes.
func TestClusterReplicatesAndForwards(t *testing.T) {
	ctx := testCtx(t)
	c := newTestCluster(t)
	servers := c.startServers(3)
	leader := waitLeader(t, servers...)
	followers := followersOf(leader, servers)
	f := followers[0]

	// Writes on the leader reach every server.
	if _, err := leader.CreateDeployment(ctx, web()); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t, leader, followers...)
	for _, s := range followers {
		if got, want := contents(s), contents(leader); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %+v, want %+v", s.LocalID(), got, want)
		}
	}

	// A write on a follower is forwarded and answers as a local write does.
	fwd := web()
	fwd.Name = "fwd"
	got, err := f.CreateDeployment(ctx, fwd)
	if err != nil {
		t.Fatal(err)
	}
	if local, ok := f.Deployment("default", "fwd"); !ok || !reflect.DeepEqual(local, got) {
		t.Errorf("read right after a forwarded write: %+v, %v; the write answered %+v", local, ok, got)
	}
	if onLeader, _ := leader.Deployment("default", "fwd"); !reflect.DeepEqual(onLeader, got) {
		t.Errorf("leader has %+v, the forwarded write answered %+v", onLeader, got)
	}
	_, errF := f.CreateDeployment(ctx, fwd)
	_, errL := leader.CreateDeployment(ctx, fwd)
	if !errors.Is(errF, state.ErrExists) || errL == nil || errF.Error() != errL.Error() {
		t.Errorf("duplicate create: follower says %v, leader says %v", errF, errL)
	}
	fwd.Containers[0].Image = "nginx:2"
	if d, err := f.UpdateDeployment(ctx, fwd); err != nil || d.Generation != 2 {
		t.Errorf("forwarded update: %+v, %v", d, err)
	}
	for name, tt := range map[string]struct {
		err  error
		want error
	}{
		"delete missing":      {f.DeleteDeployment(ctx, "default", "missing"), state.ErrNotFound},
		"remove not deleting": {f.RemoveDeployment(ctx, "default", "fwd"), state.ErrConflict},
		"invalid":             {f.SetNodeStatus(ctx, "server-1", "sleepy"), state.ErrInvalid},
	} {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("forwarded %s: %v, want %v", name, tt.err, tt.want)
		}
	}

	// ApplyLocal is the leader's: a follower refuses, and never forwards.
	reply := f.ApplyLocal(ctx, &state.CreateDeployment{Deployment: func() api.Deployment { d := web(); d.Name = "direct"; return d }()})
	if reply.Index != 0 || reply.Error == nil || reply.Error.Kind != KindNotLeader {
		t.Errorf("ApplyLocal on a follower: %+v", reply)
	}
	if _, err := reply.Result(); !errors.Is(err, state.ErrNotLeader) {
		t.Errorf("ApplyLocal on a follower: %v", err)
	}
	// On the leader it refuses what the FSM would skip, before the log.
	index := leader.Index()
	for name, cmd := range map[string]state.Command{
		"no name":    &state.CreateDeployment{Deployment: api.Deployment{Namespace: "default"}},
		"bad status": &state.SetNodeStatus{Name: "server-1", Status: "sleepy"},
		"no time":    &state.RemoveNode{Name: "server-1"},
		"no updates": &state.SetPodStatuses{Node: "server-1"},
	} {
		reply := leader.ApplyLocal(ctx, cmd)
		if reply.Index != 0 || reply.Error == nil || reply.Error.Kind != KindInvalid {
			t.Errorf("ApplyLocal(%s) = %+v; want a refusal as invalid", name, reply)
		}
	}
	if leader.Index() != index {
		t.Error("a refused command reached the log")
	}

	// Pod ranges: every server proposes a cluster config, one wins; every
	// node registers through itself and gets its own range.
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			cc := state.ClusterConfig{PodCIDR: fmt.Sprintf("10.%d.0.0/16", 240+i), NodeMaskBits: 24}
			if err := s.SetClusterConfig(ctx, cc); err != nil {
				t.Errorf("%s: %v", s.LocalID(), err)
			}
		})
	}
	wg.Wait()
	waitReplicated(t, leader, servers...)
	cc, ok := leader.ClusterConfig()
	if !ok {
		t.Fatal("no cluster config")
	}
	for _, s := range servers {
		if got, _ := s.ClusterConfig(); got != cc {
			t.Errorf("%s has cluster config %+v, leader %+v", s.LocalID(), got, cc)
		}
	}

	// A client agent joins as a non-voter.
	client := c.open("client-1", true)
	if err := client.BootstrapServers([]Server{{ID: "client-1", Address: string(client.localAddr), Voter: true}}); err == nil {
		t.Error("a non-voter bootstrapped")
	}
	if err := f.AddNonvoter(ctx, "client-1", string(client.localAddr)); !errors.Is(err, state.ErrNotLeader) {
		t.Errorf("AddNonvoter on a follower: %v", err)
	}
	if err := leader.AddNonvoter(ctx, "client-1", string(client.localAddr)); err != nil {
		t.Fatal(err)
	}
	confIndex := leader.raft.GetConfiguration().Index()
	if err := leader.AddNonvoter(ctx, "client-1", string(client.localAddr)); err != nil {
		t.Fatal(err)
	}
	if err := leader.AddVoter(ctx, f.LocalID(), string(f.localAddr)); err != nil {
		t.Fatal(err)
	}
	if i := leader.raft.GetConfiguration().Index(); i != confIndex {
		t.Errorf("adding servers that are there already changed the configuration (index %d, was %d)", i, confIndex)
	}
	if srvs, _ := leader.Servers(); len(srvs) != 4 || srvs[0] != (Server{ID: "client-1", Address: string(client.localAddr)}) {
		t.Errorf("servers %+v", srvs)
	}
	waitReplicated(t, leader, client)
	if got, want := contents(client), contents(leader); !reflect.DeepEqual(got, want) {
		t.Errorf("client: %+v, want %+v", got, want)
	}
	if got, ok := client.ClusterConfig(); !ok || got != cc {
		t.Errorf("client cluster config %+v, %v", got, ok)
	}

	// Every agent registers through itself: followers and the client forward.
	agents := append(slices.Clone(servers), client)
	ranges := map[string]string{}
	var mu sync.Mutex
	for _, s := range agents {
		wg.Go(func() {
			n, err := s.RegisterNode(ctx, nodeOf(s.LocalID()))
			if err != nil {
				t.Errorf("%s: register: %v", s.LocalID(), err)
				return
			}
			if local, _ := s.Node(s.LocalID()); !reflect.DeepEqual(local, n) {
				t.Errorf("%s: read after register %+v, answer %+v", s.LocalID(), local, n)
			}
			mu.Lock()
			defer mu.Unlock()
			if other, ok := ranges[n.PodCIDR]; ok {
				t.Errorf("%s and %s both got %s", other, n.Name, n.PodCIDR)
			}
			ranges[n.PodCIDR] = n.Name
		})
	}
	wg.Wait()
	want := []string{"10.240.0.0/24", "10.240.1.0/24", "10.240.2.0/24", "10.240.3.0/24"}
	if cc.PodCIDR != "10.240.0.0/16" {
		want = nil // another server's config won; check the count only
	}
	if got := slices.Sorted(maps.Keys(ranges)); len(got) != 4 || (want != nil && !slices.Equal(got, want)) {
		t.Errorf("pod ranges %v, want %v", got, want)
	}
	// Registering again (an agent restart) keeps the range.
	n := nodeOf("client-1")
	n.CPUMillis = 1234
	before, _ := client.Node("client-1")
	after, err := client.RegisterNode(ctx, n)
	if err != nil || after.PodCIDR != before.PodCIDR || after.CPUMillis != 1234 {
		t.Errorf("re-register: %+v, %v; had %s", after, err, before.PodCIDR)
	}
	if err := client.SetNodeStatus(ctx, "server-1", api.NodeDown); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.Node("server-1"); n.Status != api.NodeDown {
		t.Errorf("status after a forwarded SetNodeStatus: %+v", n)
	}
	if err := client.SetNodeStatus(ctx, "nobody", api.NodeDown); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("status of a missing node: %v", err)
	}

	// A client reports on and removes its own pods only, even forwarded.
	if err := leader.PutPods(ctx, []api.Pod{pod("web-c1", "web", "client-1"), pod("web-s1", "web", "server-1")}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"default/web-c1", "default/web-s1"} {
		if err := client.SetPodStatus(ctx, id, api.PodStatus{Phase: api.PodRunning, Ready: true}); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := client.Pod("default/web-c1"); p.Status.Phase != api.PodRunning {
		t.Errorf("client's own pod: %+v", p.Status)
	}
	if p, _ := client.Pod("default/web-s1"); p.Status.Phase != api.PodPending {
		t.Errorf("server-1's pod changed by client-1's report: %+v", p.Status)
	}
	if err := client.RemovePods(ctx, []string{"default/web-c1", "default/web-s1"}); err != nil {
		t.Fatal(err)
	}
	if got := client.PodNodes([]string{"default/web-c1", "default/web-s1"}); !reflect.DeepEqual(got, map[string]string{"default/web-s1": "server-1"}) {
		t.Errorf("pods left after client-1 removed both: %v", got)
	}
}

// TestClusterFailoverKeepsAcknowledgedWrites kills the leader while 16
// writers write through every agent (the leader, followers and a client,
// the last two forwarding) and checks that a new leader takes over and
// that every write acknowledged before, during and after is on every
// survivor.
func TestClusterFailoverKeepsAcknowledgedWrites(t *testing.T) {
	const writers, before, after = 16, 300, 300
	ctx := testCtx(t)
	c := newTestCluster(t)
	servers := c.startServers(3)
	leader := waitLeader(t, servers...)
	client := c.open("client-1", true)
	if err := leader.AddNonvoter(ctx, client.LocalID(), string(client.localAddr)); err != nil {
		t.Fatal(err)
	}
	agents := append(slices.Clone(servers), client)

	type ack struct {
		name       string
		start, end time.Time
	}
	var (
		mu      sync.Mutex
		acked   []ack
		failed  int
		ackedCh = make(chan struct{}, writers*(before+after))
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s := agents[(w+i)%len(agents)]
				d := web()
				d.Name = fmt.Sprintf("w%d-%d", w, i)
				start := time.Now()
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := s.CreateDeployment(wctx, d)
				cancel()
				mu.Lock()
				if err == nil {
					acked = append(acked, ack{d.Name, start, time.Now()})
				} else {
					failed++
				}
				mu.Unlock()
				if err == nil {
					ackedCh <- struct{}{}
					continue
				}
				// Back off a little so writers spinning on the dead leader
				// do not starve the election of the two cores CI has.
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
	}
	waitAcks := func(n int) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for range n {
			select {
			case <-ackedCh:
			case <-timeout:
				close(stop)
				wg.Wait()
				t.Fatalf("writes stalled: %d acknowledged, %d failed", len(acked), failed) // writers are done: no lock needed
			}
		}
	}
	waitAcks(before)

	killed := time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	survivors := followersOf(leader, servers)
	var elected time.Duration
	poll := time.NewTicker(time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); elected == 0 && time.Now().Before(deadline); <-poll.C {
		if slices.ContainsFunc(survivors, (*Store).IsLeader) {
			elected = time.Since(killed)
		}
	}
	poll.Stop()
	newLeader := waitLeader(t, survivors...)
	waitAcks(after)
	close(stop)
	wg.Wait()

	// The first write begun after the kill that was acknowledged: how long
	// clients saw no progress.
	var resumed time.Duration
	for _, a := range acked {
		if d := a.end.Sub(killed); a.start.After(killed) && (resumed == 0 || d < resumed) {
			resumed = d
		}
	}
	t.Logf("leader %s closed: %s elected after %s; first write begun after the kill acknowledged after %s; %d writes acknowledged, %d failed",
		leader.LocalID(), newLeader.LocalID(), elected.Round(time.Millisecond), resumed.Round(time.Millisecond), len(acked), failed)

	alive := append(survivors, client)
	waitReplicated(t, newLeader, alive...)
	for _, s := range alive {
		missing := 0
		for _, a := range acked {
			if _, ok := s.Deployment("default", a.name); !ok {
				missing++
				if missing <= 5 {
					t.Errorf("%s: acknowledged write %s is missing", s.LocalID(), a.name)
				}
			}
		}
		if missing > 0 {
			t.Errorf("%s: %d of %d acknowledged writes missing", s.LocalID(), missing, len(acked))
		}
	}

	// The dead server leaves the configuration; the rest keep working.
	if err := newLeader.RemoveServer(ctx, leader.LocalID()); err != nil {
		t.Fatal(err)
	}
	if err := newLeader.RemoveServer(ctx, leader.LocalID()); err != nil {
		t.Errorf("removing it again: %v", err)
	}
	srvs, err := newLeader.Servers()
	if err != nil || len(srvs) != 3 || slices.ContainsFunc(srvs, func(s Server) bool { return s.ID == leader.LocalID() }) {
		t.Errorf("servers after removal: %+v, %v", srvs, err)
	}
	d := web()
	d.Name = "after-removal"
	if _, err := client.CreateDeployment(ctx, d); err != nil {
		t.Errorf("write after removal: %v", err)
	}
}

// leaderLoopEvent is one start or end of a leader loop.
type leaderLoopEvent struct {
	store   string
	start   bool
	leading bool   // at start: whether the store was the raft leader
	index   uint64 // at start: what its state had applied
}

// TestRunLeaderLoop: the loop runs on the leader only, once it applied
// every entry of earlier terms, keeps running while the leader writes, and
// its context ends when leadership moves or the leader stops.
func TestRunLeaderLoop(t *testing.T) {
	ctx := testCtx(t)
	c := newTestCluster(t)
	// Followers learn that the last entries committed only with the next
	// ones or after CommitTimeout: so long here that a new leader has not
	// applied the previous leader's last writes when it takes over, and
	// only its barrier makes it apply them.
	c.mods = append(c.mods, func(cfg *Config) { cfg.CommitTimeout = 10 * time.Second })
	servers := c.startServers(3)
	leader := waitLeader(t, servers...)

	events := make(chan leaderLoopEvent, 100)
	loopCtx, stopLoops := context.WithCancel(ctx)
	var loops sync.WaitGroup
	for _, s := range servers {
		loops.Go(func() {
			s.RunLeaderLoop(loopCtx, func(ctx context.Context) {
				events <- leaderLoopEvent{store: s.LocalID(), start: true, leading: s.IsLeader(), index: s.Index()}
				<-ctx.Done()
				events <- leaderLoopEvent{store: s.LocalID()}
			})
		})
	}
	t.Cleanup(func() { stopLoops(); loops.Wait() })
	next := func(what string) leaderLoopEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatalf("no leader loop event within 5s; waiting for %s", what)
		}
		return leaderLoopEvent{}
	}
	// moved waits for the loop on from to end and one on another store to
	// start, in either order, with entries up to minIndex applied.
	moved := func(from string, minIndex uint64) *Store {
		t.Helper()
		var started *Store
		ended := false
		for !ended || started == nil {
			e := next("the loop on " + from + " to end and another to start")
			switch {
			case !e.start && e.store == from && !ended:
				ended = true
			case e.start && e.leading && e.store != from && e.index >= minIndex && started == nil:
				started = c.stores[e.store]
			default:
				t.Fatalf("event %+v; want the loop on %s to end and one to start on the new leader with entries up to %d applied", e, from, minIndex)
			}
		}
		return started
	}
	writeSome := func(s *Store, prefix string) uint64 {
		t.Helper()
		for i := range 5 {
			d := web()
			d.Name = fmt.Sprintf("%s%d", prefix, i)
			if _, err := s.CreateDeployment(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		return s.Index()
	}

	if e := next("a loop to start"); !e.start || !e.leading || e.store != leader.LocalID() {
		t.Fatalf("event %+v; want the loop to start on the leader %s", e, leader.LocalID())
	}
	// Writes, the leader's own included, and a member joining do not end
	// the term: the loop keeps running.
	last := writeSome(leader, "a")
	client := c.open("client-1", true)
	if err := leader.AddNonvoter(ctx, client.LocalID(), string(client.localAddr)); err != nil {
		t.Fatal(err)
	}
	if _, err := followersOf(leader, servers)[0].CreateDeployment(ctx, func() api.Deployment { d := web(); d.Name = "fwd"; return d }()); err != nil {
		t.Fatal(err)
	}
	last = max(last, writeSome(leader, "b"))
	select {
	case e := <-events:
		t.Fatalf("leader loop event %+v while the leader kept its term", e)
	default:
	}
	for _, f := range followersOf(leader, servers) {
		t.Logf("%s applied up to %d when leadership moves; the leader is at %d", f.LocalID(), f.Index(), last)
	}

	// Leadership moves: the old leader's loop ends, the new one's starts,
	// after it applied the old leader's writes.
	if err := leader.raft.LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	second := moved(leader.LocalID(), last)
	if second.LocalID() != waitLeader(t, servers...).LocalID() {
		t.Errorf("the loop runs on %s, which does not lead", second.LocalID())
	}

	// The leader stops: its loop ends and a survivor's starts.
	last = writeSome(second, "c")
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	third := moved(second.LocalID(), last)
	if third.LocalID() != waitLeader(t, followersOf(second, servers)...).LocalID() {
		t.Errorf("the loop runs on %s, which does not lead", third.LocalID())
	}

	// RunLeaderLoop returns once its context ends, after the loop did.
	stopLoops()
	if e := next("the loop on " + third.LocalID() + " to end"); e.start || e.store != third.LocalID() {
		t.Fatalf("event %+v; want the loop on %s to end", e, third.LocalID())
	}
	done := make(chan struct{})
	go func() { loops.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunLeaderLoop did not return 5s after its context ended")
	}
	select {
	case e := <-events:
		t.Errorf("unexpected event %+v", e)
	default:
	}
}

// BenchmarkReplicatedWrites measures acknowledged writes (committed by two
// of three TLS servers on loopback, each fsyncing its log, and applied by
// the leader) at 1, 16 and 64 concurrent writers on the leader, and at 1
// and 16 through a follower that forwards them (in process, so without an
// RPC's cost) and waits until it applied each.
func BenchmarkReplicatedWrites(b *testing.B) {
	c := newTestCluster(b)
	servers := c.startServers(3)
	leader := waitLeader(b, servers...)
	follower := followersOf(leader, servers)[0]
	var seq atomic.Int64
	for _, bc := range []struct {
		name    string
		writers int
		via     *Store
	}{
		{"writers=1", 1, leader},
		{"writers=16", 16, leader},
		{"writers=64", 64, leader},
		{"writers=1/forwarded", 1, follower},
		{"writers=16/forwarded", 16, follower},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			var next atomic.Int64
			lat := make([][]time.Duration, bc.writers)
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range bc.writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						d := web()
						d.Name = fmt.Sprintf("b%d", seq.Add(1))
						start := time.Now()
						if _, err := bc.via.CreateDeployment(ctx, d); err != nil {
							b.Error(err)
							return
						}
						lat[w] = append(lat[w], time.Since(start))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			p99 := all[(len(all)*99+99)/100-1] // nearest rank
			b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "writes/s")
			b.ReportMetric(float64(p99)/float64(time.Millisecond), "p99-ms")
			b.ReportMetric(float64(all[len(all)/2])/float64(time.Millisecond), "p50-ms")
		})
	}
}
