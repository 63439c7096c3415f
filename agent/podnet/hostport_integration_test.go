//go:build linux

package podnet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// startPodServer serves in a pod's netns, on every address of the pod:
// on TCP it writes "<name> saw <client address>" and hangs up; on UDP it
// echoes. A fresh netns has every port free.
func startPodServer(t *testing.T, a Attachment, name string, tcpPort, udpPort int) {
	t.Helper()
	var (
		ln net.Listener
		pc net.PacketConn
	)
	err := inNetNS(a.NetNSPath, func() error {
		var err error
		if ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", tcpPort)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", udpPort))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", name, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, name+" saw "+conn.RemoteAddr().String())
			conn.Close()
		}
	})
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
}

// hello connects to addr from the netns at path (the host when "") and
// returns what the server wrote.
func hello(path string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var conn net.Conn
	dial := func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	}
	var err error
	if path == "" {
		err = dial()
	} else {
		err = inNetNS(path, dial)
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(conn)
	return string(b), err
}

// freeHostPort picks a port in 20000..29999 that nothing on the host
// listens on, for TCP and UDP.
func freeHostPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		x, err := rand.Int(rand.Reader, big.NewInt(10000))
		if err != nil {
			t.Fatal(err)
		}
		port := 20000 + int(x.Int64())
		ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return port
	}
	t.Fatal("no free host port")
	return 0
}

// iptablesSave is every table of the host's iptables.
func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := run(t, "iptables-save")
	if err != nil {
		t.Fatalf("iptables-save: %v\n%s", err, out)
	}
	return out
}

// mentions reports whether rules name ip (not merely an address it is a
// prefix of).
func mentions(rules string, ip string) bool {
	return regexp.MustCompile(regexp.QuoteMeta(ip) + `([^0-9]|$)`).MatchString(rules)
}

// TestHostPortIntegration proves with the real portmap plugin, iptables
// and netns that a pod's host ports are forwarded from another host, from
// the node itself (its addresses and 127.0.0.1) and from pods, through a
// FORWARD chain that drops everything else; that Teardown by a new Network
// (an agent restart) removes every rule, with or without libcni's cache;
// that Setup of a live pod changes its host ports; and that Cleanup leaves
// nothing behind. It runs for a single agent (the bridge plugin
// masquerades) and in a fleet (the agent's MASQ chain does).
func TestHostPortIntegration(t *testing.T) {
	requireHost(t)
	for _, mode := range []struct {
		name        string
		clusterCIDR string
	}{
		{"single agent", ""},
		{"fleet", "10.251.0.0/16"},
	} {
		t.Run(mode.name, func(t *testing.T) { testHostPorts(t, mode.clusterCIDR) })
	}
}

