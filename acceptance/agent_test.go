package acceptance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/agent"
	"github.com/flotilla-io/flotilla/agent/runtime"
	ctrd "github.com/flotilla-io/flotilla/agent/runtime/containerd"
	"github.com/flotilla-io/flotilla/api"
)

// agentSeq gives each test agent its own bridge, pod range, chains and netns prefix.
var agentSeq atomic.Int32

// testAgent is one flotilla-agent process in dev mode with everything it
// makes named uniquely, so agents of parallel tests never meet.
type testAgent struct {
	t       testing.TB
	cfg     agent.Config
	args    []string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	token   string
	Client  *api.Client
}

func startAgent(t testing.TB) *testAgent {
	t.Helper()
	requireAcc(t)
	n := agentSeq.Add(1) + int32(os.Getpid()%50)*4
	apiPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	raftPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	// Test agents share the machine's network namespace: each gets
	// ingress ports of its own, on loopback.
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.Dev = true
	cfg.NodeName = fmt.Sprintf("acc-node-%d", n)
	cfg.DataDir = t.TempDir()
	cfg.APIAddr = fmt.Sprintf("127.0.0.1:%d", apiPort)
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", raftPort)
	cfg.PodCIDR = fmt.Sprintf("10.250.%d.0/24", n)
	cfg.BridgeName = fmt.Sprintf("flta%d", n)
	cfg.ChainPrefix = fmt.Sprintf("FLTA%d", n)
	cfg.NetNSPrefix = fmt.Sprintf("flta%d-", n)
	cfg.CgroupParent = fmt.Sprintf("/flotilla-acc-%d", n)
	cfg.IngressBind, cfg.IngressHTTPPort, cfg.IngressHTTPSPort = "127.0.0.1", httpPort, httpsPort
	a := &testAgent{t: t, cfg: cfg, logPath: filepath.Join(t.TempDir(), "agent.log")}
	a.args = []string{
		"--dev", "--node-name", cfg.NodeName, "--data-dir", cfg.DataDir,
		"--api-addr", cfg.APIAddr, "--raft-addr", cfg.RaftAddr, "--pod-cidr", cfg.PodCIDR,
		"--bridge", cfg.BridgeName, "--iptables-chain-prefix", cfg.ChainPrefix,
		"--netns-prefix", cfg.NetNSPrefix, "--cgroup-parent", cfg.CgroupParent,
		"--insecure-registry", env.registry, "--log-level", "debug",
		"--ingress-bind", cfg.IngressBind, "--ingress-http-port", fmt.Sprint(httpPort), "--ingress-https-port", fmt.Sprint(httpsPort),
	}
	t.Cleanup(a.teardown)
	a.start()
	return a
}

func (a *testAgent) start() {
	a.t.Helper()
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	a.cmd = exec.Command(env.agentBin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("start agent: %v", err)
	}
	a.exited = make(chan struct{})
	go func() { _ = a.cmd.Wait(); logf.Close(); close(a.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if tok, err := os.ReadFile(filepath.Join(a.cfg.DataDir, "token")); err == nil && len(tok) > 0 {
			a.token = strings.TrimSpace(string(tok))
			c, err := api.NewClient(&api.Config{Address: "http://" + a.cfg.APIAddr, Token: a.token})
			if err != nil {
				a.t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.Status(ctx)
			cancel()
			if err == nil {
				a.Client = c
				return
			}
		}
		select {
		case <-a.exited:
			a.t.Fatalf("agent exited at start:\n%s", a.logTail(40))
		default:
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent did not answer within 60s:\n%s", a.logTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the agent with sig (SIGTERM for a clean stop, SIGKILL for a crash).
func (a *testAgent) stop(sig syscall.Signal) {
	a.t.Helper()
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(sig)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
		a.t.Errorf("agent did not stop within 30s after %v", sig)
	}
	a.cmd = nil
}

func (a *testAgent) logTail(n int) string {
	b, _ := os.ReadFile(a.logPath)
	return tail(string(b), n)
}

// teardown stops the agent and removes everything it made, then checks
// that nothing is left: netns, bridge, iptables chains.
func (a *testAgent) teardown() {
	t := a.t
	if t.Failed() {
		t.Logf("agent log (last lines):\n%s", a.logTail(60))
	}
	a.stop(syscall.SIGTERM)
	args := append([]string{"cleanup", "--purge"}, a.args...)
	if out, err := exec.Command(env.agentBin, args...).CombinedOutput(); err != nil {
		t.Errorf("flotilla-agent cleanup: %v\n%s", err, out)
	}
	if left := a.netnsLeft(); len(left) > 0 {
		t.Errorf("network namespaces left after cleanup: %v", left)
	}
	if err := exec.Command("ip", "link", "show", a.cfg.BridgeName).Run(); err == nil {
		t.Errorf("bridge %s left after cleanup", a.cfg.BridgeName)
	}
	if out, _ := exec.Command("iptables", "-S").Output(); strings.Contains(string(out), a.cfg.ChainPrefix+"-") {
		t.Errorf("iptables chains %s-* left after cleanup", a.cfg.ChainPrefix)
	}
}

func (a *testAgent) netnsLeft() []string {
	ents, _ := os.ReadDir("/run/netns")
	var left []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), a.cfg.NetNSPrefix) {
			left = append(left, e.Name())
		}
	}
	return left
}

// allocatedIPs lists the pod IPs host-local holds for this agent.
func (a *testAgent) allocatedIPs() []string {
	prefix := netip.MustParsePrefix(a.cfg.PodCIDR)
	var ips []string
	_ = filepath.WalkDir(filepath.Join(a.cfg.DataDir, "cni"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if ip, perr := netip.ParseAddr(d.Name()); perr == nil && prefix.Contains(ip) {
				ips = append(ips, ip.String())
			}
		}
		return nil
	})
	return ips
}

// runtime connects to the agent's containerd, as an operator with ctr would.
func (a *testAgent) runtime() *ctrd.Runtime {
	a.t.Helper()
	rc := ctrd.DefaultConfig()
	rc.Address, rc.Namespace = a.cfg.ContainerdSocket(), a.cfg.ContainerdNamespace
	rt, err := ctrd.New(context.Background(), rc)
	if err != nil {
		a.t.Fatalf("connect to the agent's containerd: %v", err)
	}
	a.t.Cleanup(func() { rt.Close() })
	return rt
}

func (a *testAgent) containers() []runtime.ContainerState {
	a.t.Helper()
	cs, err := a.runtime().List(context.Background())
	if err != nil {
		a.t.Fatalf("list containers: %v", err)
	}
	return cs
}

// requireAcc skips a test that needs real agents unless TF_ACC is set, as
// terraform-plugin-testing does; `make test` (and so CI) always sets it.
func requireAcc(t testing.TB) {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("acceptance test: set TF_ACC=1 to run it (make test does)")
	}
}

// providerConfig points the provider at this agent.
func (a *testAgent) providerConfig() string {
	return fmt.Sprintf("provider \"flotilla\" {\n  address = %q\n  token   = %q\n}\n", "http://"+a.cfg.APIAddr, a.token)
}

// get fetches the demo app's answer from a pod IP.
func get(ctx context.Context, ip string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":8080/", nil)
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
