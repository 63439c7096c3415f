package acceptance

// BenchmarkServices measures issue 10's service data path and cluster DNS
// in the services lab (3 servers, 1 client; services_lab_test.go), each
// figure side by side with its baseline in the same run:
//
//   - HTTP through a virtual IP against straight to the pod IPs behind it,
//     with wrk (Debian's) run from the client node's network namespace
//     (the pods are on the servers): requests/s and p99 latency, and their
//     ratios (goal: virtual IP / pod IP >= 0.95 for requests/s). Every run
//     is one wrk with 3 threads and 10 connections each; a Lua script
//     (wrkSpreadLua) points thread i at target i mod n, so against three
//     pod IPs each pod gets one thread, as each gets a third of the
//     connections through the virtual IP. Four rows: one backend and three,
//     each with keep-alive connections (the DNAT is paid once per
//     connection) and with a new connection per request ("Connection:
//     close": paid every request). Each row runs BENCH_SVC_ROUNDS times (3),
//     pod and virtual IP (alternating with keep-alive), BENCH_SVC_SECONDS each (8); medians.
//     Every run is also printed on a line of its own ("services-run| ").
//   - DNS with dnsperf (Debian's) from the client node against its agent's
//     DNS server on the pod bridge address, and against dnsmasq (Debian's)
//     started in the same namespace answering the same names from a hosts
//     file: BENCH_SVC_DNS_NAMES services (1000) created for it, queried as
//     bench-N.default.svc.cluster.local A, as agent/clusterdns/bench.sh does
//     on loopback. queries/s flat out (dnsperf -c 8 -q 200,
//     BENCH_SVC_DNS_SECONDS, 10), the servers' CPU time per query (the
//     agent's whole process: it does more than DNS), then p50/p99 at one
//     fixed rate for both (half the lower of the two rates), and the
//     ratios.
//
// It prints its table as lines starting "services| " (scripts/bench.sh
// shows them) and reports the ratios as metrics. It asserts nothing about
// speed. The iptables programming figures (1,000 and 10,000 services from
// empty, restart re-sync, one change, kube-proxy's layout) are Go
// benchmarks of agent/svcproxy (BenchmarkProgram), which scripts/bench.sh
// runs in the same part.

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

