//go:build linux

package agent

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The service route and sysctls against a real kernel, in a network
// namespace of the test's own: goroutines that enter it lock their thread
// and never unlock it, so nothing lands in the host's namespace.
func TestServiceRouteAndSysctls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, bridges and routes")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "flt-svcr-" + hex.EncodeToString(b)
	ns := make(chan netns.NsHandle, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		h, err := netns.NewNamed(name)
		ns <- h
		errc <- err
	}()
	h := <-ns
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(); _ = netns.DeleteNamed(name) })
	in := func(fn func() error) error {
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, gw := netip.MustParsePrefix("10.96.0.0/16"), netip.MustParseAddr("10.244.0.1")
	routesOn := func(bridge string) (out []string) {
		t.Helper()
		err := in(func() error {
			l, err := netlink.LinkByName(bridge)
			if err != nil {
				return err
			}
			rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
			for _, r := range rs {
				if r.Protocol == serviceRouteProtocol {
					out = append(out, r.Dst.String()+" src "+r.Src.String())
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	err := in(func() error {
		for _, br := range []string{"svcbr0", "svcbr1"} {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("svcbr0")
		a, _ := netlink.ParseAddr(gw.String() + "/24")
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		if err := serviceSysctls("svcbr0"); err != nil {
			return err
		}
		for i := 0; i < 2; i++ { // idempotent
			if err := ensureServiceRoute("svcbr0", svc, gw, log); err != nil {
				return err
			}
		}
		// Another agent's bridge in the same namespace with the same range:
		// its route is left alone, not replaced.
		return ensureServiceRoute("svcbr1", svc, netip.MustParseAddr("10.245.0.1"), log)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := routesOn("svcbr0"); len(got) != 1 || got[0] != "10.96.0.0/16 src 10.244.0.1" {
		t.Errorf("service routes on svcbr0: %q", got)
	}
	// Another layout (a data dir made anew): the old range's route goes.
	if err := in(func() error { return ensureServiceRoute("svcbr0", netip.MustParsePrefix("10.100.0.0/24"), gw, log) }); err != nil {
		t.Fatal(err)
	}
	if got := routesOn("svcbr0"); len(got) != 1 || got[0] != "10.100.0.0/24 src 10.244.0.1" {
		t.Errorf("service routes on svcbr0 after a new layout: %q", got)
	}
	if got := routesOn("svcbr1"); len(got) != 0 {
		t.Errorf("the second bridge took the range over: %q", got)
	}
	for _, iface := range []string{"all", "svcbr0"} {
		var v []byte
		_ = in(func() (err error) {
			v, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + iface + "/send_redirects")
			return err
		})
		if strings.TrimSpace(string(v)) != "0" {
			t.Errorf("net.ipv4.conf.%s.send_redirects = %q, want 0", iface, v)
		}
	}

	if err := in(func() error { return removeServiceRoutes("svcbr0") }); err != nil {
		t.Fatal(err)
	}
	if got := routesOn("svcbr0"); len(got) != 0 {
		t.Errorf("service routes left after cleanup: %q", got)
	}
	// The connected route of the bridge's own range stays.
	_ = in(func() error {
		rs, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if len(rs) != 1 {
			t.Errorf("routes after cleanup: %v; want the bridge's connected route only", rs)
		}
		return nil
	})
	if err := in(func() error { return removeServiceRoutes("no-such-bridge") }); err != nil {
		t.Errorf("cleanup without the bridge: %v", err)
	}
}
