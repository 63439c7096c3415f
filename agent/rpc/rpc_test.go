package rpc

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
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

const (
	joinToken = "join-s3cret"
	apiToken  = "api-s3cret"
)

var loopback = net.IPv4(127, 0, 0, 1).To4()

// testCA is the cluster CA of a test and the certificates it hands out.
type testCA struct {
	ca    *pki.CA
	caPEM []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("flotilla-test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca, caPEM: certPEM}
}

// server returns a server certificate for name at 127.0.0.1, where test
// servers listen.
func (c *testCA) server(t *testing.T, name string) *pki.Keypair {
	t.Helper()
	certPEM, keyPEM, err := c.ca.IssueServer(name, []net.IP{loopback}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.keypair(t, certPEM, keyPEM)
}

// client returns a client certificate for name at ip, as a join signs it.
func (c *testCA) client(t *testing.T, name string, ip net.IP) *pki.Keypair {
	t.Helper()
	csrPEM, keyPEM, err := pki.NewCSR(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.ca.SignJoin(csrPEM, name, ip, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.keypair(t, certPEM, keyPEM)
}

func (c *testCA) keypair(t *testing.T, certPEM, keyPEM []byte) *pki.Keypair {
	t.Helper()
	kp, err := pki.NewKeypair(c.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// fakeBackend is the leader's store: node records, pod placements and
// revocations to authorize against, and a record of every write it was
// asked to apply.
type fakeBackend struct {
	mu       sync.Mutex
	nodes    map[string]api.Node
	pods     map[string]string // pod ID → node
	revoked  map[string]bool   // node names whose certificates are revoked
	servers  []store.Server
	hasState bool
	leader   string
	// answer, when set, is what ApplyLocal returns.
	answer  *store.Reply
	applied []state.Command
	removed map[string]time.Time
}

var _ Backend = (*fakeBackend)(nil)

// newFakeBackend holds server s1 (127.0.0.1), client c1 (10.0.0.11) and
// client c2 (10.0.0.12), one pod on each client.
func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		nodes: map[string]api.Node{
			"s1": {Name: "s1", Address: "127.0.0.1", Server: true},
			"c1": {Name: "c1", Address: "10.0.0.11"},
			"c2": {Name: "c2", Address: "10.0.0.12"},
		},
		pods:     map[string]string{"default/web-c1": "c1", "default/web-c2": "c2"},
		revoked:  map[string]bool{},
		servers:  []store.Server{{ID: "s1", Address: "127.0.0.1:7300", Voter: true}},
		hasState: true,
		leader:   "s1",
	}
}

func (b *fakeBackend) Node(name string) (api.Node, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nodes[name]
	return n, ok
}

func (b *fakeBackend) PodNodes(ids []string) map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]string{}
	for _, id := range ids {
		if n, ok := b.pods[id]; ok {
			out[id] = n
		}
	}
	return out
}

func (b *fakeBackend) ApplyLocal(_ context.Context, cmd state.Command) store.Reply {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applied = append(b.applied, cmd)
	if b.answer != nil {
		return *b.answer
	}
	return store.Reply{Index: uint64(len(b.applied))}
}

func (b *fakeBackend) Revoked(id pki.Identity) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.revoked[id.Name]
}

func (b *fakeBackend) NodeRemoved(name string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.removed[name]
	return at, ok
}

func (b *fakeBackend) Servers() ([]store.Server, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.servers), nil
}

func (b *fakeBackend) HasState() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hasState
}

func (b *fakeBackend) PodsChanged(string) uint64 { return 0 }
func (b *fakeBackend) ServicesChanged() uint64   { return 0 }

func (b *fakeBackend) LeaderID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leader
}

func (b *fakeBackend) appliedWrites() []state.Command {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.applied)
}

// startServer serves RPC on 127.0.0.1 with kp's certificate and the
// test's CA, join token and API token; change adjusts the config.
func startServer(t *testing.T, c *testCA, kp *pki.Keypair, b Backend, change func(*ServerConfig)) string {
	t.Helper()
	hash, err := pki.ParseTokenHash(pki.TokenHash(apiToken))
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		TLS:          kp.ServerTLS(tls.VerifyClientCertIfGiven, nil),
		Backend:      b,
		CA:           c.ca,
		JoinToken:    joinToken,
		APITokenHash: &hash,
		NodeName:     kp.Identity().Name,
		Logger:       slog.New(slog.DiscardHandler),
	}
	if change != nil {
		change(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, srv)
}

