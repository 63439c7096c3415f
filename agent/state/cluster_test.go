package state

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// testCA is a throwaway certificate authority for a test's raft peers.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(t),
		Subject:               pkix.Name{CommonName: "flotilla test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func randSerial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// peerTLS is what an agent's peer config looks like: a certificate for the
// node name and 127.0.0.1, good as server and client, requiring and
// verifying the peer's certificate both ways.
func (ca *testCA) peerTLS(t testing.TB, name string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(t),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		RootCAs:      ca.pool,
		MinVersion:   tls.VersionTLS13,
	}
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

// testCluster runs Stores in one process, on loopback, over TLS, with WALs
// in temporary dirs. It is also the stores' Forwarder: it hands an entry
// to the named store's ApplyRaw and, like an RPC, carries the error back
// as text only, so the sentinel must travel in resp.
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

func (c *testCluster) Forward(ctx context.Context, leaderID string, entry []byte) (uint64, []byte, error) {
	c.mu.Lock()
	s := c.stores[leaderID]
	c.mu.Unlock()
	if s == nil {
		return 0, nil, fmt.Errorf("no agent named %q", leaderID)
	}
	index, resp, err := s.ApplyRaw(ctx, bytes.Clone(entry))
	if err != nil {
		err = errors.New(err.Error())
	}
	return index, slices.Clone(resp), err
}

// config is a cluster member's config: TLS, a free port, no bootstrap, and
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
	cfg.TLS = c.ca.peerTLS(c.t, name)
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
	if !errors.Is(errF, ErrExists) || errF.Error() != errL.Error() {
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
		"delete missing":      {f.DeleteDeployment(ctx, "default", "missing"), ErrNotFound},
		"remove not deleting": {f.RemoveDeployment(ctx, "default", "fwd"), ErrConflict},
	} {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("forwarded %s: %v, want %v", name, tt.err, tt.want)
		}
	}

	// Pod ranges: every server proposes a cluster config, one wins; every
	// node registers through itself and gets its own range.
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			cc := ClusterConfig{PodCIDR: fmt.Sprintf("10.%d.0.0/16", 240+i), NodeMaskBits: 24}
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
	if err := f.AddNonvoter(ctx, "client-1", string(client.localAddr)); !errors.Is(err, ErrNotLeader) {
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
	if err := client.SetNodeStatus(ctx, "server-1", NodeDown); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.Node("server-1"); n.Status != NodeDown {
		t.Errorf("status after a forwarded SetNodeStatus: %+v", n)
	}
	if err := client.SetNodeStatus(ctx, "nobody", NodeDown); !errors.Is(err, ErrNotFound) {
		t.Errorf("status of a missing node: %v", err)
	}

	// ApplyRaw refuses what the FSM could not apply, and off the leader.
	good, _ := encodeCommand(CreateDeploymentType, DeploymentRequest{Deployment: web()})
	if _, _, err := f.ApplyRaw(ctx, good); !errors.Is(err, ErrNotLeader) {
		t.Errorf("ApplyRaw on a follower: %v", err)
	}
	index := leader.Index()
	for name, entry := range map[string][]byte{
		"empty":        nil,
		"unknown type": {200, '{', '}'},
		"bad json":     {byte(CreateDeploymentType), '{'},
		"no name":      append([]byte{byte(CreateDeploymentType)}, `{"deployment":{"namespace":"default"}}`...),
		"bad status":   append([]byte{byte(SetNodeStatusType)}, `{"name":"server-1","status":"sleepy"}`...),
	} {
		i, resp, err := leader.ApplyRaw(ctx, entry)
		if err == nil || i != 0 || len(resp) == 0 {
			t.Errorf("ApplyRaw(%s) = %d, %s, %v; want a refusal", name, i, resp, err)
		}
	}
	if leader.Index() != index {
		t.Error("a refused entry reached the log")
	}
}

func nodeOf(name string) api.Node {
	return api.Node{Name: name, Address: "127.0.0.1", CPUMillis: 2000, MemoryMiB: 4096, Status: NodeReady}
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

// BenchmarkReplicatedWrites measures acknowledged writes (committed by two
// of three TLS servers on loopback, each fsyncing its WAL, and applied by
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
