//go:build linux

package podnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// requireHost skips unless the test can make netns, bridges and iptables
// rules with the real CNI plugins.
func requireHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, a bridge and iptables rules")
	}
	for _, plugin := range []string{"bridge", "host-local", "portmap"} {
		found := false
		for _, dir := range DefaultConfig().PluginDirs {
			if _, err := os.Stat(filepath.Join(dir, plugin)); err == nil {
				found = true
			}
		}
		if !found {
			t.Skipf("CNI plugin %q not in %v; install containernetworking-plugins", plugin, DefaultConfig().PluginDirs)
		}
	}
	for _, tool := range []string{"iptables", "nsenter", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH", tool)
		}
	}
}

// testConfig gives the test names and a pod range no one else on the host
// uses, so it can run beside a live agent or other tests.
func testConfig(t *testing.T) Config {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b)[:5]
	cfg := DefaultConfig()
	cfg.BridgeName = "ftst" + id
	cfg.NetNSPrefix = "ftst" + id + "-"
	cfg.ChainPrefix = "FTST" + strings.ToUpper(id)
	cfg.DataDir = t.TempDir()
	cfg.PodCIDR = freeTestCIDR(t).String()
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// freeTestCIDR picks a random 10.251.x.0/24 that no route on the host touches.
func freeTestCIDR(t *testing.T) netip.Prefix {
	t.Helper()
	return freeCIDR24(t, "10.251.%d.0/24")
}

