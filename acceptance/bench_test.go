package acceptance

// Benchmarks behind `make bench` (scripts/bench.sh). They run only with
// -bench, reuse TestMain's setup (TF_ACC=1, root) and measure; they assert
// nothing about speed.
//
//	BenchmarkApplyToReady/replicas=N  real terraform + provider + agent:
//	                                  `terraform apply` start → every pod IP answers HTTP
//	BenchmarkCtrRun/containers=N      the same N demo containers with `ctr run -d --cni`
//	                                  against an agent's containerd, 8 at a time
//	BenchmarkAgentRSS                 agent and containerd RSS, idle and with 50 pods

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containernetworking/cni/libcni"

	ctrd "github.com/flotilla-io/flotilla/agent/runtime/containerd"
	"github.com/flotilla-io/flotilla/api"
)

// benchSizes are the replica counts every comparison is made at:
// BENCH_SIZES (comma-separated), by default 1, 10, 50 and 200 (one node's
// worth under load: the size where creates are observed late and retried).
var benchSizes = sizesFromEnv("BENCH_SIZES", []int{1, 10, 50, 200})

// sizesFromEnv reads a comma-separated list of positive counts from the
// environment variable name, def when unset or unreadable.
func sizesFromEnv(name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 250 {
			return def
		}
		out = append(out, n)
	}
	return out
}

const (
	// benchReadyTimeout bounds one apply (or one batch of ctr runs) until ready.
	benchReadyTimeout = 5 * time.Minute
	// benchPoll is how often a probe retries an IP.
	benchPoll = 20 * time.Millisecond
	// benchDeployment names the deployment the Flotilla benchmarks apply.
	benchDeployment = "bench"
)

func needAcc(b *testing.B) {
	b.Helper()
	if env.agentBin == "" {
		b.Skip("needs TF_ACC=1 and root; run `make bench`")
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// waitUntil polls cond until it returns nil or timeout passes.
func waitUntil(tb testing.TB, timeout time.Duration, what string, cond func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err := cond(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("%s: not within %s: %v", what, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// --- HTTP probes --------------------------------------------------------

var probeClient = &http.Client{
	Timeout: time.Second,
	Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: 500 * time.Millisecond}).DialContext,
	},
}

// answers reports whether the demo app answers GET / on ip:8080.
func answers(ctx context.Context, ip string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, "8080")+"/", nil)
	if err != nil {
		return false
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), "flotilla-demo")
}

// prober probes each IP it is given until it answers and records when it
// first did, so the time of the last answer is exact whatever the cadence at
// which IPs are discovered.
type prober struct {
	ctx     context.Context
	mu      sync.Mutex
	watched map[string]bool
	at      map[string]time.Time
}

func newProber(ctx context.Context) *prober {
	return &prober{ctx: ctx, watched: map[string]bool{}, at: map[string]time.Time{}}
}

func (p *prober) watch(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watched[ip] {
		return
	}
	p.watched[ip] = true
	go func() {
		for {
			if answers(p.ctx, ip) {
				now := time.Now()
				p.mu.Lock()
				p.at[ip] = now
				p.mu.Unlock()
				return
			}
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(benchPoll):
			}
		}
	}()
}

// allAnswered returns when the last of ips first answered, if all have.
func (p *prober) allAnswered(ips []string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, ip := range ips {
		t, ok := p.at[ip]
		if !ok {
			return time.Time{}, false
		}
		if t.After(last) {
			last = t
		}
	}
	return last, true
}

// deploymentIPs returns the IPs of the deployment's live pods, and whether
// there are exactly n of them, each with an IP.
func deploymentIPs(ctx context.Context, c *api.Client, lc *leakCheck, name string, n int) ([]string, bool) {
	pods, err := livePods(ctx, c, name)
	if err != nil {
		return nil, false
	}
	lc.note(pods)
	var ips []string
	for _, p := range pods {
		if p.Status.IP != "" {
			ips = append(ips, p.Status.IP)
		}
	}
	return ips, len(pods) == n && len(ips) == n
}