func BenchmarkServices(b *testing.B) {
	needAcc(b)
	for _, bin := range []string{"wrk", "dnsperf", "dnsmasq"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("%s is not on PATH: apt-get install wrk dnsperf dnsmasq-base (scripts/bench.sh does)", bin)
		}
	}
	seconds := envInt("BENCH_SVC_SECONDS", 8)
	rounds := envInt("BENCH_SVC_ROUNDS", 3)
	bf := startBenchFleet(b, 3, 1)
	l := newSvcLab(b, bf.fleet)
	out := func(format string, args ...any) { fmt.Printf("services| "+format+"\n", args...) }

	// One backend: a deployment of its own, and a service selecting it alone.
	solo := demoDeployment("solo", 1)
	solo.Labels = map[string]string{"app": "solo"}
	solo.AntiAffinity = []api.AntiAffinity{{Labels: map[string]string{"app": "caller"}, Required: true}}
	createSpec(b, l.via, solo)
	soloSvc := &api.Service{Namespace: api.DefaultNamespace, Name: "solo", Selector: solo.Labels, Ports: []api.ServicePort{{Port: 80, TargetPort: "8080"}}}
	apiRetry(b, "create service solo", func(ctx context.Context) error {
		s, err := l.via.client.CreateService(ctx, soloSvc)
		if api.IsConflict(err) {
			s, err = l.via.client.GetService(ctx, api.DefaultNamespace, "solo")
		}
		if err == nil {
			l.vip["solo"] = s.ClusterIP
		}
		return err
	})
	var soloPod api.Pod
	waitUntil(b, 2*time.Minute, "solo reached through its virtual IP", func(ctx context.Context) error {
		pods, err := livePods(ctx, l.via.client, "solo")
		if err != nil || len(pods) != 1 || !pods[0].Status.Ready {
			return fmt.Errorf("solo pods %v: %v", pods, err)
		}
		soloPod = pods[0]
		o, err := l.nodeA.Exec(ctx, "curl", "-sf", "-m", "2", "http://"+l.vip["solo"]+"/hostname")
		if err != nil || strings.TrimSpace(string(o)) != soloPod.Name {
			return fmt.Errorf("curl %s from %s: %v %q", l.vip["solo"], l.nodeA.Name, err, o)
		}
		return nil
	})
	var webIPs []string
	for _, p := range l.webPods(b) {
		webIPs = append(webIPs, p.Status.IP)
	}

	out("")
	out("Services, HTTP: wrk from %s's network namespace (the client; the pods run on the 3 servers), %d s per run, median of %d runs each", l.nodeA.Name, seconds, rounds)
	out("  every run: 1 wrk, 3 threads, 10 connections each; against 3 pod IPs, thread i connects to pod i")
	out("  goal: virtual IP / pod IP >= 0.95 for requests/s")
	out("")
	out("%-10s %-16s | %10s %9s | %10s %9s | %6s %6s  %s", "backends", "connections", "pod req/s", "p99 ms", "VIP req/s", "p99 ms", "req/s", "p99", "goal")
	type row struct {
		backends  int
		close     bool
		pod, vips []string
	}
	rows := []row{
		{1, false, []string{soloPod.Status.IP + ":8080"}, []string{l.vip["solo"] + ":80"}},
		{1, true, []string{soloPod.Status.IP + ":8080"}, []string{l.vip["solo"] + ":80"}},
		{3, false, suffix(webIPs, ":8080"), []string{l.vip["web"] + ":80"}},
		{3, true, suffix(webIPs, ":8080"), []string{l.vip["web"] + ":80"}},
	}
	script := filepath.Join(b.TempDir(), "spread.lua")
	if err := os.WriteFile(script, []byte(wrkSpreadLua), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, r := range rows {
		var podRuns, vipRuns []wrkResult
		type side struct {
			targets []string
			into    *[]wrkResult
		}
		// Keep-alive runs alternate sides. Runs with a new connection per
		// request do not: the client reuses its ports within seconds, and
		// a pod still holds the last connection on a port in TIME_WAIT
		// (60 s); a new SYN is let in only if its sequence number and
		// timestamp are newer, which the client derives from the address
		// it connects to — the pod's or the virtual IP's — so a port used
		// for one side and then the other is refused until TIME_WAIT ends
		// (measured: 200 req/s through the virtual IP after a direct run
		// on the same ports, 9,000 without). Real clients reach a service
		// one way; so the bench runs one side's rounds, waits out
		// TIME_WAIT, then the other's.
		var order [][]side
		if r.close {
			order = [][]side{{{r.pod, &podRuns}}, {{r.vips, &vipRuns}}}
		} else {
			order = [][]side{{{r.pod, &podRuns}, {r.vips, &vipRuns}}}
		}
		for i, sides := range order {
			if i > 0 {
				time.Sleep(65 * time.Second)
			}
			for range rounds {
				for _, side := range sides {
					// Each run starts from empty connection tracking on the
					// client's node: otherwise a run's connections meet the
					// last run's in TIME_WAIT (120 s) with the same client
					// ports, and a DNAT whose reply tuple another entry holds
					// cannot be inserted (its SYN is dropped and sent again
					// after 1 s) — the runs through the virtual IP and straight
					// to the pods would measure each other.
					if out, err := l.nodeA.Exec(context.Background(), "conntrack", "-F"); err != nil {
						b.Fatalf("conntrack -F on %s: %v %s", l.nodeA.Name, err, out)
					}
					failedBefore := conntrackInsertFailed(l.nodeA)
					res, err := runWrk(l.nodeA, script, side.targets, seconds, r.close)
					if err != nil {
						b.Fatal(err)
					}
					*side.into = append(*side.into, res)
					// Each run, for the spread (b.Logf would be cut after 10 lines).
					fmt.Printf("services-run| backends %d, new connection each request %v, %v: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors, %d conntrack inserts failed\n",
						r.backends, r.close, side.targets, res.rps, res.p50ms, res.p99ms, res.errors, conntrackInsertFailed(l.nodeA)-failedBefore)
				}
			}
		}
		pod, vip := medianWrk(podRuns), medianWrk(vipRuns)
		conn := "keep-alive"
		if r.close {
			conn = "new each request"
		}
		ratio, p99Ratio := vip.rps/pod.rps, vip.p99ms/pod.p99ms
		goal := "met"
		if ratio < 0.95 {
			goal = "NOT met"
		}
		out("%-10d %-16s | %10.0f %9.2f | %10.0f %9.2f | %6.2f %6.2f  %s", r.backends, conn, pod.rps, pod.p99ms, vip.rps, vip.p99ms, ratio, p99Ratio, goal)
		if pod.errors+vip.errors > 0 {
			out("  (socket errors or non-2xx answers: pod %d, virtual IP %d)", pod.errors, vip.errors)
		}
		name := fmt.Sprintf("backends%d-%s", r.backends, map[bool]string{false: "keepalive", true: "close"}[r.close])
		b.ReportMetric(ratio, "vip/pod-req/s-"+name)
		b.ReportMetric(p99Ratio, "vip/pod-p99-"+name)
	}

	out("  keep-alive rows alternate pod and virtual IP runs; new-connection rows run the pod side, wait 65 s (the pods'")
	out("  TIME_WAIT), then the virtual IP side, and every run starts from empty conntrack on the client's node")

	benchServicesDNS(b, l, out)
	out("")
	out("machine: %s", machineLoad(bf.lab.Bridge))
}