// freeCIDR24 picks a random /24 of format (with one %d) that no route on
// the host touches.
func freeCIDR24(t *testing.T, format string) netip.Prefix {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		x, err := rand.Int(rand.Reader, big.NewInt(256))
		if err != nil {
			t.Fatal(err)
		}
		cand := netip.MustParsePrefix(fmt.Sprintf(format, x.Int64()))
		clash := false
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			if ones > 0 && netip.PrefixFrom(ip.Unmap(), ones).Overlaps(cand) {
				clash = true
			}
		}
		if !clash {
			return cand
		}
	}
	t.Fatalf("no free %s on this host", fmt.Sprintf(format, "x"))
	return netip.Prefix{}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func TestCNIIntegration(t *testing.T) {
	requireHost(t)
	cfg := testConfig(t)
	t.Logf("bridge %s, pod CIDR %s, chain %s, netns prefix %s", cfg.BridgeName, cfg.PodCIDR, cfg.fwdChain(), cfg.NetNSPrefix)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Runs on failure too; Cleanup is idempotent, so the explicit call
		// at the end of the test makes this a no-op.
		if err := n.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pfx := netip.MustParsePrefix(cfg.PodCIDR)

	for i := range 2 { // idempotent
		if err := n.Init(ctx); err != nil {
			t.Fatalf("init %d: %v", i+1, err)
		}
	}
	// The gateway is there before any pod: the node's DNS listens on it.
	if out, _ := run(t, "ip", "-4", "addr", "show", "dev", cfg.BridgeName); !strings.Contains(out, "inet "+n.Gateway().String()+"/"+fmt.Sprint(pfx.Bits())) {
		t.Errorf("after Init, bridge lacks gateway %s:\n%s", n.Gateway(), out)
	}
	out, err := run(t, "iptables", "-S", "FORWARD")
	if err != nil {
		t.Fatalf("iptables -S FORWARD: %v\n%s", err, out)
	}
	if c := strings.Count(out, "-j "+cfg.fwdChain()+"\n"); c != 1 {
		t.Errorf("FORWARD jumps to %s %d times, want 1:\n%s", cfg.fwdChain(), c, out)
	}
	out, _ = run(t, "iptables", "-S", cfg.fwdChain())
	for _, want := range []string{
		"-d 169.254.169.254/32 -i " + cfg.BridgeName + " -p tcp -j REJECT --reject-with tcp-reset",
		"-i " + cfg.BridgeName + " -j ACCEPT",
		"-o " + cfg.BridgeName + " -j ACCEPT",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("chain %s lacks %q:\n%s", cfg.fwdChain(), want, out)
		}
	}
	out, _ = run(t, "iptables", "-S", "INPUT")
	if c := strings.Count(out, "-A INPUT -i "+cfg.BridgeName+" -j "+cfg.inChain()+"\n"); c != 1 {
		t.Errorf("INPUT jumps to %s %d times, want 1:\n%s", cfg.inChain(), c, out)
	}

	// Three pods at once.
	keys := []string{"pod-a", "pod-b", "pod-c"}
	atts := make([]Attachment, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() { atts[i], errs[i] = n.Setup(ctx, key) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("setup: %v", err)
	}
	seen := map[string]bool{}
	for i, a := range atts {
		ip, err := netip.ParseAddr(a.IP)
		if err != nil || !pfx.Contains(ip) || ip == n.Gateway() {
			t.Errorf("%s got IP %q, want an address in %s other than the gateway %s", keys[i], a.IP, pfx, n.Gateway())
		}
		if seen[a.IP] {
			t.Errorf("IP %s handed out twice", a.IP)
		}
		seen[a.IP] = true
		if a.Key != keys[i] || a.NetNSPath != filepath.Join("/run/netns", cfg.NetNSPrefix+keys[i]) {
			t.Errorf("attachment %+v", a)
		}
		if st, _ := statNetNS(a.NetNSPath); st != netnsLive {
			t.Errorf("%s: no netns mounted at %s", keys[i], a.NetNSPath)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "ipam", cfg.BridgeName, a.IP)); err != nil {
			t.Errorf("host-local has no reservation for %s: %v", a.IP, err)
		}
	}
	a, b, c := atts[0], atts[1], atts[2]
	out, _ = run(t, "iptables", "-t", "nat", "-S", "POSTROUTING")
	for _, key := range keys {
		if !strings.Contains(out, `name: \"`+cfg.BridgeName+`\" id: \"`+key+`\"`) {
			t.Errorf("no masquerade rule for %s:\n%s", key, out)
		}
	}

	// Inside the netns: eth0 has the IP, lo is up.
	out, err = run(t, "nsenter", "--net="+a.NetNSPath, "ip", "-4", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, "inet "+a.IP+"/"+fmt.Sprint(pfx.Bits())) {
		t.Errorf("eth0 in %s lacks %s: %v\n%s", a.NetNSPath, a.IP, err, out)
	}
	out, err = run(t, "nsenter", "--net="+a.NetNSPath, "ip", "link", "show", "dev", "lo")
	if err != nil || !strings.Contains(out, ",UP") {
		t.Errorf("lo in %s is not up: %v\n%s", a.NetNSPath, err, out)
	}
	if out, _ := run(t, "ip", "-4", "addr", "show", "dev", cfg.BridgeName); !strings.Contains(out, "inet "+n.Gateway().String()+"/") {
		t.Errorf("bridge lacks gateway %s:\n%s", n.Gateway(), out)
	}

	// A TCP server in pod B answers the host and pod A over the bridge.
	var ln net.Listener
	if err := inNetNS(b.NetNSPath, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(b.IP, "0"))
		return err
	}); err != nil {
		t.Fatalf("listen in pod b: %v", err)
	}
	serveDone := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-serveDone })
	go func() {
		defer close(serveDone)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, "hello from b")
			conn.Close()
		}
	}()
	dial := func() error {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(conn)
		if err != nil {
			return err
		}
		if string(got) != "hello from b" {
			return fmt.Errorf("read %q", got)
		}
		return nil
	}
	if err := dial(); err != nil {
		t.Errorf("host -> pod b %s: %v", ln.Addr(), err)
	}
	if err := inNetNS(a.NetNSPath, dial); err != nil {
		t.Errorf("pod a -> pod b %s: %v", ln.Addr(), err)
	}

	// Setup is idempotent: from the cache, and from eth0 when the cache is lost.
	again, err := n.Setup(ctx, a.Key)
	if err != nil || again != a {
		t.Errorf("second setup of %s = %+v, %v; want %+v", a.Key, again, err, a)
	}
	cacheFile := filepath.Join(cfg.DataDir, "cache", "results", cfg.BridgeName+"-"+a.Key+"-eth0")
	if err := os.Remove(cacheFile); err != nil {
		t.Fatalf("remove cached result: %v", err)
	}
	again, err = n.Setup(ctx, a.Key)
	if err != nil || again != a {
		t.Errorf("setup of %s without cache = %+v, %v; want %+v", a.Key, again, err, a)
	}

	list, err := n.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0] != a || list[1] != b || list[2] != c {
		t.Errorf("list = %+v, want %+v", list, atts)
	}

	// A second network on the same bridge with another range is refused
	// with a message that says why.
	cfg2 := cfg
	cfg2.PodCIDR = "10.251.0.0/30"
	if cfg2.PodCIDR == cfg.PodCIDR {
		cfg2.PodCIDR = "10.251.1.0/30"
	}
	cfg2.ChainPrefix = cfg.ChainPrefix + "X"
	cfg2.DataDir = t.TempDir()
	n2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Init(ctx); err == nil || !strings.Contains(err.Error(), "has address") {
		t.Errorf("init with a conflicting bridge address: %v", err)
	}

	// Teardown releases the IP and removes the netns; twice is fine.
	for i := range 2 {
		if err := n.Teardown(ctx, b.Key); err != nil {
			t.Fatalf("teardown %d of %s: %v", i+1, b.Key, err)
		}
	}
	if _, err := os.Stat(b.NetNSPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s still there: %v", b.NetNSPath, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "ipam", cfg.BridgeName, b.IP)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("IP %s still reserved: %v", b.IP, err)
	}
	if err := n.Teardown(ctx, "never-set-up"); err != nil {
		t.Errorf("teardown of unknown key: %v", err)
	}
	if err := n.Teardown(ctx, "../etc"); err == nil {
		t.Error("teardown of an invalid key succeeded")
	}

	// The netns vanishing behind our back (ip netns del, reboot) leaves a
	// cached result and a reservation; Setup must recover from that.
	if err := removeNetNS(c.NetNSPath); err != nil {
		t.Fatal(err)
	}
	c2, err := n.Setup(ctx, c.Key)
	if err != nil {
		t.Fatalf("setup of %s after its netns vanished: %v", c.Key, err)
	}
	if ip, err := netip.ParseAddr(c2.IP); err != nil || !pfx.Contains(ip) {
		t.Errorf("setup of %s after its netns vanished got IP %q", c.Key, c2.IP)
	}

	d, err := n.Setup(ctx, "pod-d")
	if err != nil {
		t.Fatalf("setup after teardown: %v", err)
	}
	t.Logf("pod-d got %s after %s was released", d.IP, b.IP)

	// Worse: netns and cache both lost, host-local's reservation kept.
	if err := removeNetNS(d.NetNSPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cfg.DataDir, "cache", "results", cfg.BridgeName+"-"+d.Key+"-eth0")); err != nil {
		t.Fatal(err)
	}
	if d2, err := n.Setup(ctx, d.Key); err != nil {
		t.Errorf("setup of %s after netns and cache were lost: %v", d.Key, err)
	} else {
		t.Logf("pod-d got %s after losing %s", d2.IP, d.IP)
	}

	// Cleanup removes everything this agent made, and can run again.
	for i := range 2 {
		if err := n.Cleanup(ctx); err != nil {
			t.Fatalf("cleanup %d: %v", i+1, err)
		}
	}
	if out, err := run(t, "ip", "link", "show", "dev", cfg.BridgeName); err == nil {
		t.Errorf("bridge %s survived cleanup:\n%s", cfg.BridgeName, out)
	}
	out, err = run(t, "iptables", "-S")
	if err != nil || strings.Contains(out, cfg.fwdChain()) || strings.Contains(out, cfg.inChain()) {
		t.Errorf("chain %s or %s survived cleanup (%v):\n%s", cfg.fwdChain(), cfg.inChain(), err, out)
	}
	out, err = run(t, "iptables", "-t", "nat", "-S")
	if err != nil || strings.Contains(out, `"`+cfg.BridgeName+`"`) {
		t.Errorf("masquerade rules of %s survived cleanup (%v):\n%s", cfg.BridgeName, err, out)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), cfg.NetNSPrefix) {
			t.Errorf("netns %s survived cleanup", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "ipam", cfg.BridgeName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("IPAM state survived cleanup: %v", err)
	}
	if list, err := n.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("list after cleanup = %+v, %v", list, err)
	}
}