// leakCheck finds the bridge plugin's masquerade chains an agent left in the
// nat table for its pods. Register its sweep before startAgent, so that it
// runs after the agent's teardown. A pod whose network teardown is cut short
// (the agent stopped while deleting pods) loses its POSTROUTING jump but not
// its CNI-<hash> chain, and no later CNI DEL or `cleanup --purge` finds it:
// the sweep reports such chains and removes them, so a bench leaves the host
// clean.
type leakCheck struct {
	mu     sync.Mutex
	bridge string          // the agent's bridge, also its CNI network name
	keys   map[string]bool // CNI container IDs of every pod seen
}

func newLeakCheck(b *testing.B) *leakCheck {
	lc := &leakCheck{keys: map[string]bool{}}
	b.Cleanup(func() { lc.sweep(b) })
	return lc
}

func (lc *leakCheck) note(pods []api.Pod) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for _, p := range pods {
		lc.keys[p.Namespace+"_"+p.Name] = true // agent/node's podKey
	}
}

// masqChain is the bridge plugin's chain name for a network and container ID.
func masqChain(network, id string) string {
	sum := sha512.Sum512([]byte(network + id))
	return "CNI-" + hex.EncodeToString(sum[:])[:24]
}

func (lc *leakCheck) sweep(tb testing.TB) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.bridge == "" {
		return
	}
	out, err := exec.Command("iptables", "-t", "nat", "-S").Output()
	if err != nil {
		tb.Errorf("iptables -t nat -S: %v", err)
		return
	}
	chains := map[string]bool{}
	var leaked []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "-N" {
			chains[f[1]] = true
		}
	}
	for key := range lc.keys {
		if c := masqChain(lc.bridge, key); chains[c] {
			leaked = append(leaked, c)
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "-A" && strings.HasPrefix(f[1], "CNI-") &&
			strings.Contains(line, `name: \"`+lc.bridge+`\"`) && !slices.Contains(leaked, f[1]) {
			leaked = append(leaked, f[1])
		}
	}
	if len(leaked) == 0 {
		return
	}
	slices.Sort(leaked)
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "-A" && f[len(f)-2] == "-j" && slices.Contains(leaked, f[len(f)-1]) {
			_ = exec.Command("sh", "-c", "iptables -t nat -D"+strings.TrimPrefix(line, "-A")).Run()
		}
	}
	for _, c := range leaked {
		_ = exec.Command("iptables", "-t", "nat", "-F", c).Run()
		if o, err := exec.Command("iptables", "-t", "nat", "-X", c).CombinedOutput(); err != nil {
			tb.Errorf("remove leaked chain %s: %v: %s", c, err, o)
		}
	}
	tb.Logf("LEAKED: agent (bridge %s) left %d masquerade chain(s) in the nat table after its pods were deleted and it was stopped; removed: %v", lc.bridge, len(leaked), leaked)
}

// --- Flotilla: real terraform, provider and agent -----------------------

// tfBench runs the real terraform binary against one agent, with the
// provider built from this repository and found through dev_overrides.
type tfBench struct {
	a   *testAgent
	lc  *leakCheck
	rt  *ctrd.Runtime
	bin string
	env []string
}

func newTFBench(b *testing.B, a *testAgent, lc *leakCheck) *tfBench {
	b.Helper()
	dir := b.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "terraform-provider-flotilla"), ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build provider: %v\n%s", err, out)
	}
	rc := filepath.Join(dir, "terraformrc")
	cfg := fmt.Sprintf("provider_installation {\n  dev_overrides {\n    %q = %q\n  }\n  direct {}\n}\n", "registry.terraform.io/flotilla-io/flotilla", dir)
	if err := os.WriteFile(rc, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	bin := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if bin == "" {
		bin = "terraform"
	}
	return &tfBench{
		a: a, lc: lc, rt: a.runtime(), bin: bin,
		// Only for the terraform processes; later entries win over os.Environ's.
		env: append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"),
	}
}

