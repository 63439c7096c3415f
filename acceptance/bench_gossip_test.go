package acceptance

// Gossip failure detection on a lossy link, behind the gossip table of
// `make bench` (scripts/bench.sh, BENCH_GOSSIP=0 skips it). Like the other
// lab benchmarks it runs only with -bench, TF_ACC=1 and root, and measures
// without asserting figures.
//
//	BenchmarkGossipLoss/flotilla    the agent's defaults: probe 1 s, timeout 500 ms,
//	                                suspicion ×3, at most ×2 that without confirmations
//	BenchmarkGossipLoss/memberlist  memberlist's LAN defaults: the same probes,
//	                                suspicion ×4, at most ×6 (--gossip-suspicion-mult 4
//	                                --gossip-suspicion-max-mult 6)
//
// Each tuning has a lab fleet of its own, 3 servers and 2 clients, every
// agent started with that tuning. Nothing is killed while the loss rates
// run: for each rate (BENCH_GOSSIP_LOSS, default "0,5,10,20" percent) a
// share of the gossip packets is dropped at random for BENCH_GOSSIP_SECONDS
// (default 60) while the leader's GET /v1/nodes is polled every 200 ms, and
// every node going from ready to down there is a false failure. The figure
// is false failures per node-hour: all 5 nodes count, for the step's length.
// Then, with no loss, the last client's agent is killed with SIGKILL
// BENCH_GOSSIP_DETECTIONS times (default 3), restarted in between, and the
// time until the leader's GET /v1/nodes shows it down is the detection
// time (median).
//
// The loss: iptables' statistic match (this kernel has no netem), a DROP
// with probability P on the gossip port (memberlist's, UDP and TCP alike:
// BENCH_GOSSIP_DROP, default "udp,tcp") in FORWARD for frames crossing the
// lab bridge, so each packet between two nodes is lost once with
// probability P. That needs br_netfilter (bridged frames passing
// iptables); where bridged frames skip iptables the same rules go into each
// node's namespace, on INPUT from its eth0: still once per packet, at its
// receiver. Which one is used is found out, not assumed: a counting rule
// must see gossip before the run starts, and every step checks the counters
// of its rules (packets seen, packets dropped) and fails if its DROP rule
// dropped nothing. Raft, RPC and the API are left alone, so the leader's
// status writes measure failure detection and not a struggling raft.
//
// Why TCP too: when a probe's UDP ping and the indirect pings through other
// members all go unanswered, memberlist tries one more ping over TCP before
// it suspects the node. With UDP-only loss that TCP ping gets through (TCP
// retransmits what is lost), so live nodes are not suspected and the
// tunings cannot differ: memberlist only logs "Was able to connect to X over
// TCP but UDP probes failed" (at 20% UDP-only loss, 30 s per tuning here:
// no suspicion, 8 and 10 probes answered over TCP). A lossy link loses TCP
// segments as well; a lost SYN is retransmitted after 1 s, past the probe's
// deadline. BENCH_GOSSIP_DROP=udp measures the UDP-only model.
//
// Every line of the summary table starts with "gossip| " for
// scripts/bench.sh to pick out.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/agent"
	"github.com/flotilla-io/flotilla/api"
)

const (
	// gossipPoll is how often the leader's node list is read during a step.
	gossipPoll = 200 * time.Millisecond
	// gossipComment starts the comment of every rule the benchmark makes;
	// scripts/lab-cleanup.sh removes FORWARD rules with "flotilla-lab".
	gossipComment = "flotilla-lab-loss"
)

// gossipTuning is one failure-detection tuning: extra agent flags for every
// agent of its fleet.
type gossipTuning struct {
	name, about string
	flags       []string
}

