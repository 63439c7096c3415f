package acceptance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// The agents' fixed ports in the lab (agent.DefaultConfig).
const (
	trustRaftPort   = "7401"
	trustGossipPort = "7402"
	trustRPCPort    = "7403"
)

// TestAccFleetTrust attacks a fleet as someone holding one client VM would:
// that VM's node certificate (<data-dir>/tls/node.pem), the join token and
// the gossip key, and a network position on the fleet's LAN (the lab host's
// bridge address, which differs from every node's). Every attempt must be
// refused and leave the fleet's state as it was. It also removes a node and
// measures how fast its certificate stops working everywhere, keeps pods
// from a denied range, and brings back a server with a wiped disk.
func TestAccFleetTrust(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3, 2)
	victim := f.nodes[3] // the client VM the attacker holds
	other := f.nodes[4]  // the other client

	// One web pod on every node (the scheduler spreads first), so there are
	// pods of other nodes to attack and pods on both clients.
	ctx := context.Background()
	if _, err := f.nodes[0].client.CreateDeployment(ctx, demoDeployment("web", len(f.nodes))); err != nil {
		t.Fatal(err)
	}
	f.trustWaitPods(t, "web", len(f.nodes))

	kp := trustLoadKeypair(t, f, victim)
	t.Logf("attacker holds %s's certificate: %s, IPs %v", victim.Name, kp.Identity(), kp.Identity().IPs)

	t.Run("a client certificate writes nothing but its own node's records", func(t *testing.T) {
		f.trustClientWrites(t, kp, victim, other)
	})
	t.Run("the join token gets no certificate for a taken name or extra names", func(t *testing.T) {
		f.trustJoin(t, other)
	})
	t.Run("raft accepts only server certificates", func(t *testing.T) {
		f.trustRaftPort(t, kp)
	})
	t.Run("gossip: no member without the key; a claimed server role gets no vote", func(t *testing.T) {
		f.trustGossip(t)
	})
	t.Run("pods are kept from denied ranges such as the metadata service", func(t *testing.T) {
		f.trustDenyCIDR(t, other)
	})
	t.Run("a server with a wiped data dir joins the existing raft cluster", func(t *testing.T) {
		f.trustWipedServer(t)
	})
	// Last: the removed client's agent keeps running until cleanup.
	t.Run("a removed node's certificate is refused fleet-wide within seconds", func(t *testing.T) {
		f.trustRemoveNode(t, kp, victim)
	})
}

// --- 1. writes with a client's certificate -----------------------------------

type trustRPCAttack struct {
	name string
	cmd  state.Command
	// token, when set, is sent as the API token.
	token string
	code  int      // the status expected; 0 means 403
	want  []string // what the refusal must name
}