// workdir returns a directory holding a configuration of n replicas.
func (tb *tfBench) workdir(b *testing.B, n int) string {
	b.Helper()
	dir := b.TempDir()
	cfg := `terraform {
  required_providers {
    flotilla = { source = "flotilla-io/flotilla" }
  }
}

` + tb.a.providerConfig() + fmt.Sprintf(`
resource "flotilla_deployment" %[1]q {
  name     = %[1]q
  replicas = %[2]d
  container {
    name  = "app"
    image = %[3]q
    port {
      container_port = 8080
    }
  }
}
`, benchDeployment, n, image("v1"))
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

func (tb *tfBench) command(ctx context.Context, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, tb.bin, append(args, "-auto-approve", "-input=false", "-no-color")...)
	cmd.Dir, cmd.Env = dir, tb.env
	return cmd
}

// applyToReady runs `terraform apply` in dir and returns the time from its
// start until every one of the n pods answered HTTP on its IP, and until
// terraform exited.
func (tb *tfBench) applyToReady(b *testing.B, dir string, n int) (ready, exited time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchReadyTimeout)
	defer cancel()
	p := newProber(ctx)
	var out bytes.Buffer
	cmd := tb.command(ctx, dir, "apply")
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("terraform apply: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if exited == 0 {
			select {
			case err := <-done:
				exited = time.Since(start)
				if err != nil {
					b.Fatalf("terraform apply (%d replicas): %v\n%s", n, err, tail(out.String(), 30))
				}
			default:
			}
		}
		if ready == 0 {
			ips, complete := deploymentIPs(ctx, tb.a.Client, tb.lc, benchDeployment, n)
			for _, ip := range ips {
				p.watch(ip)
			}
			if complete {
				if last, ok := p.allAnswered(ips); ok {
					ready = last.Sub(start)
				}
			}
		}
		if ready > 0 && exited > 0 {
			return ready, exited
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%d replicas not all answering within %s (terraform exited: %v)\n%s", n, benchReadyTimeout, exited > 0, tail(out.String(), 30))
		case <-tick.C:
		}
	}
}

// destroy runs `terraform destroy` and waits until the agent has no
// containers, network namespaces or pod IPs left.
func (tb *tfBench) destroy(b *testing.B, dir string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchReadyTimeout)
	defer cancel()
	if out, err := tb.command(ctx, dir, "destroy").CombinedOutput(); err != nil {
		b.Fatalf("terraform destroy: %v\n%s", err, tail(string(out), 30))
	}
	waitPodsGone(b, tb.a, tb.rt)
}

// waitPodsGone waits until the agent has no containers, network namespaces
// or pod IPs left: its pods are gone, networks included.
func waitPodsGone(b *testing.B, a *testAgent, rt *ctrd.Runtime) {
	b.Helper()
	waitUntil(b, 2*time.Minute, "containers, netns and IPs gone", func(ctx context.Context) error {
		cs, err := rt.List(ctx)
		if err != nil {
			return err
		}
		if len(cs) > 0 {
			return fmt.Errorf("%d containers left", len(cs))
		}
		if left := a.netnsLeft(); len(left) > 0 {
			return fmt.Errorf("netns left: %v", left)
		}
		if ips := a.allocatedIPs(); len(ips) > 0 {
			return fmt.Errorf("IPs still allocated: %v", ips)
		}
		return nil
	})
}

// BenchmarkApplyToReady measures `terraform apply` of N replicas of the demo
// app until every pod answers HTTP on its IP. One agent serves every size; a
// warm-up apply pulls the image first, so no pull is measured.
func BenchmarkApplyToReady(b *testing.B) {
	needAcc(b)
	lc := newLeakCheck(b)
	a := startAgent(b)
	lc.bridge = a.cfg.BridgeName
	tb := newTFBench(b, a, lc)
	warm := tb.workdir(b, 1)
	tb.applyToReady(b, warm, 1)
	tb.destroy(b, warm)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			dir := tb.workdir(b, n)
			var ready, exited []float64
			for b.Loop() {
				r, e := tb.applyToReady(b, dir, n)
				ready, exited = append(ready, r.Seconds()), append(exited, e.Seconds())
				b.StopTimer()
				tb.destroy(b, dir)
				b.StartTimer()
			}
			b.ReportMetric(median(ready), "s/apply-to-ready")
			b.ReportMetric(median(exited), "s/apply-exit")
		})
	}
}

