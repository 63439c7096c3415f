//go:build linux

package svcsync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
	"github.com/flotilla-io/flotilla/agent/svcproxy"
	"github.com/flotilla-io/flotilla/api"
)

// The whole path against a real kernel, in network namespaces of its own:
// a FakeSource's services and endpoints become iptables rules (svcproxy,
// iptables-restore in the "node" namespace) and names (a real clusterdns
// server on the bridge address), and the node connects to a service
// address and reaches a "pod" namespace on the bridge, as the agent wires
// it (service range routed to the bridge with the bridge's address as
// source). Goroutines that enter a namespace lock their thread and never
// unlock it, so the runtime ends the thread with them: nothing lands in
// the host's namespace.

const (
	itGateway = "10.246.0.1"
	itPodIP   = "10.246.0.10"
	itVIP     = "10.96.0.10"
)

func TestIntegrationServicesReachPods(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and iptables rules")
	}
	for _, bin := range []string{"iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not on PATH", bin)
		}
	}
	nodeName, node := itNetNS(t, "flt-svsn-")
	_, pod := itNetNS(t, "flt-svsp-")
	itWire(t, node, pod)
	itServe(t, pod, 8080, 9090)

	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	pcfg := svcproxy.DefaultConfig()
	pcfg.ChainPrefix, pcfg.CommentTag = "FLTS"+randHex(2), "flts-test"
	pcfg.ClusterCIDR, pcfg.NodePodCIDR, pcfg.Logger = netip.MustParsePrefix("10.246.0.0/24"), netip.MustParsePrefix("10.246.0.0/24"), log
	app := svcproxy.NewExecApplier(svcproxy.ExecConfig{NetNSPath: "/run/netns/" + nodeName})
	proxy, err := svcproxy.NewSyncer(pcfg, app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proxy.Cleanup(context.Background()); err != nil {
			t.Error(err)
		}
	})
	dcfg := clusterdns.DefaultConfig()
	dcfg.Listen, dcfg.Upstreams, dcfg.Logger = []string{itGateway + ":53"}, []string{"127.0.0.1:9"}, log
	srv, err := clusterdns.New(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	// Bound from a thread in the node's namespace: the sockets live there.
	if err := itIn(node, func() error { return srv.Start(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	src := NewFakeSource()
	counting := &countingProxy{Proxy: proxy}
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Source, cfg.Proxy, cfg.DNS, cfg.Logger = "n1", src, counting, srv, log
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// run starts a Syncer; its stop is idempotent and runs at the end too.
	run := func(s *Syncer) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return stop
	}
	stop := run(s)

	web := api.Service{Namespace: "default", Name: "web", ClusterIP: itVIP, Type: api.ServiceClusterIP,
		Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: "http"}}}
	eps := func(port int, ready bool) api.Endpoints {
		return api.Endpoints{Namespace: "default", Name: "web", Addresses: []api.EndpointAddress{
			{Pod: "pod-a", Node: "n1", IP: itPodIP, Ready: ready, Ports: []api.EndpointPort{{Name: "http", Protocol: "tcp", Port: port}}}}}
	}
	// inForce measures how long after change the node gets want from the
	// service address ("" for a refused connection).
	inForce := func(what string, change func(), want string) time.Duration {
		t.Helper()
		start := time.Now()
		change()
		var got string
		var err error
		for time.Since(start) < 5*time.Second {
			if err = itIn(node, func() error { got, err = itHello(itVIP + ":80"); return err }); want == "" && errors.Is(err, syscall.ECONNREFUSED) || err == nil && got == want {
				took := time.Since(start)
				t.Logf("%s: in force after %v", what, took)
				return took
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatalf("%s: after 5s the service address answers %q, %v; want %q", what, got, err, want)
		return 0
	}

	inForce("create", func() { src.SetService(web); src.SetEndpoints(eps(8080, true)) }, "pod-a:8080")
	// The named port moved on the pod: the rule follows.
	if took := inForce("target port moved", func() { src.SetEndpoints(eps(9090, true)) }, "pod-a:9090"); took > time.Second {
		t.Errorf("an endpoint change took %v to be in force; want well under 1s", took)
	}
	inForce("not ready", func() { src.SetEndpoints(eps(9090, false)) }, "")

	// The names, from the node's namespace.
	for name, want := range map[string]string{"web.default.svc.cluster.local.": itVIP, "pod-a.default.pod.cluster.local.": itPodIP} {
		var got []string
		err := itIn(node, func() error {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			r, err := dns.Exchange(m, itGateway+":53")
			if err != nil {
				return err
			}
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					got = append(got, a.A.String())
				}
			}
			return nil
		})
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("%s: %v, %v; want %s", name, got, err, want)
		}
	}

	// A restart: a new Syncer over the same state finds every chain as it
	// wants it and writes nothing.
	src.SetEndpoints(eps(8080, true))
	time.Sleep(200 * time.Millisecond)
	stop()
	proxy2, err := svcproxy.NewSyncer(pcfg, app)
	if err != nil {
		t.Fatal(err)
	}
	counting2 := &countingProxy{Proxy: proxy2}
	cfg.Proxy = counting2
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(s2)
	deadline := time.Now().Add(5 * time.Second)
	for s2.Stats().Syncs == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := counting2.last(); st.Restores != 0 || st.ServicePorts != 1 {
		t.Errorf("the restarted syncer's first sync: %+v; want no restore", st)
	}
	inForce("delete", func() { src.DeleteService("default", "web") }, "gone")
}

