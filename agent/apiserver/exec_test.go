package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/flotilla-io/flotilla/agent/execws"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// fakeExec stands for one node's containers: a command prints "<node>
// <ns>/<pod> <container>", then echoes its stdin, and exits with the code
// of "exit N" (0 otherwise).
type fakeExec struct {
	node string
	err  error
	mu   sync.Mutex
	seen []api.ExecOptions
}

func (f *fakeExec) StartExec(ctx context.Context, ns, pod string, opts api.ExecOptions, eio runtime.ExecIO) (runtime.ExecProcess, error) {
	f.mu.Lock()
	f.seen = append(f.seen, opts)
	f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	p := &fakeProc{done: make(chan struct{}), resized: make(chan api.TermSize, 4)}
	if opts.Command[0] == "exit" && len(opts.Command) > 1 {
		p.code, _ = strconv.Atoi(opts.Command[1])
	}
	go func() {
		defer close(p.done)
		fmt.Fprintf(eio.Stdout, "%s %s/%s %s\n", f.node, ns, pod, opts.Container)
		if eio.Stderr != nil {
			fmt.Fprintf(eio.Stderr, "on stderr\n")
		}
		if eio.Stdin != nil {
			_, _ = io.Copy(eio.Stdout, eio.Stdin)
		}
	}()
	return p, nil
}

func (f *fakeExec) asked() []api.ExecOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.ExecOptions(nil), f.seen...)
}

type fakeProc struct {
	code    int
	done    chan struct{}
	resized chan api.TermSize
}

func (p *fakeProc) Resize(_ context.Context, w, h uint16) error {
	p.resized <- api.TermSize{Width: w, Height: h}
	return nil
}

func (p *fakeProc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.code, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// fakeExecOpener reaches other nodes' fakeExecs over real WebSockets, each
// node served by execws as rpc's handler serves it.
type fakeExecOpener struct {
	urls map[string]string
	err  error
}

func newFakeExecOpener(t *testing.T, nodes map[string]*fakeExec) *fakeExecOpener {
	o := &fakeExecOpener{urls: map[string]string{}}
	for name, n := range nodes {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			ns, pod := q.Get("namespace"), q.Get("pod")
			q.Del("namespace")
			q.Del("pod")
			opts, err := api.ParseExecOptions(q)
			if err != nil {
				execws.WriteError(w, 400, err.Error())
				return
			}
			execws.ServeHTTP(r.Context(), w, r, opts, func(ctx context.Context, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error) {
				return n.StartExec(ctx, ns, pod, opts, io)
			}, slog.New(slog.DiscardHandler))
		}))
		t.Cleanup(hs.Close)
		o.urls[name] = hs.URL
	}
	return o
}

func (o *fakeExecOpener) OpenExec(ctx context.Context, node, ns, pod string, opts api.ExecOptions) (*websocket.Conn, error) {
	if o.err != nil {
		return nil, o.err
	}
	q := opts.Query()
	q.Set("namespace", ns)
	q.Set("pod", pod)
	conn, resp, err := websocket.Dial(ctx, o.urls[node]+"/rpc/v1/exec?"+q.Encode(), &websocket.DialOptions{Subprotocols: []string{api.ExecProtocol}})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			return nil, &rpc.ExecError{Node: node, Code: resp.StatusCode, Message: string(body)}
		}
		return nil, err
	}
	return conn, nil
}

