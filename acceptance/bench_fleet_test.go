package acceptance

// Fleet benchmarks behind the second table of `make bench` (scripts/bench.sh).
// Like the others they run only with -bench, need TF_ACC=1 and root, and
// measure without asserting speed. Flotilla runs as a lab fleet of 3 servers
// and 1 client (newFleet: network-namespace nodes, agents started through the
// cloud-init bootstrap script, API over HTTPS with the cluster CA); a write is
// CreateDeployment with 0 replicas: state only, no pods. Every figure is
// measured on a 3-member etcd 3.4 on loopback too (bench_etcd_test.go), in
// the same run, with the same load generator (startLoad) and the same
// failover procedure; there a write is a Put of the same deployment's JSON.
//
//	BenchmarkFleetWrites/writers=N/leader/{flotilla,etcd}
//	                            N writers (1, 16, 64) through the leader for fleetWriteTime:
//	                            writes/s, p50 and p99 latency, errors, elections; each row on
//	                            a cluster of its own; the Flotilla row with 64 writers also
//	                            reports every agent's RSS, idle after it
//	BenchmarkFleetWrites/writers=N/all/{flotilla,etcd}
//	                            the same, every writer going round the 3 servers (members),
//	                            as etcd's clients spread over members; followers forward
//	BenchmarkFleetFailover/{flotilla,etcd}/writers=N
//	                            N writers (16, 64) through every member, kill -9 of the
//	                            leader, restart, rejoin; fleetFailovers rounds: median time
//	                            until writes are acknowledged again and until a new leader is
//	                            reported; fails if an acknowledged write is missing anywhere
//	BenchmarkFleetFailureDetection
//	                            kill -9 of the client's agent until a server's GET /v1/nodes
//	                            shows it "down" (memberlist)
//
// Each writer has its own connections, as separate API users would: its own
// HTTPS transport for Flotilla (the API speaks HTTP/1.1, so one shared client
// would make concurrent writers queue for two keep-alive connections and
// measure TLS handshakes instead), its own gRPC connection per member for etcd.
//
// BENCH_FLEET_SECONDS (default 5), BENCH_FLEET_FAILOVERS (default 5) and
// BENCH_FLEET_DETECTIONS (default 3) change the run length.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