// countingProxy remembers the last SyncStats.
type countingProxy struct {
	Proxy
	mu    sync.Mutex
	stats svcproxy.SyncStats
}

func (c *countingProxy) Sync(ctx context.Context, st svcproxy.State) (svcproxy.SyncStats, error) {
	stats, err := c.Proxy.Sync(ctx, st)
	c.mu.Lock()
	c.stats = stats
	c.mu.Unlock()
	return stats, err
}

func (c *countingProxy) last() svcproxy.SyncStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

// itNetNS creates a named namespace with lo up, removed when t ends.
func itNetNS(t *testing.T, prefix string) (string, netns.NsHandle) {
	t.Helper()
	name := prefix + strings.ToLower(randHex(4))
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		var err error
		if h, err = netns.NewNamed(name); err != nil {
			errc <- err
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Error(err)
		}
	})
	return name, h
}

// itIn runs fn on a fresh thread inside h.
func itIn(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// itWire gives the node a bridge with the gateway, the service route as
// the agent sets it, and the pod a veth on the bridge.
func itWire(t *testing.T, node, pod netns.NsHandle) {
	t.Helper()
	err := itIn(node, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "flt-svsbr"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		gw, _ := netlink.ParseAddr(itGateway + "/24")
		if err := netlink.AddrAdd(br, gw); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return err
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flt-svsh", MasterIndex: br.Attrs().Index}, PeerName: "flt-svsp"}); err != nil {
			return err
		}
		h, err := netlink.LinkByName("flt-svsh")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(h); err != nil {
			return err
		}
		p, err := netlink.LinkByName("flt-svsp")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(p, int(pod)); err != nil {
			return err
		}
		_, svc, _ := net.ParseCIDR("10.96.0.0/16")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: svc, Src: net.ParseIP(itGateway), Scope: netlink.SCOPE_LINK})
	})
	if err != nil {
		t.Fatalf("node network: %v", err)
	}
	err = itIn(pod, func() error {
		p, err := netlink.LinkByName("flt-svsp")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(itPodIP + "/24")
		if err := netlink.AddrAdd(p, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(p); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(itGateway)})
	})
	if err != nil {
		t.Fatalf("pod network: %v", err)
	}
}

// itServe answers "pod-a:<port>" on each TCP port in the pod's namespace.
func itServe(t *testing.T, pod netns.NsHandle, ports ...int) {
	t.Helper()
	var lns []net.Listener
	err := itIn(pod, func() error {
		for _, p := range ports {
			ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", p))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = fmt.Fprintf(c, "pod-a:%d", ports[i])
				c.Close()
			}
		})
	}
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	})
}

// itHello connects to addr from the calling thread's namespace and returns
// what the pod said. A connection that neither answers nor is refused in
// 20 ms (no rule: the address goes nowhere) reads as "gone".
func itHello(addr string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, 20*time.Millisecond)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "gone", nil
		}
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}