// --- containerd alone: ctr run --cni ------------------------------------

// ctr run --cni (containerd 1.6) takes its network from the first file in
// /etc/cni/net.d and its plugins from /opt/cni/bin, with no flag to change
// either; Debian puts the plugins in /usr/lib/cni. The benchmark writes a
// conflist of its own there for the run (refusing if another CNI config
// exists), links the two plugins it needs, and removes all it created after.
const (
	ctrNamespace = "bench-ctr"
	ctrBridge    = "fltbench0" // also the CNI network name
	ctrSubnet    = "10.249.0.0/24"
	ctrGateway   = "10.249.0.1"
	ctrParallel  = 8 // `ctr run`s at a time, as measured in MACHINE-FACTS
	cniConfDir   = "/etc/cni/net.d"
	cniConfFile  = cniConfDir + "/00-flotilla-bench.conflist"
	cniBinDir    = "/opt/cni/bin"
	cniCacheDir  = "/var/lib/cni" // libcni's default, which ctr uses
	// ctrUndoFile lists what a run created, so a run killed before its
	// cleanup is cleaned up by the next one.
	ctrUndoFile = "/run/flotilla-bench-ctr.created"
)

var cniPlugins = []string{"bridge", "host-local"}

// The network mirrors the agent's pod network (agent/podnet/conflist.go):
// bridge with gateway, masquerade and hairpin, host-local IPAM.
func ctrConfList(ipamDir string) []byte {
	return fmt.Appendf(nil, `{
  "cniVersion": "1.0.0",
  "name": %[1]q,
  "plugins": [{
    "type": "bridge",
    "bridge": %[1]q,
    "isGateway": true,
    "ipMasq": true,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %[2]q, "gateway": %[3]q}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": %[4]q
    }
  }]
}
`, ctrBridge, ctrSubnet, ctrGateway, ipamDir)
}

type ctrBench struct {
	sock, ref string
	dir       string // host-local's data, container logs
	client    *containerd.Client
	cni       *libcni.CNIConfig
	list      *libcni.NetworkConfigList
	iter      int
}

func (cb *ctrBench) ctx(parent context.Context) context.Context {
	return namespaces.WithNamespace(parent, ctrNamespace)
}

func (cb *ctrBench) ctr(ctx context.Context, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "ctr", append([]string{"--address", cb.sock, "--namespace", ctrNamespace}, args...)...).CombinedOutput()
}

// recordCreated appends path to the undo file if it does not exist yet
// (whoever creates it later, this run or ctr, it is ours to remove).
func recordCreated(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	f, err := os.OpenFile(ctrUndoFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, path)
	return err
}

