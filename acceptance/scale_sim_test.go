package acceptance

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/agent"
	"github.com/flotilla-io/flotilla/api"
)

// gossipPort is the servers' memberlist port (the agent's default).
const gossipPort = 7402

// simNodes are simulated client nodes (agent.RunSimulatedNode) running in
// the test process against a lab fleet's servers: real gossip, join,
// watch and status writes from the lab host's address, pods pretended.
type simNodes struct {
	t      *testing.T
	names  []string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	log    *os.File
	logw   *bufio.Writer // written through the nodes' logger; flushed once they stopped

	mu     sync.Mutex
	exited map[string]error // nodes whose RunSimulatedNode returned before the stop
}

// startSimNodes starts n simulated nodes named sim001…, one every every,
// each with its own data dir and gossip port on the lab host's address,
// joining f's servers with the fleet's CA, join token and gossip key. They
// stop in t.Cleanup, before the fleet's agents.
func startSimNodes(t *testing.T, f *fleet, n int, every time.Duration) *simNodes {
	t.Helper()
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	if err := os.MkdirAll(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	// What cloud-init writes on a client VM.
	for name, content := range map[string]string{"ca.pem": string(f.caPEM), "gossip.key": f.gossipKey, "join.token": f.joinToken} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ports := freeGossipPorts(t, f.lab.HostIP, n)
	logf, err := os.Create(filepath.Join(dir, "simulated.log"))
	if err != nil {
		t.Fatal(err)
	}
	// One log for all: buffered, since the handler's lock is shared by 200
	// nodes that log from inside memberlist's callbacks; warnings and
	// errors only (a join is 200 "member joined" lines per node).
	logw := bufio.NewWriterSize(logf, 1<<20)
	logger := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Two hundred nodes' gossip in one process allocates fast; the
	// collector at the default GOGC took a third of their CPU. The
	// nodes' own cost is what is measured, not the collector's.
	gc := debug.SetGCPercent(400)
	t.Cleanup(func() { debug.SetGCPercent(gc) })
	ctx, cancel := context.WithCancel(context.Background())
	s := &simNodes{t: t, cancel: cancel, log: logf, logw: logw, exited: map[string]error{}}
	t.Cleanup(s.stop)
	for i := range n {
		cfg := agent.DefaultConfig()
		cfg.NodeName = fmt.Sprintf("sim%03d", i+1)
		cfg.DataDir = filepath.Join(dir, cfg.NodeName)
		cfg.AdvertiseAddr = f.lab.HostIP.String()
		cfg.GossipPort = ports[i]
		for _, ip := range f.serverIPs {
			cfg.RetryJoin = append(cfg.RetryJoin, net.JoinHostPort(ip, strconv.Itoa(gossipPort)))
		}
		cfg.CAFile, cfg.GossipKeyFile, cfg.JoinTokenFile = filepath.Join(etc, "ca.pem"), filepath.Join(etc, "gossip.key"), filepath.Join(etc, "join.token")
		cfg.Version = "simulated"
		cfg.Logger = logger.With("node", cfg.NodeName)
		s.names = append(s.names, cfg.NodeName)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(i) * every):
			}
			err := agent.RunSimulatedNode(ctx, cfg)
			if ctx.Err() == nil {
				s.mu.Lock()
				s.exited[cfg.NodeName] = err
				s.mu.Unlock()
			}
		}()
	}
	return s
}

// failed returns an error naming the nodes that stopped on their own.
func (s *simNodes) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, err := range s.exited {
		return fmt.Errorf("%d simulated nodes stopped on their own, e.g. %s: %v", len(s.exited), name, err)
	}
	return nil
}

// stop cancels every simulated node and waits for them: each leaves the
// fleet (memberlist Leave, bounded at 5 s) and stops its loops.
func (s *simNodes) stop() {
	start := time.Now()
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.t.Logf("%d simulated nodes stopped in %s", len(s.names), time.Since(start).Round(time.Millisecond))
		_ = s.logw.Flush()
	case <-time.After(60 * time.Second):
		s.t.Errorf("simulated nodes still running 60 s after their context ended")
	}
	if s.t.Failed() {
		s.t.Logf("simulated nodes' log (last lines):\n%s", tail(readFile(s.log.Name()), 60))
	}
	s.log.Close()
}

// freeGossipPorts returns n ports free for TCP and UDP on ip, from 24000 up.
// The address is the lab's own, so nothing else binds it in between.
func freeGossipPorts(t *testing.T, ip netip.Addr, n int) []int {
	t.Helper()
	var ports []int
	for p := 24000; p < 32000 && len(ports) < n; p++ {
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(p))
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ul, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		ports = append(ports, p)
	}
	if len(ports) < n {
		t.Fatalf("only %d free gossip ports on %s in 24000-32000, want %d", len(ports), ip, n)
	}
	return ports
}

// processCPU is the CPU time this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serversCPU is the CPU time the fleet's server agents used so far, in seconds.
func (f *fleet) serversCPU() float64 {
	var total float64
	for _, n := range f.nodes {
		if pid, err := agentPid(n); err == nil && n.server {
			total += cpuSeconds(pid)
		}
	}
	return total
}

// serversRSS is the fleet's server agents' resident memory, in MB.
func (f *fleet) serversRSS() []float64 {
	var out []float64
	for _, n := range f.nodes {
		if pid, err := agentPid(n); err == nil && n.server {
			mb, _ := rssMB(pid)
			out = append(out, mb)
		}
	}
	return out
}

// readyMonitor polls a server's GET /v1/nodes twice a second and counts,
// per node, the polls that saw it not ready after it had been ready: a
// node the servers marked down (memberlist missed its acks) and back.
type readyMonitor struct {
	mu    sync.Mutex
	ready map[string]bool
	downs map[string]int
	stop  func()
}

func startReadyMonitor(via *fleetNode) *readyMonitor {
	m := &readyMonitor{ready: map[string]bool{}, downs: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			nodes, err := via.client.ListNodes(pctx)
			pcancel()
			if err == nil {
				m.mu.Lock()
				for _, n := range nodes {
					if n.Status == api.NodeReady {
						m.ready[n.Name] = true
					} else if m.ready[n.Name] {
						m.downs[n.Name]++
					}
				}
				m.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	m.stop = sync.OnceFunc(func() { cancel(); <-done })
	return m
}

// flapped returns how many nodes were seen not ready after being ready,
// and a few of them with their counts.
func (m *readyMonitor) flapped() (int, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var some []string
	for name, c := range m.downs {
		if len(some) < 5 {
			some = append(some, fmt.Sprintf("%s (%d polls)", name, c))
		}
	}
	return len(m.downs), strings.Join(some, ", ")
}
