package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
)

func allowAnyPeer(raft.ServerAddress, pki.Identity) error { return nil }
func revokedNone(pki.Identity) bool                       { return false }

// dialer is a stream layer that only dials, with config as its TLS client
// and no check of whom it reaches beyond the CA.
func dialer(t testing.TB, config *tls.Config) *tlsStreamLayer {
	return &tlsStreamLayer{client: config, dialCheck: allowAnyPeer, revoked: revokedNone,
		logger: testLogger(t, slog.LevelError), conns: map[*trackedConn]struct{}{}}
}

// echoListener is a stream layer on addr whose connections echo one byte
// once their handshake is done: a refused peer gets no byte back.
func echoListener(t *testing.T, addr string, kp *pki.Keypair, accept pki.PeerCheck) (*tlsStreamLayer, error) {
	ln, err := newTLSStreamLayer(addr, nil, kp, accept, allowAnyPeer, revokedNone, testLogger(t, slog.LevelError))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					_, _ = c.Write(b)
				}
			}()
		}
	}()
	return ln, nil
}

// echo dials addr and round-trips a byte.
func echo(l *tlsStreamLayer, addr raft.ServerAddress) error {
	c, err := l.Dial(addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{7}); err != nil {
		return err
	}
	_, err = io.ReadFull(c, make([]byte, 1))
	return err
}

// TestTLSStreamLayer dials a listening stream layer that accepts only
// servers with peers that should and should not get in.
func TestTLSStreamLayer(t *testing.T) {
	ca := newTestCA(t)
	ln, err := echoListener(t, "127.0.0.1:0", ca.server(t, "server-1"), pki.RequireRole(pki.RoleServer))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)

	tests := []struct {
		name    string
		client  *tls.Config
		wantErr string // "" to get in
	}{
		{"a server of the cluster", ca.server(t, "server-2").ClientTLS(nil), ""},
		{"a client of the cluster", ca.client(t, "client-1").ClientTLS(nil), "bad certificate"},
		{"a server of another CA", newTestCA(t).server(t, "server-2").ClientTLS(nil), "unknown authority"},
		{"a peer without a certificate", &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, "certificate required"},
		{"a peer that accepts only another server", ca.server(t, "server-2").ClientTLS(pki.RequireNode(pki.RoleServer, "server-9")), "server-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := echo(dialer(t, tt.client), raft.ServerAddress(ln.Addr().String()))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestTLSStreamLayerChecksTheServerAddress: a peer's certificate must name
// the address it is dialed at, so a node cannot pose as another address.
func TestTLSStreamLayerChecksTheServerAddress(t *testing.T) {
	ca := newTestCA(t)
	ln, err := echoListener(t, "127.0.0.2:0", ca.server(t, "server-1"), nil) // valid for 127.0.0.1, not 127.0.0.2
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	err = echo(dialer(t, ca.server(t, "server-2").ClientTLS(nil)), raft.ServerAddress(ln.Addr().String()))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.2") {
		t.Fatalf("dialed a peer whose certificate does not name its address: %v", err)
	}
}

// fleetLeader opens a single voter over TLS, as the first server of a
// fleet, and waits until it leads.
func fleetLeader(t *testing.T, ca *testCA, name string) *Store {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.NodeName = name
	cfg.Keypair = ca.server(t, name)
	return openLeader(t, cfg)
}

// raftProbe sends target one raft RPC over a connection made with kp, as
// a peer's raft would: an AppendEntries of term 0, which a raft node
// answers (refusing it as stale) without changing anything. It returns
// the error of a refused connection.
func raftProbe(t *testing.T, kp *pki.Keypair, target *Store) error {
	t.Helper()
	logger := testLogger(t, slog.LevelError)
	layer, err := newTLSStreamLayer("127.0.0.1:0", nil, kp, nil, allowAnyPeer, revokedNone, logger)
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 1, Timeout: 2 * time.Second, Logger: newHCLogger(logger, "probe"),
	})
	defer trans.Close()
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(kp.Identity().Name), Addr: []byte(trans.LocalAddr())},
	}
	var resp raft.AppendEntriesResponse
	if err := trans.AppendEntries(raft.ServerID(target.LocalID()), target.localAddr, req, &resp); err != nil {
		return err
	}
	if resp.Success || resp.Term == 0 {
		t.Errorf("the probe got %+v; want a refusal of a stale term", resp)
	}
	return nil
}