// TestCNIIntegrationClusterCIDR checks the fleet mode masquerading with the
// real iptables and plugins: the agent's MASQ chain, and no per-pod
// masquerade rule from the bridge plugin.
func TestCNIIntegrationClusterCIDR(t *testing.T) {
	requireHost(t)
	cfg := testConfig(t)
	cfg.ClusterCIDR = "10.251.0.0/16"
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 2 { // idempotent
		if err := n.Init(ctx); err != nil {
			t.Fatalf("init %d: %v", i+1, err)
		}
	}
	chain := cfg.masqChain()
	out, err := run(t, "iptables", "-t", "nat", "-S", chain)
	want := fmt.Sprintf("-N %[1]s\n-A %[1]s -s %[2]s -d %[3]s -j RETURN\n-A %[1]s -s %[2]s ! -d 224.0.0.0/4 -j MASQUERADE\n", chain, cfg.PodCIDR, cfg.ClusterCIDR)
	if err != nil || out != want {
		t.Errorf("iptables -t nat -S %s (%v):\n%s\nwant:\n%s", chain, err, out, want)
	}
	out, _ = run(t, "iptables", "-t", "nat", "-S", "POSTROUTING")
	if c := strings.Count(out, "-A POSTROUTING -j "+chain+"\n"); c != 1 {
		t.Errorf("%d jumps to %s in POSTROUTING, want 1:\n%s", c, chain, out)
	}
	if _, err := n.Setup(ctx, "pod-m"); err != nil {
		t.Fatal(err)
	}
	out, _ = run(t, "iptables", "-t", "nat", "-S", "POSTROUTING")
	if strings.Contains(out, `"`+cfg.BridgeName+`"`) {
		t.Errorf("bridge plugin masquerades although the MASQ chain does:\n%s", out)
	}
	for i := range 2 {
		if err := n.Cleanup(ctx); err != nil {
			t.Fatalf("cleanup %d: %v", i+1, err)
		}
	}
	out, err = run(t, "iptables", "-t", "nat", "-S")
	if err != nil || strings.Contains(out, chain) {
		t.Errorf("chain %s survived cleanup (%v):\n%s", chain, err, out)
	}
}