func suffix(xs []string, s string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x + s
	}
	return out
}

// wrkResult is one wrk run (or several at once, added up).
type wrkResult struct {
	rps, p50ms, p99ms float64
	requests, errors  int
}

func medianWrk(rs []wrkResult) wrkResult {
	pick := func(f func(wrkResult) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	m := wrkResult{
		rps:   pick(func(r wrkResult) float64 { return r.rps }),
		p50ms: pick(func(r wrkResult) float64 { return r.p50ms }),
		p99ms: pick(func(r wrkResult) float64 { return r.p99ms }),
	}
	for _, r := range rs {
		m.requests += r.requests
		m.errors += r.errors
	}
	return m
}

// wrkSpreadLua points each wrk thread at one of the addresses in $ADDRS
// (space-separated host:port), in turn, instead of the URL's host.
const wrkSpreadLua = `local addrs, n = {}, 0
function setup(thread)
  if #addrs == 0 then
    for a in string.gmatch(os.getenv("ADDRS"), "%S+") do
      local host, port = a:match("^(.+):(%d+)$")
      for _, x in ipairs(wrk.lookup(host, port)) do table.insert(addrs, x) end
    end
  end
  n = n + 1
  thread.addr = addrs[((n - 1) % #addrs) + 1]
end
`

// runWrk runs wrk from inside n's network namespace: 3 threads with 10
// connections each, GET /hostname for seconds, thread i connecting to
// targets[i mod len(targets)].
func runWrk(n *fleetNode, script string, targets []string, seconds int, closeConn bool) (wrkResult, error) {
	args := []string{"--net=" + n.NetNSPath(), "--", "env", "ADDRS=" + strings.Join(targets, " "),
		"wrk", "-t3", "-c30", fmt.Sprintf("-d%ds", seconds), "--latency", "--timeout", "5s", "-s", script}
	if closeConn {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+targets[0]+"/hostname")
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+30)*time.Second)
	defer cancel()
	o, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %v on %s: %w\n%s", targets, n.Name, err, o)
	}
	return parseWrk(string(o))
}

// parseWrk reads wrk --latency's report.
func parseWrk(text string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, haveP99 bool
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", sc.Text(), err)
			}
			r.rps, haveRPS = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			ms, err := wrkDurationMS(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.p50ms = ms
			} else {
				r.p99ms, haveP99 = ms, true
			}
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.Atoi(f[0])
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				k, _ := strconv.Atoi(strings.TrimSuffix(f[i+1], ","))
				r.errors += k
			}
		case len(f) >= 5 && f[0] == "Non-2xx":
			k, _ := strconv.Atoi(f[len(f)-1])
			r.errors += k
		}
	}
	if !haveRPS || !haveP99 {
		return r, fmt.Errorf("wrk: no Requests/sec or 99%% line in:\n%s", text)
	}
	return r, nil
}

// wrkDurationMS parses wrk's "812.00us", "1.23ms", "2.01s", "1.00m".
func wrkDurationMS(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 60e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk: duration %q: %w", s, err)
			}
			return f * u.ms, nil
		}
	}
	return 0, fmt.Errorf("wrk: duration %q has no unit", s)
}

