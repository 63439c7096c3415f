package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// fakeExec is a node's containers: a command prints what it was asked
// and exits with 7.
type fakeExec struct {
	err   error
	mu    sync.Mutex
	calls []string
}

func (f *fakeExec) StartExec(ctx context.Context, ns, pod string, opts api.ExecOptions, eio runtime.ExecIO) (runtime.ExecProcess, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s/%s/%s %s", ns, pod, opts.Container, strings.Join(opts.Command, " ")))
	f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	p := &fakeProc{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		fmt.Fprintf(eio.Stdout, "ran %s\n", strings.Join(opts.Command, " "))
	}()
	return p, nil
}

func (f *fakeExec) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

type fakeProc struct{ done chan struct{} }

func (p *fakeProc) Resize(context.Context, uint16, uint16) error { return nil }
func (p *fakeProc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return 7, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// readSession reads a session's frames to its status.
func readSession(t *testing.T, conn *websocket.Conn) (string, api.ExecResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out strings.Builder
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (output so far %q)", err, out.String())
		}
		switch msg[0] {
		case api.ExecStdout:
			out.Write(msg[1:])
		case api.ExecStatus:
			res, err := api.ParseExecResult(msg[1:])
			if err != nil {
				t.Fatal(err)
			}
			conn.Close(websocket.StatusNormalClosure, "")
			return out.String(), res
		}
	}
}

func TestExecOnAClientNode(t *testing.T) {
	c := newTestCA(t)
	ex := &fakeExec{}
	srv, err := NewNodeServer(NodeServerConfig{
		TLS:  c.client(t, "c1", loopback).ServerTLS(tls.RequireAndVerifyClientCert, pki.RequireRole(pki.RoleServer)),
		Logs: newFakeLogs(), Exec: ex, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	addr := ln.Addr().String()
	ec := NewExecClient(c.server(t, "s1"))
	ctx := context.Background()
	opts := api.ExecOptions{Container: "app", Command: []string{"sh", "-c", "exit 7"}}

	conn, err := ec.OpenExec(ctx, addr, "c1", "default", "web-1", opts)
	if err != nil {
		t.Fatal(err)
	}
	out, res := readSession(t, conn)
	if out != "ran sh -c exit 7\n" || res.ExitCode != 7 || res.Error != "" {
		t.Fatalf("session: %q, %+v", out, res)
	}
	if got := ex.called(); len(got) != 1 || got[0] != "default/web-1/app sh -c exit 7" {
		t.Fatalf("the node was asked %q", got)
	}

	t.Run("a node's refusal keeps its status", func(t *testing.T) {
		for _, tc := range []struct {
			err  error
			code int
		}{
			{fmt.Errorf("container app: %w", runtime.ErrContainerNotFound), http.StatusNotFound},
			{fmt.Errorf("container app: %w", runtime.ErrNotRunning), http.StatusConflict},
			{errors.New("containerd on fire"), http.StatusInternalServerError},
		} {
			ex.err = tc.err
			_, err := ec.OpenExec(ctx, addr, "c1", "default", "web-1", opts)
			var ee *ExecError
			if !errors.As(err, &ee) || ee.Code != tc.code || !strings.Contains(ee.Message, tc.err.Error()) {
				t.Errorf("%v: got %v, want HTTP %d with the node's message", tc.err, err, tc.code)
			}
		}
		ex.err = nil
		_, err := ec.OpenExec(ctx, addr, "c1", "default", "web-1", api.ExecOptions{Command: []string{"sh"}})
		var ee *ExecError
		if !errors.As(err, &ee) || ee.Code != http.StatusBadRequest || !strings.Contains(ee.Message, "container: required") {
			t.Errorf("no container: %v, want HTTP 400", err)
		}
	})

	t.Run("the server checks it reached the node it meant", func(t *testing.T) {
		checkWrongNodeRefused(t, func(node string) error {
			_, err := ec.OpenExec(ctx, addr, node, "default", "web-1", opts)
			return err
		}, func() int { return len(ex.called()) })
	})

	t.Run("only servers may exec", func(t *testing.T) {
		before := len(ex.called())
		// Another client node's certificate (what an attacker on a
		// client VM holds), or the node's own: refused at the handshake.
		checkClientCertsRefused(t, c, func(kp *pki.Keypair) error {
			_, err := NewExecClient(kp).OpenExec(ctx, addr, "c1", "default", "web-1", opts)
			return err
		})
		if len(ex.called()) != before {
			t.Fatal("a refused caller reached the containers")
		}
	})
}

func TestExecOnAServerNode(t *testing.T) {
	c := newTestCA(t)
	ex := &fakeExec{}
	b := newFakeBackend()
	addr := startServer(t, c, c.server(t, "s1"), b, func(cfg *ServerConfig) { cfg.Exec = ex })
	ctx := context.Background()
	opts := api.ExecOptions{Container: "app", Command: []string{"id"}}

	conn, err := NewExecClient(c.server(t, "s2")).OpenExec(ctx, addr, "s1", "default", "web-1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if out, res := readSession(t, conn); out != "ran id\n" || res.ExitCode != 7 {
		t.Fatalf("session: %q, %+v", out, res)
	}
	// Servers accept client certificates (to serve writes and watches):
	// the exec path refuses them, with the token or without.
	url := "https://" + addr + pathExec + "?namespace=default&pod=web-1&container=app&command=id"
	checkServersOnly(t, c, url)
	b.mu.Lock()
	b.revoked["s2"] = true
	b.mu.Unlock()
	if _, err := NewExecClient(c.server(t, "s2")).OpenExec(ctx, addr, "s1", "default", "web-1", opts); err == nil {
		t.Error("a revoked server ran an exec")
	}
	if n := len(ex.called()); n != 1 {
		t.Fatalf("%d execs ran; only the first caller's may", n)
	}
}
