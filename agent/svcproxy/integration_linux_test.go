//go:build linux

package svcproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The rules against a real kernel. A "node" network namespace holds a
// pod bridge (10.244.1.1/24) and an uplink (192.168.250.1/24, default route
// via 192.168.250.2, which nobody answers), so ClusterIPs are routed out of
// the node as on a real one: traffic from the node to a ClusterIP passes
// nat OUTPUT with the uplink's address (off the cluster range: it is
// masqueraded), and a pod's traffic leaves by another interface than it
// came in (routing it back out of the bridge would make the kernel send an
// ICMP redirect first, which uses up the per-host ICMP rate limit and
// swallows the REJECT's port-unreachable). Three "pod" namespaces hang off
// the bridge (10.244.1.11-13) on ports in hairpin mode (as the CNI bridge
// plugin's hairpinMode sets them: with br_netfilter loaded, a connection
// DNATed back to its own pod is bridged out of the port it came in by),
// each serving TCP 8080 ("<pod IP> <client address>") and UDP 5353
// ("<pod IP>"). Every network action names the namespace it runs in (see
// netns_linux_test.go).

const (
	nodeIP   = "10.244.1.1"
	webVIP   = "10.96.0.10"
	emptyVIP = "10.96.0.11"
	dnsVIP   = "10.96.0.12"
	stickyIP = "10.96.0.13"
	nodePort = 30080
)

var podIPs = []string{"10.244.1.11", "10.244.1.12", "10.244.1.13"}

type testNet struct {
	nodeName string
	node     netns.NsHandle
	pods     []netns.NsHandle
}

// newTestNet builds the namespaces; everything goes with them at the end.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	nodeName, node, err := newNetNS("flt-svcn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := deleteNetNS(nodeName, node); err != nil {
			t.Error(err)
		}
	})
	tn := &testNet{nodeName: nodeName, node: node}
	var br *netlink.Bridge
	err = inNetNS(node, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("ip_forward: %w", err)
		}
		br = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "flt-svcbr"}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge: %w", err)
		}
		if err := netlink.AddrAdd(br, mustAddr(nodeIP+"/24")); err != nil {
			return fmt.Errorf("bridge address: %w", err)
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return fmt.Errorf("bridge up: %w", err)
		}
		up := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flt-svup0"}, PeerName: "flt-svup1"}
		if err := netlink.LinkAdd(up); err != nil {
			return fmt.Errorf("add uplink: %w", err)
		}
		if err := netlink.AddrAdd(up, mustAddr("192.168.250.1/24")); err != nil {
			return fmt.Errorf("uplink address: %w", err)
		}
		for _, name := range []string{"flt-svup0", "flt-svup1"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("192.168.250.2")})
	})
	if err != nil {
		t.Fatal(err)
	}

	for i, podIP := range podIPs {
		podName, pod, err := newNetNS("flt-svcp-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := deleteNetNS(podName, pod); err != nil {
				t.Error(err)
			}
		})
		tn.pods = append(tn.pods, pod)
		host, peer := fmt.Sprintf("flt-svh%d", i), fmt.Sprintf("flt-svp%d", i)
		err = inNetNS(node, func() error {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index}, PeerName: peer}); err != nil {
				return fmt.Errorf("add veth: %w", err)
			}
			h, err := netlink.LinkByName(host)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(h); err != nil {
				return err
			}
			if err := netlink.LinkSetHairpin(h, true); err != nil {
				return fmt.Errorf("hairpin mode: %w", err)
			}
			p, err := netlink.LinkByName(peer)
			if err != nil {
				return err
			}
			return netlink.LinkSetNsFd(p, int(pod))
		})
		if err != nil {
			t.Fatal(err)
		}
		err = inNetNS(pod, func() error {
			p, err := netlink.LinkByName(peer)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(p, mustAddr(podIP+"/24")); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(p); err != nil {
				return err
			}
			if err := netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(nodeIP)}); err != nil {
				return fmt.Errorf("default route: %w", err)
			}
			return startPodServers(t, podIP)
		})
		if err != nil {
			t.Fatalf("pod %s: %v", podIP, err)
		}
	}
	return tn
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// startPodServers listens in the calling thread's (a pod's) namespace;
// the sockets stay there.
func startPodServers(t *testing.T, podIP string) error {
	ln, err := net.Listen("tcp4", ":8080")
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp4", ":5353")
	if err != nil {
		ln.Close()
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, podIP+" "+c.RemoteAddr().(*net.TCPAddr).IP.String())
			c.Close()
		}
	})
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(podIP), from)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
	return nil
}

