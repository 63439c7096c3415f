package acceptance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flotilla-io/flotilla/acceptance/lab"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

// bootstrapScript is what cloud-init runs on a VM; lab nodes run the same file.
const bootstrapScript = "../templates/cloud-init/bootstrap-node.sh"

// fleet is a lab whose nodes run flotilla-agent through the bootstrap script
// with the identity a flotilla_cluster would generate.
type fleet struct {
	t                              *testing.T
	lab                            *lab.Lab
	caPEM, caKeyPEM                []byte
	gossipKey, joinToken, apiToken string
	serverIPs                      []string
	nodes                          []*fleetNode
}

type fleetNode struct {
	*lab.Node
	server  bool
	dataDir string
	confDir string
	client  *api.Client
}

func newFleet(t *testing.T, servers, clients int) *fleet {
	return newFleetWith(t, servers, clients)
}

// newFleetWith is newFleet with every agent started with extra flags after
// the usual ones.
func newFleetWith(t *testing.T, servers, clients int, extra ...string) *fleet {
	t.Helper()
	requireAcc(t)
	f := &fleet{t: t, lab: lab.New(t, servers+clients)}
	var err error
	if f.caPEM, f.caKeyPEM, err = pki.NewCA("flotilla-acc", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if f.gossipKey, err = pki.GossipKey(); err != nil {
		t.Fatal(err)
	}
	if f.joinToken, err = pki.JoinToken(); err != nil {
		t.Fatal(err)
	}
	if f.apiToken, err = pki.JoinToken(); err != nil {
		t.Fatal(err)
	}
	for i, n := range f.lab.Nodes() {
		if i < servers {
			f.serverIPs = append(f.serverIPs, n.IP.String())
		}
		f.nodes = append(f.nodes, f.newNode(n, i < servers))
	}
	// Registered after the lab's, so it runs first: agents go before their namespaces.
	t.Cleanup(f.cleanup)
	for _, n := range f.nodes {
		f.start(n, extra...)
	}
	f.waitNodes(servers + clients)
	return f
}

func (f *fleet) newNode(n *lab.Node, server bool) *fleetNode {
	fn := &fleetNode{Node: n, server: server, dataDir: filepath.Join(n.Dir, "data"), confDir: filepath.Join(n.Dir, "etc")}
	if err := os.MkdirAll(fn.confDir, 0o700); err != nil {
		f.t.Fatal(err)
	}
	// As cloud-init writes them: the agents get the API token's hash only.
	files := map[string]string{"ca.pem": string(f.caPEM), "gossip.key": f.gossipKey, "join.token": f.joinToken, "api-token.sha256": pki.TokenHash(f.apiToken)}
	if server {
		files["ca-key.pem"] = string(f.caKeyPEM)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(fn.confDir, name), []byte(content+"\n"), 0o600); err != nil {
			f.t.Fatal(err)
		}
	}
	c, err := api.NewClient(&api.Config{Address: fn.endpoint(), Token: f.apiToken, CACertPEM: f.caPEM})
	if err != nil {
		f.t.Fatal(err)
	}
	fn.client = c
	return fn
}

func (n *fleetNode) endpoint() string { return "https://" + n.IP.String() + ":7400" }

// agentArgs are the lab-only flags: on a VM these names are unique anyway.
func (n *fleetNode) agentArgs() []string {
	return []string{
		"--netns-prefix", n.NetNS + "p-", "--cgroup-parent", "/" + n.NetNS,
		"--image-dir", env.imageDir,
	}
}

// start runs the node's agent through the cloud-init bootstrap script,
// with extra agent flags, if any.
func (f *fleet) start(n *fleetNode, extra ...string) {
	role := "client"
	if n.server {
		role = "server"
	}
	n.Start(map[string]string{
		"FLOTILLA_NODE_NAME":        n.Name,
		"FLOTILLA_ROLE":             role,
		"FLOTILLA_BOOTSTRAP_EXPECT": fmt.Sprint(len(f.serverIPs)),
		"FLOTILLA_RETRY_JOIN":       strings.Join(f.serverIPs, " "),
		"FLOTILLA_ADVERTISE_ADDR":   n.IP.String(),
		"FLOTILLA_CLUSTER_POD_CIDR": "10.244.0.0/16",
		"FLOTILLA_API_PORT":         "7400",
		"FLOTILLA_CONFIG_DIR":       n.confDir,
		"FLOTILLA_DATA_DIR":         n.dataDir,
		"FLOTILLA_AGENT_BIN":        env.agentBin,
		"FLOTILLA_FOREGROUND":       "1",
		// The lab is a LAN on one machine: raft at its base (LAN) timings.
		"FLOTILLA_EXTRA_ARGS": strings.Join(append(append(n.agentArgs(), "--raft-multiplier", "1"), extra...), " "),
	}, "bash", bootstrapScript)
}

