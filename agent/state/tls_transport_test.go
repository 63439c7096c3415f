package state

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestTLSStreamLayer dials a listening stream layer with peers that should
// and should not get in.
func TestTLSStreamLayer(t *testing.T) {
	ca := newTestCA(t)
	ln, err := newTLSStreamLayer("127.0.0.1:0", nil, ca.peerTLS(t, "server-1"), testLogger(t, slog.LevelError))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })

	// Each accepted connection echoes one byte once its handshake is done:
	// a refused peer gets no byte back.
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

	tests := []struct {
		name    string
		client  *tls.Config
		wantErr string // "" to get in
	}{
		{"a peer of the cluster", ca.peerTLS(t, "server-2"), ""},
		{"a peer of another CA", newTestCA(t).peerTLS(t, "intruder"), "unknown authority"},
		{"a client without a certificate", func() *tls.Config {
			c := ca.peerTLS(t, "anon")
			c.Certificates = nil
			return c
		}(), "certificate required"},
		{"a peer that expects another server name", func() *tls.Config {
			c := ca.peerTLS(t, "server-2")
			c.ServerName = "server-9"
			return c
		}(), "server-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dialer := &tlsStreamLayer{config: tt.client}
			err := echo(dialer, raft.ServerAddress(ln.Addr().String()))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
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

// TestTLSStreamLayerChecksTheServerName: a peer's certificate must name
// the host it is dialed at, so a node cannot pose as another address.
func TestTLSStreamLayerChecksTheServerName(t *testing.T) {
	ca := newTestCA(t)
	cfg := ca.peerTLS(t, "server-1") // valid for 127.0.0.1, not 127.0.0.2
	ln, err := newTLSStreamLayer("127.0.0.2:0", nil, cfg, testLogger(t, slog.LevelError))
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		if c, err := ln.Accept(); err == nil {
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
	}()
	err = echo(&tlsStreamLayer{config: ca.peerTLS(t, "server-2")}, raft.ServerAddress(ln.Addr().String()))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.2") {
		t.Fatalf("dialed a peer whose certificate does not name its address: %v", err)
	}
}

func TestStoreRefusesWeakTLS(t *testing.T) {
	ca := newTestCA(t)
	for name, mod := range map[string]func(*tls.Config){
		"client certificates not required": func(c *tls.Config) { c.ClientAuth = tls.VerifyClientCertIfGiven },
		"no verification of the server":    func(c *tls.Config) { c.InsecureSkipVerify = true },
		"no certificate":                   func(c *tls.Config) { c.Certificates = nil },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			cfg.TLS = ca.peerTLS(t, "node-1")
			mod(cfg.TLS)
			if s, err := Open(context.Background(), cfg); err == nil {
				s.Close()
				t.Fatal("Open accepted the TLS config")
			}
		})
	}
}

func TestStoreNonVoterCannotBootstrap(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.NonVoter = true // and Bootstrap, as DefaultConfig has it
	if s, err := Open(context.Background(), cfg); err == nil {
		s.Close()
		t.Fatal("Open accepted a bootstrapping non-voter")
	}
}

// TestStoreSingleVoterOverTLS is dev mode with TLS: it bootstraps, writes
// and restarts on the same data as over TCP.
func TestStoreSingleVoterOverTLS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.TLS = ca.peerTLS(t, "node-1")
	s := openLeader(t, cfg)
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
}