// undoHostChanges removes the bridge, masquerade rules and CNI result cache
// entries of the bench network, then every path in the undo file, last
// created first (directories only if empty), then the undo file.
func undoHostChanges() []error {
	var errs []error
	if exec.Command("ip", "link", "show", ctrBridge).Run() == nil {
		if out, err := exec.Command("ip", "link", "del", ctrBridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", ctrBridge, err, out))
		}
	}
	errs = append(errs, removeMasqRules()...)
	if ents, err := os.ReadDir(filepath.Join(cniCacheDir, "results")); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ctrBridge+"-") {
				_ = os.Remove(filepath.Join(cniCacheDir, "results", e.Name()))
			}
		}
	}
	_ = os.Remove(cniConfFile)
	raw, err := os.ReadFile(ctrUndoFile)
	if errors.Is(err, os.ErrNotExist) {
		return errs
	}
	lines := strings.Fields(string(raw))
	for i := len(lines) - 1; i >= 0; i-- {
		if err := os.Remove(lines[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		_ = os.Remove(ctrUndoFile)
	}
	return errs
}

// removeMasqRules deletes POSTROUTING rules the bridge plugin's ipMasq made
// for the bench network and their chains. CNI DEL normally removes them; this
// catches what a failed run left.
func removeMasqRules() []error {
	out, err := exec.Command("iptables", "-t", "nat", "-S", "POSTROUTING").Output()
	if err != nil {
		return []error{fmt.Errorf("iptables -t nat -S: %w", err)}
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "-A POSTROUTING ") || !strings.Contains(line, `\"`+ctrBridge+`\"`) {
			continue
		}
		// iptables -S quotes the comment for a shell.
		if o, err := exec.Command("sh", "-c", "iptables -t nat -D"+strings.TrimPrefix(line, "-A")).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete %q: %v: %s", line, err, o))
		}
		if f := strings.Fields(line); len(f) > 1 && f[len(f)-2] == "-j" && strings.HasPrefix(f[len(f)-1], "CNI-") {
			_ = exec.Command("iptables", "-t", "nat", "-F", f[len(f)-1]).Run()
			_ = exec.Command("iptables", "-t", "nat", "-X", f[len(f)-1]).Run()
		}
	}
	return errs
}

// checkHostClean reports anything of the bench network left on the host.
func checkHostClean(tb testing.TB) {
	tb.Helper()
	if exec.Command("ip", "link", "show", ctrBridge).Run() == nil {
		tb.Errorf("bridge %s left", ctrBridge)
	}
	if out, _ := exec.Command("iptables", "-t", "nat", "-S").Output(); strings.Contains(string(out), ctrBridge) {
		tb.Errorf("nat rules of %s left", ctrBridge)
	}
	if _, err := os.Lstat(cniConfFile); err == nil {
		tb.Errorf("%s left", cniConfFile)
	}
	if _, err := os.Lstat(ctrUndoFile); err == nil {
		raw, _ := os.ReadFile(ctrUndoFile)
		tb.Errorf("could not remove everything listed in %s:\n%s", ctrUndoFile, raw)
	}
}

