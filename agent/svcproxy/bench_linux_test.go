//go:build linux

package svcproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkProgram programs n Services × 10 endpoints into an empty nat
// table of a fresh network namespace, with this package's layout and with
// kube-proxy's, and reports (per run):
//
//	program-s    from empty to all rules in force
//	resync-s     a new Syncer (a restarted agent) syncing the same state
//	change-ms    one Service's endpoint replaced, until the rules are in
//	             force (Sync returned); median of 9, and change-max-ms
//	restore-ms   of that, the time spent in iptables-restore (median), and
//	go-ms        the rest: rendering, comparing, planning (median)
//
// kube-proxy's layout (one chain per Service and one per endpoint, all in
// one iptables-restore; a restart rewrites every chain; an endpoint change
// rewrites the Service chain and adds and deletes an endpoint chain) runs
// at 1,000 Services, and at 10,000 only with BENCH_SVC_KUBEPROXY_10K=1, as
// it takes minutes; each of its restores is cut off after
// BENCH_SVC_KUBEPROXY_TIMEOUT (default 300s) and reported as did not finish.
// BENCH_SVC_SIZES (e.g. "1000,5000,10000") changes the sizes of this
// package's layout.
//
//	go test -run '^$' -bench . -benchtime 1x ./agent/svcproxy/
func BenchmarkProgram(b *testing.B) {
	needRoot(b)
	sizes := []int{1000, 10000}
	if v := os.Getenv("BENCH_SVC_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 30 || n > 60000 {
				b.Fatalf("BENCH_SVC_SIZES=%q: want numbers of Services in 30..60000, comma-separated", v)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("layout=flotilla/services=%d", n), func(b *testing.B) { benchFlotilla(b, n) })
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("layout=kube-proxy/services=%d", n), func(b *testing.B) {
			if n > 1000 && os.Getenv("BENCH_SVC_KUBEPROXY_10K") != "1" {
				b.Skip("takes minutes; set BENCH_SVC_KUBEPROXY_10K=1 to run it")
			}
			benchKubeProxy(b, n)
		})
	}
}

func benchConfig() Config {
	cfg := DefaultConfig()
	cfg.ChainPrefix = "SVB" + strings.ToUpper(randHex(2))
	cfg.ClusterCIDR = netip.MustParsePrefix("10.128.0.0/9")
	cfg.NodePodCIDR = netip.MustParsePrefix("10.128.0.0/25")
	return cfg
}

// timedApplier adds up the time spent in Restore.
type timedApplier struct {
	Applier
	restore time.Duration
	last    [][]byte // inputs since the last reset, for error messages
}

func (a *timedApplier) Restore(ctx context.Context, input []byte) error {
	t0 := time.Now()
	err := a.Applier.Restore(ctx, input)
	a.restore += time.Since(t0)
	a.last = append(a.last, input)
	return err
}

// withNetNS runs fn with an ExecApplier for a fresh network namespace,
// deleted afterwards.
func withNetNS(b *testing.B, fn func(app *ExecApplier) error) {
	b.Helper()
	name, h, err := newNetNS("flt-svcb-")
	if err != nil {
		b.Fatal(err)
	}
	err = fn(NewExecApplier(ExecConfig{NetNSPath: netnsPath(name)}))
	if derr := deleteNetNS(name, h); derr != nil {
		b.Error(derr)
	}
	if err != nil {
		b.Fatal(err)
	}
}

