// Package routes keeps this node's host-gw routes: for every other node, a
// kernel route to that node's pod range via that node's address, so pods
// reach each other across nodes on one L2 network with no overlay.
//
// It owns exactly the routes it marks with its own rtnetlink protocol number
// (Config.Protocol, "proto 0x4f" in `ip route`) in one table. Sync makes
// that set equal to what it is given; Cleanup removes it. Routes with any
// other protocol — the kernel's, the administrator's, a DHCP client's, the
// pod bridge's — are never changed or deleted, and a wanted route that would
// replace one of them is refused with an error instead.
//
// The kernel calls go through a three-method interface (netlinker) over
// vishvananda/netlink, so the diff in Sync is unit-tested with a fake that
// keeps the kernel's replace and delete rules; an integration test runs
// against a real kernel in a network namespace of its own.
//
// The package must not decide which routes exist: the agent derives them
// from the fleet's nodes. It imports no other agent package.
package routes