// TestRaftAcceptsOnlyServers: only servers whose certificates are not
// revoked may open a raft connection; a client certificate, which is all a
// client VM holds, cannot reach any raft log.
func TestRaftAcceptsOnlyServers(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t)
	s := fleetLeader(t, ca, "server-1")

	// server-3's certificate was issued before it was removed; server-4
	// was removed an hour ago and has a certificate issued since.
	removedLater := ca.server(t, "server-3")
	if err := s.RemoveNode(ctx, "server-3"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(ctx, &state.RemoveNode{Name: "server-4", At: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	issuedAfter := ca.server(t, "server-4")
	term := s.raft.CurrentTerm()

	tests := []struct {
		name   string
		kp     *pki.Keypair
		refuse bool
	}{
		{"a server of the cluster", ca.server(t, "server-2"), false},
		{"a server certificate issued after the name's removal", issuedAfter, false},
		{"a client of the cluster", ca.client(t, "client-1"), true},
		{"a client certificate for a server's name", ca.client(t, "server-2"), true},
		{"a revoked server certificate", removedLater, true},
		{"a server of another CA", newTestCA(t).server(t, "server-2"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := raftProbe(t, tt.kp, s)
			if tt.refuse && err == nil {
				t.Fatal("the raft connection was accepted")
			}
			if !tt.refuse && err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
	if !s.IsLeader() || s.raft.CurrentTerm() != term {
		t.Errorf("the probes disturbed the leader: leader %v, term %d (was %d)", s.IsLeader(), s.raft.CurrentTerm(), term)
	}
}

// TestPeerChecks checks whom the transport talks raft to, per identity
// and address, against a raft configuration.
func TestPeerChecks(t *testing.T) {
	ca := newTestCA(t)
	srv := func(name string) pki.Identity { return ca.server(t, name).Identity() }
	cli := func(name string) pki.Identity { return ca.client(t, name).Identity() }
	revokedServer := srv("server-6")

	s := &Store{fsm: state.NewFSM(nil)}
	data, err := state.Encode(&state.RemoveNode{Name: "server-6", At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if resp := s.fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}); resp != nil {
		t.Fatal(resp)
	}
	const (
		voter    = raft.ServerAddress("127.0.0.1:7001")
		nonvoter = raft.ServerAddress("127.0.0.1:7002")
		expVoter = raft.ServerAddress("127.0.0.1:7003")
		expNon   = raft.ServerAddress("127.0.0.1:7004")
		removed  = raft.ServerAddress("127.0.0.1:7005")
		unlisted = raft.ServerAddress("127.0.0.1:7009")
	)
	s.peers.set([]raft.Server{
		{Suffrage: raft.Voter, ID: "server-1", Address: voter},
		{Suffrage: raft.Nonvoter, ID: "client-1", Address: nonvoter},
		{Suffrage: raft.Voter, ID: "server-6", Address: removed},
	})
	// Members the leader is adding, announced before the change commits.
	s.peers.expect(raft.Server{Suffrage: raft.Voter, ID: "server-5", Address: expVoter})
	s.peers.expect(raft.Server{Suffrage: raft.Nonvoter, ID: "client-2", Address: expNon})
	// A refresh from a configuration that does not hold them yet keeps
	// them expected.
	s.peers.set([]raft.Server{
		{Suffrage: raft.Voter, ID: "server-1", Address: voter},
		{Suffrage: raft.Nonvoter, ID: "client-1", Address: nonvoter},
		{Suffrage: raft.Voter, ID: "server-6", Address: removed},
	})

	dials := []struct {
		name string
		addr raft.ServerAddress
		id   pki.Identity
		want string // "" if allowed
	}{
		{"the voter listed there", voter, srv("server-1"), ""},
		{"a client certificate for the voter listed there", voter, cli("server-1"), "votes in raft but holds a client certificate"},
		{"another server than the one listed there", voter, srv("server-2"), "the raft configuration has server-1 at"},
		{"the non-voter listed there", nonvoter, cli("client-1"), ""},
		{"the non-voter listed there, with a server certificate", nonvoter, srv("client-1"), ""},
		{"another client than the non-voter listed there", nonvoter, cli("client-9"), "the raft configuration has client-1 at"},
		{"a voter being added", expVoter, srv("server-5"), ""},
		{"a client certificate for a voter being added", expVoter, cli("server-5"), "votes in raft"},
		{"another server than the voter being added", expVoter, srv("server-2"), "has server-5 at"},
		{"a non-voter being added", expNon, cli("client-2"), ""},
		{"a server at an address not listed", unlisted, srv("server-7"), ""},
		{"a client at an address not listed", unlisted, cli("client-7"), "not in the raft configuration"},
		{"a revoked server where it is listed", removed, revokedServer, "revoked"},
		{"a revoked server elsewhere", unlisted, revokedServer, "revoked"},
	}
	for _, tt := range dials {
		t.Run("dial/"+tt.name, func(t *testing.T) {
			checkErr(t, s.dialPeer(tt.addr, tt.id), tt.want)
		})
	}

	accepts := []struct {
		name string
		id   pki.Identity
		want string
	}{
		{"a server", srv("server-2"), ""},
		{"a server not in the configuration", srv("server-42"), ""},
		{"a client", cli("client-1"), "only servers may connect"},
		{"a client named as a server", cli("server-1"), "only servers may connect"},
		{"a revoked server", revokedServer, "revoked"},
	}
	for _, tt := range accepts {
		t.Run("accept/"+tt.name, func(t *testing.T) {
			checkErr(t, s.acceptPeer(tt.id), tt.want)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("refused: %v", err)
	case want != "" && err == nil:
		t.Errorf("allowed; want a refusal mentioning %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %v, want one mentioning %q", err, want)
	}
}

// TestRaftDialRefusesImpostors: the transport of a leader dialing the
// address of a member gets no further than the handshake with a peer that
// is not that member, whatever the CA signed for it.
func TestRaftDialRefusesImpostors(t *testing.T) {
	ca := newTestCA(t)
	s := fleetLeader(t, ca, "server-1")
	tests := []struct {
		name    string
		listed  raft.Server // at the impostor's address, once it listens
		holds   *pki.Keypair
		wantErr string
	}{
		{"the member itself", raft.Server{ID: "server-2", Suffrage: raft.Voter}, ca.server(t, "server-2"), ""},
		{"a client certificate where a voter is listed", raft.Server{ID: "server-2", Suffrage: raft.Voter}, ca.client(t, "server-2"), "holds a client certificate"},
		{"another server where a voter is listed", raft.Server{ID: "server-2", Suffrage: raft.Voter}, ca.server(t, "server-9"), "the raft configuration has server-2"},
		{"another client where a non-voter is listed", raft.Server{ID: "client-1", Suffrage: raft.Nonvoter}, ca.client(t, "client-2"), "the raft configuration has client-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := echoListener(t, "127.0.0.1:0", tt.holds, nil)
			if err != nil {
				t.Fatal(err)
			}
			addr := raft.ServerAddress(ln.Addr().String())
			tt.listed.Address = addr
			s.peers.expect(tt.listed)
			c, err := s.stream.Dial(addr, 2*time.Second)
			if c != nil {
				c.Close()
			}
			checkErr(t, err, tt.wantErr)
		})
	}
}

// trackedPeers returns the names of the peers whose raft connections
// layer tracks.
func trackedPeers(l *tlsStreamLayer) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for c := range l.conns {
		if id, ok := c.identity(); ok {
			out[id.Name]++
		}
	}
	return out
}

// TestRaftDropsConnectionsOfRevokedPeers: a server connected before it was
// removed from the fleet loses its raft connections as soon as the removal
// commits, not at its next reconnect; others keep theirs.
func TestRaftDropsConnectionsOfRevokedPeers(t *testing.T) {
	ctx := testCtx(t)
	ca := newTestCA(t)
	s := fleetLeader(t, ca, "server-1")

	connect := func(kp *pki.Keypair) <-chan error {
		t.Helper()
		c, err := dialer(t, kp.ClientTLS(nil)).Dial(s.localAddr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		closed := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1)) // raft never writes first: this ends when the connection does
			closed <- err
		}()
		return closed
	}
	removed := connect(ca.server(t, "server-7"))
	kept := connect(ca.server(t, "server-8"))
	if !eventually(5*time.Second, func() bool { p := trackedPeers(s.stream); return p["server-7"] == 1 && p["server-8"] == 1 }) {
		t.Fatalf("the connections were not accepted: tracked %v", trackedPeers(s.stream))
	}

	if err := s.RemoveNode(ctx, "server-7"); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	select {
	case err := <-removed:
		if took := time.Since(committed); took > 2*time.Second {
			t.Errorf("the removed server's connection was closed %s after the removal committed", took)
		} else {
			t.Logf("closed %s after the removal committed (%v)", took, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the removed server is still connected 5s after its removal committed")
	}
	if p := trackedPeers(s.stream); p["server-7"] != 0 || p["server-8"] != 1 {
		t.Errorf("tracked peers after the removal: %v", p)
	}
	select {
	case err := <-kept:
		t.Errorf("server-8's connection was closed too: %v", err)
	default:
	}
	if err := raftProbe(t, ca.server(t, "server-8"), s); err != nil {
		t.Errorf("server-8 refused after server-7's removal: %v", err)
	}
}

// TestStoreSingleVoterOverTLS is the first server of a fleet: it
// bootstraps, writes and restarts on the same data; with port 0 it gets a
// new port at each start and records it as its raft address.
func TestStoreSingleVoterOverTLS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Keypair = ca.server(t, "node-1")
	s := openLeader(t, cfg)
	firstAddr := s.Leader()
	if firstAddr == "" || strings.HasSuffix(firstAddr, ":0") || firstAddr != string(s.localAddr) {
		t.Fatalf("Leader() = %q, want the address raft listens on (%s)", firstAddr, s.localAddr)
	}
	if _, err := s.CreateDeployment(testCtx(t), web()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openLeader(t, cfg)
	if _, ok := s2.Deployment("default", "web"); !ok {
		t.Error("write lost across a restart")
	}
	if s2.Leader() == firstAddr || s2.Leader() != string(s2.localAddr) {
		t.Errorf("Leader() after reopen = %q (before %q, listening on %q)", s2.Leader(), firstAddr, s2.localAddr)
	}
	if srvs, err := s2.Servers(); err != nil || len(srvs) != 1 || srvs[0].Address != string(s2.localAddr) {
		t.Errorf("raft configuration after reopen: %+v, %v", srvs, err)
	}
}

// TestStoreRaftListenerClosesWithTheStore: nothing listens once the store
// is closed.
func TestStoreRaftListenerClosesWithTheStore(t *testing.T) {
	ca := newTestCA(t)
	s := fleetLeader(t, ca, "server-1")
	addr := string(s.localAddr)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Close", addr)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "refused") {
		t.Logf("dial after close: %v", err)
	}
}