func testHostPorts(t *testing.T, clusterCIDR string) {
	cfg := testConfig(t)
	cfg.ClusterCIDR = clusterCIDR
	si := startStandIn(t, strings.TrimPrefix(cfg.BridgeName, "ftst"))
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}

	// Behind the agent's FORWARD chain everything to the pods is dropped,
	// so what reaches them from another host passed that chain.
	ipt, err := iptables.New()
	if err != nil {
		t.Fatal(err)
	}
	drop := []string{"-d", cfg.PodCIDR, "-m", "comment", "--comment", "test " + cfg.BridgeName, "-j", "DROP"}
	if err := ipt.Append(filterTable, "FORWARD", drop...); err != nil {
		t.Fatal(err)
	}
	removeDrop := func() {
		if err := ipt.DeleteIfExists(filterTable, "FORWARD", drop...); err != nil {
			t.Errorf("remove test DROP rule: %v", err)
		}
	}
	t.Cleanup(removeDrop)

	// web gets the host port on TCP and UDP; client has none.
	hp := freeHostPort(t)
	const webKey, tcpPort, udpPort = "pod-web", 8080, 5353
	web, err := n.Setup(ctx, webKey, WithPortMappings([]PortMapping{
		{HostPort: hp, ContainerPort: tcpPort},
		{HostPort: hp, ContainerPort: udpPort, Protocol: "UDP"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	client, err := n.Setup(ctx, "pod-client")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host port %d to web %s; client %s; remote host %s, node address %s", hp, web.IP, client.IP, si.Allowed, si.NodeAllowed)
	startPodServer(t, web, "web", tcpPort, udpPort)

	node := netip.AddrPortFrom(si.NodeAllowed, uint16(hp))
	for _, tc := range []struct {
		name, from string
		to         netip.AddrPort
		wantSaw    string // prefix of the source the pod saw; "" for any
	}{
		{"another host, source kept", si.netnsPath, node, si.Allowed.String() + ":"},
		{"the node", "", node, ""},
		{"the node on 127.0.0.1", "", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(hp)), ""},
		{"the node on the bridge address", "", netip.AddrPortFrom(n.Gateway(), uint16(hp)), ""},
		{"another pod", client.NetNSPath, node, n.Gateway().String() + ":"},
		{"the pod itself", web.NetNSPath, node, n.Gateway().String() + ":"},
	} {
		got, err := hello(tc.from, tc.to, 5*time.Second)
		if err != nil || !strings.HasPrefix(got, "web saw "+tc.wantSaw) {
			t.Errorf("%s -> %s: %q, %v; want %q", tc.name, tc.to, got, err, "web saw "+tc.wantSaw+"...")
		}
	}
	if err := udpEcho(si.netnsPath, si.NodeAllowed, hp); err != nil {
		t.Errorf("another host -> %s over UDP: %v", node, err)
	}
	chain := hostPortChainName(cfg.BridgeName, webKey)
	if out, err := run(t, "iptables", "-t", "nat", "-S", chain); err != nil || !strings.Contains(out, "--to-destination "+web.IP+":8080") {
		t.Errorf("portmap chain %s (named as the plugin names it) = %v\n%s", chain, err, out)
	}

	// An agent restart: a new Network with nothing in memory tears web down.
	n2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Teardown(ctx, webKey); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{si.netnsPath, ""} {
		if got, err := hello(from, node, 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("host port from %q after teardown: %q, %v; want connection refused", from, got, err)
		}
	}
	if got, err := hello("", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(hp)), 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("127.0.0.1:%d after teardown: %q, %v; want connection refused", hp, got, err)
	}
	if rules := iptablesSave(t); mentions(rules, web.IP) || strings.Contains(rules, chain) {
		t.Errorf("rules for web (%s, %s) survived teardown:\n%s", web.IP, chain, rules)
	}

	// Restart with libcni's cache lost: Setup finds the rules in place,
	// Teardown still removes them.
	hp2 := freeHostPort(t)
	db, err := n.Setup(ctx, "pod-db", WithPortMappings([]PortMapping{{HostPort: hp2, ContainerPort: tcpPort}}))
	if err != nil {
		t.Fatal(err)
	}
	startPodServer(t, db, "db", tcpPort, udpPort)
	if err := os.Remove(filepath.Join(cfg.DataDir, "cache", "results", cfg.BridgeName+"-pod-db-eth0")); err != nil {
		t.Fatal(err)
	}
	n3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := iptablesSave(t)
	if again, err := n3.Setup(ctx, "pod-db", WithPortMappings([]PortMapping{{HostPort: hp2, ContainerPort: tcpPort}})); err != nil || again != db {
		t.Errorf("setup of db without cache = %+v, %v; want %+v", again, err, db)
	}
	if got, err := hello(si.netnsPath, netip.AddrPortFrom(si.NodeAllowed, uint16(hp2)), 5*time.Second); err != nil || !strings.HasPrefix(got, "db saw ") {
		t.Errorf("db host port after setup without cache: %q, %v", got, err)
	}
	if after := iptablesSave(t); natRules(after) != natRules(before) {
		t.Errorf("setup without cache changed the nat table:\nbefore:\n%s\nafter:\n%s", natRules(before), natRules(after))
	}
	if err := n3.Teardown(ctx, "pod-db"); err != nil {
		t.Fatal(err)
	}
	if rules := iptablesSave(t); mentions(rules, db.IP) || strings.Contains(rules, hostPortChainName(cfg.BridgeName, "pod-db")) {
		t.Errorf("rules for db (%s) survived teardown without cache:\n%s", db.IP, rules)
	}

	// A live pod's host ports change with the mappings Setup is given.
	hp3 := freeHostPort(t)
	startPodServer(t, client, "client", tcpPort, udpPort)
	clientHP := netip.AddrPortFrom(si.NodeAllowed, uint16(hp3))
	if again, err := n.Setup(ctx, client.Key, WithPortMappings([]PortMapping{{HostPort: hp3, ContainerPort: tcpPort}})); err != nil || again != client {
		t.Fatalf("setup of client with a host port = %+v, %v", again, err)
	}
	if got, err := hello(si.netnsPath, clientHP, 5*time.Second); err != nil || !strings.HasPrefix(got, "client saw ") {
		t.Errorf("client's new host port: %q, %v", got, err)
	}
	if _, err := n.Setup(ctx, client.Key); err != nil {
		t.Fatal(err)
	}
	if got, err := hello(si.netnsPath, clientHP, 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("client's host port after it was dropped: %q, %v; want connection refused", got, err)
	}
	if rules := iptablesSave(t); strings.Contains(rules, fmt.Sprintf("--dport %d ", hp3)) {
		t.Errorf("client's host port rules survived:\n%s", rules)
	}

	// Cleanup leaves no host port rule of this network, and takes the
	// shared chains when nobody else forwards a host port.
	if _, err := n.Setup(ctx, "pod-last", WithPortMappings([]PortMapping{{HostPort: hp, ContainerPort: tcpPort}})); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := n.Cleanup(ctx); err != nil {
			t.Fatalf("cleanup %d: %v", i+1, err)
		}
	}
	removeDrop()
	rules := iptablesSave(t)
	pfx := netip.MustParsePrefix(cfg.PodCIDR)
	if net24 := strings.TrimSuffix(pfx.Addr().String(), "0"); strings.Contains(rules, net24) || strings.Contains(rules, `"`+cfg.BridgeName+`"`) {
		t.Errorf("rules of %s survived cleanup:\n%s", cfg.PodCIDR, rules)
	}
	if out, err := run(t, "iptables", "-t", "nat", "-S", hostPortDNATChain); err == nil && !strings.Contains(out, "-A "+hostPortDNATChain) {
		t.Errorf("empty %s survived cleanup:\n%s", hostPortDNATChain, out)
	}
}