func gossipTunings() []gossipTuning {
	return []gossipTuning{
		{"flotilla", fmt.Sprintf("suspicion ×%d, max ×%d (the agent's defaults)", agent.DefaultGossipSuspicionMult, agent.DefaultGossipSuspicionMaxMult), nil},
		{"memberlist", "suspicion ×4, max ×6 (memberlist's LAN defaults)", []string{"--gossip-suspicion-mult", "4", "--gossip-suspicion-max-mult", "6"}},
	}
}

// gossipStep is what one loss rate measured on one fleet.
type gossipStep struct {
	loss     int // percent
	measured bool
	secs     float64
	nodes    int
	// downs counts, per node, ready -> down in the leader's node list.
	downs           map[string]int
	polls, pollErrs int
	// seen and dropped are the loss rules' packet counters.
	seen, dropped int64
	// From the agents' logs, for the table's reader: suspicions raised
	// (memberlist "Suspect X has failed"), suspicions that timed out on
	// some member ("Marking X as failed"), failures the leader acted on
	// ("node failed") and probes that only TCP answered.
	suspicions, expired, leaderFailed, tcpOnly int
	// recovery is how long the nodes took to be ready again after the
	// step, if some were down at its end.
	recovery time.Duration
}

func (s *gossipStep) falseDowns() int {
	k := 0
	for _, v := range s.downs {
		k += v
	}
	return k
}

func (s *gossipStep) perNodeHour() float64 {
	return float64(s.falseDowns()) / (float64(s.nodes) * s.secs / 3600)
}

// gossipResult is one tuning's row.
type gossipResult struct {
	tuning gossipTuning
	steps  []*gossipStep
	detect []float64 // seconds, one per kill
	mode   string    // where the loss rules went
}

// BenchmarkGossipLoss measures the false-failure rate of gossip failure
// detection under packet loss, and its detection time of a real failure,
// for Flotilla's tuning and memberlist's LAN defaults in the same run.
func BenchmarkGossipLoss(b *testing.B) {
	needAcc(b)
	losses := gossipLossRates(b)
	protos := gossipDropProtos(b)
	dur := time.Duration(envInt("BENCH_GOSSIP_SECONDS", 60)) * time.Second
	kills := envInt("BENCH_GOSSIP_DETECTIONS", 3)
	start := time.Now()
	var results []*gossipResult
	for _, tu := range gossipTunings() {
		r := &gossipResult{tuning: tu}
		for _, loss := range losses {
			r.steps = append(r.steps, &gossipStep{loss: loss})
		}
		results = append(results, r)
		b.Run(tu.name, func(b *testing.B) { gossipRow(b, r, protos, dur, kills) })
	}
	printGossipTable(results, protos, dur, kills, time.Since(start))
}

// gossipRow runs every loss rate, then the kills, on a fleet of its own.
func gossipRow(b *testing.B, r *gossipResult, protos []string, dur time.Duration, kills int) {
	flags := r.tuning.flags
	bf := startBenchFleetWith(b, func(t *testing.T) *fleet { return newFleetWith(t, 3, 2, flags...) })
	// Registered after the fleet's cleanup, so it runs first: the rules go
	// while the namespaces they may be in still exist.
	loss := newGossipLoss(b, bf, agent.DefaultConfig().GossipPort, protos)
	r.mode = loss.where()
	b.Logf("%s (%s): loss rules %s", r.tuning.name, r.tuning.about, r.mode)
	for _, st := range r.steps {
		gossipLossStep(b, bf, loss, st, dur)
		var per []string
		for _, n := range bf.nodes {
			per = append(per, fmt.Sprintf("%s %d", n.Name, st.downs[n.Name]))
		}
		drop := "-"
		if st.seen > 0 {
			drop = fmt.Sprintf("%.1f%%", 100*float64(st.dropped)/float64(st.seen))
		}
		b.Logf("%s at %d%% loss for %.0f s: %d false failures (%.1f per node-hour; by node: %s); %d suspicions, %d timed out on some member, %d acted on by the leader, %d probes answered only over TCP; rules saw %d gossip packets and dropped %d (%s); %d polls, %d failed; back to all ready after %s; %s",
			r.tuning.name, st.loss, st.secs, st.falseDowns(), st.perNodeHour(), strings.Join(per, ", "), st.suspicions, st.expired, st.leaderFailed, st.tcpOnly,
			st.seen, st.dropped, drop, st.polls, st.pollErrs, st.recovery.Round(time.Millisecond), gossipMachine(bf.lab.Bridge))
	}
	r.detect = gossipDetect(b, bf, flags, kills)
	for b.Loop() {
		// Measured once above; b.Loop only keeps the framework from
		// running this function again.
	}
	b.ReportMetric(0, "ns/op")
	for _, st := range r.steps {
		b.ReportMetric(st.perNodeHour(), fmt.Sprintf("false_down/node-h@%d%%", st.loss))
	}
	b.ReportMetric(median(r.detect), "detect_s")
}