// cleanup stops every agent and removes what it made inside its namespace.
func (f *fleet) cleanup() {
	for _, n := range f.nodes {
		n.Stop()
		args := append([]string{"--net=" + n.NetNSPath(), "--", env.agentBin, "cleanup", "--purge", "--data-dir", n.dataDir}, n.agentArgs()...)
		if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
			f.t.Errorf("cleanup %s: %v\n%s", n.Name, err, out)
		}
		ents, _ := os.ReadDir("/run/netns")
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), n.NetNS+"p-") {
				f.t.Errorf("pod namespace %s left after cleanup", e.Name())
			}
		}
	}
}

// waitNodes waits until n nodes are ready as seen from every running agent.
func (f *fleet) waitNodes(n int) {
	f.t.Helper()
	eventually(f.t, 90*time.Second, fmt.Sprintf("%d nodes ready", n), func(ctx context.Context) error {
		for _, fn := range f.nodes {
			if !fn.Running() {
				continue
			}
			nodes, err := fn.client.ListNodes(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", fn.Name, err)
			}
			ready := 0
			for _, nd := range nodes {
				if nd.Status == "ready" {
					ready++
				}
			}
			if ready < n {
				return fmt.Errorf("%s sees %d ready nodes: %+v", fn.Name, ready, nodes)
			}
		}
		return nil
	})
}

// leader returns the node that is the raft leader, as the fleet reports it.
func (f *fleet) leader(ctx context.Context) (*fleetNode, error) {
	for _, n := range f.nodes {
		if !n.Running() {
			continue
		}
		st, err := n.client.Status(ctx)
		if err != nil || st.Leader == "" {
			continue
		}
		for _, m := range f.nodes {
			if m.Name == st.Leader || strings.HasPrefix(st.Leader, m.IP.String()+":") {
				return m, nil
			}
		}
	}
	return nil, errors.New("no agent reports a leader")
}

func demoDeployment(name string, replicas int) *api.Deployment {
	return &api.Deployment{Namespace: "default", Name: name, Replicas: replicas,
		Containers: []api.Container{{Name: "app", Image: "flotilla.local/demo:v1", Ports: []api.Port{{ContainerPort: 8080}}}}}
}

// writeLoad creates deployments (0 replicas: state only) from writers
// goroutines through every running node until stop, and returns the names
// of those whose create was acknowledged.
func (f *fleet) writeLoad(writers int, stop <-chan struct{}) func() []string {
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := f.nodes[(w+i)%len(f.nodes)]
				if !n.Running() {
					continue
				}
				name := fmt.Sprintf("load-%d", seq.Add(1))
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := n.client.CreateDeployment(ctx, demoDeployment(name, 0))
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
				}
			}
		}()
	}
	return func() []string { wg.Wait(); return acked }
}

// missing returns the acknowledged names a node does not have.
func missing(ctx context.Context, n *fleetNode, acked []string) ([]string, error) {
	ds, err := n.client.ListDeployments(ctx, "default")
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, d := range ds {
		have[d.Name] = true
	}
	var miss []string
	for _, a := range acked {
		if !have[a] {
			miss = append(miss, a)
		}
	}
	return miss, nil
}