// natRules is the nat table of iptables-save output, without counters.
func natRules(save string) string {
	var out []string
	in := false
	for _, line := range strings.Split(save, "\n") {
		switch {
		case line == "*nat":
			in = true
		case line == "COMMIT":
			in = false
		case in && strings.HasPrefix(line, "-"):
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestLocalnetGuardIntegration proves that the INPUT chain keeps pods off
// services that listen on the node's loopback only, which the portmap
// plugin would otherwise expose by setting route_localnet on the bridge:
// a pod that routes 127.0.0.2 to the gateway (as one that forges packets
// could) reaches such a service once the guard is gone, and not with it.
func TestLocalnetGuardIntegration(t *testing.T) {
	requireHost(t)
	cfg := testConfig(t)
	cfg.DenyCIDRs = nil // the guard stands without denied ranges too
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
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	pod, err := n.Setup(ctx, "pod-nosy", WithPortMappings([]PortMapping{{HostPort: freeHostPort(t), ContainerPort: 8080}}))
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := run(t, "sysctl", "-n", "net.ipv4.conf."+cfg.BridgeName+".route_localnet"); strings.TrimSpace(out) != "1" {
		t.Fatalf("route_localnet on %s is %q; portmap should have set it, or this test proves nothing", cfg.BridgeName, out)
	}

	// A service on the node's loopback only.
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, "node only")
			conn.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	secret := netip.MustParseAddrPort(ln.Addr().String())

	for _, args := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"},
		{"ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"},
		{"ip", "route", "add", "127.0.0.2/32", "via", n.Gateway().String(), "dev", "eth0"},
	} {
		if out, err := run(t, "nsenter", append([]string{"--net=" + pod.NetNSPath}, args...)...); err != nil {
			t.Fatalf("in the pod: %v: %v\n%s", args, err, out)
		}
	}
	if got, err := hello(pod.NetNSPath, secret, 2*time.Second); err == nil {
		t.Errorf("pod reached the node's loopback service at %s: %q", secret, got)
	}

	// Without the guard it would get through: the test can tell.
	if out, err := run(t, "iptables", slices.Concat([]string{"-D", cfg.inChain()}, localnetGuard)...); err != nil {
		t.Fatalf("delete guard: %v\n%s", err, out)
	}
	if got, err := hello(pod.NetNSPath, secret, 5*time.Second); err != nil || got != "node only" {
		t.Errorf("without the guard the pod got %q, %v; the test no longer shows what the guard stops", got, err)
	}
	// Init puts it back.
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := hello(pod.NetNSPath, secret, 2*time.Second); err == nil {
		t.Errorf("pod reached %s after Init restored the guard: %q", secret, got)
	}
}

// TestHostPortConcurrentIntegration sets up pods with host ports at once:
// all succeed, and the chains they share are jumped to once each.
func TestHostPortConcurrentIntegration(t *testing.T) {
	requireHost(t)
	cfg := testConfig(t)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	const pods = 8
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range pods {
		hp := freeHostPort(t)
		wg.Go(func() {
			_, errs[i] = n.Setup(ctx, fmt.Sprintf("pod-%d", i), WithPortMappings([]PortMapping{{HostPort: hp, ContainerPort: 80}}))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "iptables", "-t", "nat", "-S")
	if err != nil {
		t.Fatal(err)
	}
	for _, jump := range []string{
		"-A PREROUTING -m addrtype --dst-type LOCAL -j " + hostPortDNATChain + "\n",
		"-A OUTPUT -m addrtype --dst-type LOCAL -j " + hostPortDNATChain + "\n",
		"-j " + hostPortMasqChain + "\n",
	} {
		if c := strings.Count(out, jump); c != 1 {
			t.Errorf("%d of %q, want 1:\n%s", c, strings.TrimSpace(jump), out)
		}
	}
	if c := strings.Count(out, `-m comment --comment "dnat name: \"`+cfg.BridgeName+`\"`); c != pods {
		t.Errorf("%d host port entry rules, want %d:\n%s", c, pods, out)
	}
}