const (
	// fleetWarmup runs the writers before the measured window: connections,
	// TLS handshakes and the first raft batches are not measured.
	fleetWarmup = time.Second
	// fleetWriteTimeout bounds one write; a write that times out counts as
	// an error, never as acknowledged.
	fleetWriteTimeout = 5 * time.Second
	// fleetPoll is the cadence of the failover and failure-detection probes.
	fleetPoll = 20 * time.Millisecond
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func fleetWriteTime() time.Duration {
	return time.Duration(envInt("BENCH_FLEET_SECONDS", 5)) * time.Second
}

// machineLoad tells how busy the machine was: the figures are only as quiet
// as it. It gives /proc/loadavg's first three fields (the system under load
// and its writers included) and how many labs other than ownBridge (test or
// benchmark fleets of other runs) exist.
func machineLoad(ownBridge string) string {
	la, others := loadAndLabs(ownBridge)
	return fmt.Sprintf("load average %s; other labs on this machine: %d", la, others)
}

// loadAndLabs returns /proc/loadavg's first three fields and how many labs
// other than ownBridge exist.
func loadAndLabs(ownBridge string) (loadavg string, others int) {
	raw, _ := os.ReadFile("/proc/loadavg")
	loadavg = "?"
	if f := strings.Fields(string(raw)); len(f) >= 3 {
		loadavg = strings.Join(f[:3], " ")
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		id, ok := strings.CutPrefix(l.Name(), "flab")
		if _, err := strconv.Atoi(id); ok && err == nil && l.Name() != ownBridge {
			others++
		}
	}
	return loadavg, others
}

// --- a fleet for a benchmark -----------------------------------------------

// benchFleet is a fleet made by newFleet for a benchmark. newFleet and the
// fleet's helpers take *testing.T, so the fleet lives inside a real test
// run by testing.RunTests on a goroutine of its own: the test creates the
// fleet, runs what the benchmark hands it through do (restarts, waits that
// fail through t), and returns when the benchmark ends, which runs the
// fleet's and the lab's cleanups. Everything else (API calls, Kill) the
// benchmark does itself, failing through b.
type benchFleet struct {
	*fleet
	ops    chan func(*testing.T)
	opDone chan struct{}
	exited chan struct{} // the test returned: the fleet is torn down
	ok     bool          // the test passed, teardown included
}

func startBenchFleet(b *testing.B, servers, clients int) *benchFleet {
	b.Helper()
	return startBenchFleetWith(b, func(t *testing.T) *fleet { return newFleet(t, servers, clients) })
}

// startBenchFleetWith is startBenchFleet with the fleet made by mk, on the
// test goroutine the fleet lives on (see benchFleet).
func startBenchFleetWith(b *testing.B, mk func(t *testing.T) *fleet) *benchFleet {
	b.Helper()
	bf := &benchFleet{ops: make(chan func(*testing.T)), opDone: make(chan struct{}), exited: make(chan struct{})}
	ready := make(chan *fleet, 1)
	var started atomic.Bool
	name := strings.NewReplacer("/", "_", "=", "").Replace(strings.TrimPrefix(b.Name(), "Benchmark")) + "Lab"
	inner := func(t *testing.T) {
		if !started.CompareAndSwap(false, true) {
			t.Skip("one fleet per benchmark run") // RunTests repeats tests for -count and -cpu
		}
		ready <- mk(t)
		for op := range bf.ops {
			op(t)
			bf.opDone <- struct{}{}
		}
	}
	go func() {
		defer close(bf.exited)
		// The match function accepts every name: -run '^$' is what makes
		// `go test -bench` skip the package's tests, not this one.
		bf.ok = testing.RunTests(func(string, string) (bool, error) { return true, nil },
			[]testing.InternalTest{{Name: name, F: inner}})
	}()
	select {
	case bf.fleet = <-ready:
	case <-bf.exited:
		b.Fatalf("the fleet did not start: see the output of %s above (with -skip, testing.RunTests may have skipped it)", name)
	}
	b.Cleanup(func() {
		close(bf.ops)
		<-bf.exited
		if !bf.ok {
			b.Errorf("the fleet's test %s failed (teardown included): see its output above", name)
		}
	})
	return bf
}

// do runs op on the fleet's test goroutine, where t.Fatal is allowed.
func (bf *benchFleet) do(b *testing.B, op func(t *testing.T)) {
	b.Helper()
	select {
	case bf.ops <- op:
	case <-bf.exited:
		b.Fatal("the fleet is gone: see its test's output above")
	}
	select {
	case <-bf.opDone:
	case <-bf.exited:
		b.Fatal("the fleet's test failed: see its output above")
	}
}

// restart starts n's agent again through the bootstrap script and waits
// until every node is ready as every agent sees it and n has applied as
// much of the log as the leader.
func (bf *benchFleet) restart(b *testing.B, n *fleetNode) {
	b.Helper()
	bf.do(b, func(t *testing.T) {
		bf.start(n)
		bf.waitNodes(len(bf.nodes))
	})
	waitUntil(b, 60*time.Second, n.Name+" caught up with the leader", func(ctx context.Context) error {
		l, err := bf.leader(ctx)
		if err != nil {
			return err
		}
		ls, err := l.client.Status(ctx)
		if err != nil {
			return err
		}
		ns, err := n.client.Status(ctx)
		if err != nil {
			return err
		}
		if ns.Leader == "" || ns.Index < ls.Index {
			return fmt.Errorf("%s at index %d (leader %q), leader %s at %d", n.Name, ns.Index, ns.Leader, l.Name, ls.Index)
		}
		return nil
	})
}

func (bf *benchFleet) waitLeader(b *testing.B) *fleetNode {
	b.Helper()
	var l *fleetNode
	waitUntil(b, 30*time.Second, "a leader", func(ctx context.Context) (err error) {
		l, err = bf.leader(ctx)
		return err
	})
	return l
}

func (bf *benchFleet) servers() []*fleetNode {
	var s []*fleetNode
	for _, n := range bf.nodes {
		if n.server {
			s = append(s, n)
		}
	}
	return s
}

// elections counts the raft elections won, from every node's log: a leader
// change under load shows in the latencies, this says why.
func (bf *benchFleet) elections() int {
	k := 0
	for _, n := range bf.nodes {
		raw, _ := os.ReadFile(n.Log)
		k += bytes.Count(raw, []byte("election won"))
	}
	return k
}

func (n *fleetNode) role() string {
	if n.server {
		return "server"
	}
	return "client"
}

// --- the systems under load -------------------------------------------------------

// benchCluster is a system the fleet benchmarks drive with the same load
// generator and the same failover procedure: Flotilla's lab fleet
// (fleetCluster) or an etcd cluster on loopback (etcdCluster). Members are
// numbered as members lists them.
type benchCluster interface {
	system() string
	members() []string
	running(k int) bool
	// leader is the member that is raft leader, as the cluster reports it.
	leader(ctx context.Context) (int, error)
	// dial gives one writer connections of its own to the members via.
	dial(via []int) (writer, error)
	// elections counts the raft elections won so far, from the members' logs.
	elections() int
	// cpu is the CPU time in seconds used so far by each member's processes, by name.
	cpu() map[string]float64
	// kill ends member k with SIGKILL and waits until it is gone.
	kill(k int)
	// restart starts member k again and waits until it has caught up.
	restart(b *testing.B, k int)
	// checkAcked fails b unless member k has every acknowledged write.
	checkAcked(b *testing.B, k int, acked []string)
	// labBridge is the cluster's own lab bridge, if it has one.
	labBridge() string
}

// writer is one writer's connections. write sends the write named name (a
// deployment, 0 replicas) through the i-th member the writer was dialled to
// and returns when it is acknowledged, or with why it failed.
type writer interface {
	write(ctx context.Context, i int, name string) error
	close()
}

// fleetCluster is a Flotilla lab fleet as a benchCluster: every node, servers
// first (newFleet makes node1..node3 the servers).
type fleetCluster struct{ bf *benchFleet }

var _ benchCluster = fleetCluster{}

func (fc fleetCluster) system() string { return "flotilla" }

func (fc fleetCluster) members() []string {
	var names []string
	for _, n := range fc.bf.nodes {
		names = append(names, n.Name)
	}
	return names
}

func (fc fleetCluster) running(k int) bool { return fc.bf.nodes[k].Running() }

func (fc fleetCluster) leader(ctx context.Context) (int, error) {
	l, err := fc.bf.leader(ctx)
	if err != nil {
		return 0, err
	}
	return slices.Index(fc.bf.nodes, l), nil
}

// servers are the indexes of the server nodes.
func (fc fleetCluster) servers() []int {
	var ks []int
	for k, n := range fc.bf.nodes {
		if n.server {
			ks = append(ks, k)
		}
	}
	return ks
}

// dial gives the writer an HTTPS transport of its own: the API speaks
// HTTP/1.1, so writers sharing a client would queue for its two keep-alive
// connections and measure TLS handshakes instead.
func (fc fleetCluster) dial(via []int) (writer, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(fc.bf.caPEM) {
		return nil, errors.New("fleet CA: no certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // lab addresses only, whatever the environment says
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	w := &fleetWriter{tr: tr}
	hc := &http.Client{Transport: tr}
	for _, k := range via {
		c, err := api.NewClient(&api.Config{Address: fc.bf.nodes[k].endpoint(), Token: fc.bf.apiToken, HTTPClient: hc})
		if err != nil {
			return nil, err
		}
		w.clients = append(w.clients, c)
	}
	return w, nil
}

type fleetWriter struct {
	tr      *http.Transport
	clients []*api.Client
}

func (w *fleetWriter) write(ctx context.Context, i int, name string) error {
	_, err := w.clients[i].CreateDeployment(ctx, demoDeployment(name, 0))
	return err
}

func (w *fleetWriter) close() { w.tr.CloseIdleConnections() }

func (fc fleetCluster) elections() int { return fc.bf.elections() }

func (fc fleetCluster) cpu() map[string]float64 { return fc.bf.cpu() }

func (fc fleetCluster) kill(k int) { fc.bf.nodes[k].Kill() }

func (fc fleetCluster) restart(b *testing.B, k int) {
	b.Helper()
	fc.bf.restart(b, fc.bf.nodes[k])
}

func (fc fleetCluster) checkAcked(b *testing.B, k int, acked []string) {
	b.Helper()
	checkAcked(b, fc.bf.nodes[k], acked)
}

func (fc fleetCluster) labBridge() string { return fc.bf.lab.Bridge }

// --- write load ----------------------------------------------------------------

type writeRec struct {
	start, end time.Time
	name, via  string
	err        error
}

// load is writers goroutines writing in turn through the members they are
// given (each writer starting at its own one and skipping members that are
// down), each writer with its own connections. It is the one load generator
// for Flotilla and etcd.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	recs []writeRec
	ws   []writer
}

func startLoad(b *testing.B, c benchCluster, via []int, writers int, prefix string) *load {
	b.Helper()
	names := c.members()
	lg := &load{stop: make(chan struct{})}
	var seq atomic.Int64
	for range writers {
		w, err := c.dial(via)
		if err != nil {
			lg.halt()
			b.Fatalf("%s: %v", c.system(), err)
		}
		lg.ws = append(lg.ws, w)
	}
	anyRunning := func() bool { return slices.ContainsFunc(via, c.running) }
	for wi, w := range lg.ws {
		lg.wg.Add(1)
		go func() {
			defer lg.wg.Done()
			for i := wi; ; i++ {
				select {
				case <-lg.stop:
					return
				default:
				}
				k := i % len(via)
				if !c.running(via[k]) {
					if !anyRunning() {
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				name := fmt.Sprintf("%s-%d", prefix, seq.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
				start := time.Now()
				err := w.write(ctx, k, name)
				end := time.Now()
				cancel()
				lg.mu.Lock()
				lg.recs = append(lg.recs, writeRec{start: start, end: end, name: name, via: names[via[k]], err: err})
				lg.mu.Unlock()
			}
		}()
	}
	return lg
}

// halt stops the writers, waits for the writes in flight and closes the
// writers' connections.
func (lg *load) halt() {
	close(lg.stop)
	lg.wg.Wait()
	for _, w := range lg.ws {
		w.close()
	}
}

func (lg *load) snapshot() []writeRec {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	return slices.Clone(lg.recs)
}

func (lg *load) acked() []string {
	var names []string
	for _, r := range lg.snapshot() {
		if r.err == nil {
			names = append(names, r.name)
		}
	}
	return names
}

// firstAckAfter is the earliest acknowledgement of a write sent after t.
func (lg *load) firstAckAfter(t time.Time) (time.Time, bool) {
	var first time.Time
	for _, r := range lg.snapshot() {
		if r.err == nil && !r.start.Before(t) && (first.IsZero() || r.end.Before(first)) {
			first = r.end
		}
	}
	return first, !first.IsZero()
}

type windowStats struct {
	acked, errs int
	p50, p99    time.Duration
	firstErr    error
}

// window summarizes the writes that ended in [from, to) (through node via,
// if not ""): what the fleet acknowledged, or failed, in that time.
func (lg *load) window(from, to time.Time, via string) windowStats {
	var st windowStats
	var lat []time.Duration
	for _, r := range lg.snapshot() {
		if r.end.Before(from) || !r.end.Before(to) || (via != "" && r.via != via) {
			continue
		}
		if r.err != nil {
			st.errs++
			if st.firstErr == nil {
				st.firstErr = r.err
			}
			continue
		}
		lat = append(lat, r.end.Sub(r.start))
	}
	slices.Sort(lat)
	st.acked = len(lat)
	st.p50, st.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return st
}

// commonError is the most frequent error of recs, numbers elided, and how
// often it occurred.
func commonError(recs []writeRec) (string, int) {
	digits := regexp.MustCompile(`[0-9]+`)
	count := map[string]int{}
	best, k := "", 0
	for _, r := range recs {
		if r.err == nil {
			continue
		}
		msg := digits.ReplaceAllString(r.err.Error(), "N")
		count[msg]++
		if count[msg] > k {
			best, k = msg, count[msg]
		}
	}
	return best, k
}

// percentile is the nearest-rank percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// checkAcked fails b unless n lists every acknowledged write (after giving
// it time to apply what was committed).
func checkAcked(b *testing.B, n *fleetNode, acked []string) {
	b.Helper()
	waitUntil(b, 30*time.Second, fmt.Sprintf("%s lists all %d acknowledged writes", n.Name, len(acked)), func(ctx context.Context) error {
		miss, err := missing(ctx, n, acked)
		if err == nil && len(miss) > 0 {
			err = fmt.Errorf("%d acknowledged writes missing, e.g. %v", len(miss), miss[:min(5, len(miss))])
		}
		return err
	})
}

// --- benchmarks ------------------------------------------------------------------

// fleetWriterCounts are the rows of the write table.
var fleetWriterCounts = []int{1, 16, 64}

func waitLeaderOf(b *testing.B, c benchCluster) int {
	b.Helper()
	var l int
	waitUntil(b, 30*time.Second, c.system()+" leader", func(ctx context.Context) (err error) {
		l, err = c.leader(ctx)
		return err
	})
	return l
}

// BenchmarkFleetWrites measures, for each number of writers, Flotilla and
// etcd one after the other, each through its leader and spread over all its
// servers. Every row has a cluster of its own with an empty state: the
// leader's controller passes over every deployment after each applied entry,
// so Flotilla's figures fall as deployments accumulate, and rows sharing a
// cluster would measure the rows before them. The Flotilla row with 64
// writers through the leader also reports its agents' RSS, idle after it.
func BenchmarkFleetWrites(b *testing.B) {
	needAcc(b)
	for _, writers := range fleetWriterCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			for _, through := range []string{"leader", "all"} {
				b.Run(through, func(b *testing.B) {
					prefix := fmt.Sprintf("w%d%s", writers, through[:1])
					b.Run("flotilla", func(b *testing.B) {
						bf := startBenchFleet(b, 3, 0) // as etcd: 3 members, no client
						fc := fleetCluster{bf}
						ready := bf.rss() // state empty
						via := fc.servers()
						if through == "leader" {
							via = []int{waitLeaderOf(b, fc)}
						}
						writeRow(b, fc, via, writers, prefix)
						if writers == 64 && through == "leader" {
							bf.reportIdleRSS(b, ready)
						}
					})
					b.Run("etcd", func(b *testing.B) {
						ec := startEtcd(b)
						b.Logf("etcd-setup: %s", ec.describe())
						via := []int{0, 1, 2}
						if through == "leader" {
							via = []int{waitLeaderOf(b, ec)}
						}
						writeRow(b, ec, via, writers, prefix)
					})
				})
			}
		})
	}
}

// writeRow runs writers through the members via for fleetWriteTime after
// fleetWarmup and reports what was acknowledged in that window.
func writeRow(b *testing.B, c benchCluster, via []int, writers int, prefix string) {
	b.Helper()
	dur := fleetWriteTime()
	names := c.members()
	lg := startLoad(b, c, via, writers, prefix)
	time.Sleep(fleetWarmup)
	el := c.elections()
	cpu0, me0 := c.cpu(), cpuSeconds(os.Getpid())
	profiled := profileRow(b, c, prefix, dur)
	from := time.Now()
	time.Sleep(dur)
	to := time.Now()
	profiled()
	cpu1, me1 := c.cpu(), cpuSeconds(os.Getpid())
	el = c.elections() - el
	load := machineLoad(c.labBridge())
	leader, err := c.leader(context.Background())
	if err != nil {
		leader = -1
	}
	lg.halt()
	st := lg.window(from, to, "")
	for b.Loop() {
		// Measured once above; b.Loop only keeps the framework from
		// running this function again.
	}
	secs := to.Sub(from).Seconds()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(st.acked)/secs, "writes/s")
	b.ReportMetric(ms(st.p50), "ms-p50")
	b.ReportMetric(ms(st.p99), "ms-p99")
	b.ReportMetric(float64(st.errs), "errors")
	b.ReportMetric(float64(el), "elections")
	var through []string
	for _, k := range via {
		through = append(through, names[k])
	}
	b.Logf("%s: %d writers through %s for %s after %s of warm-up: %d acknowledged, %d errors, %d raft elections; %d writes acknowledged in all; %s",
		c.system(), writers, strings.Join(through, ","), dur, fleetWarmup, st.acked, st.errs, el, len(lg.acked()), load)
	if msg, k := commonError(lg.snapshot()); k > 0 {
		b.Logf("most frequent error (%d times): %s", k, msg)
	}
	use := []string{fmt.Sprintf("writers (this process) %.2f", (me1-me0)/secs)}
	for _, who := range slices.Sorted(maps.Keys(cpu1)) {
		use = append(use, fmt.Sprintf("%s %.2f", who, (cpu1[who]-cpu0[who])/secs))
	}
	b.Logf("CPU cores used in the window (of %d): %s", runtime.NumCPU(), strings.Join(use, ", "))
	if len(via) > 1 {
		var per []string
		for _, k := range via {
			ns := lg.window(from, to, names[k])
			role := "follower"
			if k == leader {
				role = "leader"
			}
			per = append(per, fmt.Sprintf("%s (%s) %d acknowledged, p50 %.1f ms, p99 %.1f ms", names[k], role, ns.acked, ms(ns.p50), ms(ns.p99)))
		}
		b.Logf("by member: %s", strings.Join(per, "; "))
	}
}

// rss is VmRSS (MiB) of every node's agent.
func (bf *benchFleet) rss() map[*fleetNode]float64 {
	m := map[*fleetNode]float64{}
	for _, n := range bf.nodes {
		if pid, err := agentPid(n); err == nil {
			m[n], _ = rssMB(pid)
		}
	}
	return m
}

// reportIdleRSS reports every agent's RSS once the writers are gone and
// their connections closed, as MB-<role>-<node>.
func (bf *benchFleet) reportIdleRSS(b *testing.B, ready map[*fleetNode]float64) {
	b.Helper()
	time.Sleep(5 * time.Second) // idle
	l := bf.waitLeader(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ds, err := l.client.ListDeployments(ctx, "default")
	if err != nil {
		b.Fatal(err)
	}
	var line []string
	for _, n := range bf.nodes {
		pid, err := agentPid(n)
		if err != nil {
			b.Fatal(err)
		}
		mb, err := rssMB(pid)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(mb, "MB-"+n.role()+"-"+n.Name)
		lead := ""
		if n == l {
			lead = " (leader)"
		}
		line = append(line, fmt.Sprintf("%s %s%s: agent %.1f MiB (%.1f when the fleet was ready), its containerd %.1f MiB", n.Name, n.role(), lead, mb, ready[n], childRSSMB(pid, "containerd")))
	}
	b.Logf("idle 5 s after the row, %d deployments in the state; %s", len(ds), strings.Join(line, "; "))
}

// BenchmarkFleetFailover kills the leader with SIGKILL under 16 and then 64
// writers spread over every member, fleetFailovers rounds each, for Flotilla
// (its 4 nodes: a client agent forwards writes as the servers do) and then
// etcd (its 3 members), one cluster each. It reports the median time until
// writes sent after the kill are acknowledged and until a new leader is
// reported, and fails if an acknowledged write is missing from any member.
func BenchmarkFleetFailover(b *testing.B) {
	needAcc(b)
	b.Run("flotilla", func(b *testing.B) {
		fc := fleetCluster{startBenchFleet(b, 3, 1)}
		for _, w := range []int{16, 64} {
			b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) { failover(b, fc, w) })
		}
	})
	b.Run("etcd", func(b *testing.B) {
		ec := startEtcd(b)
		for _, w := range []int{16, 64} {
			b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) { failover(b, ec, w) })
		}
	})
}

