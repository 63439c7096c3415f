package acceptance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flotilla-io/flotilla/acceptance/lab"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

// oneApplyNode is a lab node that a terraform_data resource boots from the
// cluster's user-data, as a VM boots with cloud-init.
type oneApplyNode struct {
	*lab.Node
	server bool
	// agentBin is FLOTILLA_AGENT_BIN, in the node's directory: servers
	// download the agent from agent_url, clients have it "in the image" (a
	// copy of the test-built binary, which matches agent_sha256; never the
	// shared one, which a failing download must not touch).
	agentBin string
}

func (n *oneApplyNode) dataDir() string { return filepath.Join(n.Dir, "data") }
func (n *oneApplyNode) confDir() string { return filepath.Join(n.Dir, "etc") }
func (n *oneApplyNode) pidFile() string { return filepath.Join(n.Dir, "boot.pid") }

// labArgs are the lab-only agent flags, the fleet test's.
func (n *oneApplyNode) labArgs() []string { return (&fleetNode{Node: n.Node}).agentArgs() }

// extraArgs is FLOTILLA_EXTRA_ARGS: the lab flags, and raft's fastest
// timeouts (the lab's network is one bridge).
func (n *oneApplyNode) extraArgs() string {
	return strings.Join(append(n.labArgs(), "--raft-multiplier", "1"), " ")
}

// TestAccOneApply keeps the promise of examples/cluster: one terraform
// apply creates a cluster, the VMs that boot from its user-data, and a
// deployment that waits for those VMs to join. The VMs are terraform_data
// resources whose local-exec provisioner does in a lab namespace what
// cloud-init does on a VM (labboot: write_files, then runcmd's
// bootstrap-node.sh). The servers download flotilla-agent from agent_url
// (HTTPS on the lab bridge) and check agent_sha256; every node gets the API
// token's hash, not the token. Nothing of the fleet exists at plan time.
func TestAccOneApply(t *testing.T) {
	requireAcc(t)
	t.Parallel()
	// Three servers: the one apply has them find each other and bootstrap
	// raft (bootstrap-expect from the user-data) before the gate opens.
	const servers, clients = 3, 1
	l := lab.New(t, servers+clients)
	var nodes []*oneApplyNode
	for i, n := range l.Nodes() {
		on := &oneApplyNode{Node: n, server: i < servers, agentBin: filepath.Join(n.Dir, "bin", "flotilla-agent")}
		if !on.server {
			if err := copyFile(env.agentBin, on.agentBin); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, on)
	}
	// Registered after the lab's, so it runs first: agents go before their namespaces.
	t.Cleanup(func() { stopOneApplyNodes(t, nodes) })

	dir := t.TempDir()
	labboot := filepath.Join(dir, "labboot")
	if out, err := exec.Command("go", "build", "-o", labboot, "./lab/cmd/labboot").CombinedOutput(); err != nil {
		t.Fatalf("build labboot: %v\n%s", err, out)
	}
	agentURL, caBundle := serveAgent(t, l.HostIP, dir)
	agentSum, err := fileSHA256(env.agentBin)
	if err != nil {
		t.Fatal(err)
	}

	var token, caPEM, endpoint string // from the state, for the checks after destroy
	var applyStart time.Time
	cfg := oneApplyConfig(nodes, labboot, agentURL, agentSum, caBundle)
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		Steps: []resource.TestStep{
			{
				// The plan of the empty state calls nothing: the fleet's VMs
				// do not exist yet.
				Config:             cfg,
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
				ConfigPlanChecks: resource.ConfigPlanChecks{PostApplyPreRefresh: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flotilla_cluster.x", plancheck.ResourceActionCreate),
					plancheck.ExpectResourceAction("terraform_data.vm[0]", plancheck.ResourceActionCreate),
					plancheck.ExpectResourceAction("data.flotilla_nodes.all", plancheck.ResourceActionRead),
					plancheck.ExpectResourceAction("flotilla_deployment.demo", plancheck.ResourceActionCreate),
					plancheck.ExpectUnknownValue("flotilla_cluster.x", tfjsonpath.New("cloud_init_client")),
					plancheck.ExpectUnknownValue("flotilla_cluster.x", tfjsonpath.New("api_connection")),
					plancheck.ExpectKnownValue("flotilla_cluster.x", tfjsonpath.New("endpoint"),
						knownvalue.StringExact("https://"+nodes[0].IP.String()+":7400")),
				}},
			},
			{
				PreConfig: func() {
					for _, n := range nodes {
						if _, err := os.Stat(n.pidFile()); err == nil {
							t.Fatalf("%s was booted by a plan", n.Name)
						}
					}
					applyStart = time.Now()
				},
				Config: cfg,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.flotilla_nodes.all", tfjsonpath.New("ready_count"), knownvalue.Int64Exact(servers+clients)),
					statecheck.ExpectKnownValue("flotilla_deployment.demo", tfjsonpath.New("status").AtMapKey("ready_replicas"), knownvalue.Int64Exact(2)),
					statecheck.ExpectKnownOutputValue("nodes", knownvalue.ListExact(oneApplyNodeNames(nodes))),
					statecheck.ExpectKnownOutputValue("servers", knownvalue.Int64Exact(servers)),
				},
				Check: func(st *terraform.State) error {
					t.Logf("one apply: %d servers and %d client booted from their user-data, joined, and 2 replicas ready after %s",
						servers, clients, time.Since(applyStart).Round(100*time.Millisecond))
					rs, ok := st.RootModule().Resources["flotilla_cluster.x"]
					if !ok {
						return errors.New("flotilla_cluster.x is not in the state")
					}
					token, caPEM, endpoint = rs.Primary.Attributes["api_token"], rs.Primary.Attributes["ca_cert_pem"], rs.Primary.Attributes["endpoint"]
					return checkOneApplyNodes(nodes, token, agentSum)
				},
			},
		},
		// Destroy deleted the deployment while the fleet was up.
		CheckDestroy: func(*terraform.State) error {
			if endpoint == "" {
				return nil // the apply failed; its error says why
			}
			c, err := api.NewClient(&api.Config{Address: endpoint, Token: token, CACertPEM: []byte(caPEM)})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for {
				ds, err := c.ListDeployments(ctx, "default")
				pods, perr := c.ListPods(ctx, "default", "demo")
				if err == nil && perr == nil && len(ds) == 0 && len(pods) == 0 {
					return nil
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("after destroy: deployments %v (%v), pods %v (%v)", ds, err, pods, perr)
				case <-time.After(200 * time.Millisecond):
				}
			}
		},
	})
}