// newExecServer is the API of server n1, whose pods are logPods, served
// over HTTP; it returns a client with the token.
func newExecServer(t *testing.T, local *fakeExec, remote ExecOpener, maxStreams int) (*api.Client, string) {
	t.Helper()
	srv, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus,
		Logger: slog.New(slog.DiscardHandler),
		Exec:   &ExecConfig{Pod: podOf(logPods), Local: local, Remote: remote, MaxStreams: maxStreams}})
	if err != nil {
		t.Fatal(err)
	}
	// The agent's own http.Server: its header limit and timeouts.
	hs := httptest.NewUnstartedServer(srv)
	hs.Config = NewHTTPServer(srv, slog.New(slog.DiscardHandler))
	hs.Start()
	t.Cleanup(hs.Close)
	t.Cleanup(srv.StopStreams)
	c, err := api.NewClient(&api.Config{Address: hs.URL, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	return c, hs.URL
}

func TestPodExec(t *testing.T) {
	n1, n2 := &fakeExec{node: "n1"}, &fakeExec{node: "n2"}
	c, _ := newExecServer(t, n1, newFakeExecOpener(t, map[string]*fakeExec{"n2": n2}), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, pod string
		opts      api.ExecOptions
		stdin     string
		code      int
		stdout    string
		stderr    string
	}{
		{name: "the only container", pod: "solo", opts: api.ExecOptions{Command: []string{"exit", "3"}}, code: 3, stdout: "n1 default/solo app\n", stderr: "on stderr\n"},
		{name: "a container named", pod: "duo", opts: api.ExecOptions{Container: "b", Command: []string{"true"}}, stdout: "n1 default/duo b\n", stderr: "on stderr\n"},
		{name: "stdin", pod: "solo", opts: api.ExecOptions{Command: []string{"cat"}, Stdin: true}, stdin: strings.Repeat("x", 100_000), stdout: "n1 default/solo app\n" + strings.Repeat("x", 100_000), stderr: "on stderr\n"},
		{name: "tty: no stderr", pod: "solo", opts: api.ExecOptions{Command: []string{"exit", "1"}, TTY: true}, code: 1, stdout: "n1 default/solo app\n"},
		{name: "the longest command, URL-encoded thrice its size", pod: "solo", opts: api.ExecOptions{Command: []string{"exit", "0", strings.Repeat("%", 4096), strings.Repeat("%", 4096), strings.Repeat("%", 4096), strings.Repeat("%", 4091)}},
			stdout: "n1 default/solo app\n", stderr: "on stderr\n"},
		{name: "on another node", pod: "far", opts: api.ExecOptions{Command: []string{"exit", "42"}, Stdin: true}, stdin: "hi\n", code: 42, stdout: "n2 default/far app\nhi\n", stderr: "on stderr\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code, err := c.Exec(ctx, "default", tc.pod, tc.opts, strings.NewReader(tc.stdin), &stdout, &stderr, nil)
			if err != nil || code != tc.code || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
				t.Fatalf("Exec = %d, %v, stdout %.80q, stderr %q; want %d, %.80q, %q", code, err, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
	if got := n2.asked(); len(got) != 1 || got[0].Container != "app" || got[0].Command[1] != "42" {
		t.Errorf("n2 was asked %+v; want the one exec in far, its container named", got)
	}
}

func TestPodExecRefused(t *testing.T) {
	n1, n2 := &fakeExec{node: "n1"}, &fakeExec{node: "n2"}
	opener := newFakeExecOpener(t, map[string]*fakeExec{"n2": n2})
	c, base := newExecServer(t, n1, opener, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		pod     string
		opts    api.ExecOptions
		local   error // what n1 answers
		remote  error // what n2 answers
		openErr error
		code    int
		want    string
	}{
		{name: "several containers, none named", pod: "duo", opts: api.ExecOptions{Command: []string{"sh"}}, code: 400, want: "name one with ?container= (a, b)"},
		{name: "no such container", pod: "duo", opts: api.ExecOptions{Container: "c", Command: []string{"sh"}}, code: 404, want: `pod default/duo has no container "c"`},
		{name: "no such pod", pod: "nope", opts: api.ExecOptions{Command: []string{"sh"}}, code: 404, want: "pod default/nope not found"},
		{name: "not placed", pod: "pending", opts: api.ExecOptions{Command: []string{"sh"}}, code: 409, want: "not placed on a node yet"},
		{name: "not running", pod: "solo", opts: api.ExecOptions{Command: []string{"sh"}}, local: fmt.Errorf("container app: %w", runtime.ErrNotRunning), code: 409, want: "container not running"},
		{name: "gone from the node", pod: "solo", opts: api.ExecOptions{Command: []string{"sh"}}, local: runtime.ErrContainerNotFound, code: 404, want: "container not found"},
		{name: "node busy", pod: "solo", opts: api.ExecOptions{Command: []string{"sh"}}, local: fmt.Errorf("%w: 32", execws.ErrBusy), code: 429, want: "too many execs"},
		{name: "not running there", pod: "far", opts: api.ExecOptions{Command: []string{"sh"}}, remote: runtime.ErrNotRunning, code: 409, want: "container not running"},
		{name: "the node cannot be reached", pod: "far", opts: api.ExecOptions{Command: []string{"sh"}}, openErr: errors.New("dial tcp 10.0.0.2:7403: connection refused"), code: 502, want: "connection refused"},
		{name: "the node refuses the server", pod: "far", opts: api.ExecOptions{Command: []string{"sh"}}, openErr: &rpc.ExecError{Node: "n2", Code: 403, Message: "not a server"}, code: 502, want: "not a server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n1.err, n2.err, opener.err = tc.local, tc.remote, tc.openErr
			_, err := c.Exec(ctx, "default", tc.pod, tc.opts, nil, nil, nil, nil)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.StatusCode != tc.code || !strings.Contains(ae.Message, tc.want) {
				t.Fatalf("Exec = %v; want HTTP %d saying %q", err, tc.code, tc.want)
			}
		})
	}
	n1.err, n2.err, opener.err = nil, nil, nil

	// Raw requests: what a client other than api.Client can get wrong.
	for _, tc := range []struct {
		name, query, token string
		upgrade            bool
		code               int
		want               string
	}{
		{"no token", "command=sh", "", true, 401, "missing or wrong token"},
		{"no command", "", "s3cret", true, 400, "command: required"},
		{"empty program", "command=", "s3cret", true, 400, "the program (first argument) is empty"},
		{"unknown parameter", "command=sh&cmd=x", "s3cret", true, 400, `unknown parameter "cmd"`},
		{"bad flag", "command=sh&tty=maybe", "s3cret", true, 400, `tty: "maybe" is not true or false`},
		{"too many arguments", strings.Repeat("command=x&", api.MaxExecArgs+1), "s3cret", true, 400, "257 arguments; at most 256"},
		{"argument too long", "command=" + strings.Repeat("a", api.MaxExecArgLen+1), "s3cret", true, 400, "4097 bytes; at most 4096"},
		{"not a WebSocket", "command=sh", "s3cret", false, 426, "exec is a WebSocket"},
		{"no subprotocol", "command=sh", "s3cret", true, 426, api.ExecProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/namespaces/default/pods/solo/exec?"+tc.query, nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			if tc.upgrade {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", "13")
				req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var er api.ErrorResponse
			if json.Unmarshal(body, &er) == nil {
				body = []byte(er.Error)
			}
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
				t.Fatalf("= %d %s; want %d saying %q", resp.StatusCode, body, tc.code, tc.want)
			}
		})
	}

	noExec, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(noExec, http.MethodGet, "/v1/namespaces/default/pods/solo/exec?command=sh", "s3cret", "")
	if rec.Code != 501 {
		t.Errorf("an agent without exec: %d", rec.Code)
	}
	if _, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), Status: noStatus, Exec: &ExecConfig{}}); err == nil {
		t.Error("ExecConfig without Pod and Local was accepted")
	}
}