// gossipLossStep drops st.loss percent of the gossip for dur and counts
// the false failures the leader reports meanwhile.
func gossipLossStep(b *testing.B, bf *benchFleet, loss *gossipLoss, st *gossipStep, dur time.Duration) {
	b.Helper()
	gossipWaitReady(b, bf, 2*time.Minute)
	leader := bf.waitLeader(b)
	offsets := gossipLogOffsets(bf)
	if err := loss.install(float64(st.loss) / 100); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	st.downs = map[string]int{}
	prev := map[string]string{}
	tick := time.NewTicker(gossipPoll)
	for time.Since(start) < dur {
		nodes, err := gossipListNodes(bf, leader)
		st.polls++
		if err != nil {
			st.pollErrs++
		}
		for _, n := range nodes {
			if prev[n.Name] == api.NodeReady && n.Status == api.NodeDown {
				st.downs[n.Name]++
			}
			prev[n.Name] = n.Status
		}
		<-tick.C
	}
	tick.Stop()
	st.secs = time.Since(start).Seconds()
	seen, dropped, err := loss.counters()
	if err != nil {
		b.Fatal(err)
	}
	if err := loss.clear(); err != nil {
		b.Fatal(err)
	}
	st.seen, st.dropped, st.nodes = seen, dropped, len(bf.nodes)
	switch {
	case seen == 0:
		b.Fatalf("%d%% loss: the loss rules (%s) saw no gossip packet in %.0f s: they are not in gossip's path", st.loss, loss.where(), st.secs)
	case st.loss > 0 && dropped == 0:
		b.Fatalf("%d%% loss: the DROP rules (%s) dropped none of %d gossip packets", st.loss, loss.where(), seen)
	}
	st.measured = true
	if st.falseDowns() > 0 || !gossipAllReady(bf, leader) {
		t0 := time.Now()
		gossipWaitReady(b, bf, 2*time.Minute)
		st.recovery = time.Since(t0)
	}
	st.suspicions, st.expired, st.leaderFailed, st.tcpOnly = countGossipLogs(bf, offsets)
}

// gossipDetect kills the last client's agent kills times at no loss,
// restarting it in between, and returns the seconds until the leader's
// node list showed it down each time.
func gossipDetect(b *testing.B, bf *benchFleet, flags []string, kills int) []float64 {
	b.Helper()
	victim := bf.nodes[len(bf.nodes)-1]
	if victim.server {
		b.Fatal("the fleet has no client to kill")
	}
	var secs []float64
	for i := range kills {
		if i > 0 {
			gossipRestart(b, bf, victim, flags)
		}
		gossipWaitReady(b, bf, 2*time.Minute)
		leader := bf.waitLeader(b)
		machine := gossipMachine(bf.lab.Bridge)
		killed := time.Now()
		victim.Kill()
		deadline := killed.Add(time.Minute)
		for {
			nodes, _ := gossipListNodes(bf, leader)
			if slices.ContainsFunc(nodes, func(n api.Node) bool { return n.Name == victim.Name && n.Status == api.NodeDown }) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("kill -9 of %s: the leader %s did not show it down within a minute", victim.Name, leader.Name)
			}
			time.Sleep(fleetPoll)
		}
		secs = append(secs, time.Since(killed).Seconds())
		b.Logf("kill -9 of client %s: leader %s shows it down after %.3f s; %s", victim.Name, leader.Name, secs[i], machine)
	}
	// Teardown stops agents that run: a clean fleet to tear down.
	gossipRestart(b, bf, victim, flags)
	return secs
}