func (f *fleet) trustClientWrites(t *testing.T, kp *pki.Keypair, self, other *fleetNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader, _, err := f.trustRaftLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaderRPC := net.JoinHostPort(leader.IP.String(), trustRPCPort)
	hc := trustRPCHTTP(kp.ClientTLS(pki.RequireRole(pki.RoleServer)))

	// Control: the certificate is accepted; only what it asks for is refused.
	code, body, err := trustRPCGet(ctx, hc, leaderRPC, "/rpc/v1/ping")
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), leader.Name) {
		t.Fatalf("ping %s with %s's certificate: HTTP %d %s %v; want 200 naming %s", leaderRPC, self.Name, code, body, err, leader.Name)
	}

	pods, err := livePods(ctx, leader.client, "web")
	if err != nil {
		t.Fatal(err)
	}
	var theirs, own api.Pod // a pod on a server, and one on the attacker's node
	for _, p := range pods {
		switch {
		case p.Node == self.Name:
			own = p
		case theirs.Name == "" && p.Node != self.Name && p.Node != other.Name:
			theirs = p
		}
	}
	if theirs.Name == "" || own.Name == "" {
		t.Fatalf("want web pods on %s and on a server: %+v", self.Name, pods)
	}
	nodes, err := leader.client.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var selfRec api.Node
	for _, n := range nodes {
		if n.Name == self.Name {
			selfRec = n
		}
	}
	forged := api.PodStatus{Phase: api.PodFailed, IP: "10.244.250.250", Message: "forged by " + self.Name}
	evil := theirs
	evil.Name, evil.Node, evil.CreateIndex, evil.Status = "web-evil1", self.Name, 0, api.PodStatus{Phase: api.PodPending}
	web := demoDeployment("web", 0)
	capacity := func(n api.Node) api.Node { n.CPUMillis, n.MemoryMiB = 1000, 1024; return n }

	attacks := []trustRPCAttack{
		{name: "register the other client's name", want: []string{"register-node", other.Name},
			cmd: &state.RegisterNode{Node: capacity(api.Node{Name: other.Name, Address: other.IP.String()})}},
		{name: "register a server's name", want: []string{"register-node", theirs.Node},
			cmd: &state.RegisterNode{Node: capacity(api.Node{Name: theirs.Node, Address: f.trustNode(theirs.Node).IP.String(), Server: true})}},
		{name: "register itself as a server", want: []string{"register-node", "server"},
			cmd: &state.RegisterNode{Node: capacity(api.Node{Name: self.Name, Address: self.IP.String(), Server: true})}},
		{name: "register itself at another address", want: []string{"register-node", f.lab.HostIP.String()},
			cmd: &state.RegisterNode{Node: capacity(api.Node{Name: self.Name, Address: f.lab.HostIP.String()})}},
		{name: "report another node's pod as its own", want: []string{theirs.ID(), theirs.Node},
			cmd: &state.SetPodStatuses{Node: self.Name, Updates: []state.PodStatusUpdate{{ID: theirs.ID(), Status: forged}}}},
		{name: "report pod statuses for another node", want: []string{theirs.Node},
			cmd: &state.SetPodStatuses{Node: theirs.Node, Updates: []state.PodStatusUpdate{{ID: theirs.ID(), Status: forged}}}},
		{name: "report a pod status the pre-trust way", want: []string{"set-pod-status"},
			cmd: &state.SetPodStatus{ID: theirs.ID(), Status: forged}},
		{name: "remove another node's pod as its own", want: []string{theirs.ID(), theirs.Node},
			cmd: &state.RemovePods{Node: self.Name, IDs: []string{theirs.ID()}}},
		{name: "remove pods of another node", want: []string{theirs.Node},
			cmd: &state.RemovePods{Node: theirs.Node, IDs: []string{theirs.ID()}}},
		{name: "remove pods naming no node", want: []string{"node"},
			cmd: &state.RemovePods{IDs: []string{theirs.ID()}}},
		{name: "stop another node's pod", want: []string{"stop-pods"},
			cmd: &state.StopPods{IDs: []string{theirs.ID()}}},
		{name: "place a pod", want: []string{"put-pods"},
			cmd: &state.PutPods{Pods: []api.Pod{evil}}},
		{name: "create a deployment", want: []string{"create-deployment"},
			cmd: &state.CreateDeployment{Deployment: *demoDeployment("evil", 1)}},
		{name: "scale a deployment to zero", want: []string{"update-deployment"},
			cmd: &state.UpdateDeployment{Deployment: *web}},
		{name: "delete a deployment", want: []string{"delete-deployment"},
			cmd: &state.DeleteDeployment{Namespace: "default", Name: "web"}},
		{name: "remove a deployment", want: []string{"remove-deployment"},
			cmd: &state.RemoveDeployment{Namespace: "default", Name: "web"}},
		{name: "set the cluster config", want: []string{"set-cluster-config"},
			cmd: &state.SetClusterConfig{Config: state.ClusterConfig{PodCIDR: "10.250.0.0/16", NodeMaskBits: 24}}},
		{name: "remove a node", want: []string{"remove-node"},
			cmd: &state.RemoveNode{Name: other.Name, At: time.Now().UTC()}},
		{name: "mark a server down", want: []string{"set-node-status"},
			cmd: &state.SetNodeStatus{Name: theirs.Node, Status: api.NodeDown}},
		{name: "upsert its own record with a pod range", want: []string{"upsert-node"},
			cmd: &state.UpsertNode{Node: selfRec}},
		{name: "create a deployment with a guessed API token", token: "guessed", code: http.StatusUnauthorized, want: []string{"API token"},
			cmd: &state.CreateDeployment{Deployment: *demoDeployment("evil", 1)}},
	}

	before := f.trustSnapshot(t, leader)
	for _, a := range attacks {
		want := a.code
		if want == 0 {
			want = http.StatusForbidden
		}
		code, reply, raw, err := trustRPCWrite(ctx, hc, leaderRPC, a.cmd, a.token)
		switch {
		case err != nil:
			t.Errorf("%s (%s): %v", a.name, a.cmd.Type(), err)
		case code != want || reply.Error == nil:
			t.Errorf("%s (%s): HTTP %d %s; want %d with an error", a.name, a.cmd.Type(), code, raw, want)
		default:
			var missing []string
			for _, w := range a.want {
				if !strings.Contains(reply.Error.Message, w) {
					missing = append(missing, w)
				}
			}
			if len(missing) > 0 {
				t.Errorf("%s (%s): HTTP %d, but the refusal does not name %q: %s", a.name, a.cmd.Type(), code, missing, reply.Error.Message)
			} else {
				t.Logf("%s: HTTP %d %s: %s", a.name, code, reply.Error.Kind, reply.Error.Message)
			}
		}
	}

	// The agents' own RPC client reads the refusal as state.ErrForbidden.
	rc := rpc.NewClient(kp, 10*time.Second)
	defer rc.CloseIdleConnections()
	reply, err := rc.Write(ctx, leaderRPC, leader.Name, &state.RemovePods{Node: theirs.Node, IDs: []string{theirs.ID()}}, "")
	if err != nil || reply.Error == nil || !errors.Is(reply.Error.Err(), state.ErrForbidden) {
		t.Errorf("rpc.Client.Write of remove-pods for %s: reply %+v, err %v; want a forbidden error", theirs.Node, reply, err)
	}

	// Nothing changed, on the leader or on the attacked node.
	if after := f.trustSnapshot(t, leader); after != before {
		t.Errorf("the state changed under the refused writes:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if after := f.trustSnapshot(t, f.trustNode(theirs.Node)); after != before {
		t.Errorf("%s's state differs from the leader's before the attack:\nbefore:\n%s\n%s:\n%s", theirs.Node, before, theirs.Node, after)
	}
}

