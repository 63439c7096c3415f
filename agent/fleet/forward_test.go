package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/authz"
	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// fakeWriter records the writes sent to a leader.
type fakeWriter struct {
	mu    sync.Mutex
	calls []writeCall
	err   error
}

type writeCall struct {
	addr, leader, token string
	cmd                 state.Command
}

var _ Writer = (*fakeWriter)(nil)

func (f *fakeWriter) Write(_ context.Context, addr, leader string, cmd state.Command, token string) (store.Reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, writeCall{addr: addr, leader: leader, token: token, cmd: cmd})
	if f.err != nil {
		return store.Reply{}, f.err
	}
	return store.Reply{Index: 7}, nil
}

func TestForwarder(t *testing.T) {
	cmd := &state.CreateDeployment{Deployment: api.Deployment{Namespace: "default", Name: "web"}}
	noRPC := s2
	noRPC.Meta.RPCAddr = ""
	tests := []struct {
		name      string
		members   []membership.Member
		ctx       context.Context
		writerErr error
		wantCall  *writeCall
		wantErr   error
	}{
		{
			name:     "an operator's write goes to the leader's RPC address with the API token",
			members:  []membership.Member{c1, s1, s2},
			ctx:      authz.WithToken(context.Background(), "api-s3cret"),
			wantCall: &writeCall{addr: "10.0.0.2:7400", leader: "s2", token: "api-s3cret", cmd: cmd},
		},
		{
			name:     "an agent's own write carries no token",
			members:  []membership.Member{s1, s2},
			ctx:      context.Background(),
			wantCall: &writeCall{addr: "10.0.0.2:7400", leader: "s2", cmd: cmd},
		},
		{
			name:    "a leader this agent does not know of yet",
			members: []membership.Member{s1, c1},
			ctx:     context.Background(),
			wantErr: state.ErrNotLeader,
		},
		{
			name:    "a failed leader",
			members: []membership.Member{s1, with(s2, failed)},
			ctx:     context.Background(),
			wantErr: state.ErrNotLeader,
		},
		{
			name:    "a leader without an RPC address",
			members: []membership.Member{s1, noRPC},
			ctx:     context.Background(),
			wantErr: state.ErrNotLeader,
		},
		{
			name:      "the client's error comes back",
			members:   []membership.Member{s2},
			ctx:       context.Background(),
			writerErr: errBoom,
			wantCall:  &writeCall{addr: "10.0.0.2:7400", leader: "s2", cmd: cmd},
			wantErr:   errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &fakeWriter{err: tt.writerErr}
			fw := &Forwarder{Members: &fakeMembers{list: tt.members}, Client: w}
			reply, err := fw.Forward(tt.ctx, "s2", cmd)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Forward: %v, want %v", err, tt.wantErr)
			}
			if err == nil && reply.Index != 7 {
				t.Errorf("reply = %+v, want the leader's", reply)
			}
			switch {
			case tt.wantCall == nil && len(w.calls) > 0:
				t.Errorf("sent %+v; nothing should have been sent", w.calls)
			case tt.wantCall != nil && (len(w.calls) != 1 || w.calls[0] != *tt.wantCall):
				t.Errorf("sent %+v, want %+v", w.calls, *tt.wantCall)
			}
		})
	}
	if _, err := (&Forwarder{Members: &fakeMembers{}, Client: &fakeWriter{}}).Forward(context.Background(), "s2", cmd); err == nil || !strings.Contains(err.Error(), `leader "s2" is not in this agent's membership list`) {
		t.Errorf("error %v does not say what is missing", err)
	}
}

func TestServerRPCAddrs(t *testing.T) {
	s4 := member("s4", server, alive, "10.0.0.4")
	s4.Meta.RPCAddr = ""
	sameAsS1 := member("s5", server, alive, "10.0.0.1")
	ms := &fakeMembers{list: []membership.Member{c1, s1, with(s2, failed), s3, s4, sameAsS1, with(member("s6", server, left, "10.0.0.6"), left)}}
	got := ServerRPCAddrs(ms, []string{"10.0.0.3:7400", "10.0.0.9:7400", "10.0.0.9:7400"})
	want := []string{"10.0.0.1:7400", "10.0.0.3:7400", "10.0.0.9:7400"}
	if !slices.Equal(got, want) {
		t.Errorf("ServerRPCAddrs = %v, want %v", got, want)
	}
	if got := ServerRPCAddrs(&fakeMembers{}, nil); len(got) != 0 {
		t.Errorf("no members, no fallback: %v", got)
	}
}

// listenTLS accepts TLS connections with kp's certificate on 127.0.0.1,
// as a raft transport does, until the test ends.
func listenTLS(t *testing.T, kp *pki.Keypair) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", kp.ServerTLS(tls.RequireAndVerifyClientCert, nil))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestTLSVerifier(t *testing.T) {
	c := newTestCA(t)
	other := newTestCA(t)
	server2 := listenTLS(t, c.serverKeypair(t, "s2", loopback))
	client1 := listenTLS(t, c.clientKeypair(t, "c1", loopback))
	elsewhere := listenTLS(t, c.serverKeypair(t, "s2", net.ParseIP("10.0.0.2")))
	otherCA := listenTLS(t, other.serverKeypair(t, "s2", loopback))
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}()
	v := &TLSVerifier{Keypair: c.serverKeypair(t, "s1", loopback)}
	tests := []struct {
		name, addr, member, role string
		want                     string // "" to accept
	}{
		{"the server it claims to be", server2, "s2", pki.RoleServer, ""},
		{"a client it claims to be", client1, "c1", pki.RoleClient, ""},
		{"another server's certificate", server2, "s3", pki.RoleServer, "it is not server/s3"},
		{"a server claiming to be a client", server2, "s2", pki.RoleClient, "it is not client/s2"},
		{"a client claiming to be a server", client1, "c1", pki.RoleServer, "it is not server/c1"},
		{"a certificate for another address", elsewhere, "s2", pki.RoleServer, "127.0.0.1"},
		{"a certificate of another CA", otherCA, "s2", pki.RoleServer, "certificate"},
		{"nothing listening", closed, "s2", pki.RoleServer, "TLS handshake with " + closed},
		{"not an address", "s2", "s2", pki.RoleServer, `raft address "s2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := v.VerifyPeer(ctx, tt.addr, tt.member, tt.role)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("VerifyPeer: %v, want refused with %q", err, tt.want)
			}
		})
	}
}