// oneApplyNodeNames checks the node names in order.
func oneApplyNodeNames(nodes []*oneApplyNode) []knownvalue.Check {
	var out []knownvalue.Check
	for _, n := range nodes {
		out = append(out, knownvalue.StringExact(n.Name))
	}
	return out
}

// oneApplyConfig is the configuration: the cluster, one terraform_data
// "VM" per lab node, the node gate and the deployment.
func oneApplyConfig(nodes []*oneApplyNode, labboot, agentURL, agentSum, caBundle string) string {
	var servers []string
	var vms strings.Builder
	for _, n := range nodes {
		role := "client"
		if n.server {
			role = "server"
			servers = append(servers, strconv.Quote(n.IP.String()))
		}
		fmt.Fprintf(&vms, `    {
      name       = %q
      role       = %q
      netns      = %q
      dir        = %q
      ip         = %q
      agent_bin  = %q
      extra_args = %q
    },
`, n.Name, role, n.NetNS, n.Dir, n.IP, n.agentBin, n.extraArgs())
	}
	return fmt.Sprintf(`
locals {
  # The stand-in VMs: lab network namespaces made by the test.
  vms = [
%[1]s  ]
}

resource "flotilla_cluster" "x" {
  name             = "oneapply"
  server_addresses = [%[2]s]
  agent_url        = %[3]q
  agent_sha256     = %[4]q
}

# A VM booting with the cluster's user-data: labboot writes its files into
# the node's directory and runs its bootstrap-node.sh in the node's netns.
# (count, not for_each: terraform-plugin-testing's state checks need it.)
resource "terraform_data" "vm" {
  count = length(local.vms)
  input = local.vms[count.index].name

  provisioner "local-exec" {
    command = "%[5]s -netns ${local.vms[count.index].netns} -dir ${local.vms[count.index].dir}"
    environment = {
      FLOTILLA_USER_DATA      = local.vms[count.index].role == "server" ? flotilla_cluster.x.cloud_init_server : flotilla_cluster.x.cloud_init_client
      FLOTILLA_NODE_NAME      = local.vms[count.index].name
      FLOTILLA_ADVERTISE_ADDR = local.vms[count.index].ip
      FLOTILLA_DATA_DIR       = "${local.vms[count.index].dir}/data"
      FLOTILLA_AGENT_BIN      = local.vms[count.index].agent_bin
      FLOTILLA_EXTRA_ARGS     = local.vms[count.index].extra_args
      FLOTILLA_FOREGROUND     = "1"
      FLOTILLA_SKIP_INSTALL   = "1"
      # curl trusts the test's HTTPS server for agent_url.
      CURL_CA_BUNDLE = %[6]q
    }
  }
}

data "flotilla_nodes" "all" {
  api_connection = flotilla_cluster.x.api_connection
  min_ready      = length(local.vms)
  depends_on     = [terraform_data.vm]
  timeouts {
    read = "3m"
  }
}

resource "flotilla_deployment" "demo" {
  api_connection = flotilla_cluster.x.api_connection
  name           = "demo"
  replicas       = 2
  container {
    name  = "app"
    image = "flotilla.local/demo:v1"
    port {
      container_port = 8080
    }
  }
  timeouts {
    create = "3m"
  }
  depends_on = [data.flotilla_nodes.all]
}

output "nodes" {
  value = data.flotilla_nodes.all.nodes[*].name
}

output "servers" {
  value = length([for n in data.flotilla_nodes.all.nodes : n if n.server])
}
`, vms.String(), strings.Join(servers, ", "), agentURL, agentSum, labboot, caBundle)
}