func TestAccFleet(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3, 2)
	client := f.nodes[4] // a client agent: any agent answers the API

	t.Run("terraform through a client node; pods reach each other across nodes", func(t *testing.T) {
		cfg := fmt.Sprintf(`
resource "flotilla_deployment" "web" {
  api_connection = {
    endpoint    = %[1]q
    token       = %[2]q
    ca_cert_pem = %[3]q
  }
  name     = "web"
  replicas = 5
  container {
    name  = "app"
    image = "flotilla.local/demo:v1"
    port {
      container_port = 8080
    }
  }
}

data "flotilla_nodes" "all" {
  api_connection = flotilla_deployment.web.api_connection
}
`, client.endpoint(), f.apiToken, string(f.caPEM))
		tfTest(t, resource.TestCase{
			ProtoV6ProviderFactories: factories(),
			Steps: []resource.TestStep{{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flotilla_deployment.web", "status.ready_replicas", "5"),
					resource.TestCheckResourceAttr("data.flotilla_nodes.all", "nodes.#", "5"),
					func(*terraform.State) error { return f.checkCrossNode(client) },
				),
			}},
		})
	})

	t.Run("kill the leader under write load: a new leader, no acknowledged write lost", func(t *testing.T) {
		ctx := context.Background()
		old, err := f.leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := f.writeLoad(16, stop)
		time.Sleep(2 * time.Second) // writes before the kill
		killed := time.Now()
		old.Kill()
		var failover time.Duration
		eventually(t, 30*time.Second, "a new leader", func(ctx context.Context) error {
			l, err := f.leader(ctx)
			if err != nil || l == old {
				return fmt.Errorf("leader %v: %v", l, err)
			}
			failover = time.Since(killed)
			return nil
		})
		time.Sleep(2 * time.Second) // writes after the failover
		close(stop)
		acked := done()
		t.Logf("leader %s killed; new leader after %s; %d acknowledged writes", old.Name, failover.Round(time.Millisecond), len(acked))
		if len(acked) < 100 {
			t.Fatalf("only %d writes were acknowledged; the load did not run", len(acked))
		}
		for _, n := range f.nodes {
			if n == old {
				continue
			}
			eventually(t, 20*time.Second, n.Name+" has every acknowledged write", func(ctx context.Context) error {
				miss, err := missing(ctx, n, acked)
				if err == nil && len(miss) > 0 {
					err = fmt.Errorf("%d acknowledged writes missing, e.g. %v", len(miss), miss[:min(5, len(miss))])
				}
				return err
			})
		}
		f.start(old)
		f.waitNodes(5)
	})

	t.Run("a cut-off server refuses writes clearly; the majority goes on; healed, it catches up", func(t *testing.T) {
		ctx := context.Background()
		l, err := f.leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var cut *fleetNode
		for _, n := range f.nodes {
			if n.server && n != l {
				cut = n
				break
			}
		}
		cut.Cut()
		defer cut.Heal()
		var majorityWrites []string
		for i := range 20 {
			name := fmt.Sprintf("during-cut-%d", i)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := l.client.CreateDeployment(wctx, demoDeployment(name, 0))
			cancel()
			if err != nil {
				t.Fatalf("the majority refused a write: %v", err)
			}
			majorityWrites = append(majorityWrites, name)
		}
		// The cut-off server cannot be reached from here either: ask it from
		// inside its namespace, as an operator logged into that VM would.
		eventually(t, 30*time.Second, "the cut-off server refuses writes with a clear error", func(ctx context.Context) error {
			out, _ := cut.Exec(ctx, "curl", "-sk", "-m", "5", "-w", "\nHTTP %{http_code}", "-X", "POST",
				"-H", "Authorization: Bearer "+f.apiToken, "-d", `{"name":"refused","containers":[{"name":"app","image":"x"}]}`,
				"https://"+cut.IP.String()+":7400/v1/namespaces/default/deployments")
			if !strings.Contains(string(out), "HTTP 503") || !strings.Contains(string(out), "no raft leader is reachable") {
				return fmt.Errorf("answer: %s", out)
			}
			t.Logf("the cut-off server answered: %s", out)
			return nil
		})
		cut.Heal()
		eventually(t, 30*time.Second, "the healed server catches up", func(ctx context.Context) error {
			miss, err := missing(ctx, cut, majorityWrites)
			if err == nil && len(miss) > 0 {
				err = fmt.Errorf("missing %v", miss)
			}
			return err
		})
	})

	t.Run("restart every agent: state intact, pods adopted", func(t *testing.T) {
		ctx := context.Background()
		if _, err := client.client.CreateDeployment(ctx, demoDeployment("web", 5)); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "web serving", func(ctx context.Context) error { return f.checkCrossNode(client) })
		before, err := f.nodes[0].client.ListDeployments(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		podsBefore := podIPs(t, client)
		for _, n := range f.nodes {
			n.Stop()
		}
		for _, n := range f.nodes {
			f.start(n)
		}
		f.waitNodes(len(f.nodes))
		eventually(t, 60*time.Second, "same deployments after restart", func(ctx context.Context) error {
			after, err := client.client.ListDeployments(ctx, "default")
			if err != nil {
				return err
			}
			if names(after) != names(before) {
				return fmt.Errorf("%d deployments before, %d after", len(before), len(after))
			}
			return nil
		})
		eventually(t, 60*time.Second, "web serving again", func(ctx context.Context) error { return f.checkCrossNode(client) })
		if after := podIPs(t, client); after != podsBefore {
			t.Errorf("pods were replaced instead of adopted:\nbefore %s\nafter  %s", podsBefore, after)
		}
	})

	t.Run("a node that joins shows up in flotilla_nodes", func(t *testing.T) {
		n := f.newNode(f.lab.AddNode(), false)
		f.nodes = append(f.nodes, n)
		f.start(n)
		tfTest(t, resource.TestCase{
			ProtoV6ProviderFactories: factories(),
			Steps: []resource.TestStep{{
				Config: fmt.Sprintf(`
data "flotilla_nodes" "all" {
  api_connection = {
    endpoint    = %q
    token       = %q
    ca_cert_pem = %q
  }
  min_ready = 6
  timeouts {
    read = "2m"
  }
}`, client.endpoint(), f.apiToken, string(f.caPEM)),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("data.flotilla_nodes.all", "nodes.#", "6"),
					resource.TestCheckTypeSetElemNestedAttrs("data.flotilla_nodes.all", "nodes.*", map[string]string{"name": n.Name, "status": "ready"}),
				),
			}},
		})
	})
}

