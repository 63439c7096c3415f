package execws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// proc is a command that runs until released or killed, and reports how
// it ended.
type proc struct {
	release chan struct{}
	ended   chan string
}

func (p *proc) Resize(context.Context, uint16, uint16) error { return nil }

func (p *proc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.release:
		p.ended <- "exited"
		return 0, nil
	case <-ctx.Done():
		p.ended <- "killed"
		return -1, ctx.Err()
	}
}

// serveProc serves sessions of p with opts from the query.
func serveProc(t *testing.T, p *proc) string {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts, err := api.ParseExecOptions(r.URL.Query())
		if err != nil {
			WriteError(w, 400, err.Error())
			return
		}
		ServeHTTP(r.Context(), w, r, opts, func(context.Context, api.ExecOptions, runtime.ExecIO) (runtime.ExecProcess, error) {
			return p, nil
		}, slog.New(slog.DiscardHandler))
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

func dial(t *testing.T, ctx context.Context, url string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{api.ExecProtocol}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

// A client that breaks the protocol gets the command killed and the
// WebSocket closed with a policy violation that says why.
func TestProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name, query string
		typ         websocket.MessageType
		msg         []byte
		want        string
	}{
		{"stdin without stdin=true", "command=sh", websocket.MessageBinary, []byte{api.ExecStdin, 'x'}, "started without stdin=true"},
		{"a stream the agent sends", "command=sh", websocket.MessageBinary, []byte{api.ExecStdout, 'x'}, "stream 1 is not one a client sends"},
		{"a text message", "command=sh", websocket.MessageText, []byte("hello"), "exec messages are binary"},
		{"an empty message", "command=sh", websocket.MessageBinary, nil, "exec messages are binary"},
		{"a bad resize", "command=sh&tty", websocket.MessageBinary, api.ExecFrame(api.ExecResize, []byte(`{"width":0}`)), "width and height must be 1 to 10000"},
		{"closing stdout", "command=sh&stdin", websocket.MessageBinary, []byte{api.ExecClose, api.ExecStdout}, "only stdin can be closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &proc{release: make(chan struct{}), ended: make(chan string, 1)}
			url := serveProc(t, p)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn := dial(t, ctx, url+"/?"+tc.query)
			if err := conn.Write(ctx, tc.typ, tc.msg); err != nil {
				t.Fatal(err)
			}
			_, _, err := conn.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, tc.want) {
				t.Fatalf("read after a bad frame: %v; want a policy violation saying %q", err, tc.want)
			}
			if how := <-p.ended; how != "killed" {
				t.Errorf("the command %s; want it killed", how)
			}
		})
	}
}

// A client that goes away gets its command killed.
func TestClientGoneKills(t *testing.T) {
	p := &proc{release: make(chan struct{}), ended: make(chan string, 1)}
	url := serveProc(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := dial(t, ctx, url+"/?command=sleep")
	conn.CloseNow()
	select {
	case how := <-p.ended:
		if how != "killed" {
			t.Errorf("the command %s; want it killed", how)
		}
	case <-ctx.Done():
		t.Fatal("the command outlived its client")
	}
}

// A command that exits while the client still sends stdin nobody reads
// ends the session with its status.
func TestExitWhileStdinBlocked(t *testing.T) {
	p := &proc{release: make(chan struct{}), ended: make(chan string, 1)}
	url := serveProc(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := dial(t, ctx, url+"/?command=cat&stdin")
	for range 3 { // more than the pipe takes without a reader
		if err := conn.Write(ctx, websocket.MessageBinary, api.ExecFrame(api.ExecStdin, make([]byte, 1000))); err != nil {
			t.Fatal(err)
		}
	}
	close(p.release)
	_, msg, err := conn.Read(ctx)
	if err != nil || msg[0] != api.ExecStatus || string(msg[1:]) != `{"exit_code":0}` {
		t.Fatalf("read %q, %v; want the status", msg, err)
	}
}

func TestErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("x: %w", runtime.ErrContainerNotFound), 404},
		{fmt.Errorf("x: %w", runtime.ErrNotRunning), 409},
		{fmt.Errorf("x: %w", ErrBusy), 429},
		{io.ErrUnexpectedEOF, 500},
	} {
		if got := ErrorStatus(tc.err); got != tc.code {
			t.Errorf("ErrorStatus(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

func TestSplitComma(t *testing.T) {
	if got := splitComma(" a, b ,,c\t"); strings.Join(got, "|") != "a|b|c" {
		t.Errorf("splitComma = %q", got)
	}
}