// hello connects to addr from the calling thread's namespace and returns
// the pod that answered and the client address it saw.
func hello(addr string) (pod, client string, err error) {
	c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", "", err
	}
	pod, client, _ = strings.Cut(string(b), " ")
	return pod, client, nil
}

// hellos makes n connections to addr from the namespace ns and counts the
// answers by pod and client address seen ("pod client").
func hellos(ns netns.NsHandle, n int, addr string) (map[string]int, error) {
	seen := map[string]int{}
	err := inNetNS(ns, func() error {
		for range n {
			pod, client, err := hello(addr)
			if err != nil {
				return err
			}
			seen[pod+" "+client]++
		}
		return nil
	})
	return seen, err
}

func byPod(seen map[string]int) map[string]int {
	out := map[string]int{}
	for k, n := range seen {
		pod, _, _ := strings.Cut(k, " ")
		out[pod] += n
	}
	return out
}

func integrationState() State {
	all := func(port uint16) []EndpointAddr {
		var out []EndpointAddr
		for _, p := range podIPs {
			out = append(out, EndpointAddr{IP: netip.MustParseAddr(p), Port: port})
		}
		return out
	}
	return State{
		Services: []Service{
			{Namespace: "default", Name: "web", ClusterIP: ip(webVIP), Ports: []ServicePort{{Protocol: "tcp", Port: 80, NodePort: nodePort}}},
			{Namespace: "default", Name: "empty", ClusterIP: ip(emptyVIP), Ports: []ServicePort{{Protocol: "tcp", Port: 80}}},
			{Namespace: "default", Name: "dns", ClusterIP: ip(dnsVIP), Ports: []ServicePort{{Protocol: "udp", Port: 53}}},
			{Namespace: "default", Name: "sticky", ClusterIP: ip(stickyIP), SessionAffinity: "client_ip", Ports: []ServicePort{{Protocol: "tcp", Port: 80}}},
		},
		Endpoints: map[ServicePortKey][]EndpointAddr{
			key("default", "web", ""):    all(8080),
			key("default", "dns", ""):    all(5353),
			key("default", "sticky", ""): all(8080),
		},
	}
}