// gossipRestart starts n's agent again with the fleet's flags and waits
// until the leader lists every node ready.
func gossipRestart(b *testing.B, bf *benchFleet, n *fleetNode, flags []string) {
	b.Helper()
	bf.do(b, func(*testing.T) { bf.start(n, flags...) })
	gossipWaitReady(b, bf, 2*time.Minute)
}

// gossipListNodes reads the node list from the leader, or from another
// server if the leader does not answer within a second.
func gossipListNodes(bf *benchFleet, leader *fleetNode) ([]api.Node, error) {
	var errs []error
	for _, s := range append([]*fleetNode{leader}, bf.servers()...) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		nodes, err := s.client.ListNodes(ctx)
		cancel()
		if err == nil {
			return nodes, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
	}
	return nil, errors.Join(errs...)
}

// gossipAllReady reports whether the leader lists every node of the fleet ready.
func gossipAllReady(bf *benchFleet, leader *fleetNode) bool {
	nodes, err := gossipListNodes(bf, leader)
	return err == nil && countReady(nodes) == len(bf.nodes)
}

func gossipWaitReady(b *testing.B, bf *benchFleet, timeout time.Duration) {
	b.Helper()
	waitUntil(b, timeout, fmt.Sprintf("all %d nodes ready in the leader's node list", len(bf.nodes)), func(ctx context.Context) error {
		l, err := bf.leader(ctx)
		if err != nil {
			return err
		}
		nodes, err := l.client.ListNodes(ctx)
		if err != nil {
			return err
		}
		if k := countReady(nodes); k != len(bf.nodes) {
			return fmt.Errorf("%d of %d ready: %+v", k, len(bf.nodes), nodes)
		}
		return nil
	})
}

// gossipMachine says how busy the machine was (a starved agent misses
// probes as a lossy link does). It avoids the words bench.sh's fleet table
// looks for in the same output.
func gossipMachine(ownBridge string) string {
	la, others := loadAndLabs(ownBridge)
	return fmt.Sprintf("machine: loadavg %s, %d other labs", la, others)
}

// --- the agents' logs ---------------------------------------------------------

func gossipLogOffsets(bf *benchFleet) map[*fleetNode]int64 {
	offs := map[*fleetNode]int64{}
	for _, n := range bf.nodes {
		if fi, err := os.Stat(n.Log); err == nil {
			offs[n] = fi.Size()
		}
	}
	return offs
}

var (
	gossipReSuspect = regexp.MustCompile(`Suspect \S+ has failed, no acks received`)
	gossipReExpired = regexp.MustCompile(`Marking \S+ as failed, suspect timeout reached`)
	gossipReTCPOnly = regexp.MustCompile(`over TCP but UDP probes failed`)
	gossipReFailed  = regexp.MustCompile(`msg="node failed"`)
)

// countGossipLogs counts, in every node's log after offs, the suspicions
// memberlist raised, those that timed out on a member, the failures the
// leader acted on and the probes only TCP answered.
func countGossipLogs(bf *benchFleet, offs map[*fleetNode]int64) (suspicions, expired, failed, tcpOnly int) {
	for _, n := range bf.nodes {
		f, err := os.Open(n.Log)
		if err != nil {
			continue
		}
		if _, err := f.Seek(offs[n], io.SeekStart); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64*1024), 1024*1024)
			for sc.Scan() {
				line := sc.Bytes()
				switch {
				case gossipReSuspect.Match(line):
					suspicions++
				case gossipReExpired.Match(line):
					expired++
				case gossipReFailed.Match(line):
					failed++
				case gossipReTCPOnly.Match(line):
					tcpOnly++
				}
			}
		}
		f.Close()
	}
	return suspicions, expired, failed, tcpOnly
}

