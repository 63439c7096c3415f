//go:build linux

package svcproxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Network namespaces for the privileged tests and the benchmark. Test
// goroutines never change namespace: a namespace is created, configured and
// used only on goroutines that lock their thread, enter it and never unlock
// (the runtime then ends the thread with the goroutine instead of handing
// it, still inside the namespace, to others), and iptables runs there
// through ExecConfig.NetNSPath. So nothing a test does can land in the
// host's namespace, whichever goroutine t.Run picks.

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// needRoot skips tb unless it can create network namespaces and run
// iptables-restore.
func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and iptables rules")
	}
	for _, bin := range []string{"iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("%s not on PATH", bin)
		}
	}
}

// newNetNS creates a named network namespace with lo up and returns its
// name and handle, leaving the caller where it is; deleteNetNS removes it.
func newNetNS(prefix string) (string, netns.NsHandle, error) {
	name := prefix + randHex(4)
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see the top of this file
		var err error
		if h, err = netns.NewNamed(name); err != nil {
			errc <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		if h.IsOpen() {
			_ = deleteNetNS(name, h)
		}
		return "", 0, err
	}
	return name, h, nil
}

func deleteNetNS(name string, h netns.NsHandle) error {
	_ = h.Close()
	if err := netns.DeleteNamed(name); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

func netnsPath(name string) string { return "/run/netns/" + name }

// inNetNS runs fn on a fresh thread inside h.
func inNetNS(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see the top of this file
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// hostRulesWithPrefix returns the lines of the host's iptables-save (the
// test process's namespace, which no test goroutine leaves) that mention
// prefix.
func hostRulesWithPrefix(tb testing.TB, prefix string) []string {
	tb.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		tb.Fatalf("host iptables-save: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, prefix) {
			lines = append(lines, l)
		}
	}
	return lines
}
