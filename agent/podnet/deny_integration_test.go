//go:build linux

package podnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// standIn is a stand-in for a metadata service: an HTTP and a UDP echo
// server in a network namespace of the test's own, joined to the host by a
// veth pair, answering on two addresses (one to deny, one to allow). The
// host side of the veth also carries two node addresses with an HTTP
// server of their own, for what pods send to the node itself. Nothing is
// ever sent to 169.254.169.254.
type standIn struct {
	netnsPath string
	// Allowed and Denied are on the stand-in's side of the veth.
	Allowed, Denied netip.Addr
	// NodeAllowed and NodeDenied are on the host's side (node addresses).
	NodeAllowed, NodeDenied netip.Addr
	// Port serves HTTP on all four addresses; UDPPort echoes on the
	// stand-in's two.
	Port, UDPPort int
}

// startStandIn builds the stand-in in a free 198.18.x.0/24 (the benchmark
// range, never routed on real networks) and removes it in t.Cleanup.
func startStandIn(t *testing.T, id string) *standIn {
	t.Helper()
	sub := freeCIDR24(t, "198.18.%d.0/24")
	base := sub.Addr().As4()
	addr := func(last byte) netip.Addr { b := base; b[3] = last; return netip.AddrFrom4(b) }
	s := &standIn{
		netnsPath:   filepath.Join(netnsDir, "fmeta"+id),
		NodeAllowed: addr(1),
		Allowed:     addr(2),
		Denied:      addr(3),
		NodeDenied:  addr(9),
	}
	hostIf, peerIf := "fmh"+id, "fmp"+id
	t.Logf("stand-in: netns %s, veth %s, allowed %s, denied %s, node allowed %s, node denied %s",
		s.netnsPath, hostIf, s.Allowed, s.Denied, s.NodeAllowed, s.NodeDenied)

	if err := ensureNetNSDir(netnsDir); err != nil {
		t.Fatal(err)
	}
	if err := createNetNS(s.netnsPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeNetNS(s.netnsPath); err != nil {
			t.Errorf("remove stand-in netns: %v", err)
		}
	})
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: peerIf}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", hostIf, err)
	}
	t.Cleanup(func() {
		// Deleting one end deletes both; gone already when the netns went.
		if l, err := netlink.LinkByName(hostIf); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete veth %s: %v", hostIf, err)
			}
		}
	})
	host, err := netlink.LinkByName(hostIf)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Prefix{netip.PrefixFrom(s.NodeAllowed, 24), netip.PrefixFrom(s.NodeDenied, 32)} {
		if err := netlink.AddrAdd(host, mustNetlinkAddr(a)); err != nil {
			t.Fatalf("address %s on %s: %v", a, hostIf, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}
	peer, err := netlink.LinkByName(peerIf)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromPath(s.netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netlink.LinkSetNsFd(peer, int(h)); err != nil {
		t.Fatalf("move %s into the stand-in netns: %v", peerIf, err)
	}

	var tcpLn net.Listener
	var udpConn net.PacketConn
	err = inNetNS(s.netnsPath, func() error {
		peer, err := netlink.LinkByName(peerIf)
		if err != nil {
			return err
		}
		for _, a := range []netip.Addr{s.Allowed, s.Denied} {
			if err := netlink.AddrAdd(peer, mustNetlinkAddr(netip.PrefixFrom(a, 24))); err != nil {
				return fmt.Errorf("address %s: %w", a, err)
			}
		}
		if err := netlink.LinkSetUp(peer); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{Gw: s.NodeAllowed.AsSlice()}); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
		// Sockets made here stay in the stand-in's netns.
		if tcpLn, err = net.Listen("tcp4", "0.0.0.0:0"); err != nil {
			return err
		}
		udpConn, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	})
	if err != nil {
		t.Fatalf("set up stand-in netns: %v", err)
	}
	s.Port = tcpLn.Addr().(*net.TCPAddr).Port
	s.UDPPort = udpConn.LocalAddr().(*net.UDPAddr).Port
	// The node's addresses answer on the same port, from the host.
	var lns []net.Listener
	for _, a := range []netip.Addr{s.NodeAllowed, s.NodeDenied} {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(a, uint16(s.Port)).String())
		if err != nil {
			tcpLn.Close()
			udpConn.Close()
			t.Fatalf("listen on node address %s: %v", a, err)
		}
		lns = append(lns, ln)
	}
	lns = append(lns, tcpLn)

	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "stand-in at "+r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Go(func() { _ = srv.Serve(ln) })
	}
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			n, from, err := udpConn.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = udpConn.WriteTo(buf[:n], from)
		}
	})
	t.Cleanup(func() {
		srv.Close()
		udpConn.Close()
		wg.Wait()
	})
	return s
}

func mustNetlinkAddr(p netip.Prefix) *netlink.Addr {
	a, err := netlink.ParseAddr(p.String())
	if err != nil {
		panic(err)
	}
	return a
}

// httpGet sends one GET to addr:port from inside the netns at path, or
// from the host when path is "". The dial happens on the namespaced
// thread, which http.Transport's dialing goroutines would not do.
func httpGet(path string, addr netip.Addr, port int) (string, error) {
	var conn net.Conn
	dial := func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(addr, uint16(port)).String(), 10*time.Second)
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
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(addr.String(), strconv.Itoa(port))+"/", nil)
	if err := req.Write(conn); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// udpEcho sends a datagram to addr:port from inside the netns at path and