// --- the lossy link -----------------------------------------------------------

// gossipLoss drops a share of the gossip between a fleet's nodes with
// iptables' statistic match, either in the host's FORWARD for frames
// crossing the lab bridge or, where bridged frames skip iptables, on INPUT
// in every node's namespace. Each rule has a counting twin before it with
// the same match and no target: what it saw, against what the DROP took.
type gossipLoss struct {
	bf     *benchFleet
	port   int
	protos []string
	netns  bool
	on     []gossipRule // installed, in the order they went in
}

type gossipRule struct {
	netns string // "" is the host's namespace
	chain string
	spec  []string
}

// newGossipLoss finds where the rules must go (see gossipLoss) and removes
// every rule it made when b ends, even when it failed.
func newGossipLoss(b *testing.B, bf *benchFleet, port int, protos []string) *gossipLoss {
	b.Helper()
	g := &gossipLoss{bf: bf, port: port, protos: protos}
	b.Cleanup(func() {
		if err := g.clear(); err != nil {
			b.Errorf("remove the loss rules: %v", err)
		}
		if out, _ := exec.Command("iptables-save").Output(); strings.Contains(string(out), g.comment("")) {
			b.Errorf("loss rules left behind in the host's iptables: %s", gossipGrep(string(out), g.comment("")))
		}
	})
	for _, inNetns := range []bool{false, true} {
		g.netns = inNetns
		if err := g.install(0); err != nil {
			b.Fatal(err)
		}
		seen := int64(0)
		for deadline := time.Now().Add(5 * time.Second); seen == 0 && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			var err error
			if seen, _, err = g.counters(); err != nil {
				b.Fatal(err)
			}
		}
		if err := g.clear(); err != nil {
			b.Fatal(err)
		}
		if seen > 0 {
			return g
		}
		b.Logf("no gossip seen by rules %s in 5 s", g.where())
	}
	b.Fatalf("no gossip packet passed iptables, neither on the lab bridge %s nor in the nodes' namespaces", bf.lab.Bridge)
	return nil
}

func (g *gossipLoss) where() string {
	what := fmt.Sprintf("%s on port %d", strings.Join(g.protos, "+"), g.port)
	if g.netns {
		return fmt.Sprintf("on INPUT from eth0 in each node's namespace (bridged frames skip iptables here), %s", what)
	}
	return fmt.Sprintf("in the host's FORWARD for frames crossing lab bridge %s, %s", g.bf.lab.Bridge, what)
}

func (g *gossipLoss) comment(kind string) string {
	return strings.TrimSpace(gossipComment + " " + g.bf.lab.Bridge + " " + kind)
}

// install replaces the rules with ones dropping share (0 to 1) of the
// gossip; with 0 only the counting rules go in.
func (g *gossipLoss) install(share float64) error {
	if err := g.clear(); err != nil {
		return err
	}
	type place struct {
		netns, chain string
		iface        []string
	}
	var places []place
	if g.netns {
		for _, n := range g.bf.nodes {
			places = append(places, place{n.NetNS, "INPUT", []string{"-i", "eth0"}})
		}
	} else {
		br := g.bf.lab.Bridge
		places = append(places, place{"", "FORWARD", []string{"-i", br, "-o", br}})
	}
	for _, p := range places {
		for _, proto := range g.protos {
			// memberlist uses one port for UDP and TCP; --ports matches it
			// as source or destination: both directions of a connection.
			match := append(slices.Clone(p.iface), "-p", proto, "-m", "multiport", "--ports", strconv.Itoa(g.port))
			// Inserted at the top, the DROP first: the counting rule ends
			// up above it and sees every packet the DROP may take.
			rules := [][]string{append(slices.Clone(match), "-m", "comment", "--comment", g.comment("seen"))}
			if share > 0 {
				rules = append([][]string{append(slices.Clone(match), "-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(share, 'f', 4, 64),
					"-m", "comment", "--comment", g.comment("drop"), "-j", "DROP")}, rules...)
			}
			for _, spec := range rules {
				r := gossipRule{p.netns, p.chain, spec}
				if out, err := r.iptables(append([]string{"-I", r.chain, "1"}, r.spec...)...); err != nil {
					return fmt.Errorf("insert loss rule %s: %v: %s", r, err, out)
				}
				g.on = append(g.on, r)
			}
		}
	}
	return nil
}