// podIPs lists web's pods as name@IP, sorted.
func podIPs(t *testing.T, n *fleetNode) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := livePods(ctx, n.client, "web")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods {
		out = append(out, p.Name+"@"+p.Status.IP)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func names(ds []api.Deployment) string {
	var ns []string
	for _, d := range ds {
		ns = append(ns, d.Name)
	}
	sort.Strings(ns)
	return strings.Join(ns, ",")
}

// checkCrossNode asserts every pod of web answers a request sent from
// inside a pod on another node: pod-to-pod across nodes, by IP, and sees
// the source pod's IP (no NAT between pods).
func (f *fleet) checkCrossNode(via *fleetNode) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := livePods(ctx, via.client, "web")
	if err != nil {
		return err
	}
	onNode := map[string]bool{}
	for _, p := range pods {
		onNode[p.Node] = true
	}
	if len(onNode) < 2 {
		return fmt.Errorf("web's pods all run on one node: %v", onNode)
	}
	byName := map[string]*fleetNode{}
	for _, n := range f.nodes {
		byName[n.Name] = n
	}
	for _, from := range pods {
		for _, to := range pods {
			if from.Node == to.Node {
				continue
			}
			nsPath := "/run/netns/" + byName[from.Node].NetNS + "p-" + from.Namespace + "_" + from.Name
			out, err := exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "--", "curl", "-s", "-m", "5", "http://"+to.Status.IP+":8080/").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "version=v1") {
				return fmt.Errorf("pod %s on %s cannot reach pod %s on %s at %s: %v %s", from.Name, from.Node, to.Name, to.Node, to.Status.IP, err, out)
			}
			// No NAT between pods: the remote pod sees the source pod's IP.
			out, err = exec.CommandContext(ctx, "nsenter", "--net="+nsPath, "--", "curl", "-s", "-m", "5", "http://"+to.Status.IP+":8080/whoami").CombinedOutput()
			host, _, _ := net.SplitHostPort(strings.TrimSpace(string(out)))
			if err != nil || host != from.Status.IP {
				return fmt.Errorf("pod %s on %s (%s) reached pod %s on %s from %q, not its own IP (NATed?): %v", from.Name, from.Node, from.Status.IP, to.Name, to.Node, strings.TrimSpace(string(out)), err)
			}
		}
	}
	return nil
}