// waits for the echo.
func udpEcho(path string, addr netip.Addr, port int) error {
	var conn net.Conn
	err := inNetNS(path, func() error {
		var err error
		conn, err = net.Dial("udp4", netip.AddrPortFrom(addr, uint16(port)).String())
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "ping" {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}

// countingIPT counts what changes the tables.
type countingIPT struct {
	iptablesAPI
	writes int
}

func (c *countingIPT) NewChain(table, chain string) error {
	c.writes++
	return c.iptablesAPI.NewChain(table, chain)
}

func (c *countingIPT) Insert(table, chain string, pos int, rule ...string) error {
	c.writes++
	return c.iptablesAPI.Insert(table, chain, pos, rule...)
}

func (c *countingIPT) Append(table, chain string, rule ...string) error {
	c.writes++
	return c.iptablesAPI.Append(table, chain, rule...)
}

func (c *countingIPT) Delete(table, chain string, rule ...string) error {
	c.writes++
	return c.iptablesAPI.Delete(table, chain, rule...)
}

// TestDenyCIDRsIntegration proves with real iptables, netns and CNI that a
// pod is refused, at once, what DenyCIDRs name (forwarded, and on the node
// itself), while other addresses of the same servers answer, and that an
// empty list lets everything through again.
func TestDenyCIDRsIntegration(t *testing.T) {
	requireHost(t)
	cfg := testConfig(t)
	id := strings.TrimPrefix(cfg.BridgeName, "ftst")
	si := startStandIn(t, id)
	cfg.DenyCIDRs = []netip.Prefix{netip.PrefixFrom(si.Denied, 32), netip.PrefixFrom(si.NodeDenied, 32)}

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

	// The rules read back exactly as rendered, so a restart's Init writes
	// nothing (and never opens a gap).
	wantFwd, _ := forwardRules(cfg.BridgeName, cfg.DenyCIDRs, cfg.inboundFrom())
	wantIn, _ := inputRules(cfg.DenyCIDRs)
	for chain, want := range map[string][][]string{cfg.fwdChain(): wantFwd, cfg.inChain(): wantIn} {
		have, err := chainRules(n.ipt, filterTable, chain)
		if err != nil || !slices.EqualFunc(have, want, slices.Equal) {
			t.Errorf("chain %s reads back as %q (%v), want %q", chain, have, err, want)
		}
	}
	counting := &countingIPT{iptablesAPI: n.ipt}
	n.ipt = counting
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if counting.writes != 0 {
		t.Errorf("second Init made %d iptables changes, want 0", counting.writes)
	}

	pod, err := n.Setup(ctx, "pod-meta")
	if err != nil {
		t.Fatal(err)
	}

	// The host reaches every address: the stand-in is up, and the rules
	// are for the pod bridge only.
	for _, a := range []netip.Addr{si.Allowed, si.Denied} {
		if out, err := httpGet("", a, si.Port); err != nil || !strings.HasPrefix(out, "stand-in") {
			t.Fatalf("host -> stand-in %s: %q, %v", a, out, err)
		}
	}

	for _, a := range []netip.Addr{si.Allowed, si.NodeAllowed} {
		if out, err := httpGet(pod.NetNSPath, a, si.Port); err != nil || !strings.HasPrefix(out, "stand-in") {
			t.Errorf("pod -> allowed %s: %q, %v", a, out, err)
		}
	}
	for _, a := range []netip.Addr{si.Denied, si.NodeDenied} {
		start := time.Now()
		out, err := httpGet(pod.NetNSPath, a, si.Port)
		took := time.Since(start)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("pod -> denied %s: %q, %v; want connection refused", a, out, err)
		}
		if took > 3*time.Second {
			t.Errorf("pod -> denied %s took %v; want an immediate refusal, not a timeout", a, took)
		}
	}
	if err := udpEcho(pod.NetNSPath, si.Allowed, si.UDPPort); err != nil {
		t.Errorf("pod -> allowed %s over UDP: %v", si.Allowed, err)
	}
	if err := udpEcho(pod.NetNSPath, si.Denied, si.UDPPort); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("pod -> denied %s over UDP: %v; want host unreachable (ICMP admin prohibited)", si.Denied, err)
	}

	// Nothing denied (--pod-deny-cidr none): a restart opens the way and
	// leaves the INPUT chain holding the loopback guard alone.
	cfg2 := cfg
	cfg2.DenyCIDRs = nil
	n2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := httpGet(pod.NetNSPath, si.Denied, si.Port); err != nil || !strings.HasPrefix(out, "stand-in") {
		t.Errorf("pod -> %s with nothing denied: %q, %v", si.Denied, out, err)
	}
	if out, err := httpGet(pod.NetNSPath, si.NodeDenied, si.Port); err != nil || !strings.HasPrefix(out, "stand-in") {
		t.Errorf("pod -> node %s with nothing denied: %q, %v", si.NodeDenied, out, err)
	}
	if have, err := chainRules(n.ipt, filterTable, cfg.inChain()); err != nil || !slices.EqualFunc(have, [][]string{localnetGuard}, slices.Equal) {
		t.Errorf("chain %s with nothing denied holds %q (%v), want the loopback guard alone", cfg.inChain(), have, err)
	}

	// Denied again, then cleaned up: no chain, no jump.
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := httpGet(pod.NetNSPath, si.Denied, si.Port); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("pod -> denied %s after re-init: %v", si.Denied, err)
	}
	if err := n.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "iptables", "-S")
	if err != nil || strings.Contains(out, cfg.inChain()) || strings.Contains(out, cfg.fwdChain()) {
		t.Errorf("chains survived cleanup (%v):\n%s", err, out)
	}
	if _, err := os.Stat(pod.NetNSPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod netns survived cleanup: %v", err)
	}
}