// trustRPCWrite posts cmd to the RPC write endpoint at addr as its own
// agents do, and reads the answer as a store.Reply.
func trustRPCWrite(ctx context.Context, hc *http.Client, addr string, cmd state.Command, token string) (int, store.Reply, string, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return 0, store.Reply{}, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/rpc/v1/write/"+cmd.Type().String(), bytes.NewReader(body))
	if err != nil {
		return 0, store.Reply{}, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, store.Reply{}, "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var reply store.Reply
	_ = json.Unmarshal(raw, &reply)
	return resp.StatusCode, reply, strings.TrimSpace(string(raw)), nil
}

func trustRPCGet(ctx context.Context, hc *http.Client, addr, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// trustRPCHTTP is an HTTPS client for the agents' RPC with cfg, one
// connection per request (a removed certificate is checked at each
// handshake), never through a proxy.
func trustRPCHTTP(cfg *tls.Config) *http.Client {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     cfg,
			TLSHandshakeTimeout: 5 * time.Second,
			DisableKeepAlives:   true,
		},
	}
}

// trustSnapshot renders what the refused writes would have changed, as the
// API on n shows it: nodes, deployments and pods (with their statuses),
// and the node pod ranges that the cluster config decides.
func (f *fleet) trustSnapshot(t *testing.T, n *fleetNode) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var lines []string
	nodes, err := n.client.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		lines = append(lines, fmt.Sprintf("node %s addr=%s server=%v pod_cidr=%s status=%s", nd.Name, nd.Address, nd.Server, nd.PodCIDR, nd.Status))
	}
	ds, err := n.client.ListDeployments(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		lines = append(lines, fmt.Sprintf("deployment %s/%s gen=%d replicas=%d deleting=%v", d.Namespace, d.Name, d.Generation, d.Replicas, d.Deleting))
	}
	pods, err := n.client.ListPods(ctx, "default", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		lines = append(lines, fmt.Sprintf("pod %s node=%s stop=%v phase=%s ready=%v ip=%s msg=%q", p.ID(), p.Node, p.Stop, p.Status.Phase, p.Status.Ready, p.Status.IP, p.Status.Message))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// --- 2. join -------------------------------------------------------------------

func (f *fleet) trustJoin(t *testing.T, other *fleetNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	server := f.nodes[0]
	addr := net.JoinHostPort(server.IP.String(), trustRPCPort)
	host := f.lab.HostIP.AsSlice()

	// With the real join client: taken names.
	for _, tc := range []struct{ name, why, want string }{
		{"node1", "a server's name", "server's name"},
		{other.Name, "a registered client's name, from another IP", "registered at " + other.IP.String()},
	} {
		cert, _, err := rpc.Join(ctx, addr, f.caPEM, f.joinToken, tc.name, nil, 10*time.Second)
		switch {
		case err == nil:
			t.Errorf("join as %s (%s) from %s got a certificate:\n%s", tc.name, tc.why, f.lab.HostIP, cert)
		case !strings.Contains(err.Error(), "HTTP 403") || !strings.Contains(err.Error(), tc.want):
			t.Errorf("join as %s (%s): %v; want HTTP 403 saying %q", tc.name, tc.why, err, tc.want)
		default:
			t.Logf("join as %s (%s): refused: %v", tc.name, tc.why, err)
		}
	}
	if _, _, err := rpc.Join(ctx, addr, f.caPEM, "not-the-token", "fresh-badtoken", nil, 10*time.Second); !errors.Is(err, rpc.ErrJoinTokenRejected) {
		t.Errorf("join with a wrong token: %v; want ErrJoinTokenRejected", err)
	}

	// Hand-made CSRs asking for more than the node's name and address.
	wild, _ := url.Parse("flotilla://server/fresh-uri")
	for _, tc := range []struct {
		why, node, cn string
		dns           []string
		ips           []net.IP
		uris          []*url.URL
		want          string
	}{
		{why: "DNS * and another node's IP", node: "fresh-sans", cn: "fresh-sans", dns: []string{"*"}, ips: []net.IP{host, other.IP.AsSlice()}, want: "DNS"},
		{why: "another node's IP", node: "fresh-ip", cn: "fresh-ip", ips: []net.IP{other.IP.AsSlice()}, want: other.IP.String()},
		{why: "a server identity URI", node: "fresh-uri", cn: "fresh-uri", uris: []*url.URL{wild}, want: "URI"},
		{why: "another common name than the node name", node: "fresh-cn", cn: "node1", want: "node1"},
	} {
		code, msg, err := f.trustRawJoin(ctx, addr, tc.node, tc.cn, tc.dns, tc.ips, tc.uris)
		switch {
		case err != nil:
			t.Errorf("join as %s asking for %s: %v", tc.node, tc.why, err)
		case code != http.StatusForbidden || !strings.Contains(msg, tc.want):
			t.Errorf("join as %s asking for %s: HTTP %d %s; want 403 naming %q", tc.node, tc.why, code, msg, tc.want)
		default:
			t.Logf("join asking for %s: HTTP %d: %s", tc.why, code, msg)
		}
	}

	// A fresh name from this host: a client certificate for that name and
	// this host's address, nothing more.
	certPEM, _, err := rpc.Join(ctx, addr, f.caPEM, f.joinToken, "fresh-host", net.IP(host), 10*time.Second)
	if err != nil {
		t.Fatalf("join as fresh-host from %s: %v", f.lab.HostIP, err)
	}
	cert := trustParseCert(t, certPEM)
	var uris []string
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	if cert.Subject.CommonName != "fresh-host" || !slices.Equal(uris, []string{"flotilla://client/fresh-host"}) ||
		len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(host) || len(cert.DNSNames) > 0 || len(cert.EmailAddresses) > 0 || cert.IsCA {
		t.Errorf("the join certificate is CN %q, URIs %v, IPs %v, DNS %v, e-mail %v, CA %v; want CN fresh-host, URI flotilla://client/fresh-host, IP %s only",
			cert.Subject.CommonName, uris, cert.IPAddresses, cert.DNSNames, cert.EmailAddresses, cert.IsCA, f.lab.HostIP)
	}
}

// trustRawJoin sends a join request with a CSR made by hand.
func (f *fleet) trustRawJoin(ctx context.Context, addr, node, cn string, dns []string, ips []net.IP, uris []*url.URL) (int, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return 0, "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips, URIs: uris,
	}, key)
	if err != nil {
		return 0, "", err
	}
	body, _ := json.Marshal(map[string]string{
		"node_name": node,
		"csr_pem":   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
	})
	cfg, err := pki.JoinTLS(f.caPEM)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/rpc/v1/join", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.joinToken)
	resp, err := trustRPCHTTP(cfg).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, strings.TrimSpace(string(raw)), nil
}

func trustParseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("no PEM block in %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// --- 3. raft --------------------------------------------------------------------

func (f *fleet) trustRaftPort(t *testing.T, kp *pki.Keypair) {
	noCert, err := pki.JoinTLS(f.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range f.nodes {
		if !n.server {
			continue
		}
		addr := net.JoinHostPort(n.IP.String(), trustRaftPort)
		for _, tc := range []struct {
			with string
			cfg  *tls.Config
		}{
			{"a client certificate", kp.ClientTLS(pki.RequireRole(pki.RoleServer))},
			{"no certificate", noCert},
		} {
			if accepted, why := trustRaftDial(addr, tc.cfg); accepted {
				t.Errorf("raft on %s accepted a connection with %s: it waited for a raft request", n.Name, tc.with)
			} else {
				t.Logf("raft on %s refused %s: %s", n.Name, tc.with, why)
			}
		}
	}
	// Control: the check tells an accepted connection from a refused one.
	ca, err := pki.LoadCA(f.caPEM, f.caKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServer("trust-control", []net.IP{f.lab.HostIP.AsSlice()}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	skp, err := pki.NewKeypair(f.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(f.nodes[0].IP.String(), trustRaftPort)
	if accepted, why := trustRaftDial(addr, skp.ClientTLS(pki.RequireRole(pki.RoleServer))); !accepted {
		t.Errorf("control: raft on %s refused a server certificate too (%s); the check above proves nothing", f.nodes[0].Name, why)
	}
}

// trustRaftDial opens a TLS connection to a raft port and reports whether
// the server accepted it: it then waits for a raft request, so a read
// times out. With TLS 1.3 a refused client certificate shows as an alert
// at the first read rather than at the handshake.
func trustRaftDial(addr string, cfg *tls.Config) (bool, string) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false, "at the handshake: " + err.Error()
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true, "waiting for a request"
	}
	return false, fmt.Sprintf("after the handshake, before any raft exchange: %v", err)
}

// --- 4. gossip -----------------------------------------------------------------

func (f *fleet) trustGossip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	server := f.nodes[1]
	join := net.JoinHostPort(server.IP.String(), trustGossipPort)
	otherKey, err := pki.GossipKey()
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, _ := pki.DecodeGossipKey(otherKey)
	rightKey, err := pki.DecodeGossipKey(f.gossipKey)
	if err != nil {
		t.Fatal(err)
	}

	// Outsiders: another key, and no key.
	outsiders := []string{"gossip-wrongkey", "gossip-nokey"}
	for i, key := range [][]byte{wrongKey, nil} {
		m := f.trustMember(t, outsiders[i], key, membership.Meta{Role: membership.RoleClient})
		if n, err := m.Join(join); err == nil && n > 0 {
			t.Logf("%s: memberlist says it contacted %d node(s); checking it is not listed", outsiders[i], n)
		} else {
			t.Logf("%s could not join: %v", outsiders[i], err)
		}
	}

	// An insider with the gossip key claiming to be a server, its raft
	// address served with a client certificate obtained by joining.
	const name = "mallory"
	addr := net.JoinHostPort(server.IP.String(), trustRPCPort)
	certPEM, keyPEM, err := rpc.Join(ctx, addr, f.caPEM, f.joinToken, name, nil, 10*time.Second)
	if err != nil {
		t.Fatalf("join as %s: %v", name, err)
	}
	mkp, err := pki.NewKeypair(f.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	raftAddr, handshakes := trustServeTLS(t, f.lab.HostIP.String(), mkp)
	mal := f.trustMember(t, name, rightKey, membership.Meta{Role: membership.RoleServer, RaftAddr: raftAddr, RPCAddr: raftAddr, APIAddr: raftAddr})
	if _, err := mal.Join(join); err != nil {
		t.Fatalf("%s with the gossip key could not join: %v", name, err)
	}
	t.Cleanup(func() { _ = mal.Leave(2 * time.Second) })

	leader, _, err := f.trustRaftLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, name+" listed as an alive server member", func(ctx context.Context) error {
		ms, err := leader.client.ListMembers(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name == name && m.Role == api.RoleServer && m.Status == "alive" {
				return nil
			}
		}
		return fmt.Errorf("%s's members: %+v", leader.Name, ms)
	})

	// For 10 s: the outsiders are nobody's member, mallory nobody's peer.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !t.Failed() {
		for _, n := range f.nodes {
			ms, err := n.client.ListMembers(ctx)
			if err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
			for _, m := range ms {
				if slices.Contains(outsiders, m.Name) {
					t.Errorf("%s lists %s, which has no or the wrong gossip key: %+v", n.Name, m.Name, m)
				}
			}
			if !n.server {
				continue
			}
			peers, err := n.client.RaftPeers(ctx)
			if err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
			for _, p := range peers {
				if p.ID == name {
					t.Errorf("%s's raft configuration has %s, which holds a client certificate: %+v", n.Name, name, peers)
				}
			}
			nodes, err := n.client.ListNodes(ctx)
			if err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
			for _, nd := range nodes {
				if nd.Name == name {
					t.Errorf("%s lists %s as a node: %+v", n.Name, name, nd)
				}
			}
		}
		time.Sleep(500 * time.Millisecond) // a watch over time, not a wait for a condition
	}
	t.Logf("the leader verified %s's raft address %d time(s) and refused it (it holds a client certificate)", name, handshakes.Load())
	if err := mal.Leave(2 * time.Second); err != nil {
		t.Logf("%s leave: %v", name, err)
	}
}

// trustMember starts a gossip member on the lab host's address; it is
// shut down when the test ends.
func (f *fleet) trustMember(t *testing.T, name string, key []byte, meta membership.Meta) *membership.Membership {
	t.Helper()
	cfg := membership.DefaultConfig()
	cfg.NodeName, cfg.BindAddr, cfg.BindPort, cfg.AdvertiseAddr = name, f.lab.HostIP.String(), 0, f.lab.HostIP.String()
	cfg.SecretKey, cfg.Meta = key, meta
	m, err := membership.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// trustServeTLS serves TLS with kp on host until the test ends, counting
// the handshakes peers attempt (the leader verifying a member's raft
// address); it returns the address.
func trustServeTLS(t *testing.T, host string, kp *pki.Keypair) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	cfg := kp.ServerTLS(tls.VerifyClientCertIfGiven, nil)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
				_ = tc.Handshake()
				_, _ = tc.Read(make([]byte, 1))
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String(), &n
}

// --- 6. denied ranges ------------------------------------------------------------

func (f *fleet) trustDenyCIDR(t *testing.T, denyNode *fleetNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// A stand-in for the metadata service, on the lab host's bridge
	// address: every pod can reach it through its node unless denied.
	ln, err := net.Listen("tcp", net.JoinHostPort(f.lab.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "metadata-standin: credentials")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	standin := "http://" + ln.Addr().String() + "/latest/meta-data/"

	denyNode.Stop()
	f.start(denyNode, "--pod-deny-cidr", f.lab.HostIP.String()+"/32")
	eventually(t, 60*time.Second, denyNode.Name+" back with "+f.lab.HostIP.String()+" denied", func(ctx context.Context) error {
		if _, err := denyNode.client.Status(ctx); err != nil {
			return err
		}
		if rules := trustRules(ctx, denyNode); !strings.Contains(rules, "-d "+f.lab.HostIP.String()+"/32") {
			return fmt.Errorf("no rule for %s yet:\n%s", f.lab.HostIP, rules)
		}
		return nil
	})
	f.waitNodes(len(f.nodes))
	f.trustWaitPods(t, "web", len(f.nodes))

	pods, err := livePods(ctx, f.nodes[0].client, "web")
	if err != nil {
		t.Fatal(err)
	}
	var denied, allowed *api.Pod
	for i := range pods {
		p := &pods[i]
		switch {
		case p.Node == denyNode.Name:
			denied = p
		case allowed == nil:
			allowed = p
		}
	}
	if denied == nil || allowed == nil {
		t.Fatalf("want web pods on %s and on another node: %+v", denyNode.Name, pods)
	}

	for _, n := range []*fleetNode{denyNode, f.trustNode(allowed.Node)} {
		rules := trustRules(ctx, n)
		hasMeta := strings.Contains(rules, "-d 169.254.169.254/32") && strings.Contains(rules, "REJECT")
		hasHost := strings.Contains(rules, "-d "+f.lab.HostIP.String()+"/32")
		if !hasMeta || hasHost != (n == denyNode) {
			t.Errorf("%s's filter rules: metadata service denied %v, %s denied %v; want true, %v:\n%s", n.Name, hasMeta, f.lab.HostIP, hasHost, n == denyNode, rules)
		}
	}

	// Control: the denied pod's network works; only the denied range is refused.
	if out, err := trustPodCurl(ctx, f, denied, "http://"+allowed.Status.IP+":8080/"); err != nil || !strings.Contains(out, "version=v1") {
		t.Fatalf("pod %s on %s cannot reach pod %s at %s: %v %s", denied.Name, denyNode.Name, allowed.Name, allowed.Status.IP, err, out)
	}
	start := time.Now()
	out, err := trustPodCurl(ctx, f, denied, standin, "-v")
	took := time.Since(start)
	var exit *exec.ExitError
	switch {
	case err == nil:
		t.Errorf("pod %s on %s (denied %s) reached the stand-in: %s", denied.Name, denyNode.Name, f.lab.HostIP, out)
	case !errors.As(err, &exit) || exit.ExitCode() != 7 || !strings.Contains(out, "Connection refused"):
		t.Errorf("pod %s on %s: curl %v after %s: %s; want connection refused (exit 7)", denied.Name, denyNode.Name, err, took, out)
	case took > time.Second:
		t.Errorf("pod %s on %s was refused only after %s; want within a second", denied.Name, denyNode.Name, took)
	default:
		t.Logf("pod %s on %s: refused in %s: %s", denied.Name, denyNode.Name, took.Round(time.Millisecond), trustGrep(out, "refused"))
	}

	out, err = trustPodCurl(ctx, f, allowed, standin)
	if err != nil || !strings.Contains(out, "metadata-standin") {
		t.Errorf("pod %s on %s (default deny list) did not reach the stand-in at %s: %v %s", allowed.Name, allowed.Node, standin, err, out)
	} else {
		t.Logf("pod %s on %s reached the stand-in: %s", allowed.Name, allowed.Node, strings.TrimSpace(out))
	}
}

// trustRules is the filter table of a node's namespace as iptables -S
// prints it, or the error.
func trustRules(ctx context.Context, n *fleetNode) string {
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+n.NetNSPath(), "--", "iptables", "-S").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("iptables -S on %s: %v\n%s", n.Name, err, out)
	}
	return string(out)
}