// setupHostCNI prepares what ctr run --cni reads: the conflist in
// /etc/cni/net.d and the plugins in /opt/cni/bin.
func setupHostCNI(b *testing.B, ipamDir string) {
	b.Helper()
	if errs := undoHostChanges(); len(errs) > 0 { // a previous run that was killed
		b.Fatalf("remove what an earlier run left: %v", errors.Join(errs...))
	}
	b.Cleanup(func() {
		for _, err := range undoHostChanges() {
			b.Error(err)
		}
		checkHostClean(b)
	})
	if ents, err := os.ReadDir(cniConfDir); err == nil {
		for _, e := range ents {
			if ext := filepath.Ext(e.Name()); ext == ".conf" || ext == ".conflist" || ext == ".json" {
				b.Fatalf("%s already holds CNI config (%s); ctr run --cni would use it, and this benchmark will not change it", cniConfDir, e.Name())
			}
		}
	}
	if out, _ := exec.Command("ip", "-4", "route", "show", ctrSubnet).Output(); len(bytes.TrimSpace(out)) > 0 {
		b.Fatalf("%s is already routed (%s); the ctr benchmark needs it", ctrSubnet, bytes.TrimSpace(out))
	}
	record := func(p string) {
		if err := recordCreated(p); err != nil {
			b.Fatal(err)
		}
	}
	// Parents first, so the reverse order removes children first. ctr
	// creates the cache directories, containerd the runc root and the cgroups.
	for _, d := range []string{"/etc/cni", cniConfDir, "/opt/cni", cniBinDir, cniCacheDir, filepath.Join(cniCacheDir, "results"),
		filepath.Join("/run/containerd/runc", ctrNamespace)} {
		record(d)
	}
	if ctrls, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, c := range ctrls {
			record(filepath.Join("/sys/fs/cgroup", c.Name(), ctrNamespace))
		}
	}
	for _, d := range []string{cniConfDir, cniBinDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	record(cniConfFile)
	if err := os.WriteFile(cniConfFile, ctrConfList(ipamDir), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, p := range cniPlugins {
		dst := filepath.Join(cniBinDir, p)
		if _, err := os.Lstat(dst); err == nil {
			continue // a plugin already installed there is used as is
		}
		record(dst)
		if err := os.Symlink(filepath.Join("/usr/lib/cni", p), dst); err != nil {
			b.Fatal(err)
		}
	}
}

func newCtrBench(b *testing.B, a *testAgent) *ctrBench {
	b.Helper()
	cb := &ctrBench{sock: a.cfg.ContainerdSocket(), ref: image("v1"), dir: b.TempDir()}
	ipamDir := filepath.Join(cb.dir, "ipam")
	setupHostCNI(b, ipamDir)
	list, err := libcni.ConfListFromBytes(ctrConfList(ipamDir))
	if err != nil {
		b.Fatal(err)
	}
	cb.list = list
	cb.cni = libcni.NewCNIConfigWithCacheDir([]string{"/usr/lib/cni"}, cniCacheDir, nil)
	cb.client, err = containerd.New(cb.sock)
	if err != nil {
		b.Fatalf("connect to %s: %v", cb.sock, err)
	}
	b.Cleanup(func() {
		// The image and namespace go with the agent's data dir; removing
		// them here only keeps the containerd tidy while the agent lives.
		ctx, cancel := context.WithTimeout(cb.ctx(context.Background()), time.Minute)
		defer cancel()
		_ = cb.client.ImageService().Delete(ctx, cb.ref)
		cb.client.Close()
	})
	b.Cleanup(func() { cb.clean(b) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := cb.ctr(ctx, "images", "pull", "--plain-http", cb.ref); err != nil {
		b.Fatalf("ctr images pull: %v\n%s", err, out)
	}
	return cb
}

// ipOf returns the IP host-local gave the container: its allocation files
// are named by IP and start with the CNI container ID, which ctr makes
// "<namespace>-<id>".
func (cb *ctrBench) ipOf(id string) (string, error) {
	dir := filepath.Join(cb.dir, "ipam", ctrBridge)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]) == ctrNamespace+"-"+id {
			return e.Name(), nil
		}
	}
	return "", fmt.Errorf("no IP allocated for %s in %s", id, dir)
}