func failover(b *testing.B, c benchCluster, writers int) {
	rounds := envInt("BENCH_FLEET_FAILOVERS", 5)
	names := c.members()
	every := make([]int, len(names))
	for k := range every {
		every[k] = k
	}
	var resumed, elected []float64
	var all []string
	for round := 1; round <= rounds; round++ {
		old := waitLeaderOf(b, c)
		el := c.elections()
		lg := startLoad(b, c, every, writers, fmt.Sprintf("f%dr%d", writers, round))
		time.Sleep(2 * time.Second) // writes before the kill
		load := machineLoad(c.labBridge())
		killed := time.Now()
		c.kill(old)
		gone := time.Now()
		newLeader := -1
		var electedAt, resumedAt time.Time
		deadline := time.Now().Add(30 * time.Second)
		for electedAt.IsZero() || resumedAt.IsZero() {
			if time.Now().After(deadline) {
				lg.halt()
				b.Fatalf("%s round %d: within 30 s of killing leader %s: new leader %v, writes acknowledged again %v",
					c.system(), round, names[old], !electedAt.IsZero(), !resumedAt.IsZero())
			}
			if electedAt.IsZero() {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				if l, err := c.leader(ctx); err == nil && l != old {
					newLeader, electedAt = l, time.Now()
				}
				cancel()
			}
			if resumedAt.IsZero() {
				// Writes sent after the old leader was gone: it cannot
				// have committed them, so their acknowledgement is the
				// cluster writing again.
				resumedAt, _ = lg.firstAckAfter(gone)
			}
			time.Sleep(fleetPoll)
		}
		time.Sleep(time.Second) // writes after the failover
		lg.halt()
		acked := lg.acked()
		errs := len(lg.snapshot()) - len(acked)
		el = c.elections() - el
		all = append(all, acked...)
		resumed = append(resumed, resumedAt.Sub(killed).Seconds())
		elected = append(elected, electedAt.Sub(killed).Seconds())
		b.Logf("%s round %d, %d writers: killed leader %s; writes acknowledged again after %.3f s, new leader %s reported after %.3f s; %d raft elections won; %d acknowledged writes, %d failed; %s",
			c.system(), round, writers, names[old], resumed[len(resumed)-1], names[newLeader], elected[len(elected)-1], el, len(acked), errs, load)
		if msg, k := commonError(lg.snapshot()); k > 0 {
			b.Logf("%s round %d: most frequent error (%d times): %s", c.system(), round, k, msg)
		}
		if len(acked) < 100 {
			b.Fatalf("%s round %d: only %d acknowledged writes; the load did not run", c.system(), round, len(acked))
		}
		c.checkAcked(b, newLeader, acked)
		c.restart(b, old)
	}
	// The restarted members too: every member, every round's writes.
	for k := range names {
		c.checkAcked(b, k, all)
	}
	for b.Loop() {
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(resumed), "s/writes-resumed")
	b.ReportMetric(slices.Min(resumed), "s/writes-resumed-min")
	b.ReportMetric(slices.Max(resumed), "s/writes-resumed-max")
	b.ReportMetric(median(elected), "s/new-leader")
	b.ReportMetric(float64(len(all)), "acked-writes")
	b.ReportMetric(0, "lost-writes") // checkAcked failed the benchmark otherwise
	b.Logf("%s: leader kill -9 under %d writers, %d rounds: writes acknowledged again after median %.3f s (min %.3f, max %.3f); new leader reported after median %.3f s (min %.3f, max %.3f); all %d acknowledged writes on every member",
		c.system(), writers, rounds, median(resumed), slices.Min(resumed), slices.Max(resumed), median(elected), slices.Min(elected), slices.Max(elected), len(all))
}