// serve serves srv on 127.0.0.1 until the test ends and returns its
// address.
func serve(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// httpClient sends raw requests with cfg: what a misbehaving agent could
// send, beyond what Client lets one.
func httpClient(t *testing.T, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// anonymous is a client that presents no certificate but checks the server's.
func (c *testCA) anonymous(t *testing.T) *http.Client {
	t.Helper()
	cfg, err := pki.JoinTLS(c.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return httpClient(t, cfg)
}

func (c *testCA) rpcClient(t *testing.T, kp *pki.Keypair) *Client {
	t.Helper()
	cl := NewClient(kp, 5*time.Second)
	t.Cleanup(cl.CloseIdleConnections)
	return cl
}

// do sends a request and returns the status and body.
func do(t *testing.T, hc *http.Client, method, url string, body io.Reader, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	testDeployment = api.Deployment{Namespace: "default", Name: "web", Replicas: 1,
		Containers: []api.Container{{Name: "app", Image: "demo:v1"}}}
	testPod = api.Pod{Namespace: "default", Name: "web-new", Deployment: "web", Node: "c1",
		Containers: []api.Container{{Name: "app", Image: "demo:v1"}}}
	testConfig = state.ClusterConfig{PodCIDR: "10.244.0.0/16", NodeMaskBits: 24, ServiceCIDR: "10.96.0.0/12"}
)

func statuses(node string, ids ...string) *state.SetPodStatuses {
	c := &state.SetPodStatuses{Node: node}
	for _, id := range ids {
		c.Updates = append(c.Updates, state.PodStatusUpdate{ID: id, Status: api.PodStatus{Phase: api.PodRunning}})
	}
	return c
}

// TestWrite sends every kind of write an agent could send and checks the
// status, the error's kind and message, and whether the backend was asked
// to apply it: nothing refused may reach it.
func TestWrite(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	b.revoked["c9"] = true
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)

	clientCert := httpClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")).ClientTLS(nil))
	serverCert := httpClient(t, ca.server(t, "s2").ClientTLS(nil))
	revokedCert := httpClient(t, ca.client(t, "c9", net.ParseIP("10.0.0.19")).ClientTLS(nil))
	noCert := ca.anonymous(t)

	const (
		onlyAPI     = "it comes only from the API with the API token, or from a server"
		onlyServers = "only servers make it"
		devOnly     = "it is written by a single dev agent only, never sent between agents"
	)
	type call struct {
		name   string
		hc     *http.Client
		token  string
		typ    string // path element; the command's type when empty
		cmd    state.Command
		body   string // sent instead of cmd when set
		answer *store.Reply
		// wantCode is the HTTP status; wantKind and wantMsg describe the
		// error (none for 200). Refusals must not reach ApplyLocal.
		wantCode int
		wantKind string
		wantMsg  string
	}
	tests := []call{
		// What a client certificate may not write.
		{name: "client registers another node", hc: clientCert,
			cmd:      &state.RegisterNode{Node: api.Node{Name: "c2", Address: "10.0.0.12"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: `it names node "c2"; an agent registers only itself`},
		{name: "client registers as a server", hc: clientCert,
			cmd:      &state.RegisterNode{Node: api.Node{Name: "c1", Address: "10.0.0.11", Server: true}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "it registers as a server, but the certificate is a client's"},
		{name: "client registers at another address", hc: clientCert,
			cmd:      &state.RegisterNode{Node: api.Node{Name: "c1", Address: "10.0.0.99"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: `address "10.0.0.99" is not the address the certificate was issued for`},
		{name: "client reports on another node's pods", hc: clientCert,
			cmd:      statuses("c2", "default/web-c2"),
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: `may not write about the pods of node "c2"`},
		{name: "client reports on another node's pod as its own", hc: clientCert,
			cmd:      statuses("c1", "default/web-c2"),
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: `pod default/web-c2: it is placed on node "c2"`},
		{name: "client removes another node's pods", hc: clientCert,
			cmd:      &state.RemovePods{Node: "c2", IDs: []string{"default/web-c2"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: `may not write about the pods of node "c2"`},
		{name: "client removes another node's pod as its own", hc: clientCert,
			cmd:      &state.RemovePods{Node: "c1", IDs: []string{"default/web-c2"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: `placed on node "c2"`},
		{name: "client creates a deployment", hc: clientCert,
			cmd:      &state.CreateDeployment{Deployment: testDeployment},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not create-deployment: " + onlyAPI},
		{name: "client updates a deployment", hc: clientCert,
			cmd:      &state.UpdateDeployment{Deployment: testDeployment},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not update-deployment: " + onlyAPI},
		{name: "client deletes a deployment", hc: clientCert,
			cmd:      &state.DeleteDeployment{Namespace: "default", Name: "web"},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not delete-deployment: " + onlyAPI},
		{name: "client removes a deployment", hc: clientCert,
			cmd:      &state.RemoveDeployment{Namespace: "default", Name: "web"},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not remove-deployment: " + onlyServers},
		{name: "client sets the cluster config", hc: clientCert,
			cmd:      &state.SetClusterConfig{Config: testConfig},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not set-cluster-config: " + onlyServers},
		{name: "client sets a node status", hc: clientCert,
			cmd:      &state.SetNodeStatus{Name: "c2", Status: api.NodeDown},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not set-node-status: " + onlyServers},
		{name: "client removes a node", hc: clientCert,
			cmd:      &state.RemoveNode{Name: "c2", At: time.Now()},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not remove-node: " + onlyAPI},
		{name: "client puts pods", hc: clientCert,
			cmd:      &state.PutPods{Pods: []api.Pod{testPod}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not put-pods: " + onlyServers},
		{name: "client stops pods", hc: clientCert,
			cmd:      &state.StopPods{IDs: []string{"default/web-c2"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not stop-pods: " + onlyServers},
		{name: "client upserts a node", hc: clientCert,
			cmd:      &state.UpsertNode{Node: api.Node{Name: "c1", Address: "10.0.0.11", PodCIDR: "10.244.9.0/24"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not upsert-node: " + devOnly},
		{name: "client sets one pod status (old format)", hc: clientCert,
			cmd:      &state.SetPodStatus{ID: "default/web-c2", Status: api.PodStatus{Phase: api.PodFailed}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not set-pod-status: " + devOnly},
		{name: "the API token does not let a client set the cluster config", hc: clientCert, token: apiToken,
			cmd:      &state.SetClusterConfig{Config: testConfig},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "with the API token may not set-cluster-config"},
		{name: "server upserts a node", hc: serverCert,
			cmd:      &state.UpsertNode{Node: api.Node{Name: "s2", Address: "127.0.0.1"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "may not upsert-node: " + devOnly},

		// Who is asking.
		{name: "wrong API token", hc: clientCert, token: "not-the-token",
			cmd:      &state.CreateDeployment{Deployment: testDeployment},
			wantCode: 401, wantKind: store.KindForbidden, wantMsg: "the API token the request carries is wrong"},
		{name: "no client certificate", hc: noCert,
			cmd:      &state.RegisterNode{Node: api.Node{Name: "c1", Address: "10.0.0.11"}},
			wantCode: 401, wantKind: store.KindForbidden, wantMsg: "a client certificate signed by the cluster CA is required"},
		{name: "no client certificate, with the API token", hc: noCert, token: apiToken,
			cmd:      &state.CreateDeployment{Deployment: testDeployment},
			wantCode: 401, wantKind: store.KindForbidden, wantMsg: "a client certificate signed by the cluster CA is required"},
		{name: "revoked certificate registers itself", hc: revokedCert,
			cmd:      &state.RegisterNode{Node: api.Node{Name: "c9", Address: "10.0.0.19"}},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "the certificate of client/c9 was revoked"},
		{name: "revoked certificate with the API token", hc: revokedCert, token: apiToken,
			cmd:      &state.CreateDeployment{Deployment: testDeployment},
			wantCode: 403, wantKind: store.KindForbidden, wantMsg: "was revoked"},

		// What is sent.
		{name: "unknown write type", hc: serverCert, typ: "format-disk", body: `{}`,
			wantCode: 400, wantKind: store.KindInvalid, wantMsg: "write format-disk: no such write"},
		{name: "malformed body", hc: serverCert, typ: "create-deployment", body: `{"deployment":`,
			wantCode: 400, wantKind: store.KindInvalid, wantMsg: "the body does not decode"},
		{name: "unknown field", hc: serverCert, typ: "register-node", body: `{"node":{"name":"s2","address":"127.0.0.1","server":true},"raw":"AQ=="}`,
			wantCode: 400, wantKind: store.KindInvalid, wantMsg: `unknown field "raw"`},
		{name: "oversized body", hc: serverCert, typ: "create-deployment",
			body:     `{"deployment":{"namespace":"default","name":"` + strings.Repeat("a", state.MaxEntryBytes+1) + `"}}`,
			wantCode: 413, wantKind: store.KindInvalid, wantMsg: "larger than"},
		{name: "invalid command from a server", hc: serverCert,
			cmd:      &state.CreateDeployment{Deployment: api.Deployment{Namespace: "default", Name: "../etc", Containers: testDeployment.Containers}},
			wantCode: 422, wantKind: store.KindInvalid, wantMsg: "deployment default/../etc"},
		{name: "invalid command from an operator", hc: clientCert, token: apiToken,
			cmd:      &state.DeleteDeployment{Namespace: "default", Name: "../etc"},
			wantCode: 422, wantKind: store.KindInvalid, wantMsg: "deployment name"},
		{name: "invalid command from a client about itself", hc: clientCert,
			cmd:      &state.RegisterNode{Node: api.Node{Name: "c1", Address: "not-an-ip"}},
			wantCode: 422, wantKind: store.KindInvalid, wantMsg: "is not a unicast IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, body := tt.typ, tt.body
			if tt.cmd != nil {
				typ, body = tt.cmd.Type().String(), mustJSON(t, tt.cmd)
			}
			before := len(b.appliedWrites())
			code, resp := do(t, tt.hc, http.MethodPost, "https://"+addr+pathWrite+typ, strings.NewReader(body), tt.token)
			if code != tt.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", code, tt.wantCode, resp)
			}
			var reply store.Reply
			if err := json.Unmarshal(resp, &reply); err != nil {
				t.Fatalf("the answer is not a Reply: %v: %s", err, resp)
			}
			if reply.Error == nil {
				t.Fatalf("no error in %s", resp)
			}
			if reply.Error.Kind != tt.wantKind || !strings.Contains(reply.Error.Message, tt.wantMsg) {
				t.Errorf("error %s %q, want %s saying %q", reply.Error.Kind, reply.Error.Message, tt.wantKind, tt.wantMsg)
			}
			if reply.Index != 0 {
				t.Errorf("a refused write answered index %d", reply.Index)
			}
			if got := b.appliedWrites(); len(got) != before {
				t.Errorf("a refused write reached ApplyLocal: %#v", got[before:])
			}
		})
	}
}

// TestWriteAllowed checks the writes each caller may make reach the
// backend as sent, and that the backend's answer comes back with its
// kind's status.
func TestWriteAllowed(t *testing.T) {
	ca := newTestCA(t)
	clientCert := httpClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")).ClientTLS(nil))
	serverCert := httpClient(t, ca.server(t, "s2").ClientTLS(nil))
	tests := []struct {
		name     string
		hc       *http.Client
		token    string
		cmd      state.Command
		answer   *store.Reply
		wantCode int
	}{
		{name: "client with the API token creates a deployment (a forwarded API write)", hc: clientCert, token: apiToken,
			cmd: &state.CreateDeployment{Deployment: testDeployment}, wantCode: 200},
		{name: "client with the API token removes a node", hc: clientCert, token: apiToken,
			cmd: &state.RemoveNode{Name: "c2", At: time.Unix(1700000000, 0).UTC()}, wantCode: 200},
		{name: "client registers itself", hc: clientCert,
			cmd: &state.RegisterNode{Node: api.Node{Name: "c1", Address: "10.0.0.11", CPUMillis: 2000}}, wantCode: 200},
		{name: "client reports on its own pods", hc: clientCert,
			cmd: statuses("c1", "default/web-c1"), wantCode: 200},
		{name: "client removes its own pods", hc: clientCert,
			cmd: &state.RemovePods{Node: "c1", IDs: []string{"default/web-c1"}}, wantCode: 200},
		{name: "server sets the cluster config", hc: serverCert,
			cmd: &state.SetClusterConfig{Config: testConfig}, wantCode: 200},
		{name: "server stops pods", hc: serverCert,
			cmd: &state.StopPods{IDs: []string{"default/web-c2"}}, wantCode: 200},
		{name: "the backend's refusal keeps its status", hc: serverCert,
			cmd:    &state.CreateDeployment{Deployment: testDeployment},
			answer: &store.Reply{Error: &store.WireError{Kind: store.KindExists, Message: "deployment default/web: already exists"}}, wantCode: 409},
		{name: "a follower's answer is 503", hc: serverCert,
			cmd:    &state.SetNodeStatus{Name: "c1", Status: api.NodeReady},
			answer: &store.Reply{Error: &store.WireError{Kind: store.KindNotLeader, Message: "not the raft leader"}}, wantCode: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFakeBackend()
			b.answer = tt.answer
			addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
			code, resp := do(t, tt.hc, http.MethodPost, "https://"+addr+pathWrite+tt.cmd.Type().String(), strings.NewReader(mustJSON(t, tt.cmd)), tt.token)
			if code != tt.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", code, tt.wantCode, resp)
			}
			got := b.appliedWrites()
			if len(got) != 1 {
				t.Fatalf("ApplyLocal called %d times, want once", len(got))
			}
			if mustJSON(t, got[0]) != mustJSON(t, tt.cmd) || got[0].Type() != tt.cmd.Type() {
				t.Errorf("applied %s %s, want %s %s", got[0].Type(), mustJSON(t, got[0]), tt.cmd.Type(), mustJSON(t, tt.cmd))
			}
			var reply store.Reply
			if err := json.Unmarshal(resp, &reply); err != nil {
				t.Fatal(err)
			}
			if tt.answer != nil && (reply.Error == nil || *reply.Error != *tt.answer.Error) {
				t.Errorf("reply error %+v, want %+v", reply.Error, tt.answer.Error)
			}
			if tt.answer == nil && (reply.Error != nil || reply.Index != 1) {
				t.Errorf("reply %s, want index 1 and no error", resp)
			}
		})
	}
}

// TestServerWithoutTokenHash: a server that knows no API token refuses
// every request that carries one.
func TestServerWithoutTokenHash(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	addr := startServer(t, ca, ca.server(t, "s1"), b, func(c *ServerConfig) { c.APITokenHash = nil })
	hc := httpClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")).ClientTLS(nil))
	cmd := &state.CreateDeployment{Deployment: testDeployment}
	code, resp := do(t, hc, http.MethodPost, "https://"+addr+pathWrite+cmd.Type().String(), strings.NewReader(mustJSON(t, cmd)), apiToken)
	if code != http.StatusUnauthorized {
		t.Fatalf("HTTP %d, want 401: %s", code, resp)
	}
	if n := len(b.appliedWrites()); n != 0 {
		t.Errorf("ApplyLocal called %d times", n)
	}
}

// TestEndpointsNeedACertificate: every path but join needs a valid,
// unrevoked certificate; raft state needs a server's.
func TestEndpointsNeedACertificate(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	b.revoked["c9"] = true
	b.servers = []store.Server{{ID: "s1", Address: "127.0.0.1:7300", Voter: true}, {ID: "s2", Address: "127.0.0.2:7300", Voter: true}}
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	noCert := ca.anonymous(t)
	revoked := httpClient(t, ca.client(t, "c9", net.ParseIP("10.0.0.19")).ClientTLS(nil))
	client := httpClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")).ClientTLS(nil))
	server := httpClient(t, ca.server(t, "s2").ClientTLS(nil))
	renewBody := func() io.Reader {
		csr, _, err := pki.NewCSR("c1", nil)
		if err != nil {
			t.Fatal(err)
		}
		return strings.NewReader(mustJSON(t, renewRequest{CSRPEM: string(csr)}))
	}
	tests := []struct {
		name         string
		hc           *http.Client
		method, path string
		body         func() io.Reader
		wantCode     int
		wantMsg      string
	}{
		{"renew without a certificate", noCert, "POST", pathRenew, renewBody, 401, "renew: a client certificate signed by the cluster CA is required"},
		{"ping without a certificate", noCert, "GET", pathPing, nil, 401, "ping: a client certificate signed by the cluster CA is required"},
		{"raft state without a certificate", noCert, "GET", pathRaft, nil, 401, "raft state: a client certificate signed by the cluster CA is required"},
		{"ping with a revoked certificate", revoked, "GET", pathPing, nil, 403, "the certificate of client/c9 was revoked"},
		{"raft state with a revoked certificate", revoked, "GET", pathRaft, nil, 403, "was revoked"},
		{"raft state for a client", client, "GET", pathRaft, nil, 403, "raft state: client/c1 is not a server"},
		{"ping from a client", client, "GET", pathPing, nil, 200, ""},
		{"raft state for a server", server, "GET", pathRaft, nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = tt.body()
			}
			code, resp := do(t, tt.hc, tt.method, "https://"+addr+tt.path, body, "")
			if code != tt.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", code, tt.wantCode, resp)
			}
			if tt.wantMsg == "" {
				return
			}
			var er errorResponse
			if err := json.Unmarshal(resp, &er); err != nil || !strings.Contains(er.Error, tt.wantMsg) {
				t.Errorf("answer %s, want an error saying %q", resp, tt.wantMsg)
			}
			if strings.Contains(string(resp), "has_state") || strings.Contains(string(resp), "cert_pem") {
				t.Errorf("a refusal leaked an answer: %s", resp)
			}
		})
	}

	// What a server learns through the client.
	st, err := ca.rpcClient(t, ca.server(t, "s2")).RaftState(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if !st.HasState || st.Leader != "s1" || len(st.Servers) != 2 {
		t.Errorf("raft state = %+v", st)
	}
	name, err := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11"))).Ping(context.Background(), addr)
	if err != nil || name != "s1" {
		t.Errorf("ping = %q, %v; want s1", name, err)
	}
	if _, err := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11"))).RaftState(context.Background(), addr); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Errorf("a client got the raft state: %v", err)
	}
}

// csrPEM makes a CSR with whatever names a misbehaving agent could ask for.
func csrPEM(t *testing.T, tmpl *x509.CertificateRequest) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestJoinRefusals(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	// s2 is in raft but has no node record yet; s1 has a record.
	b.servers = append(b.servers, store.Server{ID: "s2", Address: "10.0.0.2:7300", Voter: true})
	// gone was removed from the fleet; its machine may still hold the token.
	b.removed = map[string]time.Time{"gone": time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	hc := ca.anonymous(t)

	goodCSR := func(name string) string {
		csr, _, err := pki.NewCSR(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return string(csr)
	}
	tests := []struct {
		name     string
		token    string
		req      any
		wantCode int
		wantMsg  string
	}{
		{name: "no token", req: joinRequest{NodeName: "n1", CSRPEM: goodCSR("n1")}, wantCode: 401, wantMsg: "join token rejected"},
		{name: "wrong token", token: "guess", req: joinRequest{NodeName: "n1", CSRPEM: goodCSR("n1")}, wantCode: 401, wantMsg: "join token rejected"},
		{name: "CSR for another name", token: joinToken,
			req:      joinRequest{NodeName: "n1", CSRPEM: goodCSR("c2")},
			wantCode: 403, wantMsg: `the join request is for node "c2" but must be for "n1"`},
		{name: "CSR with DNS names", token: joinToken,
			req:      joinRequest{NodeName: "n1", CSRPEM: csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n1"}, DNSNames: []string{"*"}})},
			wantCode: 403, wantMsg: "asks for DNS names"},
		{name: "CSR with an extra IP", token: joinToken,
			req:      joinRequest{NodeName: "n1", CSRPEM: csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n1"}, IPAddresses: []net.IP{loopback, net.ParseIP("10.0.0.9")}})},
			wantCode: 403, wantMsg: "asks for IP 10.0.0.9; a joining agent gets a certificate for the IP it connects from (127.0.0.1) only"},
		{name: "CSR for another IP than the connection's", token: joinToken,
			req:      joinRequest{NodeName: "n1", CSRPEM: csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n1"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.9")}})},
			wantCode: 403, wantMsg: "asks for IP 10.0.0.9"},
		{name: "a server's name (raft)", token: joinToken,
			req:      joinRequest{NodeName: "s2", CSRPEM: goodCSR("s2")},
			wantCode: 403, wantMsg: `"s2" is a server's name`},
		{name: "a server's name (node record)", token: joinToken,
			req:      joinRequest{NodeName: "s1", CSRPEM: goodCSR("s1")},
			wantCode: 403, wantMsg: `"s1" is a server's name`},
		{name: "a name registered at another address", token: joinToken,
			req:      joinRequest{NodeName: "c1", CSRPEM: goodCSR("c1")},
			wantCode: 403, wantMsg: `node "c1" is registered at 10.0.0.11, and this request comes from 127.0.0.1`},
		{name: "a removed node's name", token: joinToken,
			req:      joinRequest{NodeName: "gone", CSRPEM: goodCSR("gone")},
			wantCode: 403, wantMsg: `node "gone" was removed from the fleet at 2026-01-02T03:04:05Z, and a removed name cannot join again`},
		{name: "an invalid name", token: joinToken,
			req:      joinRequest{NodeName: "../etc", CSRPEM: goodCSR("n1")},
			wantCode: 400, wantMsg: "join: node_name"},
		{name: "no CSR", token: joinToken,
			req:      joinRequest{NodeName: "n1"},
			wantCode: 403, wantMsg: "CERTIFICATE REQUEST"},
		{name: "unknown field", token: joinToken,
			req:      map[string]string{"node_name": "n1", "csr_pem": goodCSR("n1"), "role": "server"},
			wantCode: 400, wantMsg: `unknown field "role"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, resp := do(t, hc, http.MethodPost, "https://"+addr+pathJoin, strings.NewReader(mustJSON(t, tt.req)), tt.token)
			if code != tt.wantCode {
				t.Fatalf("HTTP %d, want %d: %s", code, tt.wantCode, resp)
			}
			var er errorResponse
			if err := json.Unmarshal(resp, &er); err != nil || !strings.Contains(er.Error, tt.wantMsg) {
				t.Errorf("answer %s, want an error saying %q", resp, tt.wantMsg)
			}
			if strings.Contains(string(resp), "CERTIFICATE-----") {
				t.Errorf("a refused join got a certificate: %s", resp)
			}
		})
	}

	// Through the client, as an agent joins.
	ctx := context.Background()
	_, _, err := Join(ctx, addr, ca.caPEM, "guess", "n1", nil, 5*time.Second)
	if !errors.Is(err, ErrJoinTokenRejected) {
		t.Errorf("join with a wrong token: %v, want ErrJoinTokenRejected", err)
	}
	_, _, err = Join(ctx, addr, ca.caPEM, joinToken, "n1", net.ParseIP("10.0.0.9"), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "HTTP 403") || !strings.Contains(err.Error(), "asks for IP 10.0.0.9") {
		t.Errorf("join asking for another IP than the connection's: %v", err)
	}
	if n := len(b.appliedWrites()); n != 0 {
		t.Errorf("joins wrote %d commands", n)
	}
}

func TestJoin(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	b.nodes["back"] = api.Node{Name: "back", Address: "127.0.0.1"} // a node rejoining from its address
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	for _, tt := range []struct {
		name string
		ip   net.IP
	}{
		{"n1", nil},
		{"n2", loopback},
		{"back", loopback},
	} {
		certPEM, keyPEM, err := Join(context.Background(), addr, ca.caPEM, " "+joinToken+"\n", tt.name, tt.ip, 5*time.Second)
		if err != nil {
			t.Fatalf("join as %s: %v", tt.name, err)
		}
		kp, err := pki.NewKeypair(ca.caPEM, certPEM, keyPEM)
		if err != nil {
			t.Fatalf("join as %s: the certificate does not load: %v", tt.name, err)
		}
		id := kp.Identity()
		if id.Name != tt.name || id.Role != pki.RoleClient || len(id.IPs) != 1 || !id.IPs[0].Equal(loopback) {
			t.Errorf("join as %s: certificate for %s at %v, want client/%s at 127.0.0.1 only", tt.name, id, id.IPs, tt.name)
		}
	}
}

// TestJoinWithoutCA: an agent without the CA key refuses to sign.
func TestJoinWithoutCA(t *testing.T) {
	ca := newTestCA(t)
	addr := startServer(t, ca, ca.server(t, "s1"), newFakeBackend(), func(c *ServerConfig) { c.CA = nil })
	_, _, err := Join(context.Background(), addr, ca.caPEM, joinToken, "n1", nil, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "holds no CA key") {
		t.Errorf("join through an agent without the CA: %v", err)
	}
}

func TestRenew(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	b.revoked["c9"] = true
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	ctx := context.Background()

	t.Run("a client keeps its name, role and address", func(t *testing.T) {
		kp := ca.client(t, "c1", net.ParseIP("10.0.0.11"))
		old := kp.Identity()
		certPEM, keyPEM, err := ca.rpcClient(t, kp).Renew(ctx, addr, kp)
		if err != nil {
			t.Fatal(err)
		}
		renewed, err := pki.NewKeypair(ca.caPEM, certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		id := renewed.Identity()
		if id.Name != "c1" || id.Role != pki.RoleClient || len(id.IPs) != 1 || !id.IPs[0].Equal(net.ParseIP("10.0.0.11")) {
			t.Errorf("renewed certificate is %s at %v, want client/c1 at 10.0.0.11", id, id.IPs)
		}
		if id.Serial.Cmp(old.Serial) == 0 || bytes.Equal(keyPEM, kp.KeyPEM()) {
			t.Error("the renewal returned the old certificate or key")
		}
		if kp.Identity().Serial.Cmp(old.Serial) != 0 {
			t.Error("Renew changed the keypair; the caller swaps it")
		}
		if err := kp.Set(certPEM, keyPEM); err != nil {
			t.Errorf("the renewed certificate does not replace the old one: %v", err)
		}
	})
	for _, tt := range []struct {
		name    string
		kp      *pki.Keypair
		wantMsg string
	}{
		{"a server certificate", ca.server(t, "s2"), "server/s2 holds a server certificate"},
		{"a revoked certificate", ca.client(t, "c9", net.ParseIP("10.0.0.19")), "the certificate of client/c9 was revoked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, _, err := ca.rpcClient(t, tt.kp).Renew(ctx, addr, tt.kp)
			if err == nil || !strings.Contains(err.Error(), "HTTP 403") || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("renew: %v; want HTTP 403 saying %q", err, tt.wantMsg)
			}
			if certPEM != nil {
				t.Error("a refused renewal returned a certificate")
			}
		})
	}
	t.Run("a CSR for another name", func(t *testing.T) {
		hc := httpClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")).ClientTLS(nil))
		csr, _, err := pki.NewCSR("c2", nil)
		if err != nil {
			t.Fatal(err)
		}
		code, resp := do(t, hc, http.MethodPost, "https://"+addr+pathRenew, strings.NewReader(mustJSON(t, renewRequest{CSRPEM: string(csr)})), "")
		if code != http.StatusForbidden || !strings.Contains(string(resp), `is for node \"c2\" but must be for \"c1\"`) {
			t.Errorf("HTTP %d %s; want 403 naming the wrong node", code, resp)
		}
	})
}

func TestClientWrite(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	ctx := context.Background()

	reply, err := cl.Write(ctx, addr, "s1", &state.CreateDeployment{Deployment: testDeployment}, apiToken)
	if err != nil || reply.Error != nil || reply.Index != 1 {
		t.Fatalf("operator write: %+v, %v", reply, err)
	}
	reply, err = cl.Write(ctx, addr, "s1", &state.SetClusterConfig{Config: testConfig}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reply.Result(); !errors.Is(err, state.ErrForbidden) {
		t.Errorf("refused write: %v, want ErrForbidden", err)
	}
	if n := len(b.appliedWrites()); n != 1 {
		t.Errorf("ApplyLocal called %d times, want once", n)
	}
}

// TestClientTalksOnlyToServers: a peer holding a client certificate gets
// nothing from the client, not even the request.
func TestClientTalksOnlyToServers(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	// A client agent at 127.0.0.1 serving RPC, as if gossip named it the leader.
	impostor := ca.client(t, "c5", loopback)
	addr := startServer(t, ca, impostor, b, func(c *ServerConfig) { c.CA = nil })
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	ctx := context.Background()

	_, err := cl.Write(ctx, addr, "c5", &state.CreateDeployment{Deployment: testDeployment}, apiToken)
	if err == nil || !strings.Contains(err.Error(), "only a server may connect here") {
		t.Errorf("write to a client's RPC: %v; want refused for its role", err)
	}
	if _, err := cl.Ping(ctx, addr); err == nil {
		t.Error("ping of a client's RPC succeeded")
	}
	if _, err := cl.RaftState(ctx, addr); err == nil {
		t.Error("raft state from a client's RPC")
	}
	if _, _, err := cl.Renew(ctx, addr, impostor); err == nil {
		t.Error("renewal from a client's RPC")
	}
	if _, _, err := Join(ctx, addr, ca.caPEM, joinToken, "n1", nil, 5*time.Second); err == nil || !strings.Contains(err.Error(), "only a server may connect here") {
		t.Errorf("join through a client's RPC: %v; the join token must go to servers only", err)
	}
	if n := len(b.appliedWrites()); n != 0 {
		t.Errorf("the impostor got %d writes", n)
	}
}

// TestWriteChecksTheLeader: the leader's address comes from gossip; the
// answer of a server that is not the named leader is not taken.
func TestWriteChecksTheLeader(t *testing.T) {
	ca := newTestCA(t)
	addr := startServer(t, ca, ca.server(t, "s2"), newFakeBackend(), nil)
	cl := ca.rpcClient(t, ca.server(t, "s3"))
	reply, err := cl.Write(context.Background(), addr, "s1", &state.SetNodeStatus{Name: "c1", Status: api.NodeReady}, "")
	if err == nil || !strings.Contains(err.Error(), "the server there is server/s2, not the leader") {
		t.Errorf("write answered by s2 for leader s1: %+v, %v; want refused", reply, err)
	}
}

func TestClientErrors(t *testing.T) {
	ca := newTestCA(t)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	ctx := context.Background()
	if _, err := cl.Write(ctx, "", "s1", &state.SetNodeStatus{Name: "c1", Status: api.NodeReady}, ""); !errors.Is(err, state.ErrNotLeader) {
		t.Errorf("write with no leader address: %v, want ErrNotLeader", err)
	}
	if _, err := cl.Ping(ctx, "127.0.0.1"); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("ping without a port: %v", err)
	}

	// A server of another CA is refused at the handshake.
	other := newTestCA(t)
	addr := startServer(t, other, other.server(t, "s1"), newFakeBackend(), nil)
	if _, err := cl.Ping(ctx, addr); err == nil || !strings.Contains(err.Error(), "same cluster CA") {
		t.Errorf("ping of another cluster's server: %v", err)
	}
}

func TestNewServerChecksConfig(t *testing.T) {
	ca := newTestCA(t)
	kp := ca.server(t, "s1")
	b := newFakeBackend()
	tests := []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"no TLS", ServerConfig{Backend: b}, "TLS with a node certificate is required"},
		{"no client verification", ServerConfig{TLS: kp.ServerTLS(tls.NoClientCert, nil), Backend: b}, "must verify client certificates"},
		{"required client certificates with a CA", ServerConfig{TLS: kp.ServerTLS(tls.RequireAndVerifyClientCert, nil), Backend: b, CA: ca.ca, JoinToken: joinToken}, "needs tls.VerifyClientCertIfGiven"},
		{"no backend", ServerConfig{TLS: kp.ServerTLS(tls.VerifyClientCertIfGiven, nil)}, "Backend is required"},
		{"a CA without a join token", ServerConfig{TLS: kp.ServerTLS(tls.VerifyClientCertIfGiven, nil), Backend: b, CA: ca.ca, JoinToken: " \n"}, "needs the join token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServer(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServer: %v, want %q", err, tt.want)
			}
		})
	}
}

// gatedBackend holds every ApplyLocal until release is closed, so writes
// pile up behind the first requests and must travel in batches.
type gatedBackend struct {
	*fakeBackend
	release chan struct{}
	entered atomic.Int64 // writes waiting at the gate
}

func (g *gatedBackend) ApplyLocal(ctx context.Context, cmd state.Command) store.Reply {
	g.entered.Add(1)
	<-g.release
	return g.fakeBackend.ApplyLocal(ctx, cmd)
}

// countRequests is a slog handler counting the RPC server's request lines
// by path.
type countRequests struct {
	mu    sync.Mutex
	paths map[string]int
}

func (c *countRequests) Enabled(context.Context, slog.Level) bool { return true }
func (c *countRequests) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *countRequests) WithGroup(string) slog.Handler            { return c }
func (c *countRequests) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "rpc request" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "path" {
			c.mu.Lock()
			c.paths[a.Value.String()]++
			c.mu.Unlock()
		}
		return true
	})
	return nil
}

// TestClientWriteBatches: writes made at once travel in few requests, and
// each still gets its own answer.
func TestClientWriteBatches(t *testing.T) {
	ca := newTestCA(t)
	g := &gatedBackend{fakeBackend: newFakeBackend(), release: make(chan struct{})}
	counts := &countRequests{paths: map[string]int{}}
	addr := startServer(t, ca, ca.server(t, "s1"), g, func(c *ServerConfig) { c.Logger = slog.New(counts) })
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	ctx := context.Background()

	const n = 60
	type result struct {
		reply store.Reply
		err   error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := &state.SetPodStatuses{Node: "c1", Updates: []state.PodStatusUpdate{{ID: "default/web-c1", Status: api.PodStatus{Phase: api.PodRunning}}}}
			results[i].reply, results[i].err = cl.Write(ctx, addr, "s1", cmd, "")
		}()
	}
	// Every write is either at the gate (in a request in flight) or queued
	// behind those requests; then let them through.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b := cl.batcher(batchKey{addr: addr, leader: "s1"})
		b.mu.Lock()
		queued := len(b.queue)
		b.mu.Unlock()
		if queued+int(g.entered.Load()) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, %d at the gate, of %d", queued, g.entered.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	close(g.release)
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("write %d: %v", i, r.err)
		}
		if _, err := r.reply.Result(); err != nil || r.reply.Index == 0 {
			t.Errorf("write %d: %+v, %v", i, r.reply, err)
		}
	}
	if got, want := len(g.appliedWrites()), n; got != want {
		t.Errorf("ApplyLocal called %d times, want %d", got, want)
	}
	counts.mu.Lock()
	requests := counts.paths[pathWrites]
	counts.mu.Unlock()
	if requests > 2*maxBatchesInFlight {
		t.Errorf("%d writes took %d requests; want them batched", n, requests)
	}
	t.Logf("%d writes in %d requests", n, requests)
}

// TestWritesRefusedWhole: a batch whose sender is refused (a wrong token)
// gets that refusal for every write.
func TestWritesRefusedWhole(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	cl := ca.rpcClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")))
	reply, err := cl.Write(context.Background(), addr, "s1", &state.CreateDeployment{Deployment: testDeployment}, "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reply.Result(); !errors.Is(err, state.ErrForbidden) || !strings.Contains(err.Error(), "API token") {
		t.Errorf("reply %v, want the wrong-token refusal", err)
	}
	if len(b.appliedWrites()) != 0 {
		t.Error("a refused batch reached ApplyLocal")
	}
}

// TestWritesMixedBatch: in one batch, each write is authorized on its own.
func TestWritesMixedBatch(t *testing.T) {
	ca := newTestCA(t)
	b := newFakeBackend()
	addr := startServer(t, ca, ca.server(t, "s1"), b, nil)
	hc := httpClient(t, ca.client(t, "c1", net.ParseIP("10.0.0.11")).ClientTLS(nil))
	own := mustJSON(t, &state.SetPodStatuses{Node: "c1", Updates: []state.PodStatusUpdate{{ID: "default/web-c1"}}})
	other := mustJSON(t, &state.SetPodStatuses{Node: "c1", Updates: []state.PodStatusUpdate{{ID: "default/web-c2"}}})
	body := fmt.Sprintf(`{"writes":[{"type":"set-pod-statuses","body":%s},{"type":"set-pod-statuses","body":%s},{"type":"no-such","body":{}}]}`, own, other)
	code, resp := do(t, hc, http.MethodPost, "https://"+addr+pathWrites, strings.NewReader(body), "")
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, resp)
	}
	var br batchReply
	if err := json.Unmarshal(resp, &br); err != nil || len(br.Replies) != 3 {
		t.Fatalf("replies: %s (%v)", resp, err)
	}
	if br.Replies[0].Error != nil || br.Replies[0].Index == 0 {
		t.Errorf("own pod: %+v", br.Replies[0])
	}
	if _, err := br.Replies[1].Result(); !errors.Is(err, state.ErrForbidden) {
		t.Errorf("another node's pod: %v, want ErrForbidden", err)
	}
	if _, err := br.Replies[2].Result(); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("unknown type: %v, want ErrInvalid", err)
	}
	if n := len(b.appliedWrites()); n != 1 {
		t.Errorf("ApplyLocal called %d times, want once", n)
	}
}