func TestPodExecBounded(t *testing.T) {
	block := &blockingExec{started: make(chan struct{}, 1), release: make(chan struct{})}
	srv, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus,
		Logger: slog.New(slog.DiscardHandler), Exec: &ExecConfig{Pod: podOf(logPods), Local: block, MaxStreams: 1}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c, err := api.NewClient(&api.Config{Address: hs.URL, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "default", "solo", api.ExecOptions{Command: []string{"sleep"}}, nil, nil, nil, nil)
		first <- err
	}()
	<-block.started
	_, err = c.Exec(ctx, "default", "solo", api.ExecOptions{Command: []string{"sh"}}, nil, nil, nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a second exec while one runs with MaxStreams 1: %v; want 429", err)
	}
	// StopStreams (the agent's shutdown) ends the session, and the command.
	srv.StopStreams()
	select {
	case err := <-first:
		if err == nil {
			t.Error("the session ended by StopStreams reported no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("StopStreams did not end the session")
	}
}

// blockingExec runs commands that never exit by themselves.
type blockingExec struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingExec) StartExec(ctx context.Context, ns, pod string, opts api.ExecOptions, eio runtime.ExecIO) (runtime.ExecProcess, error) {
	b.started <- struct{}{}
	return &fakeProc{done: b.release}, nil
}

// TestPodExecResize: resize frames reach the process of a TTY exec.
func TestPodExecResize(t *testing.T) {
	var mu sync.Mutex
	var proc *fakeProc
	local := execFunc(func(ctx context.Context, ns, pod string, opts api.ExecOptions, eio runtime.ExecIO) (runtime.ExecProcess, error) {
		mu.Lock()
		defer mu.Unlock()
		proc = &fakeProc{done: make(chan struct{}), resized: make(chan api.TermSize, 4)}
		go func() {
			_, _ = io.Copy(io.Discard, eio.Stdin)
			close(proc.done)
		}()
		return proc, nil
	})
	srv, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus,
		Logger: slog.New(slog.DiscardHandler), Exec: &ExecConfig{Pod: podOf(logPods), Local: local}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	c, _ := api.NewClient(&api.Config{Address: hs.URL, Token: "s3cret"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdinR, stdinW := io.Pipe()
	resize := make(chan api.TermSize)
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "default", "solo", api.ExecOptions{Command: []string{"sh"}, TTY: true, Stdin: true}, stdinR, nil, nil, resize)
		done <- err
	}()
	resize <- api.TermSize{Width: 100, Height: 30}
	mu.Lock()
	p := proc
	mu.Unlock()
	if got := <-p.resized; got != (api.TermSize{Width: 100, Height: 30}) {
		t.Errorf("resized to %+v", got)
	}
	stdinW.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type execFunc func(ctx context.Context, ns, pod string, opts api.ExecOptions, eio runtime.ExecIO) (runtime.ExecProcess, error)

func (f execFunc) StartExec(ctx context.Context, ns, pod string, opts api.ExecOptions, eio runtime.ExecIO) (runtime.ExecProcess, error) {
	return f(ctx, ns, pod, opts, eio)
}

// TestPodExecThroughAClientAgent: a client agent proxies an exec in a pod
// not its own to a server, the WebSocket carried end to end over TLS.
func TestPodExecThroughAClientAgent(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	server := &fakeExec{node: "s1"}
	s1 := startUpstream(t, p, s1cert, s1key, func(w http.ResponseWriter, r *http.Request) {
		opts, err := api.ParseExecOptions(r.URL.Query())
		if err != nil || r.Header.Get("Authorization") != "Bearer s3cret" {
			execws.WriteError(w, 400, fmt.Sprintf("%v, auth %q", err, r.Header.Get("Authorization")))
			return
		}
		execws.ServeHTTP(r.Context(), w, r, opts, func(ctx context.Context, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error) {
			return server.StartExec(ctx, "default", "elsewhere", opts, io)
		}, slog.New(slog.DiscardHandler))
	})
	own := &fakeExec{node: "c1"}
	hs := startClientAgent(t, p, s1.addr, func(cfg *Config) {
		cfg.Exec = &ExecConfig{Pod: clientAgentPods(), Local: own}
	})
	c, _ := api.NewClient(&api.Config{Address: hs.URL, Token: "s3cret"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out bytes.Buffer
	code, err := c.Exec(ctx, "default", "mine", api.ExecOptions{Command: []string{"exit", "5"}}, nil, &out, nil, nil)
	if err != nil || code != 5 || out.String() != "c1 default/mine app\n" {
		t.Fatalf("own pod: %d, %v, %q", code, err, out.String())
	}
	out.Reset()
	code, err = c.Exec(ctx, "default", "elsewhere", api.ExecOptions{Container: "app", Command: []string{"exit", "6"}, Stdin: true}, strings.NewReader("through the proxy\n"), &out, nil, nil)
	if err != nil || code != 6 || out.String() != "s1 default/elsewhere app\nthrough the proxy\n" {
		t.Fatalf("a pod on another node, through the server: %d, %v, %q", code, err, out.String())
	}
}
