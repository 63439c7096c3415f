// Package lab runs a fleet of test nodes on this one machine: each node is a
// network namespace with one veth on a lab bridge that has no route out of
// the machine, so nothing a test starts can reach beyond it. A node runs its
// processes through `nsenter --net` (not `ip netns exec`, which remounts /sys
// and hides the cgroup v1 hierarchies runc needs). Tests can kill a node,
// freeze it (SIGSTOP), cut it off (link down) and bring it back; everything
// is torn down in t.Cleanup, even when the test failed.
package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// seq numbers labs within a process; the pid spreads processes apart.
var seq atomic.Int32

// Lab is a bridge and the nodes attached to it.
type Lab struct {
	t      testing.TB
	ID     int
	Bridge string
	// Subnet is the lab network; HostIP is the host's address on it.
	Subnet netip.Prefix
	HostIP netip.Addr

	dir   string
	mu    sync.Mutex
	nodes []*Node
}

// Node is one network namespace on the lab bridge.
type Node struct {
	lab   *Lab
	Index int
	Name  string
	NetNS string // name under /run/netns
	IP    netip.Addr
	veth  string // host side
	Dir   string // scratch directory for this node's files

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	Log    string
}

// New creates a lab with n nodes (more can be added with AddNode).
func New(t testing.TB, n int) *Lab {
	t.Helper()
	// Creating the bridge claims its ID: labs of concurrent test processes
	// (go test runs packages in parallel) take the next free one. The
	// directory is made first so it is removed last, after teardown has
	// printed the nodes' logs.
	l := &Lab{t: t, dir: t.TempDir()}
	start := int(seq.Add(1)) + os.Getpid()%40*5
	for id := start; ; id++ {
		if id >= start+250 {
			t.Fatal("lab: no free lab ID; are labs of earlier runs left over? (ip link | grep flab)")
		}
		bridge := fmt.Sprintf("flab%d", id%250)
		if err := exec.Command("ip", "link", "add", bridge, "type", "bridge").Run(); err == nil {
			l.ID, l.Bridge = id%250, bridge
			break
		}
	}
	l.Subnet = netip.MustParsePrefix(fmt.Sprintf("10.97.%d.0/24", l.ID))
	l.HostIP = netip.MustParsePrefix(fmt.Sprintf("10.97.%d.254/24", l.ID)).Addr()
	t.Cleanup(l.teardown)
	l.run("ip", "addr", "add", l.HostIP.String()+"/24", "dev", l.Bridge)
	l.run("ip", "link", "set", l.Bridge, "up")
	// Lab traffic may cross the bridge but is never forwarded off it.
	l.run("iptables", "-I", "FORWARD", "-i", l.Bridge, "!", "-o", l.Bridge, "-j", "DROP", "-m", "comment", "--comment", "flotilla-lab "+l.Bridge)
	l.run("iptables", "-I", "FORWARD", "-o", l.Bridge, "-j", "ACCEPT", "-m", "comment", "--comment", "flotilla-lab "+l.Bridge)
	l.run("iptables", "-I", "FORWARD", "-i", l.Bridge, "-o", l.Bridge, "-j", "ACCEPT", "-m", "comment", "--comment", "flotilla-lab "+l.Bridge)
	for range n {
		l.AddNode()
	}
	return l
}

// Nodes returns the lab's nodes in order.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Node(nil), l.nodes...)
}