func TestIntegration(t *testing.T) {
	needRoot(t)
	start := time.Now()
	prefix := "SVT" + strings.ToUpper(randHex(3))
	tn := newTestNet(t)
	t.Cleanup(func() {
		if lines := hostRulesWithPrefix(t, prefix); len(lines) > 0 {
			t.Errorf("the host's tables hold rules of the test: %q", lines)
		}
	})
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.ChainPrefix = prefix
	cfg.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	cfg.NodePodCIDR = netip.MustParsePrefix("10.244.1.0/24")
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	app := NewExecApplier(ExecConfig{NetNSPath: netnsPath(tn.nodeName)})
	s, err := NewSyncer(cfg, app)
	if err != nil {
		t.Fatal(err)
	}
	st := integrationState()
	if _, err := s.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	web := webVIP + ":80"

	t.Run("spread over three endpoints", func(t *testing.T) {
		seen, err := hellos(tn.node, 300, web)
		if err != nil {
			t.Fatal(err)
		}
		// Each pod expects 100 (sd 8.2): 60..140 fails once in ~10^6 runs.
		// The node's source (the uplink's address) is off the cluster
		// range, so it is masqueraded to the bridge's address.
		for _, p := range podIPs {
			if n := seen[p+" "+nodeIP]; n < 60 || n > 140 {
				t.Errorf("%s answered %d of 300 connections from the node masqueraded to %s, want about 100: %v", p, n, nodeIP, seen)
			}
		}
	})

	t.Run("no endpoints refuses at once", func(t *testing.T) {
		check := func(from string) error {
			t0 := time.Now()
			_, _, err := hello(emptyVIP + ":80")
			if took := time.Since(t0); !errors.Is(err, syscall.ECONNREFUSED) || took > 100*time.Millisecond {
				return fmt.Errorf("from %s: connect = %v after %v, want connection refused within 100ms", from, err, took)
			}
			return nil
		}
		if err := inNetNS(tn.node, func() error { return check("the node (OUTPUT)") }); err != nil {
			t.Error(err)
		}
		// Many quick attempts: the kernel rate-limits ICMP errors, so only a
		// TCP reset keeps refusing at once after the first few.
		if err := inNetNS(tn.pods[0], func() error {
			for i := range 30 {
				if err := check(fmt.Sprintf("a pod (FORWARD), attempt %d", i+1)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		// The node port of a Service without endpoints too (INPUT).
		empty := integrationState()
		delete(empty.Endpoints, key("default", "web", ""))
		if _, err := s.Sync(ctx, empty); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		err := inNetNS(tn.pods[1], func() error { _, _, err := hello(fmt.Sprintf("%s:%d", nodeIP, nodePort)); return err })
		if took := time.Since(t0); !errors.Is(err, syscall.ECONNREFUSED) || took > 100*time.Millisecond {
			t.Errorf("node port without endpoints: %v after %v, want refused within 100ms", err, took)
		}
		if _, err := s.Sync(ctx, st); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("udp", func(t *testing.T) {
		seen := map[string]int{}
		err := inNetNS(tn.node, func() error {
			for range 60 {
				c, err := net.Dial("udp4", dnsVIP+":53")
				if err != nil {
					return err
				}
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				buf := make([]byte, 64)
				_, err = c.Write([]byte("q"))
				var n int
				if err == nil {
					n, err = c.Read(buf)
				}
				c.Close()
				if err != nil {
					return fmt.Errorf("udp query to %s:53: %w", dnsVIP, err)
				}
				seen[string(buf[:n])]++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 3 {
			t.Errorf("60 UDP queries reached %v, want all three pods", seen)
		}
	})

	t.Run("pod to service, hairpin", func(t *testing.T) {
		seen, err := hellos(tn.pods[0], 40, web)
		if err != nil {
			t.Fatal(err)
		}
		// Landing on another pod keeps the client's address; landing on
		// itself is masqueraded to the node, else it would answer itself.
		for k := range seen {
			pod, client, _ := strings.Cut(k, " ")
			want := podIPs[0]
			if pod == podIPs[0] {
				want = nodeIP
			}
			if client != want {
				t.Errorf("%s saw client %s, want %s: %v", pod, client, want, seen)
			}
		}
		if seen[podIPs[0]+" "+nodeIP] == 0 {
			t.Errorf("no connection of 40 landed on the client itself: %v", seen)
		}
	})

	t.Run("node port", func(t *testing.T) {
		addr := fmt.Sprintf("%s:%d", nodeIP, nodePort)
		seen, err := hellos(tn.pods[1], 30, addr)
		if err != nil {
			t.Fatal(err)
		}
		for k := range seen {
			if _, client, _ := strings.Cut(k, " "); client != nodeIP {
				t.Errorf("node port traffic not masqueraded: %v", seen)
			}
		}
		if len(seen) < 2 {
			t.Errorf("30 node port connections reached only %v", seen)
		}
		if _, err := hellos(tn.node, 10, addr); err != nil {
			t.Errorf("node port from the node itself: %v", err)
		}
	})

	t.Run("session affinity", func(t *testing.T) {
		seen, err := hellos(tn.node, 30, stickyIP+":80")
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 1 {
			t.Errorf("client_ip affinity: one client reached %v, want one pod", seen)
		}
		other, err := hellos(tn.pods[2], 10, stickyIP+":80")
		if err != nil {
			t.Fatal(err)
		}
		if len(byPod(other)) != 1 {
			t.Errorf("client_ip affinity: a second client reached %v, want one pod", other)
		}
	})

	t.Run("endpoint removed from rotation", func(t *testing.T) {
		less := integrationState()
		k := key("default", "web", "")
		less.Endpoints[k] = less.Endpoints[k][:2]
		stats, err := s.Sync(ctx, less)
		if err != nil {
			t.Fatal(err)
		}
		if stats.ChainsWritten != 1 || stats.Restores != 1 {
			t.Errorf("endpoint removal: %+v, want one chain in one restore", stats)
		}
		seen, err := hellos(tn.node, 60, web)
		if err != nil {
			t.Fatal(err)
		}
		pods := byPod(seen)
		if pods[podIPs[2]] != 0 || pods[podIPs[0]] == 0 || pods[podIPs[1]] == 0 {
			t.Errorf("after removing %s: %v", podIPs[2], pods)
		}
		if _, err := s.Sync(ctx, st); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("restart adopts the rules", func(t *testing.T) {
		// What iptables-save prints matches what is rendered, rule for
		// rule, so a new Syncer changes nothing.
		s2, err := NewSyncer(cfg, app)
		if err != nil {
			t.Fatal(err)
		}
		stats, err := s2.Sync(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Restores != 0 {
			t.Errorf("restart re-sync wrote %+v; the kernel prints some rule differently from how it is rendered", stats)
		}
	})

	t.Run("no connection fails while every chain is replaced", func(t *testing.T) {
		// A restart with other shards rewrites the dispatch and deletes the
		// old shards, and an endpoint change rewrites a Service chain, while
		// connections go on.
		var (
			stop     atomic.Bool
			ok, fail atomic.Int64
			firstErr atomic.Value
			done     = make(chan error, 1)
		)
		go func() {
			done <- inNetNS(tn.node, func() error {
				for !stop.Load() {
					if _, _, err := hello(web); err != nil {
						fail.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					} else {
						ok.Add(1)
					}
				}
				return nil
			})
		}()
		waitFor := func(n int64) {
			for deadline := time.Now().Add(2 * time.Second); ok.Load()+fail.Load() < n && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
		}
		waitFor(1)
		other := cfg
		other.Shards = 4
		var sy *Syncer
		for i := range 6 {
			switch i {
			case 0, 4: // a restart with 4 shards, then one back to 64
				if sy, err = NewSyncer(other, app); err != nil {
					t.Fatal(err)
				}
				other = cfg
			}
			want := st
			if i%2 == 1 {
				want = integrationState()
				k := key("default", "web", "")
				want.Endpoints[k] = want.Endpoints[k][1:]
			}
			stats, err := sy.Sync(ctx, want)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("sync %d: %+v", i, stats)
		}
		waitFor(ok.Load() + fail.Load() + 100)
		stop.Store(true)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if fail.Load() != 0 {
			t.Errorf("%d of %d connections failed during the re-syncs, first: %v", fail.Load(), fail.Load()+ok.Load(), firstErr.Load())
		}
		t.Logf("%d connections during the re-syncs", ok.Load())
	})

	t.Run("cleanup", func(t *testing.T) {
		if err := s.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := app.Save(ctx, natTable)
		if err != nil {
			t.Fatal(err)
		}
		filter, err := app.Save(ctx, filterTable)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, filter...)
		if strings.Contains(string(out), prefix) {
			t.Errorf("iptables-save after Cleanup still mentions %s:\n%s", prefix, out)
		}
		// No rules: the ClusterIP goes nowhere (the route to the bridge
		// has no one answering), node port refused by the kernel.
		err = inNetNS(tn.node, func() error { _, _, err := hello(fmt.Sprintf("%s:%d", nodeIP, nodePort)); return err })
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("node port after Cleanup: %v, want refused (nothing listens)", err)
		}
	})
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("integration test took %v; keep it under 20s", took)
	}
}