func BenchmarkFleetFailureDetection(b *testing.B) {
	needAcc(b)
	bf := startBenchFleet(b, 3, 1)
	var client *fleetNode
	for _, n := range bf.nodes {
		if !n.server {
			client = n
		}
	}
	times := envInt("BENCH_FLEET_DETECTIONS", 3)
	var downs []float64
	for i := range times {
		if i > 0 {
			bf.restart(b, client)
		}
		load := machineLoad(bf.lab.Bridge)
		killed := time.Now()
		client.Kill()
		var by string
		waitUntil(b, 60*time.Second, client.Name+" down", func(context.Context) error {
			for _, s := range bf.servers() {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				nodes, err := s.client.ListNodes(ctx)
				cancel()
				if err != nil {
					continue
				}
				for _, n := range nodes {
					if n.Name == client.Name && n.Status == "down" {
						by = s.Name
						return nil
					}
				}
			}
			return errors.New("no server shows it down")
		})
		downs = append(downs, time.Since(killed).Seconds())
		b.Logf("kill -9 of client %s: %s shows it down after %.3f s; %s", client.Name, by, downs[i], load)
	}
	bf.restart(b, client) // teardown stops agents that run; a clean fleet to tear down
	for b.Loop() {
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(downs), "s/member-down")
	b.Logf("failure detection, %d kills: median %.3f s (min %.3f, max %.3f)", times, median(downs), slices.Min(downs), slices.Max(downs))
}

