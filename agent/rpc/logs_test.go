package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

// fakeLogs is a node's logs: it writes lines, and with Follow, flushes
// and streams more until the reader goes away.
type fakeLogs struct {
	err   error
	lines string
	more  chan string // with Follow: written as it comes

	mu    sync.Mutex
	calls []string
	ended chan struct{} // closed when a follow ended
}

func newFakeLogs() *fakeLogs {
	return &fakeLogs{lines: "one\ntwo\n", more: make(chan string, 10), ended: make(chan struct{})}
}

func (f *fakeLogs) ContainerLogs(ctx context.Context, ns, pod string, opts api.LogOptions, w io.Writer) error {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s/%s/%s tail=%v follow=%v", ns, pod, opts.Container, opts.Tail != nil && *opts.Tail == 1, opts.Follow))
	f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	io.WriteString(w, f.lines)
	if !opts.Follow {
		return nil
	}
	defer close(f.ended)
	w.(interface{ Flush() }).Flush()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-f.more:
			io.WriteString(w, l)
			w.(interface{ Flush() }).Flush()
		}
	}
}

func (f *fakeLogs) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// startNodeServer serves a client node's logs on 127.0.0.1.
func startNodeServer(t *testing.T, kp *pki.Keypair, logs NodeLogs) string {
	t.Helper()
	srv, err := NewNodeServer(NodeServerConfig{
		TLS:  kp.ServerTLS(tls.RequireAndVerifyClientCert, pki.RequireRole(pki.RoleServer)),
		Logs: logs, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
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
		<-done
	})
	return ln.Addr().String()
}

func TestLogsFromAClientNode(t *testing.T) {
	c := newTestCA(t)
	logs := newFakeLogs()
	addr := startNodeServer(t, c.client(t, "c1", loopback), logs)
	lc := NewLogClient(c.server(t, "s1"))
	ctx := context.Background()

	body, err := lc.OpenLogs(ctx, addr, "c1", "default", "web-1", api.LogOptions{Container: "app", Tail: api.Lines(1)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "one\ntwo\n" {
		t.Fatalf("logs %q", b)
	}
	if got := logs.called(); len(got) != 1 || got[0] != "default/web-1/app tail=true follow=false" {
		t.Fatalf("the node was asked %q", got)
	}

	t.Run("follow streams, and ends when the reader goes", func(t *testing.T) {
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		body, err := lc.OpenLogs(fctx, addr, "c1", "default", "web-1", api.LogOptions{Container: "app", Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		defer body.Close()
		r := bufio.NewReader(body)
		for _, want := range []string{"one\n", "two\n", "three\n"} {
			if want == "three\n" {
				logs.more <- want // written after the answer began
			}
			l, err := r.ReadString('\n')
			if err != nil || l != want {
				t.Fatalf("read %q, %v; want %q", l, err, want)
			}
		}
		cancel()
		select {
		case <-logs.ended:
		case <-time.After(5 * time.Second):
			t.Fatal("the node kept streaming after the reader went away")
		}
	})

	t.Run("a node's refusal keeps its status", func(t *testing.T) {
		for _, tc := range []struct {
			err  error
			code int
		}{
			{fmt.Errorf("container app of pod default/web-1: %w", containerlog.ErrNotFound), http.StatusNotFound},
			{containerlog.ErrNoPrevious, http.StatusBadRequest},
			{errors.New("disk on fire"), http.StatusInternalServerError},
		} {
			logs.err = tc.err
			_, err := lc.OpenLogs(ctx, addr, "c1", "default", "web-1", api.LogOptions{Container: "app"})
			var le *LogError
			if !errors.As(err, &le) || le.Code != tc.code || !strings.Contains(le.Message, tc.err.Error()) {
				t.Errorf("%v: got %v, want HTTP %d with the node's message", tc.err, err, tc.code)
			}
		}
		logs.err = nil
		_, err := lc.OpenLogs(ctx, addr, "c1", "default", "web-1", api.LogOptions{})
		var le *LogError
		if !errors.As(err, &le) || le.Code != http.StatusBadRequest {
			t.Errorf("no container: %v, want HTTP 400", err)
		}
	})

	t.Run("the reader checks it reached the node it meant", func(t *testing.T) {
		checkWrongNodeRefused(t, func(node string) error {
			_, err := lc.OpenLogs(ctx, addr, node, "default", "web-1", api.LogOptions{Container: "app"})
			return err
		}, func() int { return len(logs.called()) })
	})

	t.Run("only servers may read", func(t *testing.T) {
		before := len(logs.called())
		// Another client node's certificate, as an attacker on a client
		// VM holds: refused at the handshake.
		checkClientCertsRefused(t, c, func(kp *pki.Keypair) error {
			_, err := NewLogClient(kp).OpenLogs(ctx, addr, "c1", "default", "web-1", api.LogOptions{Container: "app"})
			return err
		})
		// No certificate, with the API token: refused at the handshake.
		hc := httpClient(t, &tls.Config{InsecureSkipVerify: true})
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+pathLogs+"?namespace=default&pod=web-1&container=app", nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("no certificate: HTTP %d", resp.StatusCode)
		}
		if len(logs.called()) != before {
			t.Fatal("a refused reader reached the logs")
		}
	})
}

func TestLogsFromAServerNode(t *testing.T) {
	c := newTestCA(t)
	logs := newFakeLogs()
	b := newFakeBackend()
	addr := startServer(t, c, c.server(t, "s1"), b, func(cfg *ServerConfig) { cfg.Logs = logs })
	ctx := context.Background()

	body, err := NewLogClient(c.server(t, "s2")).OpenLogs(ctx, addr, "s1", "default", "web-1", api.LogOptions{Container: "app"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	body.Close()
	if string(got) != "one\ntwo\n" {
		t.Fatalf("logs %q", got)
	}
	// Servers accept client certificates (to serve writes and watches):
	// the logs path refuses them, with the token or without.
	url := "https://" + addr + pathLogs + "?namespace=default&pod=web-1&container=app"
	checkServersOnly(t, c, url)
	// A removed server's certificate is refused.
	b.mu.Lock()
	b.revoked["s2"] = true
	b.mu.Unlock()
	if _, err := NewLogClient(c.server(t, "s2")).OpenLogs(ctx, addr, "s1", "default", "web-1", api.LogOptions{Container: "app"}); err == nil {
		t.Error("a revoked server read logs")
	}
	if n := len(logs.called()); n != 1 {
		t.Fatalf("the logs were read %d times; only the first reader may", n)
	}
}

func TestNodeServerShutdownEndsFollows(t *testing.T) {
	c := newTestCA(t)
	logs := newFakeLogs()
	srv, err := NewNodeServer(NodeServerConfig{
		TLS:  c.client(t, "c1", loopback).ServerTLS(tls.RequireAndVerifyClientCert, pki.RequireRole(pki.RoleServer)),
		Logs: logs, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	body, err := NewLogClient(c.server(t, "s1")).OpenLogs(context.Background(), ln.Addr().String(), "c1", "default", "web-1", api.LogOptions{Container: "app", Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a follow open: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %s", d)
	}
	<-logs.ended

	if _, err := NewNodeServer(NodeServerConfig{TLS: c.client(t, "c1", loopback).ServerTLS(tls.VerifyClientCertIfGiven, nil), Logs: logs}); err == nil {
		t.Error("a node server that does not require certificates was accepted")
	}
}
