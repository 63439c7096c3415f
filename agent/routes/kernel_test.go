//go:build linux

package routes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The Manager against a real kernel, in a network namespace of the test's
// own: a veth pair with 10.97.250.1/24 on one end, so gateways in
// 10.97.250.0/24 are on-link (the dummy link type is missing on some
// kernels), and a static route that must survive everything.
func TestKernelRoutes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not on PATH")
	}
	nsName := newTestNetNS(t)

	static := &netlink.Route{Dst: mustCIDR("10.97.9.0/24"), Gw: net.ParseIP("10.97.250.9"), Protocol: unix.RTPROT_STATIC}
	if err := netlink.RouteAdd(static); err != nil {
		t.Fatalf("add static route: %v", err)
	}
	ctx := context.Background()
	m := New(Config{Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})

	if err := m.Sync(ctx, []Route{rt("10.97.1.0/24", "10.97.250.2"), rt("10.97.2.0/24", "10.97.250.3")}); err != nil {
		t.Fatal(err)
	}
	checkIPRoutes(t, nsName, "10.97.1.0/24 via 10.97.250.2 dev flt-rt0", "10.97.2.0/24 via 10.97.250.3 dev flt-rt0")

	// What the kernel lists back matches what was set: no change the second time.
	counted := &countingNetlink{netlinker: &netlink.Handle{}}
	again := newManager(Config{}, counted)
	if err := again.Sync(ctx, []Route{rt("10.97.1.0/24", "10.97.250.2"), rt("10.97.2.0/24", "10.97.250.3")}); err != nil {
		t.Fatal(err)
	}
	if counted.changes != 0 {
		t.Fatalf("re-sync of the same routes made %d kernel changes", counted.changes)
	}

	if err := m.Sync(ctx, []Route{rt("10.97.2.0/24", "10.97.250.4")}); err != nil {
		t.Fatal(err)
	}
	checkIPRoutes(t, nsName, "10.97.2.0/24 via 10.97.250.4 dev flt-rt0")

	// Refused: the static route's range, and a gateway that is not on-link.
	err := m.Sync(ctx, []Route{rt("10.97.2.0/24", "10.97.250.4"), rt("10.97.9.0/24", "10.97.250.5"), rt("10.97.3.0/24", "192.0.2.1")})
	t.Logf("expected error: %v", err)
	if err == nil || !strings.Contains(err.Error(), "not flotilla's") || !strings.Contains(err.Error(), "network is unreachable") {
		t.Fatalf("Sync = %v, want a foreign-route conflict and an unreachable gateway", err)
	}
	checkIPRoutes(t, nsName, "10.97.2.0/24 via 10.97.250.4 dev flt-rt0")

	// With a source: set without it while the host lacks the address
	// (reported), with it once the address is there, and again unchanged.
	const src = "10.97.250.77"
	withSrc := New(Config{Source: netip.MustParseAddr(src)})
	if err := withSrc.Sync(ctx, []Route{rt("10.97.2.0/24", "10.97.250.4")}); err == nil || !strings.Contains(err.Error(), "not an address of this host yet") {
		t.Fatalf("Sync with a source the host lacks = %v, want it reported", err)
	}
	checkIPRoutes(t, nsName, "10.97.2.0/24 via 10.97.250.4 dev flt-rt0")
	if out, err := exec.Command("ip", "-n", nsName, "addr", "add", src+"/32", "dev", "flt-rt0").CombinedOutput(); err != nil {
		t.Fatalf("add the source address: %v %s", err, out)
	}
	if err := withSrc.Sync(ctx, []Route{rt("10.97.2.0/24", "10.97.250.4")}); err != nil {
		t.Fatal(err)
	}
	checkIPRoutes(t, nsName, "10.97.2.0/24 via 10.97.250.4 dev flt-rt0 src "+src)
	counted = &countingNetlink{netlinker: &netlink.Handle{}}
	if err := newManager(Config{Source: netip.MustParseAddr(src)}, counted).Sync(ctx, []Route{rt("10.97.2.0/24", "10.97.250.4")}); err != nil || counted.changes != 0 {
		t.Fatalf("re-sync with the source: %v, %d kernel changes", err, counted.changes)
	}

	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	checkIPRoutes(t, nsName)
	out := ipRoute(t, nsName, "proto", "static")
	if !strings.Contains(out, "10.97.9.0/24 via 10.97.250.9 dev flt-rt0") {
		t.Fatalf("the static route is gone: %q", out)
	}
}

// newTestNetNS moves the test's goroutine, locked to its thread for good,
// into a new named network namespace with a veth pair (flt-rt0 with
// 10.97.250.1/24, flt-rt1), and deletes the namespace at the end. The
// thread ends with the test, so it never serves other goroutines.
func newTestNetNS(t *testing.T) string {
	t.Helper()
	runtime.LockOSThread() // never unlocked: see above
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "flt-routes-" + hex.EncodeToString(b)
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	la := netlink.NewLinkAttrs()
	la.Name = "flt-rt0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "flt-rt1"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, n := range []string{"lo", "flt-rt0", "flt-rt1"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if n == "flt-rt0" {
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 97, 250, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// countingNetlink counts the changes made through it.
type countingNetlink struct {
	netlinker
	changes int
}

func (c *countingNetlink) RouteReplace(r *netlink.Route) error {
	c.changes++
	return c.netlinker.RouteReplace(r)
}

func (c *countingNetlink) RouteDel(r *netlink.Route) error {
	c.changes++
	return c.netlinker.RouteDel(r)
}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// ipRoute runs `ip -n ns route show ARGS` and returns its output.
func ipRoute(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns, "route", "show"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip route show %v: %v: %s", args, err, out)
	}
	return string(out)
}

// checkIPRoutes compares `ip route show proto 0x4f` in ns with want.
func checkIPRoutes(t *testing.T, ns string, want ...string) {
	t.Helper()
	out := ipRoute(t, ns, "proto", "0x4f")
	var got []string
	for line := range strings.Lines(out) {
		if line = strings.TrimSpace(line); line != "" {
			got = append(got, line)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ip route show proto 0x4f:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
}
