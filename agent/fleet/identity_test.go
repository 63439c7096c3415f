package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

const testJoinToken = "join-s3cret"

var (
	ip1      = net.ParseIP("10.0.0.1").To4()
	ip11     = net.ParseIP("10.0.0.11").To4()
	loopback = net.ParseIP("127.0.0.1").To4()
)

type testCA struct {
	ca    *pki.CA
	caPEM []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("flotilla-test", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca, caPEM: certPEM}
}

func (c *testCA) serverPEM(t *testing.T, name string, ip net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := c.ca.IssueServer(name, []net.IP{ip}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func (c *testCA) clientPEM(t *testing.T, name string, ip net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	csrPEM, keyPEM, err := pki.NewCSR(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = c.ca.SignJoin(csrPEM, name, ip, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func (c *testCA) keypair(t *testing.T, certPEM, keyPEM []byte) *pki.Keypair {
	t.Helper()
	kp, err := pki.NewKeypair(c.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func (c *testCA) serverKeypair(t *testing.T, name string, ip net.IP) *pki.Keypair {
	t.Helper()
	certPEM, keyPEM := c.serverPEM(t, name, ip)
	return c.keypair(t, certPEM, keyPEM)
}

func (c *testCA) clientKeypair(t *testing.T, name string, ip net.IP) *pki.Keypair {
	t.Helper()
	certPEM, keyPEM := c.clientPEM(t, name, ip)
	return c.keypair(t, certPEM, keyPEM)
}

// saveCert writes a certificate where LoadIdentity looks for it.
func saveCert(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node.pem"), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if keyPEM != nil {
		if err := os.WriteFile(filepath.Join(dir, "node-key.pem"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// checkSaved checks that dir holds kp's certificate and key with the
// modes a restart needs and an attacker on the host must not read.
func checkSaved(t *testing.T, dir string, kp *pki.Keypair) {
	t.Helper()
	for _, f := range []struct {
		name string
		want []byte
		mode os.FileMode
	}{
		{"node.pem", kp.CertPEM(), 0o644},
		{"node-key.pem", kp.KeyPEM(), 0o600},
	} {
		path := filepath.Join(dir, f.name)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, f.want) {
			t.Errorf("%s does not hold the current certificate", f.name)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != f.mode {
			t.Errorf("%s has mode %v, want %v", f.name, st.Mode().Perm(), f.mode)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func serverConfig(c *testCA, dir string) IdentityConfig {
	return IdentityConfig{NodeName: "s1", Server: true, AdvertiseIP: ip1, Dir: dir, CAPEM: c.caPEM, CA: c.ca, Validity: time.Hour}
}

func TestLoadIdentityServer(t *testing.T) {
	c := newTestCA(t)
	dir := filepath.Join(t.TempDir(), "tls")
	ctx := context.Background()

	id, err := LoadIdentity(ctx, serverConfig(c, dir))
	if err != nil {
		t.Fatal(err)
	}
	got := id.Keypair.Identity()
	if got.Name != "s1" || got.Role != pki.RoleServer || len(got.IPs) != 1 || !got.IPs[0].Equal(ip1) {
		t.Fatalf("issued %s at %v, want server/s1 at 10.0.0.1", got, got.IPs)
	}
	if d := got.NotAfter.Sub(time.Now()); d > time.Hour || d < 50*time.Minute {
		t.Errorf("issued for %s, want the configured hour", d)
	}
	checkSaved(t, dir, id.Keypair)
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("the certificate directory: %v, %v; want mode 0700", st.Mode().Perm(), err)
	}

	again, err := LoadIdentity(ctx, serverConfig(c, dir))
	if err != nil {
		t.Fatal(err)
	}
	if again.Keypair.Identity().Serial.Cmp(got.Serial) != 0 {
		t.Error("the next start issued a new certificate instead of reloading the saved one")
	}
}

func TestLoadIdentityReplaces(t *testing.T) {
	c := newTestCA(t)
	other := newTestCA(t)
	tests := []struct {
		name string
		// saved writes what an earlier start left in dir.
		saved func(t *testing.T, dir string)
		// now is the clock of the start, relative to the real time.
		now      time.Duration
		wantKeep bool
	}{
		{name: "a valid certificate is kept", wantKeep: true,
			saved: func(t *testing.T, dir string) { saveServer(t, dir, c, "s1", ip1) }},
		{name: "a certificate not yet due for renewal is kept", wantKeep: true, now: 30 * time.Minute,
			saved: func(t *testing.T, dir string) { saveServer(t, dir, c, "s1", ip1) }},
		{name: "a certificate for another name",
			saved: func(t *testing.T, dir string) { saveServer(t, dir, c, "s9", ip1) }},
		{name: "a certificate for another role",
			saved: func(t *testing.T, dir string) { saveClient(t, dir, c, "s1", ip1) }},
		{name: "a certificate for another address",
			saved: func(t *testing.T, dir string) { saveServer(t, dir, c, "s1", net.ParseIP("10.0.0.2")) }},
		{name: "a certificate due for renewal", now: 45 * time.Minute, // due 2/3 into NotBefore (5 min backdated) to NotAfter: at +38m20s
			saved: func(t *testing.T, dir string) { saveServer(t, dir, c, "s1", ip1) }},
		{name: "an expired certificate", now: 2 * time.Hour,
			saved: func(t *testing.T, dir string) { saveServer(t, dir, c, "s1", ip1) }},
		{name: "a certificate of another CA",
			saved: func(t *testing.T, dir string) { saveServer(t, dir, other, "s1", ip1) }},
		{name: "a certificate without its key",
			saved: func(t *testing.T, dir string) {
				certPEM, _ := c.serverPEM(t, "s1", ip1)
				saveCert(t, dir, certPEM, nil)
			}},
		{name: "a certificate with another key",
			saved: func(t *testing.T, dir string) {
				certPEM, _ := c.serverPEM(t, "s1", ip1)
				_, keyPEM := c.serverPEM(t, "s1", ip1)
				saveCert(t, dir, certPEM, keyPEM)
			}},
		{name: "garbage",
			saved: func(t *testing.T, dir string) { saveCert(t, dir, []byte("not a certificate"), []byte("nor a key")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "tls")
			tt.saved(t, dir)
			savedPEM, _ := os.ReadFile(filepath.Join(dir, "node.pem"))
			cfg := serverConfig(c, dir)
			start := time.Now()
			cfg.Now = func() time.Time { return start.Add(tt.now) }
			id, err := LoadIdentity(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			kept := bytes.Equal(id.Keypair.CertPEM(), savedPEM)
			if kept != tt.wantKeep {
				t.Fatalf("kept the saved certificate: %t, want %t", kept, tt.wantKeep)
			}
			got := id.Keypair.Identity()
			if got.Name != "s1" || got.Role != pki.RoleServer || !got.IPs[0].Equal(ip1) {
				t.Errorf("certificate for %s at %v, want server/s1 at 10.0.0.1", got, got.IPs)
			}
			checkSaved(t, dir, id.Keypair)
		})
	}
}

func saveServer(t *testing.T, dir string, c *testCA, name string, ip net.IP) {
	t.Helper()
	certPEM, keyPEM := c.serverPEM(t, name, ip)
	saveCert(t, dir, certPEM, keyPEM)
}

func saveClient(t *testing.T, dir string, c *testCA, name string, ip net.IP) {
	t.Helper()
	certPEM, keyPEM := c.clientPEM(t, name, ip)
	saveCert(t, dir, certPEM, keyPEM)
}

func TestLoadIdentityServerNeedsTheCA(t *testing.T) {
	c := newTestCA(t)
	cfg := serverConfig(c, t.TempDir())
	cfg.CA = nil
	if _, err := LoadIdentity(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "needs the CA key") {
		t.Errorf("LoadIdentity: %v, want the CA key asked for", err)
	}
}

// fakeBackend is just enough of a leader for the RPC server a client joins.
type fakeBackend struct{}

func (fakeBackend) Node(string) (api.Node, bool)         { return api.Node{}, false }
func (fakeBackend) PodNodes([]string) map[string]string  { return nil }
func (fakeBackend) Revoked(pki.Identity) bool            { return false }
func (fakeBackend) NodeRemoved(string) (time.Time, bool) { return time.Time{}, false }
func (fakeBackend) NodeView(string, uint64) ([]state.ViewChange, bool, uint64) {
	return nil, true, 0
}
func (fakeBackend) WatchNodeView(string, uint64) (uint64, bool, <-chan struct{}) {
	return 0, false, nil
}
func (fakeBackend) Servers() ([]store.Server, error)                      { return nil, nil }
func (fakeBackend) HasState() bool                                        { return true }
func (fakeBackend) LeaderID() string                                      { return "s1" }
func (fakeBackend) PodsChanged(string) uint64                             { return 0 }
func (fakeBackend) ServicesChanged() uint64                               { return 0 }
func (fakeBackend) ApplyLocal(context.Context, state.Command) store.Reply { return store.Reply{} }

// startJoinServer serves RPC for a server at 127.0.0.1 that signs joins.
func startJoinServer(t *testing.T, c *testCA) string {
	t.Helper()
	kp := c.serverKeypair(t, "s1", loopback)
	srv, err := rpc.NewServer(rpc.ServerConfig{
		TLS: kp.ServerTLS(tls.VerifyClientCertIfGiven, nil), Backend: fakeBackend{}, CA: c.ca,
		JoinToken: testJoinToken, CertValidity: time.Hour, NodeName: "s1", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); <-done })
	return ln.Addr().String()
}

func clientConfig(c *testCA, dir string, servers ...string) IdentityConfig {
	return IdentityConfig{
		NodeName: "c1", AdvertiseIP: loopback, Dir: dir, CAPEM: c.caPEM, JoinToken: testJoinToken,
		Servers: func() []string { return servers }, RetryInterval: 10 * time.Millisecond,
	}
}

func TestLoadIdentityClientJoins(t *testing.T) {
	c := newTestCA(t)
	addr := startJoinServer(t, c)
	dir := filepath.Join(t.TempDir(), "tls")
	ctx := context.Background()

	// A server that does not answer is skipped for one that does.
	id, err := LoadIdentity(ctx, clientConfig(c, dir, "127.0.0.1:1", addr))
	if err != nil {
		t.Fatal(err)
	}
	got := id.Keypair.Identity()
	if got.Name != "c1" || got.Role != pki.RoleClient || len(got.IPs) != 1 || !got.IPs[0].Equal(loopback) {
		t.Fatalf("joined as %s at %v, want client/c1 at 127.0.0.1", got, got.IPs)
	}
	checkSaved(t, dir, id.Keypair)

	again, err := LoadIdentity(ctx, clientConfig(c, dir)) // no server needed
	if err != nil {
		t.Fatal(err)
	}
	if again.Keypair.Identity().Serial.Cmp(got.Serial) != 0 {
		t.Error("the next start joined again instead of reloading the saved certificate")
	}

	t.Run("a wrong join token is final", func(t *testing.T) {
		cfg := clientConfig(c, filepath.Join(t.TempDir(), "tls"), addr)
		cfg.JoinToken = "guess"
		_, err := LoadIdentity(ctx, cfg)
		if !errors.Is(err, rpc.ErrJoinTokenRejected) {
			t.Errorf("LoadIdentity: %v, want ErrJoinTokenRejected", err)
		}
		if _, err := os.Stat(filepath.Join(cfg.Dir, "node.pem")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused join saved a certificate: %v", err)
		}
	})
	t.Run("no server: retries until ctx ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := LoadIdentity(ctx, clientConfig(c, filepath.Join(t.TempDir(), "tls")))
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no server address known") {
			t.Errorf("LoadIdentity: %v, want the deadline and why", err)
		}
	})
}

// fakeRenewer renews like a server: a certificate for the node of kp, by
// the test CA. It fails for the addresses in fail.
type fakeRenewer struct {
	ca   *pki.CA
	fail map[string]error
	// name, when set, is the node a misbehaving server renews for instead.
	name string
	// renewed is called after each successful renewal.
	renewed func()

	mu    sync.Mutex
	calls []string
}

var _ Renewer = (*fakeRenewer)(nil)

func (f *fakeRenewer) Renew(ctx context.Context, addr string, kp *pki.Keypair) ([]byte, []byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, addr)
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := f.fail[addr]; err != nil {
		return nil, nil, err
	}
	cur := kp.Identity()
	if f.name != "" {
		cur.Name = f.name
	}
	csrPEM, keyPEM, err := pki.NewCSR(cur.Name, nil)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := f.ca.Renew(cur, csrPEM, time.Hour)
	if err != nil {
		return nil, nil, err
	}
	if f.renewed != nil {
		f.renewed()
	}
	return certPEM, keyPEM, nil
}

func (f *fakeRenewer) addrs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// loadClient loads a client identity for c1 at 10.0.0.11 from a saved
// certificate, with the clock at start+now.
func loadClient(t *testing.T, c *testCA, clk *clock, servers ...string) *Identity {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	saveClient(t, dir, c, "c1", ip11)
	cfg := clientConfig(c, dir, servers...)
	cfg.AdvertiseIP = ip11
	cfg.Now = clk.Now
	id, err := LoadIdentity(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestRun: once the certificate is due, Run renews it through a server
// and swaps it into the Keypair, without a restart. The clock is moved
// past the renewal time, so Run does not wait.
func TestRun(t *testing.T) {
	c := newTestCA(t)
	clk := &clock{t: time.Now()}
	id := loadClient(t, c, clk, "10.0.0.2:7400", "10.0.0.3:7400")
	old := id.Keypair.Identity()
	oldTLS := id.Keypair.ClientTLS(nil) // made before the renewal; must present the new certificate after it
	clk.set(time.Now().Add(50 * time.Minute))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &fakeRenewer{ca: c.ca, fail: map[string]error{"10.0.0.2:7400": errBoom}, renewed: cancel}
	done := make(chan struct{})
	go func() { id.Run(ctx, r); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not renew and return")
	}

	got := id.Keypair.Identity()
	if got.Serial.Cmp(old.Serial) == 0 {
		t.Fatal("the Keypair still holds the old certificate")
	}
	if got.Name != "c1" || got.Role != pki.RoleClient || len(got.IPs) != 1 || !got.IPs[0].Equal(ip11) {
		t.Errorf("renewed %s at %v, want client/c1 at 10.0.0.11", got, got.IPs)
	}
	if calls := r.addrs(); len(calls) < 2 || calls[0] != "10.0.0.2:7400" || calls[1] != "10.0.0.3:7400" {
		t.Errorf("renewal asked %v, want the failing server, then the next one", calls)
	}
	checkSaved(t, id.cfg.Dir, id.Keypair)
	cert, err := oldTLS.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil || cert.Leaf == nil || cert.Leaf.SerialNumber.Cmp(got.Serial) != 0 {
		t.Errorf("a TLS config made before the renewal does not present the new certificate: %v", err)
	}
}

func TestRenew(t *testing.T) {
	c := newTestCA(t)
	ctx := context.Background()

	t.Run("a server issues its own", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "tls")
		id, err := LoadIdentity(ctx, serverConfig(c, dir))
		if err != nil {
			t.Fatal(err)
		}
		old := id.Keypair.Identity()
		r := &fakeRenewer{ca: c.ca}
		if err := id.renew(ctx, r); err != nil {
			t.Fatal(err)
		}
		got := id.Keypair.Identity()
		if got.Serial.Cmp(old.Serial) == 0 || got.Name != "s1" || got.Role != pki.RoleServer || !got.IPs[0].Equal(ip1) {
			t.Errorf("renewed %s at %v (serial changed: %t), want a new server/s1 at 10.0.0.1", got, got.IPs, got.Serial.Cmp(old.Serial) != 0)
		}
		if n := len(r.addrs()); n != 0 {
			t.Errorf("a server asked %d times for its renewal; it holds the CA", n)
		}
		checkSaved(t, dir, id.Keypair)
	})

	t.Run("an expired client joins again", func(t *testing.T) {
		addr := startJoinServer(t, c)
		clk := &clock{t: time.Now()}
		id := loadClient(t, c, clk, addr)
		// Joining gives the address the request comes from.
		id.cfg.AdvertiseIP = loopback
		old := id.Keypair.Identity()
		clk.set(time.Now().Add(2 * time.Hour))
		r := &fakeRenewer{ca: c.ca}
		if err := id.renew(ctx, r); err != nil {
			t.Fatal(err)
		}
		if n := len(r.addrs()); n != 0 {
			t.Errorf("an expired certificate was sent for renewal %d times", n)
		}
		if got := id.Keypair.Identity(); got.Serial.Cmp(old.Serial) == 0 || got.Name != "c1" {
			t.Errorf("after rejoining: %s, want a new certificate for c1", got)
		}
		checkSaved(t, id.cfg.Dir, id.Keypair)
	})

	for _, tt := range []struct {
		name    string
		servers []string
		r       *fakeRenewer
		want    string
	}{
		{"no server known", nil, &fakeRenewer{ca: c.ca}, "no server address known"},
		{"every server fails", []string{"10.0.0.2:7400", "10.0.0.3:7400"},
			&fakeRenewer{ca: c.ca, fail: map[string]error{"10.0.0.2:7400": errors.New("s2 down"), "10.0.0.3:7400": errors.New("s3 down")}},
			"s2 down\ns3 down"},
		{"a server renews for another node", []string{"10.0.0.2:7400"}, &fakeRenewer{ca: c.ca, name: "c2"},
			"a renewed certificate keeps the node name and role"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Now()}
			id := loadClient(t, c, clk, tt.servers...)
			old := id.Keypair.CertPEM()
			err := id.renew(ctx, tt.r)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("renew: %v, want %q", err, tt.want)
			}
			if !bytes.Equal(id.Keypair.CertPEM(), old) {
				t.Error("a failed renewal changed the Keypair")
			}
			if saved, _ := os.ReadFile(filepath.Join(id.cfg.Dir, "node.pem")); !bytes.Equal(saved, old) {
				t.Error("a failed renewal changed the saved certificate")
			}
		})
	}
}