// runToReady starts n demo containers with `ctr run -d --cni`, ctrParallel
// at a time, and returns the time from the first start until all answer
// HTTP on their IPs.
func (cb *ctrBench) runToReady(b *testing.B, n int) time.Duration {
	b.Helper()
	cb.iter++
	ctx, cancel := context.WithTimeout(context.Background(), benchReadyTimeout)
	defer cancel()
	p := newProber(ctx)
	ids := make(chan string, n)
	for i := range n {
		ids <- fmt.Sprintf("b%d-%d", cb.iter, i)
	}
	close(ids)
	var (
		mu   sync.Mutex
		ips  []string
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range min(ctrParallel, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				out, err := cb.ctr(ctx, "run", "-d", "--cni", "--log-uri", "file://"+filepath.Join(cb.dir, id+".log"), cb.ref, id)
				if err == nil {
					var ip string
					if ip, err = cb.ipOf(id); err == nil {
						p.watch(ip)
						mu.Lock()
						ips = append(ips, ip)
						mu.Unlock()
						continue
					}
				}
				mu.Lock()
				errs = append(errs, fmt.Errorf("ctr run %s: %v\n%s", id, err, out))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		b.Fatal(errors.Join(errs...))
	}
	for {
		if last, ok := p.allAnswered(ips); ok {
			return last.Sub(start)
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%d containers not all answering within %s", n, benchReadyTimeout)
		case <-time.After(benchPoll):
		}
	}
}

func (cb *ctrBench) cniDel(ctx context.Context, cniID, netns string) error {
	return cb.cni.DelNetworkList(ctx, cb.list, &libcni.RuntimeConf{ContainerID: cniID, NetNS: netns, IfName: "eth0"})
}

// clean removes every container of the bench namespace the way ctr run
// without -d would (CNI DEL while the netns lives, then kill and delete),
// releases any IP still held, and checks nothing is left.
func (cb *ctrBench) clean(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(cb.ctx(context.Background()), 2*time.Minute)
	defer cancel()
	cs, err := cb.client.Containers(ctx)
	if err != nil {
		tb.Errorf("list containers: %v", err)
		return
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, ctrParallel)
	for _, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fail := func(err error) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("container %s: %w", c.ID(), err))
				mu.Unlock()
			}
			cniID := ctrNamespace + "-" + c.ID()
			task, err := c.Task(ctx, nil)
			switch {
			case err == nil:
				// The bridge plugin finds the IP to unmasquerade in the netns,
				// so DEL must run while the task still holds it.
				netns := ""
				if st, err := task.Status(ctx); err == nil && st.Status == containerd.Running {
					netns = fmt.Sprintf("/proc/%d/ns/net", task.Pid())
				}
				if err := cb.cniDel(ctx, cniID, netns); err != nil {
					fail(fmt.Errorf("CNI DEL: %w", err))
				}
				if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
					fail(fmt.Errorf("delete task: %w", err))
				}
			case errdefs.IsNotFound(err):
				if err := cb.cniDel(ctx, cniID, ""); err != nil {
					fail(fmt.Errorf("CNI DEL: %w", err))
				}
			default:
				fail(err)
			}
			if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				fail(fmt.Errorf("delete container: %w", err))
			}
		}()
	}
	wg.Wait()
	// IPs whose container is gone (a failed ctr run).
	dir := filepath.Join(cb.dir, "ipam", ctrBridge)
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if _, perr := netip.ParseAddr(e.Name()); perr != nil {
				continue
			}
			raw, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			if id := strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]); id != "" {
				if err := cb.cniDel(ctx, id, ""); err != nil {
					errs = append(errs, fmt.Errorf("CNI DEL %s: %w", id, err))
				}
			}
		}
	}
	if left, err := cb.client.Containers(ctx); err != nil || len(left) > 0 {
		errs = append(errs, fmt.Errorf("containers left in namespace %s: %d (%v)", ctrNamespace, len(left), err))
	}
	if ents, _ := os.ReadDir(dir); slices.ContainsFunc(ents, func(e os.DirEntry) bool {
		_, err := netip.ParseAddr(e.Name())
		return err == nil
	}) {
		errs = append(errs, fmt.Errorf("IPs still allocated in %s", dir))
	}
	if out, _ := exec.Command("iptables", "-t", "nat", "-S").Output(); strings.Contains(string(out), `\"`+ctrBridge+`\"`) {
		errs = append(errs, fmt.Errorf("masquerade rules of %s left after CNI DEL", ctrBridge))
	}
	if len(errs) > 0 {
		tb.Error(errors.Join(errs...))
	}
}

// BenchmarkCtrRun is the baseline: the same demo containers, each with its
// own netns and IP from CNI, started with `ctr run -d --cni` against an
// agent's containerd (in a namespace of their own), timed until all answer.
func BenchmarkCtrRun(b *testing.B) {
	needAcc(b)
	a := startAgent(b)
	cb := newCtrBench(b, a)
	cb.runToReady(b, 1) // warm-up: unpack, shim and plugin binaries in the page cache
	cb.clean(b)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) {
			var ready []float64
			for b.Loop() {
				ready = append(ready, cb.runToReady(b, n).Seconds())
				b.StopTimer()
				cb.clean(b)
				b.StartTimer()
			}
			b.ReportMetric(median(ready), "s/run-to-ready")
		})
	}
}