// trustPodCurl runs curl inside a pod's network namespace.
func trustPodCurl(ctx context.Context, f *fleet, p *api.Pod, url string, flags ...string) (string, error) {
	nsPath := "/run/netns/" + f.trustNode(p.Node).NetNS + "p-" + p.Namespace + "_" + p.Name
	args := append([]string{"--net=" + nsPath, "--", "curl", "-sS", "-m", "3"}, flags...)
	out, err := exec.CommandContext(ctx, "nsenter", append(args, url)...).CombinedOutput()
	return string(out), err
}

// --- 7. a wiped server ---------------------------------------------------------

func (f *fleet) trustWipedServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	leader, peersBefore, err := f.trustRaftLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wiped *fleetNode
	for _, n := range f.nodes {
		if n.server && n != leader {
			wiped = n
			break
		}
	}
	want, err := leader.client.ListDeployments(ctx, "")
	if err != nil {
		t.Fatal(err)
	}

	oldCert, err := os.ReadFile(filepath.Join(wiped.dataDir, "tls", "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	wiped.Stop()
	// As a replaced disk: nothing the agent made is left.
	args := append([]string{"--net=" + wiped.NetNSPath(), "--", env.agentBin, "cleanup", "--purge", "--data-dir", wiped.dataDir}, wiped.agentArgs()...)
	if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
		t.Fatalf("cleanup %s: %v\n%s", wiped.Name, err, out)
	}
	if err := os.RemoveAll(wiped.dataDir); err != nil {
		t.Fatal(err)
	}
	// Written while the server is down: it must catch up on them.
	if _, err := leader.client.CreateDeployment(ctx, demoDeployment("while-wiped", 0)); err != nil {
		t.Fatal(err)
	}
	want = append(want, *demoDeployment("while-wiped", 0))
	logStart := trustLogSize(wiped)
	f.start(wiped)

	eventually(t, 60*time.Second, wiped.Name+" back in the raft cluster with every deployment", func(ctx context.Context) error {
		st, err := wiped.client.Status(ctx)
		if err != nil {
			return err
		}
		if st.Leader == "" {
			return fmt.Errorf("%s reports no leader", wiped.Name)
		}
		got, err := wiped.client.ListDeployments(ctx, "")
		if err != nil {
			return err
		}
		if names(got) != names(want) {
			return fmt.Errorf("%s has deployments %s, want %s", wiped.Name, names(got), names(want))
		}
		return nil
	})
	f.waitNodes(len(f.nodes))
	if newCert, err := os.ReadFile(filepath.Join(wiped.dataDir, "tls", "node.pem")); err != nil || bytes.Equal(newCert, oldCert) {
		t.Errorf("%s did not issue itself a new certificate after the wipe (%v): was the data dir wiped?", wiped.Name, err)
	}

	if l := trustLogSince(wiped, logStart); strings.Contains(l, "bootstrapped a new raft cluster") {
		t.Errorf("%s bootstrapped a raft cluster of its own after its data dir was wiped:\n%s", wiped.Name, trustGrep(l, "raft"))
	} else if strings.Contains(l, "a raft cluster exists already") {
		t.Logf("%s found the existing cluster: %s", wiped.Name, strings.TrimSpace(trustGrep(l, "a raft cluster exists already")))
	}

	// One cluster: every server names the same leader, and it has the three
	// servers as voters.
	nowLeader, peers, err := f.trustRaftLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var voters []string
	for _, p := range peers {
		if p.Voter {
			voters = append(voters, p.ID)
		}
	}
	sort.Strings(voters)
	if got := strings.Join(voters, ","); got != "node1,node2,node3" {
		t.Errorf("voters after the wiped server came back: %s; want node1,node2,node3 (%+v)", got, peers)
	}
	for _, n := range f.nodes {
		if !n.server {
			continue
		}
		st, err := n.client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The status names the leader by its raft address.
		if st.Leader != nowLeader.Name && !strings.HasPrefix(st.Leader, nowLeader.IP.String()+":") {
			t.Errorf("%s reports leader %q, but the raft peers say %s (%s): two clusters?", n.Name, st.Leader, nowLeader.Name, nowLeader.IP)
		}
	}
	t.Logf("leader before %s (peers %v), after %s (peers %v)", leader.Name, trustPeerList(peersBefore), nowLeader.Name, trustPeerList(peers))
}

