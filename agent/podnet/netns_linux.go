package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Network namespaces are made and entered on dedicated OS threads: a
// goroutine locks its thread, moves it into the namespace and returns
// without unlocking, so the Go runtime ends the thread instead of handing it,
// still inside a pod's netns, to some other goroutine. That costs one thread
// creation per call and removes the classic "switch back failed" bug.

// netnsState is what is found at a pod's netns path.
type netnsState int

const (
	netnsMissing netnsState = iota
	// netnsStale is a file that is not a netns mount: a crash between
	// creating the mount point and mounting, or an unmount without removal.
	netnsStale
	netnsLive
)

// statNetNS tells whether path is a mounted network namespace.
func statNetNS(path string) (netnsState, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netnsMissing, nil
		}
		return 0, fmt.Errorf("inspect netns %s: %w", path, err)
	}
	// Kernels before 3.19 show namespace files as procfs.
	if st.Type == unix.NSFS_MAGIC || st.Type == unix.PROC_SUPER_MAGIC {
		return netnsLive, nil
	}
	return netnsStale, nil
}

// ensureNetNSDir makes dir exist and be a shared mount point, as iproute2's
// `ip netns add` does, so netns mounted in it reach mount namespaces made
// later (containers) and `ip netns` works with ours.
func ensureNetNSDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself first.
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// createNetNS makes a new network namespace, pins it by bind-mounting it at
// path (which must not exist) and brings its loopback interface up.
func createNetNS(path string) (err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create netns mount point %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = removeNetNS(path)
		}
	}()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see the top of this file
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("unshare network namespace: %w", err)
			}
			src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
			if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind-mount new netns at %s: %w", path, err)
			}
			// The loopback plugin's job, done here while we are inside.
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return fmt.Errorf("find lo in netns %s: %w", path, err)
			}
			if err := netlink.LinkSetUp(lo); err != nil {
				return fmt.Errorf("bring lo up in netns %s: %w", path, err)
			}
			return nil
		}()
	}()
	return <-errc
}

// removeNetNS unmounts and deletes a netns mount point. Processes still in
// the namespace keep it alive; the name is gone either way. Missing is fine.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}

// inNetNS runs fn on a fresh OS thread inside the netns at path. Sockets fn
// opens stay in that netns after it returns.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see the top of this file
		errc <- func() error {
			h, err := netns.GetFromPath(path)
			if err != nil {
				return fmt.Errorf("open netns %s: %w", path, err)
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				return fmt.Errorf("enter netns %s: %w", path, err)
			}
			return fn()
		}()
	}()
	return <-errc
}

// readIfaceIPv4 returns the address in pfx on interface ifName inside the
// netns at path; the zero Addr when the interface or address is missing.
func readIfaceIPv4(path, ifName string, pfx netip.Prefix) (netip.Addr, error) {
	var found netip.Addr
	err := inNetNS(path, func() error {
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			if errors.As(err, &netlink.LinkNotFoundError{}) {
				return nil
			}
			return fmt.Errorf("find %s: %w", ifName, err)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", ifName, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && pfx.Contains(ip.Unmap()) {
				found = ip.Unmap()
				return nil
			}
		}
		return nil
	})
	return found, err
}

// checkBridgeAddr fails when the bridge exists with an IPv4 address other
// than want, which the bridge plugin would reject on every ADD with a less
// helpful message. A missing bridge or one without an address is fine.
func checkBridgeAddr(name string, want netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil
		}
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("link %s exists and is a %s, not a bridge; pick another bridge name", name, link.Type())
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of bridge %s: %w", name, err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if got := netip.PrefixFrom(ip.Unmap(), ones); got != want {
			return fmt.Errorf("bridge %s has address %s but the pod CIDR needs %s; run the agent's cleanup or pick another bridge name", name, got, want)
		}
	}
	return nil
}

// ensureBridge makes the pod bridge exist, up, with the gateway address, as
// the bridge plugin would on the first pod's ADD (which then finds it as
// it wants it). Made at Init rather than with the first pod, so that what
// listens on the gateway (the cluster DNS) and the routes through the
// bridge work on a node without pods too. mtu 0 leaves the kernel's.
func ensureBridge(name string, gw netip.Prefix, mtu int) error {
	link, err := netlink.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, TxQLen: -1}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		link, err = netlink.LinkByName(name)
	}
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("link %s exists and is a %s, not a bridge; pick another bridge name", name, link.Type())
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address %s to bridge %s: %w", gw, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring bridge %s up: %w", name, err)
	}
	return nil
}

// deleteBridge removes the pod bridge. Missing is fine; a link of that name
// that is not a bridge is left alone.
func deleteBridge(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil
		}
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("link %s is a %s, not a bridge; not deleting it", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}