// --- processes -------------------------------------------------------------------

// cpu is the CPU time in seconds used so far by every node's agent and its
// containerd ("node1 agent", "node1 containerd", ...).
func (bf *benchFleet) cpu() map[string]float64 {
	m := map[string]float64{}
	for _, n := range bf.nodes {
		if pid, err := agentPid(n); err == nil {
			m[n.Name+" agent"] = cpuSeconds(pid)
			for _, c := range children(pid, "containerd") {
				m[n.Name+" containerd"] += cpuSeconds(c)
			}
		}
	}
	return m
}

// cpuSeconds is utime+stime of pid (all its threads), in seconds.
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	_, rest, _ := bytes.Cut(raw, []byte(") "))
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ
}

// agentPid finds n's agent: the lab starts nsenter, which execs the bootstrap
// script, which execs the agent, so it is the process running env.agentBin
// with n's data dir.
func agentPid(n *fleetNode) (int, error) {
	return processWith(env.agentBin, n.dataDir, "cleanup")
}

// processWith finds the process running bin with --data-dir dir, not one
// running its subcommand skip.
func processWith(bin, dir, skip string) (int, error) {
	want := []byte("\x00--data-dir\x00" + dir + "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if skip != "" && bytes.Contains(cmd, []byte("\x00"+skip+"\x00")) {
			continue
		}
		if argv0, _, _ := bytes.Cut(cmd, []byte{0}); string(argv0) == bin && bytes.Contains(cmd, want) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with --data-dir %s", filepath.Base(bin), dir)
}

// children lists pid's child processes named comm.
func children(pid int, comm string) []int {
	var pids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(raw)) {
			c, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); strings.TrimSpace(string(name)) == comm {
				pids = append(pids, c)
			}
		}
	}
	return pids
}

// childRSSMB sums the RSS of pid's children named comm (0 if none).
func childRSSMB(pid int, comm string) float64 {
	var total float64
	for _, c := range children(pid, comm) {
		if mb, err := rssMB(c); err == nil {
			total += mb
		}
	}
	return total
}