// AddNode creates one more node namespace on the bridge.
func (l *Lab) AddNode() *Node {
	l.t.Helper()
	l.mu.Lock()
	i := len(l.nodes) + 1
	l.mu.Unlock()
	n := &Node{
		lab:   l,
		Index: i,
		Name:  fmt.Sprintf("node%d", i),
		NetNS: fmt.Sprintf("flab%dn%d", l.ID, i),
		IP:    netip.MustParseAddr(fmt.Sprintf("10.97.%d.%d", l.ID, i)),
		veth:  fmt.Sprintf("flab%dv%d", l.ID, i),
		Dir:   filepath.Join(l.dir, fmt.Sprintf("node%d", i)),
	}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	n.Log = filepath.Join(n.Dir, "node.log")
	l.mu.Lock()
	l.nodes = append(l.nodes, n)
	l.mu.Unlock()
	l.run("ip", "netns", "add", n.NetNS)
	l.run("ip", "link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", n.NetNS)
	l.run("ip", "link", "set", n.veth, "master", l.Bridge, "up")
	l.run("ip", "-n", n.NetNS, "addr", "add", n.IP.String()+"/24", "dev", "eth0")
	l.run("ip", "-n", n.NetNS, "link", "set", "eth0", "up")
	l.run("ip", "-n", n.NetNS, "link", "set", "lo", "up")
	// Forwarding inside the node is what lets pods on it be reached (host-gw).
	l.run("nsenter", "--net="+n.NetNSPath(), "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return n
}

func (l *Lab) run(argv ...string) {
	l.t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		l.t.Fatalf("lab: %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// NetNSPath is the node's namespace file.
func (n *Node) NetNSPath() string { return "/run/netns/" + n.NetNS }

// Start runs argv inside the node's network namespace with env added to
// the environment; output goes to n.Log. One process per node at a time.
func (n *Node) Start(env map[string]string, argv ...string) {
	t := n.lab.t
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		t.Fatalf("lab: %s already runs a process", n.Name)
	}
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NetNSPath(), "--"}, argv...)...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: signals reach the node's whole process tree.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("lab: start on %s: %v", n.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	n.cmd, n.exited = cmd, exited
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the node's main process.
func (n *Node) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// Kill ends the node's process with SIGKILL (a crash) and waits for it.
func (n *Node) Kill() { n.stop(syscall.SIGKILL) }

// Stop ends the node's process with SIGTERM (a clean shutdown) and waits.
func (n *Node) Stop() { n.stop(syscall.SIGTERM) }

func (n *Node) stop(sig syscall.Signal) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT) // a frozen process cannot stop
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	n.mu.Lock()
	n.cmd = nil
	n.mu.Unlock()
}

// Freeze stops the node's process (SIGSTOP): it holds its sockets but answers nothing.
func (n *Node) Freeze() { n.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen node.
func (n *Node) Thaw() { n.signal(syscall.SIGCONT) }

// Cut takes the node's link to the lab bridge down: it runs on, alone.
func (n *Node) Cut() { n.lab.run("ip", "link", "set", n.veth, "down") }

// Heal brings a cut node's link back.
func (n *Node) Heal() { n.lab.run("ip", "link", "set", n.veth, "up") }

// Exec runs a command inside the node's namespace and returns its output.
func (n *Node) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.NetNSPath(), "--"}, argv...)...).CombinedOutput()
}

// LogTail returns the last lines of the node's log.
func (n *Node) LogTail(lines int) string {
	b, _ := os.ReadFile(n.Log)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// teardown stops every node and removes namespaces, links and rules, and
// reports anything it could not remove.
func (l *Lab) teardown() {
	for _, n := range l.Nodes() {
		if l.t.Failed() {
			l.t.Logf("lab %s log (last lines):\n%s", n.Name, n.LogTail(80))
		}
		n.Kill()
		_ = exec.Command("ip", "link", "del", n.veth).Run()
		_ = exec.Command("ip", "netns", "del", n.NetNS).Run()
	}
	_ = exec.Command("ip", "link", "del", l.Bridge).Run()
	for _, rule := range [][]string{
		{"-i", l.Bridge, "!", "-o", l.Bridge, "-j", "DROP", "-m", "comment", "--comment", "flotilla-lab " + l.Bridge},
		{"-o", l.Bridge, "-j", "ACCEPT", "-m", "comment", "--comment", "flotilla-lab " + l.Bridge},
		{"-i", l.Bridge, "-o", l.Bridge, "-j", "ACCEPT", "-m", "comment", "--comment", "flotilla-lab " + l.Bridge},
	} {
		_ = exec.Command("iptables", append([]string{"-D", "FORWARD"}, rule...)...).Run()
	}
	for _, n := range l.Nodes() {
		if _, err := os.Stat(n.NetNSPath()); err == nil {
			l.t.Errorf("lab: namespace %s left behind", n.NetNS)
		}
	}
	if exec.Command("ip", "link", "show", l.Bridge).Run() == nil {
		l.t.Errorf("lab: bridge %s left behind", l.Bridge)
	}
}