// clear removes every rule install made.
func (g *gossipLoss) clear() error {
	var errs []error
	for i := len(g.on) - 1; i >= 0; i-- {
		r := g.on[i]
		if r.netns != "" {
			if _, err := os.Stat("/run/netns/" + r.netns); err != nil {
				continue // gone with its namespace
			}
		}
		if out, err := r.iptables(append([]string{"-D", r.chain}, r.spec...)...); err != nil {
			errs = append(errs, fmt.Errorf("delete loss rule %s: %v: %s", r, err, strings.TrimSpace(string(out))))
		}
	}
	g.on = nil
	return errors.Join(errs...)
}

// counters sums the packet counters of the counting and the DROP rules.
func (g *gossipLoss) counters() (seen, dropped int64, err error) {
	done := map[string]bool{}
	for _, r := range g.on {
		if done[r.netns] {
			continue
		}
		done[r.netns] = true
		out, err := r.iptables("-save", "-c", "-t", "filter")
		if err != nil {
			return 0, 0, fmt.Errorf("read loss rule counters: %v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			var pkts, bytes int64
			if _, err := fmt.Sscanf(line, "[%d:%d]", &pkts, &bytes); err != nil {
				continue
			}
			switch {
			case strings.Contains(line, g.comment("seen")):
				seen += pkts
			case strings.Contains(line, g.comment("drop")):
				dropped += pkts
			}
		}
	}
	return seen, dropped, nil
}

// iptables runs iptables (or iptables-save, args[0] "-save") in the rule's
// namespace.
func (r gossipRule) iptables(args ...string) ([]byte, error) {
	bin := "iptables"
	if len(args) > 0 && args[0] == "-save" {
		bin, args = "iptables-save", args[1:]
	} else {
		args = append([]string{"-w"}, args...)
	}
	argv := append([]string{bin}, args...)
	if r.netns != "" {
		argv = append([]string{"nsenter", "--net=/run/netns/" + r.netns, "--"}, argv...)
	}
	return exec.Command(argv[0], argv[1:]...).CombinedOutput()
}

func (r gossipRule) String() string {
	where := "host"
	if r.netns != "" {
		where = r.netns
	}
	return fmt.Sprintf("%s %s %s", where, r.chain, strings.Join(r.spec, " "))
}

func gossipGrep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// --- settings and the table -------------------------------------------------------

// gossipLossRates are BENCH_GOSSIP_LOSS's percentages (default 0,5,10,20).
func gossipLossRates(b *testing.B) []int {
	b.Helper()
	v := os.Getenv("BENCH_GOSSIP_LOSS")
	if strings.TrimSpace(v) == "" {
		v = "0,5,10,20"
	}
	var rates []int
	for _, f := range strings.Split(v, ",") {
		p, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(f), "%"))
		if err != nil || p < 0 || p > 100 {
			b.Fatalf("BENCH_GOSSIP_LOSS=%q: %q is not a percentage 0..100 (e.g. BENCH_GOSSIP_LOSS=0,5,10,20)", v, f)
		}
		if !slices.Contains(rates, p) {
			rates = append(rates, p)
		}
	}
	return rates
}