func benchFlotilla(b *testing.B, n int) {
	var (
		runs                               int
		program, resync, change, changeMax time.Duration
		restore, goPart                    time.Duration
		programRestores, programChains     int
	)
	for b.Loop() {
		runs++
		withNetNS(b, func(exec *ExecApplier) error {
			ctx := context.Background()
			cfg := benchConfig()
			st := benchState(n)
			s, err := NewSyncer(cfg, exec)
			if err != nil {
				return err
			}
			t0 := time.Now()
			stats, err := s.Sync(ctx, st)
			if err != nil {
				return err
			}
			program += time.Since(t0)
			programRestores, programChains = stats.Restores, stats.ChainsWritten

			app := &timedApplier{Applier: exec}
			s, err = NewSyncer(cfg, app)
			if err != nil {
				return err
			}
			t0 = time.Now()
			if stats, err = s.Sync(ctx, st); err != nil {
				return err
			}
			resync += time.Since(t0)
			if stats.Restores != 0 {
				return fmt.Errorf("restart re-sync rewrote rules: %+v", stats)
			}

			// Steady state: the garbage of the full renders and of the
			// iptables-save parse above is collected, as it is long before
			// the next endpoint change in a running agent.
			runtime.GC()
			const rounds = 9
			var changes, restores, gos []time.Duration
			var last EndpointAddr
			for round := range rounds {
				last = changeEndpoint(st, (round*n)/rounds+20, round)
				app.last, app.restore = nil, 0
				t0 = time.Now()
				stats, err := s.Sync(ctx, st)
				if err != nil {
					return err
				}
				d := time.Since(t0)
				changes, restores, gos = append(changes, d), append(restores, app.restore), append(gos, d-app.restore)
				if stats.ChainsWritten != 1 || stats.Restores != 1 {
					var chains []string
					for _, in := range app.last {
						chains = append(chains, declared(in)...)
					}
					return fmt.Errorf("endpoint change %d: %+v, want one chain in one restore; wrote %v", round, stats, chains)
				}
			}
			for _, ds := range [][]time.Duration{changes, restores, gos} {
				slices.Sort(ds)
			}
			change += changes[rounds/2]
			restore += restores[rounds/2]
			goPart += gos[rounds/2]
			changeMax = max(changeMax, changes[rounds-1])
			// In force: the kernel holds the new endpoint.
			out, err := exec.Save(ctx, natTable)
			if err != nil {
				return err
			}
			if !bytes.Contains(out, []byte("--to-destination "+last.String())) {
				return fmt.Errorf("endpoint %s not in the nat table after Sync", last)
			}
			return nil
		})
	}
	r := float64(runs)
	b.ReportMetric(program.Seconds()/r, "program-s")
	b.ReportMetric(resync.Seconds()/r, "resync-s")
	b.ReportMetric(float64(change.Microseconds())/1000/r, "change-ms")
	b.ReportMetric(float64(changeMax.Microseconds())/1000, "change-max-ms")
	b.ReportMetric(float64(restore.Microseconds())/1000/r, "restore-ms")
	b.ReportMetric(float64(goPart.Microseconds())/1000/r, "go-ms")
	b.ReportMetric(float64(programRestores), "restores")
	b.ReportMetric(float64(programChains), "chains")
}

// kubeProxy renders Services in kube-proxy's iptables layout (as of
// Kubernetes 1.28+, pkg/proxy/iptables/proxier.go): KUBE-SERVICES
// dispatches on ClusterIP:port to a KUBE-SVC-<hash> chain per Service port,
// which picks one KUBE-SEP-<hash> chain per endpoint with statistic rules;
// the endpoint chain marks hairpin traffic and DNATs. Comments as kube-proxy
// writes them. Chain names use prefix for KUBE.
type kubeProxy struct {
	prefix      string
	clusterCIDR netip.Prefix
}

func (k kubeProxy) svcChain(i int) string {
	return k.prefix + "-SVC-" + hash("svc" + strconv.Itoa(i))[:13]
}
func (k kubeProxy) sepChain(i int, e EndpointAddr) string {
	return k.prefix + "-SEP-" + hash("sep" + strconv.Itoa(i) + e.String())[:13]
}

// svcRules returns Service i's chain and its endpoint chains, declared and
// filled.
func (k kubeProxy) svcRules(decl, rules *bytes.Buffer, i int, vip netip.Addr, eps []EndpointAddr) {
	svc, name := k.svcChain(i), "ns/svc-"+strconv.Itoa(i)
	decl.WriteString(":" + svc + " - [0:0]\n")
	fmt.Fprintf(rules, "-A %s -m comment --comment \"%s cluster IP\" -m tcp -p tcp -d %s/32 --dport 80 ! -s %s -j %s-MARK-MASQ\n", svc, name, vip, k.clusterCIDR, k.prefix)
	for j, e := range eps {
		sep := k.sepChain(i, e)
		decl.WriteString(":" + sep + " - [0:0]\n")
		if left := len(eps) - j; left > 1 {
			fmt.Fprintf(rules, "-A %s -m comment --comment \"%s -> %s\" -m statistic --mode random --probability %s -j %s\n", svc, name, e, probability(left), sep)
		} else {
			fmt.Fprintf(rules, "-A %s -m comment --comment \"%s -> %s\" -j %s\n", svc, name, e, sep)
		}
		fmt.Fprintf(rules, "-A %s -m comment --comment %s -s %s/32 -j %s-MARK-MASQ\n", sep, name, e.IP, k.prefix)
		fmt.Fprintf(rules, "-A %s -m comment --comment %s -m tcp -p tcp -j DNAT --to-destination %s\n", sep, name, e)
	}
}