// checkOneApplyNodes checks what the user-data left on the nodes: the API
// token's hash and never the token, the CA key on servers only, and the
// downloaded agent the one agent_sha256 names.
func checkOneApplyNodes(nodes []*oneApplyNode, token, agentSum string) error {
	if token == "" {
		return errors.New("api_token is empty in the state")
	}
	var errs []error
	for _, n := range nodes {
		b, err := os.ReadFile(filepath.Join(n.confDir(), "api-token.sha256"))
		if err != nil || string(b) != pki.TokenHash(token)+"\n" {
			errs = append(errs, fmt.Errorf("%s: api-token.sha256 = %q, %v; want the API token's hash", n.Name, b, err))
		}
		_, err = os.Stat(filepath.Join(n.confDir(), "ca-key.pem"))
		if hasKey := err == nil; hasKey != n.server {
			errs = append(errs, fmt.Errorf("%s: has ca-key.pem %v, server %v", n.Name, hasKey, n.server))
		}
		// No file the node got, no log line and nothing in the agent's
		// command line or environment holds the token.
		files := []string{n.Log}
		for _, d := range []string{n.confDir(), filepath.Join(n.Dir, "lib")} {
			ents, err := os.ReadDir(d)
			if err != nil {
				errs = append(errs, err)
			}
			for _, e := range ents {
				files = append(files, filepath.Join(d, e.Name()))
			}
		}
		if pid, err := readPid(n.pidFile()); err == nil {
			files = append(files, fmt.Sprintf("/proc/%d/cmdline", pid), fmt.Sprintf("/proc/%d/environ", pid))
		} else {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
		}
		for _, f := range files {
			if b, err := os.ReadFile(f); err != nil {
				errs = append(errs, err)
			} else if bytes.Contains(b, []byte(token)) {
				errs = append(errs, fmt.Errorf("%s: %s contains the API token", n.Name, f))
			}
		}
		if sum, err := fileSHA256(n.agentBin); err != nil || sum != agentSum {
			errs = append(errs, fmt.Errorf("%s: %s has SHA-256 %s (%v), want %s", n.Name, n.agentBin, sum, err, agentSum))
		}
	}
	return errors.Join(errs...)
}

// serveAgent serves the test-built agent over HTTPS on the lab bridge's
// host address, as a release server would, and returns its URL and a CA
// bundle for curl (CURL_CA_BUNDLE).
func serveAgent(t *testing.T, host netip.Addr, dir string) (url, caBundle string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "flotilla-acc releases"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{host.AsSlice()},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caBundle = filepath.Join(dir, "releases-ca.pem")
	if err := os.WriteFile(caBundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(host, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/flotilla-agent" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, env.agentBin)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/flotilla-agent", caBundle
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyFile copies an executable.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// stopOneApplyNodes stops every node labboot started, by its process group
// (the agent and whatever it started there), and removes what the agent made
// inside its namespace, as the fleet test's cleanup does.
func stopOneApplyNodes(t *testing.T, nodes []*oneApplyNode) {
	for _, n := range nodes {
		pid, err := readPid(n.pidFile())
		if err != nil {
			continue // never booted
		}
		stopGroup(t, n.Name, pid)
		args := append([]string{"--net=" + n.NetNSPath(), "--", env.agentBin, "cleanup", "--purge", "--data-dir", n.dataDir()}, n.labArgs()...)
		if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
			t.Errorf("cleanup %s: %v\n%s", n.Name, err, out)
		}
		ents, _ := os.ReadDir("/run/netns")
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), n.NetNS+"p-") {
				t.Errorf("pod namespace %s left after cleanup", e.Name())
			}
		}
	}
}

// stopGroup sends SIGTERM to a process group's leader (the agent shuts down
// cleanly), then SIGKILL to the whole group once the leader is gone or after
// 30 s, and waits until no member is left. The processes are not the test's
// children (labboot exited), so it polls /proc instead of waiting.
func stopGroup(t *testing.T, name string, pgid int) {
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	waitGone(func() bool { return alive(pgid) }, 30*time.Second)
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if !waitGone(func() bool { return groupAlive(pgid) }, 10*time.Second) {
		t.Errorf("%s: processes of group %d still alive after SIGKILL", name, pgid)
	}
}

func waitGone(alive func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// groupAlive reports whether any live process is in process group pgid.
func groupAlive(pgid int) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid && alive(pid) {
			return true
		}
	}
	return false
}