// gossipDropProtos are BENCH_GOSSIP_DROP's protocols (default udp,tcp).
func gossipDropProtos(b *testing.B) []string {
	b.Helper()
	v := os.Getenv("BENCH_GOSSIP_DROP")
	if strings.TrimSpace(v) == "" {
		v = "udp,tcp"
	}
	var protos []string
	for _, f := range strings.Split(v, ",") {
		p := strings.ToLower(strings.TrimSpace(f))
		if p != "udp" && p != "tcp" {
			b.Fatalf("BENCH_GOSSIP_DROP=%q: %q is not udp or tcp (e.g. BENCH_GOSSIP_DROP=udp,tcp)", v, f)
		}
		if !slices.Contains(protos, p) {
			protos = append(protos, p)
		}
	}
	return protos
}

// printGossipTable prints the tunings side by side per loss rate; a figure
// not measured (its row failed) is "-". Every line starts with "gossip| ".
func printGossipTable(rs []*gossipResult, protos []string, dur time.Duration, kills int, took time.Duration) {
	if len(rs) == 0 {
		return
	}
	var out strings.Builder
	line := func(format string, args ...any) {
		fmt.Fprintf(&out, "gossip| %s\n", strings.TrimRight(fmt.Sprintf(format, args...), " "))
	}
	mode := "-"
	for _, r := range rs {
		if r.mode != "" {
			mode = r.mode
		}
	}
	line("")
	line("Gossip failure detection on a lossy link: per tuning a lab fleet of 3 servers + 2 clients (all alive, nothing killed)")
	line("  loss: that share of the gossip packets dropped at random (iptables statistic; no netem here), rules %s", mode)
	line("  %.0f s per loss rate; a false failure (downs) is a node going ready -> down in the leader's GET /v1/nodes, polled every %s;", dur.Seconds(), gossipPoll)
	line("  /node-h: per node-hour, all 5 nodes counted; raft, RPC and API traffic is not dropped; probes every 1 s, 500 ms timeout, in both")
	line("  suspicions: memberlist suspected a live node (all members' logs); drop: the share of the gossip the DROP rules saw that they took")
	for _, r := range rs {
		line("  %s: %s", r.tuning.name, r.tuning.about)
	}
	line("")
	head1 := fmt.Sprintf("%6s", "")
	head2 := fmt.Sprintf("%6s", "loss")
	for _, r := range rs {
		head1 += fmt.Sprintf(" | %-37s", r.tuning.name)
		head2 += fmt.Sprintf(" | %7s %9s %10s %7s", "downs", "/node-h", "suspicions", "drop")
	}
	line("%s", head1)
	line("%s", head2)
	for i := range rs[0].steps {
		row := fmt.Sprintf("%5d%%", rs[0].steps[i].loss)
		for _, r := range rs {
			st := r.steps[i]
			if !st.measured {
				row += fmt.Sprintf(" | %7s %9s %10s %7s", "-", "-", "-", "-")
				continue
			}
			drop := "-"
			if st.seen > 0 {
				drop = fmt.Sprintf("%.1f%%", 100*float64(st.dropped)/float64(st.seen))
			}
			row += fmt.Sprintf(" | %7d %9.1f %10d %7s", st.falseDowns(), st.perNodeHour(), st.suspicions, drop)
		}
		line("%s", row)
	}
	line("")
	var det []string
	for _, r := range rs {
		if len(r.detect) == 0 {
			det = append(det, r.tuning.name+" -")
			continue
		}
		det = append(det, fmt.Sprintf("%s %.2f s (%.2f-%.2f)", r.tuning.name, median(r.detect), slices.Min(r.detect), slices.Max(r.detect)))
	}
	line("real failure at 0%% loss (client agent kill -9 until the leader shows it down), median of %d: %s", kills, strings.Join(det, "; "))
	line("that part took %.0f s", took.Seconds())
	fmt.Print(out.String())
}
