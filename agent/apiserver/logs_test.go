package apiserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

// fakeLogReader stands for one node's logs: it writes "<node> <ns>/<pod>
// <container>" and its lines, and with Follow streams what is sent on more
// until the reader goes away.
type fakeLogReader struct {
	node  string
	err   error
	more  chan string
	mu    sync.Mutex
	calls []api.LogOptions
	ended chan struct{}
}

func newFakeLogReader(node string) *fakeLogReader {
	return &fakeLogReader{node: node, more: make(chan string, 10), ended: make(chan struct{}, 10)}
}

func (f *fakeLogReader) ContainerLogs(ctx context.Context, ns, pod string, opts api.LogOptions, w io.Writer) error {
	f.mu.Lock()
	f.calls = append(f.calls, opts)
	f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	fmt.Fprintf(w, "%s %s/%s %s\n", f.node, ns, pod, opts.Container)
	if !opts.Follow {
		return nil
	}
	defer func() { f.ended <- struct{}{} }()
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

func (f *fakeLogReader) asked() []api.LogOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// fakeOpener reaches other nodes' fakeLogReaders through a pipe, as
// rpc.LogClient reaches nodes.
type fakeOpener struct {
	nodes map[string]*fakeLogReader
	err   error
	asked []string
}

func (o *fakeOpener) OpenLogs(ctx context.Context, node, ns, pod string, opts api.LogOptions) (io.ReadCloser, error) {
	o.asked = append(o.asked, node)
	if o.err != nil {
		return nil, o.err
	}
	n, ok := o.nodes[node]
	if !ok {
		return nil, fmt.Errorf("node %s is not a member", node)
	}
	if n.err != nil {
		return nil, &rpc.LogError{Node: node, Code: rpc.LogErrorStatus(n.err), Message: n.err.Error()}
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	go func() { pw.CloseWithError(n.ContainerLogs(ctx, ns, pod, opts, flushless{pw})) }()
	return readCloser{pr, closerFunc(func() error { cancel(); return pr.Close() })}, nil
}

type flushless struct{ io.Writer }

func (flushless) Flush() {}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// logPods are the pods the log tests ask about.
var logPods = map[string]api.Pod{
	"default/solo":    {Namespace: "default", Name: "solo", Node: "n1", Containers: []api.Container{{Name: "app"}}},
	"default/duo":     {Namespace: "default", Name: "duo", Node: "n1", Containers: []api.Container{{Name: "a"}, {Name: "b"}}},
	"default/far":     {Namespace: "default", Name: "far", Node: "n2", Containers: []api.Container{{Name: "app"}}},
	"default/pending": {Namespace: "default", Name: "pending", Containers: []api.Container{{Name: "app"}}},
}

func podOf(pods map[string]api.Pod) func(string) (api.Pod, bool) {
	return func(id string) (api.Pod, bool) { p, ok := pods[id]; return p, ok }
}

// newLogServer is the API of server n1, whose pods are logPods.
func newLogServer(t *testing.T, local *fakeLogReader, remote LogOpener, maxStreams int) *Server {
	t.Helper()
	srv, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus,
		Logs: &LogsConfig{Pod: podOf(logPods), Local: local, Remote: remote, MaxStreams: maxStreams}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func TestPodLogs(t *testing.T) {
	n1, n2 := newFakeLogReader("n1"), newFakeLogReader("n2")
	remote := &fakeOpener{nodes: map[string]*fakeLogReader{"n2": n2}}
	srv := newLogServer(t, n1, remote, 0)
	for _, tc := range []struct {
		name, path, token string
		code              int
		want              string // the body, or what its error says
	}{
		{"no token", "/v1/namespaces/default/pods/solo/logs", "", 401, "missing or wrong token"},
		{"the only container", "/v1/namespaces/default/pods/solo/logs", "s3cret", 200, "n1 default/solo app\n"},
		{"a container named", "/v1/namespaces/default/pods/duo/logs?container=b", "s3cret", 200, "n1 default/duo b\n"},
		{"several containers, none named", "/v1/namespaces/default/pods/duo/logs", "s3cret", 400, "pod default/duo has 2 containers; name one with ?container= (a, b)"},
		{"no such container", "/v1/namespaces/default/pods/duo/logs?container=c", "s3cret", 404, `pod default/duo has no container "c"; its containers: a, b`},
		{"no such pod", "/v1/namespaces/default/pods/nope/logs", "s3cret", 404, "pod default/nope not found"},
		{"not placed", "/v1/namespaces/default/pods/pending/logs", "s3cret", 404, "not placed on a node yet"},
		{"on another node", "/v1/namespaces/default/pods/far/logs", "s3cret", 200, "n2 default/far app\n"},
		{"tail out of bounds", "/v1/namespaces/default/pods/solo/logs?tail=-1", "s3cret", 400, "tail: -1 lines; ask for 0 to 100000"},
		{"tail not a number", "/v1/namespaces/default/pods/solo/logs?tail=ten", "s3cret", 400, `tail: "ten" is not a number`},
		{"since neither", "/v1/namespaces/default/pods/solo/logs?since=yesterday", "s3cret", 400, "neither a duration"},
		{"unknown parameter", "/v1/namespaces/default/pods/solo/logs?lines=3", "s3cret", 400, `unknown parameter "lines"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(srv, http.MethodGet, tc.path, tc.token, "")
			if rec.Code != tc.code {
				t.Fatalf("GET %s = %d %s, want %d", tc.path, rec.Code, rec.Body, tc.code)
			}
			if tc.code == 200 {
				if rec.Body.String() != tc.want || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
					t.Fatalf("body %q (%s), want %q", rec.Body, rec.Header().Get("Content-Type"), tc.want)
				}
			} else if got := errorText(t, rec); !strings.Contains(got, tc.want) {
				t.Fatalf("error %q, want it to contain %q", got, tc.want)
			}
		})
	}
	// The options reach the node as asked.
	rec := serve(srv, http.MethodGet, "/v1/namespaces/default/pods/solo/logs?tail=5&since=10m&timestamps&previous=true", "s3cret", "")
	if rec.Code != 200 {
		t.Fatal(rec.Body)
	}
	got := n1.asked()[len(n1.asked())-1]
	if got.Container != "app" || got.Tail == nil || *got.Tail != 5 || got.Since != 10*time.Minute || !got.Timestamps || !got.Previous || got.Follow {
		t.Fatalf("the node was asked %+v", got)
	}
	if !slices.Equal(remote.asked, []string{"n2"}) {
		t.Fatalf("other nodes asked: %v; want only n2, once", remote.asked)
	}
}

func TestPodLogsErrors(t *testing.T) {
	n1, n2 := newFakeLogReader("n1"), newFakeLogReader("n2")
	remote := &fakeOpener{nodes: map[string]*fakeLogReader{"n2": n2}}
	srv := newLogServer(t, n1, remote, 0)
	for _, tc := range []struct {
		name         string
		local, other error // what n1, n2 answer
		openErr      error // reaching n2
		path         string
		code         int
		want         string
	}{
		{name: "no logs here", local: fmt.Errorf("container app of pod default/solo: %w", containerlog.ErrNotFound), path: "solo", code: 404, want: "no logs for this container"},
		{name: "no previous run", local: containerlog.ErrNoPrevious, path: "solo", code: 400, want: "has not restarted"},
		{name: "no logs there", other: containerlog.ErrNotFound, path: "far", code: 404, want: "node n2: no logs"},
		{name: "the node cannot be reached", openErr: errors.New("dial tcp 10.0.0.2:7403: connection refused"), path: "far", code: 502, want: "connection refused"},
		{name: "the node refuses the server", openErr: &rpc.LogError{Node: "n2", Code: 403, Message: "not a server"}, path: "far", code: 502, want: "not a server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n1.err, n2.err, remote.err = tc.local, tc.other, tc.openErr
			rec := serve(srv, http.MethodGet, "/v1/namespaces/default/pods/"+tc.path+"/logs", "s3cret", "")
			if rec.Code != tc.code {
				t.Fatalf("= %d %s, want %d", rec.Code, rec.Body, tc.code)
			}
			if got := errorText(t, rec); !strings.Contains(got, tc.want) {
				t.Fatalf("error %q, want it to contain %q", got, tc.want)
			}
		})
	}

	noLogs, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), NodeName: "n1", Status: noStatus})
	if err != nil {
		t.Fatal(err)
	}
	if rec := serve(noLogs, http.MethodGet, "/v1/namespaces/default/pods/solo/logs", "s3cret", ""); rec.Code != 501 {
		t.Errorf("an agent without logs: %d", rec.Code)
	}
	if _, err := New(Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), Status: noStatus, Logs: &LogsConfig{}}); err == nil {
		t.Error("LogsConfig without Pod and Local was accepted")
	}
}

// follow starts a follow of path on the API at base and returns its lines.
func follow(t *testing.T, ctx context.Context, base, path string) (*bufio.Reader, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return bufio.NewReader(resp.Body), resp
}

func readLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	got, err := r.ReadString('\n')
	if err != nil || got != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

func waitEnded(t *testing.T, f *fakeLogReader, what string) {
	t.Helper()
	select {
	case <-f.ended:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the node kept streaming", what)
	}
}

func TestPodLogsFollow(t *testing.T) {
	n1, n2 := newFakeLogReader("n1"), newFakeLogReader("n2")
	srv := newLogServer(t, n1, &fakeOpener{nodes: map[string]*fakeLogReader{"n2": n2}}, 2)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)

	for _, tc := range []struct {
		pod  string
		node *fakeLogReader
	}{{"solo", n1}, {"far", n2}} {
		t.Run(tc.pod, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			r, resp := follow(t, ctx, hs.URL, "/v1/namespaces/default/pods/"+tc.pod+"/logs?follow=true")
			if resp.StatusCode != 200 {
				t.Fatalf("HTTP %d", resp.StatusCode)
			}
			readLine(t, r, tc.node.node+" default/"+tc.pod+" app\n")
			// Each line arrives as it is written: nothing waits for more.
			for i := range 3 {
				tc.node.more <- fmt.Sprintf("line %d\n", i)
				readLine(t, r, fmt.Sprintf("line %d\n", i))
			}
			// The client goes away: the stream ends on the node.
			cancel()
			waitEnded(t, tc.node, "after the client went away")
		})
	}

	t.Run("bounded", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 2 {
			// The streams of the subtests above give their slots back
			// just after their node streams ended: retry a 429 briefly.
			deadline := time.Now().Add(5 * time.Second)
			for {
				r, resp := follow(t, ctx, hs.URL, "/v1/namespaces/default/pods/solo/logs?follow")
				if resp.StatusCode == http.StatusOK {
					readLine(t, r, "n1 default/solo app\n")
					break
				}
				if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
					t.Fatalf("stream: HTTP %d", resp.StatusCode)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		rec := serve(srv, http.MethodGet, "/v1/namespaces/default/pods/solo/logs", "s3cret", "")
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("a third stream: %d %s; want 429 with Retry-After", rec.Code, rec.Body)
		}
		// Shutting down ends every stream.
		srv.StopStreams()
		waitEnded(t, n1, "after StopStreams")
		waitEnded(t, n1, "after StopStreams")
	})
}

// TestPodLogsThroughAClientAgent: a client agent answers for its own pods
// and proxies the rest to a server, streaming.
func TestPodLogsThroughAClientAgent(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	var mu sync.Mutex
	var proxied []string
	s1 := startUpstream(t, p, s1cert, s1key, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		proxied = append(proxied, r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		// The server streams the follow: a line now, another later.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "from the server\n")
		http.NewResponseController(w).Flush()
		select {
		case <-time.After(200 * time.Millisecond):
			io.WriteString(w, "later\n")
		case <-r.Context().Done():
		}
	})
	own := newFakeLogReader("c1")
	hs := startClientAgent(t, p, s1.addr, func(cfg *Config) {
		cfg.Logs = &LogsConfig{Pod: clientAgentPods(), Local: own}
	})

	r, _ := follow(t, context.Background(), hs.URL, "/v1/namespaces/default/pods/mine/logs?tail=3")
	readLine(t, r, "c1 default/mine app\n")
	r, resp := follow(t, context.Background(), hs.URL, "/v1/namespaces/default/pods/elsewhere/logs?follow=true&container=app")
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	readLine(t, r, "from the server\n")
	readLine(t, r, "later\n")
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(proxied, []string{"/v1/namespaces/default/pods/elsewhere/logs?follow=true&container=app"}) {
		t.Fatalf("proxied %q; want only the pod that is not the client's", proxied)
	}
}