// --- memory -------------------------------------------------------------

// rssMB is VmRSS of pid in MB (MiB).
func rssMB(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// pssMB sums the proportional set size (PSS: private pages, plus shared
// ones divided among their sharers) of the processes whose command line
// match accepts: the honest total for many processes of one binary, whose
// RSS each counts the shared text again.
func pssMB(match func(cmdline []byte) bool) (total float64, n int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !match(cmdline) {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					total += kb / 1024
					n++
				}
				break
			}
		}
	}
	return total, n
}

// BenchmarkAgentRSS reports the resident memory of the agent and of its
// containerd, idle after start and with 50 ready pods, and the 50 pods'
// shims and log drivers (PSS, summed).
func BenchmarkAgentRSS(b *testing.B) {
	needAcc(b)
	lc := newLeakCheck(b)
	a := startAgent(b)
	lc.bridge = a.cfg.BridgeName
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(a.cfg.ContainerdSocket()), "containerd.pid"))
	if err != nil {
		b.Fatalf("containerd pid file: %v", err)
	}
	ctrdPid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		b.Fatal(err)
	}
	measure := func() (agentMB, ctrdMB float64) {
		var err1, err2 error
		agentMB, err1 = rssMB(a.cmd.Process.Pid)
		ctrdMB, err2 = rssMB(ctrdPid)
		if err := errors.Join(err1, err2); err != nil {
			b.Fatal(err)
		}
		return agentMB, ctrdMB
	}
	time.Sleep(5 * time.Second) // past start-up
	agentIdle, ctrdIdle := measure()

	ctx, cancel := context.WithTimeout(context.Background(), benchReadyTimeout)
	defer cancel()
	const n = 50
	_, err = a.Client.CreateDeployment(ctx, &api.Deployment{
		Namespace: api.DefaultNamespace, Name: benchDeployment, Replicas: n,
		Containers: []api.Container{{Name: "app", Image: image("v1"), Ports: []api.Port{{ContainerPort: 8080}}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	p := newProber(ctx)
	waitUntil(b, benchReadyTimeout, "50 pods answering", func(ctx context.Context) error {
		ips, complete := deploymentIPs(ctx, a.Client, lc, benchDeployment, n)
		for _, ip := range ips {
			p.watch(ip)
		}
		if _, ok := p.allAnswered(ips); !complete || !ok {
			return fmt.Errorf("%d of %d pods have an IP", len(ips), n)
		}
		return nil
	})
	time.Sleep(5 * time.Second) // a few reconcile rounds with every pod running
	agentBusy, ctrdBusy := measure()
	shims, nShims := pssMB(func(c []byte) bool {
		return bytes.Contains(c, []byte("containerd-shim")) && bytes.Contains(c, []byte("\x00"+a.cfg.ContainerdSocket()+"\x00"))
	})
	drivers, nDrivers := pssMB(func(c []byte) bool {
		return bytes.Contains(c, []byte("\x00log-driver\x00")) && bytes.Contains(c, []byte(url.QueryEscape(a.cfg.DataDir)))
	})

	if err := a.Client.DeleteDeployment(ctx, api.DefaultNamespace, benchDeployment); err != nil {
		b.Fatal(err)
	}
	// Networks included: stopping the agent while it still tears pod
	// networks down leaks masquerade chains (see leakCheck).
	waitPodsGone(b, a, a.runtime())
	for b.Loop() {
		// Measured once above; b.Loop only keeps the framework from running
		// this function again.
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(agentIdle, "MB-agent-idle")
	b.ReportMetric(agentBusy, "MB-agent-50pods")
	b.ReportMetric(ctrdIdle, "MB-containerd-idle")
	b.ReportMetric(ctrdBusy, "MB-containerd-50pods")
	b.ReportMetric(shims, "MB-shims-pss-50pods")
	b.ReportMetric(drivers, "MB-logdrivers-pss-50pods")
	b.Logf("%d shims, %d log drivers", nShims, nDrivers)
}