// full is one restore that writes every chain, as kube-proxy's first sync
// and every sync after a restart do; with jumps, also the jumps from the
// built-in chains (kube-proxy adds them with iptables -I before its first
// restore), which make the chains reachable and so validated by nf_tables
// on every later commit.
func (k kubeProxy) full(st State, jumps bool) []byte {
	var decl, rules bytes.Buffer
	decl.WriteString("*nat\n")
	for _, c := range []string{"SERVICES", "MARK-MASQ", "POSTROUTING"} {
		decl.WriteString(":" + k.prefix + "-" + c + " - [0:0]\n")
	}
	rules.WriteString("-A " + k.prefix + "-MARK-MASQ -j MARK --or-mark 0x4000\n")
	rules.WriteString("-A " + k.prefix + "-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n")
	rules.WriteString("-A " + k.prefix + "-POSTROUTING -j MARK --xor-mark 0x4000\n")
	rules.WriteString("-A " + k.prefix + "-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n")
	for i, s := range st.Services {
		fmt.Fprintf(&rules, "-A %s-SERVICES -m comment --comment \"ns/svc-%d cluster IP\" -m tcp -p tcp -d %s/32 --dport 80 -j %s\n", k.prefix, i, s.ClusterIP, k.svcChain(i))
		k.svcRules(&decl, &rules, i, s.ClusterIP, st.Endpoints[key("ns", s.Name, "")])
	}
	if jumps {
		for _, p := range []string{"PREROUTING", "OUTPUT"} {
			rules.WriteString("-I " + p + " 1 -m comment --comment \"kubernetes service portals\" -j " + k.prefix + "-SERVICES\n")
		}
		rules.WriteString("-I POSTROUTING 1 -m comment --comment \"kubernetes postrouting rules\" -j " + k.prefix + "-POSTROUTING\n")
	}
	decl.Write(rules.Bytes())
	decl.WriteString("COMMIT\n")
	return decl.Bytes()
}

// change is the restore of kube-proxy's minimal sync after Service i's
// endpoint old was replaced: its Service chain rewritten, the new
// endpoint's chain added and the old one's deleted.
func (k kubeProxy) change(st State, i int, old EndpointAddr) []byte {
	var decl, rules bytes.Buffer
	decl.WriteString("*nat\n")
	k.svcRules(&decl, &rules, i, st.Services[i].ClusterIP, st.Endpoints[key("ns", st.Services[i].Name, "")])
	oldSep := k.sepChain(i, old)
	decl.WriteString(":" + oldSep + " - [0:0]\n")
	decl.Write(rules.Bytes())
	decl.WriteString("-X " + oldSep + "\nCOMMIT\n")
	return decl.Bytes()
}

func benchKubeProxy(b *testing.B, n int) {
	timeout := 300 * time.Second
	if v := os.Getenv("BENCH_SVC_KUBEPROXY_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("BENCH_SVC_KUBEPROXY_TIMEOUT=%q: %v", v, err)
		}
		timeout = d
	}
	var (
		runs                    int
		program, resync, change time.Duration
		unfinished              string
	)
	for b.Loop() {
		runs++
		withNetNS(b, func(app *ExecApplier) error {
			k := kubeProxy{prefix: "KPB" + strings.ToUpper(randHex(2)), clusterCIDR: netip.MustParsePrefix("10.128.0.0/9")}
			st := benchState(n)
			restore := func(what string, in []byte) (time.Duration, bool, error) {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				t0 := time.Now()
				err := app.Restore(ctx, in)
				if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
					unfinished = fmt.Sprintf("%s did not finish in %v", what, timeout)
					b.Logf("kube-proxy layout, %d services: %s", n, unfinished)
					return 0, false, nil
				}
				return time.Since(t0), true, err
			}
			d, ok, err := restore("program", k.full(st, true))
			if err != nil || !ok {
				return err
			}
			program += d
			// A restarted kube-proxy rewrites every chain in one restore.
			if d, ok, err = restore("restart re-sync", k.full(st, false)); err != nil || !ok {
				return err
			}
			resync += d
			var changes []time.Duration
			for round := range 5 {
				i := (round*n)/5 + 20
				old := st.Endpoints[key("ns", "svc-"+strconv.Itoa(i), "")][benchEndpoints-1]
				changeEndpoint(st, i, round)
				d, ok, err := restore("endpoint change", k.change(st, i, old))
				if err != nil || !ok {
					return err
				}
				changes = append(changes, d)
			}
			slices.Sort(changes)
			change += changes[2]
			return nil
		})
	}
	if unfinished != "" {
		b.ReportMetric(timeout.Seconds(), "timeout-s")
		return
	}
	r := float64(runs)
	b.ReportMetric(program.Seconds()/r, "program-s")
	b.ReportMetric(resync.Seconds()/r, "resync-s")
	b.ReportMetric(float64(change.Microseconds())/1000/r, "change-ms")
	b.ReportMetric(1, "restores")
	b.ReportMetric(float64(n*(1+benchEndpoints)+3), "chains")
}