func trustLogSize(n *fleetNode) int64 {
	fi, err := os.Stat(n.Log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func trustLogSince(n *fleetNode, off int64) string {
	b, _ := os.ReadFile(n.Log)
	if off > int64(len(b)) {
		off = 0
	}
	return string(b[off:])
}

func trustGrep(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return tail(strings.Join(out, "\n"), 20)
}

func trustPeerList(peers []api.RaftPeer) string {
	var out []string
	for _, p := range peers {
		s := p.ID
		if p.Leader {
			s += "*"
		}
		if !p.Voter {
			s += "(nonvoter)"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// --- 5. removal ----------------------------------------------------------------

func (f *fleet) trustRemoveNode(t *testing.T, kp *pki.Keypair, removed *fleetNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	leader, _, err := f.trustRaftLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hc := trustRPCHTTP(kp.ClientTLS(pki.RequireRole(pki.RoleServer)))
	var servers, others []*fleetNode
	for _, n := range f.nodes {
		if n.server {
			servers = append(servers, n)
		}
		if n != removed {
			others = append(others, n)
		}
	}
	for _, s := range servers {
		addr := net.JoinHostPort(s.IP.String(), trustRPCPort)
		if code, body, err := trustRPCGet(ctx, hc, addr, "/rpc/v1/ping"); err != nil || code != http.StatusOK {
			t.Fatalf("before the removal, %s refuses %s's certificate: HTTP %d %s %v", s.Name, removed.Name, code, body, err)
		}
	}

	start := time.Now()
	if err := leader.client.RemoveNode(ctx, removed.Name); err != nil {
		t.Fatalf("DELETE /v1/nodes/%s on %s: %v", removed.Name, leader.Name, err)
	}
	acked := time.Since(start)

	conds := []struct {
		what string
		cond func(context.Context) error
	}{
		{"(a) its certificate is refused (403) by every server's RPC", func(ctx context.Context) error {
			for _, s := range servers {
				addr := net.JoinHostPort(s.IP.String(), trustRPCPort)
				code, body, err := trustRPCGet(ctx, hc, addr, "/rpc/v1/ping")
				if err != nil {
					return fmt.Errorf("%s: %w", s.Name, err)
				}
				if code != http.StatusForbidden || !strings.Contains(string(body), "revoked") {
					return fmt.Errorf("%s answers HTTP %d %s", s.Name, code, bytes.TrimSpace(body))
				}
			}
			return nil
		}},
		{"(b) it is gone from /v1/nodes and /v1/members of every other agent", func(ctx context.Context) error {
			for _, n := range others {
				nodes, err := n.client.ListNodes(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", n.Name, err)
				}
				for _, nd := range nodes {
					if nd.Name == removed.Name {
						return fmt.Errorf("%s lists node %+v", n.Name, nd)
					}
				}
				ms, err := n.client.ListMembers(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", n.Name, err)
				}
				for _, m := range ms {
					if m.Name == removed.Name {
						return fmt.Errorf("%s lists member %+v", n.Name, m)
					}
				}
			}
			return nil
		}},
		{"(c) it is not in the leader's /v1/raft/peers", func(ctx context.Context) error {
			l, peers, err := f.trustRaftLeader(ctx)
			if err != nil {
				return err
			}
			for _, p := range peers {
				if p.ID == removed.Name {
					return fmt.Errorf("%s's raft peers: %s", l.Name, trustPeerList(peers))
				}
			}
			return nil
		}},
	}
	var wg sync.WaitGroup
	took := make([]time.Duration, len(conds))
	errs := make([]error, len(conds))
	for i, c := range conds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took[i], errs[i] = trustWaitFor(ctx, start, 10*time.Second, c.cond)
		}()
	}
	wg.Wait()
	t.Logf("DELETE /v1/nodes/%s answered after %s", removed.Name, acked.Round(time.Millisecond))
	for i, c := range conds {
		if errs[i] != nil {
			t.Errorf("%s: not within 10s: %v", c.what, errs[i])
		} else {
			t.Logf("%s after %s", c.what, took[i].Round(time.Millisecond))
		}
	}

	// Renewing with the revoked certificate fails too.
	rc := rpc.NewClient(kp, 10*time.Second)
	defer rc.CloseIdleConnections()
	if _, _, err := rc.Renew(ctx, net.JoinHostPort(servers[0].IP.String(), trustRPCPort), kp); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("renewing %s's revoked certificate: %v; want a refusal naming the revocation", removed.Name, err)
	}

	// The removed agent runs on; for a few seconds the others keep a
	// leader, take writes, and do not take the node back.
	watchUntil := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(watchUntil) || i == 0; i++ {
		for _, n := range others {
			if !n.Running() {
				t.Fatalf("%s's agent exited after %s was removed:\n%s", n.Name, removed.Name, n.LogTail(40))
			}
		}
		if err := conds[1].cond(ctx); err != nil {
			t.Fatalf("%s came back: %v", removed.Name, err)
		}
		time.Sleep(300 * time.Millisecond) // a watch over time, not a wait for a condition
	}
	for _, n := range others {
		st, err := n.client.Status(ctx)
		if err != nil || st.Leader == "" {
			t.Errorf("%s after the removal: status %+v, %v", n.Name, st, err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := others[len(others)-1].client.CreateDeployment(wctx, demoDeployment("after-removal", 0)); err != nil {
		t.Errorf("a write after the removal: %v", err)
	}
	t.Logf("the removed agent %s is still running: %v", removed.Name, removed.Running())

	// The removed machine still holds the join token: its name must not
	// come back through it, from any address.
	_, _, err = rpc.Join(ctx, net.JoinHostPort(servers[0].IP.String(), trustRPCPort), f.caPEM, f.joinToken, removed.Name, nil, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "a removed name cannot join again") {
		t.Errorf("a join as the removed %s from %s: %v; want it refused", removed.Name, f.lab.HostIP, err)
	} else {
		t.Logf("a join as the removed %s was refused: %v", removed.Name, err)
	}
}

// trustWaitFor polls cond until it holds and returns how long after start
// that was, or the last error once timeout has passed since start.
func trustWaitFor(ctx context.Context, start time.Time, timeout time.Duration, cond func(context.Context) error) (time.Duration, error) {
	ctx, cancel := context.WithDeadline(ctx, start.Add(timeout))
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		err := cond(cctx)
		ccancel()
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// --- helpers -------------------------------------------------------------------

// trustLoadKeypair reads a node's certificate and key as its agent saved
// them: what an attacker on that VM has.
func trustLoadKeypair(t *testing.T, f *fleet, n *fleetNode) *pki.Keypair {
	t.Helper()
	dir := filepath.Join(n.dataDir, "tls")
	certPEM, err := os.ReadFile(filepath.Join(dir, "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "node-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.NewKeypair(f.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if id := kp.Identity(); id.Name != n.Name || id.Role != pki.RoleClient {
		t.Fatalf("%s's certificate is %s", n.Name, id)
	}
	return kp
}

// trustRaftLeader finds the leader as GET /v1/raft/peers on the servers
// reports it, with that list.
func (f *fleet) trustRaftLeader(ctx context.Context) (*fleetNode, []api.RaftPeer, error) {
	var errs []error
	for _, n := range f.nodes {
		if !n.server || !n.Running() {
			continue
		}
		peers, err := n.client.RaftPeers(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
			continue
		}
		for _, p := range peers {
			if p.Leader {
				if l := f.trustNode(p.ID); l != nil {
					return l, peers, nil
				}
			}
		}
		errs = append(errs, fmt.Errorf("%s: no leader among %s", n.Name, trustPeerList(peers)))
	}
	return nil, nil, fmt.Errorf("no server reports a raft leader: %w", errors.Join(errs...))
}

func (f *fleet) trustNode(name string) *fleetNode {
	for _, n := range f.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// trustWaitPods waits until a deployment has n ready pods, one on each of n
// different nodes.
func (f *fleet) trustWaitPods(t *testing.T, deployment string, n int) {
	t.Helper()
	eventually(t, 90*time.Second, fmt.Sprintf("%s: %d ready pods on %d nodes", deployment, n, n), func(ctx context.Context) error {
		pods, err := livePods(ctx, f.nodes[0].client, deployment)
		if err != nil {
			return err
		}
		on := map[string]bool{}
		for _, p := range pods {
			if p.Status.Phase == api.PodRunning && p.Status.Ready {
				on[p.Node] = true
			}
		}
		if len(pods) != n || len(on) != n {
			var s []string
			for _, p := range pods {
				s = append(s, fmt.Sprintf("%s@%s:%s", p.Name, p.Node, p.Status.Phase))
			}
			return fmt.Errorf("pods %v", s)
		}
		return nil
	})
}