// benchServicesDNS runs dnsperf against the agent's DNS server and
// dnsmasq, both in node A's network namespace, on the same names.
func benchServicesDNS(b *testing.B, l *svcLab, out func(string, ...any)) {
	names := envInt("BENCH_SVC_DNS_NAMES", 1000)
	seconds := envInt("BENCH_SVC_DNS_SECONDS", 10)
	ctx := context.Background()

	// The names: services of no pod, created 8 at a time.
	vips := make([]string, names)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				s := &api.Service{Namespace: api.DefaultNamespace, Name: fmt.Sprintf("bench-%d", i),
					Selector: map[string]string{"app": "bench-none"}, Ports: []api.ServicePort{{Port: 80}}}
				for try := 0; try < 20; try++ {
					wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					got, err := l.via.client.CreateService(wctx, s)
					if api.IsConflict(err) {
						got, err = l.via.client.GetService(wctx, s.Namespace, s.Name)
					}
					cancel()
					if err == nil {
						vips[i] = got.ClusterIP
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}
	start := time.Now()
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	created := time.Since(start)
	dir := b.TempDir()
	var queries, hosts strings.Builder
	for i, ip := range vips {
		if ip == "" {
			b.Fatalf("service bench-%d was not created", i)
		}
		name := fmt.Sprintf("bench-%d.default.svc.cluster.local", i)
		fmt.Fprintf(&queries, "%s A\n", name)
		fmt.Fprintf(&hosts, "%s %s\n", ip, name)
	}
	queryFile, hostsFile := filepath.Join(dir, "queries"), filepath.Join(dir, "hosts")
	if err := os.WriteFile(queryFile, []byte(queries.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
		b.Fatal(err)
	}

	// The agent's server: on node A's pod bridge, the first address of its range.
	nodes, err := l.via.client.ListNodes(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var agentDNS string
	for _, n := range nodes {
		if n.Name == l.nodeA.Name {
			if p, err := netip.ParsePrefix(n.PodCIDR); err == nil {
				agentDNS = p.Masked().Addr().Next().String()
			}
		}
	}
	if agentDNS == "" {
		b.Fatalf("no pod range for %s", l.nodeA.Name)
	}
	lastName := fmt.Sprintf("bench-%d.default.svc.cluster.local", names-1)
	waitUntil(b, time.Minute, "the agent's DNS answers the last name", func(ctx context.Context) error {
		return dnsAnswers(ctx, l.nodeA, agentDNS, 53, lastName, dir)
	})
	aPid, err := agentPid(l.nodeA)
	if err != nil {
		b.Fatal(err)
	}

	// dnsmasq on node A's lab address, a port of its own.
	const dmPort = 5353
	dm := exec.Command("nsenter", "--net="+l.nodeA.NetNSPath(), "--", "dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--addn-hosts="+hostsFile, fmt.Sprintf("--port=%d", dmPort), "--listen-address="+l.nodeA.IP.String(), "--bind-interfaces",
		"--keep-in-foreground", "--pid-file=", "--user=root", "--log-facility=-")
	dmLog, _ := os.Create(filepath.Join(dir, "dnsmasq.log"))
	dm.Stdout, dm.Stderr = dmLog, dmLog
	if err := dm.Start(); err != nil {
		b.Fatalf("start dnsmasq: %v", err)
	}
	b.Cleanup(func() { _ = dm.Process.Kill(); _ = dm.Wait(); dmLog.Close() })
	waitUntil(b, 20*time.Second, "dnsmasq answers", func(ctx context.Context) error {
		return dnsAnswers(ctx, l.nodeA, l.nodeA.IP.String(), dmPort, lastName, dir)
	})

	type dnsFig struct {
		qps, cpuUS, p50us, p99us float64
		lost                     int
	}
	servers := []struct {
		name string
		addr string
		port int
		pid  int
		fig  dnsFig
	}{
		{"flotilla", agentDNS, 53, aPid, dnsFig{}},
		{"dnsmasq", l.nodeA.IP.String(), dmPort, dm.Process.Pid, dnsFig{}},
	}
	for i := range servers {
		s := &servers[i]
		before := cpuSeconds(s.pid)
		o, err := l.nodeA.Exec(ctx, "dnsperf", "-s", s.addr, "-p", strconv.Itoa(s.port), "-d", queryFile, "-l", strconv.Itoa(seconds), "-c", "8", "-q", "200")
		if err != nil {
			b.Fatalf("dnsperf against %s: %v\n%s", s.name, err, o)
		}
		used := cpuSeconds(s.pid) - before
		completed, lost, qps := parseDNSPerf(string(o))
		s.fig.qps, s.fig.lost = qps, lost
		if completed > 0 {
			s.fig.cpuUS = used / float64(completed) * 1e6
		}
	}
	rate := int(min(servers[0].fig.qps, servers[1].fig.qps) / 2)
	for i := range servers {
		s := &servers[i]
		o, err := l.nodeA.Exec(ctx, "dnsperf", "-s", s.addr, "-p", strconv.Itoa(s.port), "-d", queryFile, "-l", "5", "-Q", strconv.Itoa(max(rate, 1)), "-v")
		if err != nil {
			b.Fatalf("dnsperf -Q against %s: %v\n%s", s.name, err, tail(string(o), 20))
		}
		var lat []float64
		for _, line := range strings.Split(string(o), "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[0] == ">" {
				if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
					lat = append(lat, v*1e6)
				}
			}
		}
		slices.Sort(lat)
		if len(lat) > 0 {
			s.fig.p50us, s.fig.p99us = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
		}
	}
	ours, dmq := servers[0].fig, servers[1].fig
	out("")
	out("Services, DNS: dnsperf from %s's network namespace, %d names (services created in %.1f s), A queries of bench-N.default.svc.cluster.local", l.nodeA.Name, names, created.Seconds())
	out("  flotilla: the agent's DNS server on the pod bridge %s:53; dnsmasq 2.90 on %s:%d from a hosts file of the same names", agentDNS, l.nodeA.IP, dmPort)
	out("  queries/s: dnsperf -c 8 -q 200 for %d s; latency: both at %d queries/s (half the lower rate) for 5 s; CPU: the server's process per query (the agent's whole process)", seconds, rate)
	out("")
	out("%-9s | %10s %6s %12s | %10s %10s", "server", "queries/s", "lost", "CPU us/query", "p50 us", "p99 us")
	for _, s := range servers {
		out("%-9s | %10.0f %6d %12.1f | %10.0f %10.0f", s.name, s.fig.qps, s.fig.lost, s.fig.cpuUS, s.fig.p50us, s.fig.p99us)
	}
	out("ratio flotilla/dnsmasq: %.2f x the queries/s, %.2f x the p99, %.2f x the CPU per query", ours.qps/dmq.qps, ours.p99us/dmq.p99us, ours.cpuUS/dmq.cpuUS)
	b.ReportMetric(ours.qps, "dns-q/s")
	b.ReportMetric(ours.qps/dmq.qps, "dns-q/s-vs-dnsmasq")
	b.ReportMetric(ours.p99us/dmq.p99us, "dns-p99-vs-dnsmasq")
}

// dnsAnswers checks that the server at addr:port answers name, with one
// dnsperf query from inside n.
func dnsAnswers(ctx context.Context, n *fleetNode, addr string, port int, name, dir string) error {
	one := filepath.Join(dir, "one")
	if err := os.WriteFile(one, []byte(name+" A\n"), 0o644); err != nil {
		return err
	}
	o, err := n.Exec(ctx, "dnsperf", "-s", addr, "-p", strconv.Itoa(port), "-d", one, "-n", "1", "-t", "1")
	if err != nil {
		return fmt.Errorf("dnsperf %s:%d: %v: %s", addr, port, err, tail(string(o), 5))
	}
	if !strings.Contains(string(o), "NOERROR 1 ") && !strings.Contains(string(o), "NOERROR 1\n") {
		return fmt.Errorf("%s:%d does not answer %s: %s", addr, port, name, tail(string(o), 12))
	}
	return nil
}

// parseDNSPerf reads dnsperf's summary.
func parseDNSPerf(text string) (completed, lost int, qps float64) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "Queries" && f[1] == "completed:":
			completed, _ = strconv.Atoi(f[2])
		case len(f) >= 3 && f[0] == "Queries" && f[1] == "lost:":
			lost, _ = strconv.Atoi(f[2])
		case len(f) >= 4 && f[0] == "Queries" && f[1] == "per" && f[2] == "second:":
			qps, _ = strconv.ParseFloat(f[3], 64)
		}
	}
	return completed, lost, qps
}

// conntrackInsertFailed sums the insert_failed column of n's
// /proc/net/stat/nf_conntrack (one line per CPU, hex), or -1.
func conntrackInsertFailed(n *fleetNode) int64 {
	out, err := n.Exec(context.Background(), "cat", "/proc/net/stat/nf_conntrack")
	if err != nil {
		return -1
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		return -1
	}
	col := slices.Index(strings.Fields(lines[0]), "insert_failed")
	if col < 0 {
		return -1
	}
	var sum int64
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if col < len(f) {
			v, _ := strconv.ParseInt(f[col], 16, 64)
			sum += v
		}
	}
	return sum
}
