package apiserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

// testPKI is a cluster CA for the proxy tests. Every certificate is for
// 127.0.0.1, where the test servers listen.
type testPKI struct {
	ca    *pki.CA
	caPEM []byte
}

var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	certPEM, keyPEM, err := pki.NewCA("flotilla test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: ca, caPEM: certPEM}
}

// server returns the certificate and key of server name.
func (p *testPKI) server(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := p.ca.IssueServer(name, loopback, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// client returns the certificate and key client agent name gets by joining.
func (p *testPKI) client(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	csrPEM, keyPEM, err := pki.NewCSR(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = p.ca.SignJoin(csrPEM, name, loopback[0], time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func (p *testPKI) keypair(t *testing.T, certPEM, keyPEM []byte) *pki.Keypair {
	t.Helper()
	kp, err := pki.NewKeypair(p.caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// seen is a request as an upstream received it.
type seen struct {
	method, path, query, auth, xff, host, hop, expect string
	body                                              []byte
}

// upstream is a TLS API server standing in for a server of the fleet: it
// records what it receives and answers with handle (by default an echo of
// the request).
type upstream struct {
	addr string
	mu   sync.Mutex
	got  []seen
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got)
}

// startUpstream serves handle over TLS with the node certificate
// certPEM/keyPEM on 127.0.0.1.
func startUpstream(t *testing.T, p *testPKI, certPEM, keyPEM []byte, handle http.HandlerFunc) *upstream {
	t.Helper()
	if handle == nil {
		handle = echo
	}
	u := &upstream{}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.got = append(u.got, seen{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization"),
			xff: r.Header.Get("X-Forwarded-For"), host: r.Host, hop: r.Header.Get("X-Hop"), expect: r.Header.Get("Expect"), body: body})
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handle(w, r)
	}))
	cfg := p.keypair(t, certPEM, keyPEM).ServerTLS(tls.VerifyClientCertIfGiven, nil)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// httptest adds its own certificate when there is none, and clients
	// dialing an IP send no SNI, so GetCertificate alone would not be asked.
	cfg.Certificates = []tls.Certificate{cert}
	ts.TLS = cfg
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests are about
	ts.StartTLS()
	t.Cleanup(ts.Close)
	u.addr = ts.Listener.Addr().String()
	return u
}

// echo answers 200 with the request's method, path and body digest, and a
// response header the proxy must relay.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Upstream", "yes")
	writeJSON(w, http.StatusOK, map[string]any{"method": r.Method, "path": r.URL.Path, "bytes": len(body), "sha256": sha256.Sum256(body)})
}

// hangUp reads the request, then drops the connection without answering:
// a server that dies while handling a request.
func hangUp(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// downAddr returns an address on which nothing listens.
func downAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// newClientAgent is the API of client agent c1 (token s3cret), proxying to
// the servers at addrs.
func newClientAgent(t *testing.T, p *testPKI, reg *prometheus.Registry, addrs ...string) *Server {
	t.Helper()
	certPEM, keyPEM := p.client(t, "c1")
	kp := p.keypair(t, certPEM, keyPEM)
	images := newTestImport(t, &fakeImporter{}, nil)
	srv, err := New(Config{
		Store: &memStore{}, Images: images, TokenHash: tokenHash(t, "s3cret"), NodeName: "c1", Version: "test",
		Logger:   slog.New(slog.NewTextHandler(testLogWriter{t}, nil)),
		Metrics:  reg,
		Upstream: func() []string { return slices.Clone(addrs) }, UpstreamTLS: kp.ClientTLS(pki.RequireRole(pki.RoleServer)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.CloseIdleConnections)
	return srv
}

func TestProxyServesLocalRoutesLocally(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	s1 := startUpstream(t, p, s1cert, s1key, nil)
	srv := newClientAgent(t, p, prometheus.NewRegistry(), s1.addr)

	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantBody                 string
	}{
		{"status", "GET", "/v1/status", "", 200, `"node":"c1"`},
		{"images", "POST", "/v1/images", "archive", 200, "flotilla.local/demo:v1"},
		{"metrics", "GET", "/v1/metrics", "", 200, "flotilla_api_request_duration_seconds"},
		{"pprof", "GET", "/v1/debug/pprof/", "", 200, "goroutine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(srv, tt.method, tt.path, "s3cret", tt.body)
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("%s %s = %d %.200s, want %d with %q", tt.method, tt.path, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
		})
	}
	if got := s1.requests(); len(got) != 0 {
		t.Errorf("local routes reached the server: %+v", got)
	}
}

func TestProxyForwards(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	s1 := startUpstream(t, p, s1cert, s1key, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/namespaces/default/deployments/missing":
			writeError(w, http.StatusNotFound, "deployment default/missing not found")
		case "/v1/namespaces/default/deployments/taken":
			writeError(w, http.StatusConflict, "deployment default/taken: already exists")
		default:
			echo(w, r)
		}
	})
	srv := newClientAgent(t, p, nil, s1.addr)

	tests := []struct {
		name, method, path, query, body string
		wantCode                        int
		wantBody                        string
	}{
		{name: "a listing with its query", method: "GET", path: "/v1/namespaces/default/pods", query: "deployment=web", wantCode: 200, wantBody: `"method":"GET"`},
		{name: "a create with its body", method: "POST", path: "/v1/namespaces/default/deployments", body: validBody, wantCode: 200, wantBody: `"method":"POST"`},
		{name: "an update", method: "PUT", path: "/v1/namespaces/default/deployments/web", body: validBody, wantCode: 200, wantBody: `"method":"PUT"`},
		{name: "a delete", method: "DELETE", path: "/v1/nodes/n2", wantCode: 200, wantBody: `"method":"DELETE"`},
		{name: "a route the agent does not serve itself", method: "GET", path: "/v1/raft/peers", wantCode: 200, wantBody: `"path":"/v1/raft/peers"`},
		{name: "a local path with another method", method: "DELETE", path: "/v1/status", wantCode: 200, wantBody: `"path":"/v1/status"`},
		{name: "404 relayed", method: "GET", path: "/v1/namespaces/default/deployments/missing", wantCode: 404, wantBody: `{"error":"deployment default/missing not found"}`},
		{name: "409 relayed", method: "POST", path: "/v1/namespaces/default/deployments/taken", body: validBody, wantCode: 409, wantBody: `{"error":"deployment default/taken: already exists"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s1.requests())
			target := tt.path
			if tt.query != "" {
				target += "?" + tt.query
			}
			req := httptest.NewRequest(tt.method, target, strings.NewReader(tt.body))
			req.RemoteAddr = "192.0.2.7:40000"
			req.Header.Set("Authorization", "Bearer s3cret")
			req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client's claim is not relayed
			req.Header.Set("Connection", "X-Hop")        // X-Hop is for this hop only
			req.Header.Set("X-Hop", "1")
			if tt.body != "" {
				req.Header.Set("Expect", "100-continue") // this agent has the body already
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)

			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("%s %s = %d %s, want %d with %s", tt.method, target, rec.Code, rec.Body, tt.wantCode, tt.wantBody)
			}
			if tt.wantCode == 200 && rec.Header().Get("X-Upstream") != "yes" {
				t.Errorf("the server's headers were not relayed: %v", rec.Header())
			}
			got := s1.requests()[before:]
			if len(got) != 1 {
				t.Fatalf("the server got %d requests, want 1", len(got))
			}
			want := seen{method: tt.method, path: tt.path, query: tt.query, auth: "Bearer s3cret", xff: "192.0.2.7", host: s1.addr, body: []byte(tt.body)}
			if g := got[0]; g.method != want.method || g.path != want.path || g.query != want.query || g.auth != want.auth ||
				g.xff != want.xff || g.host != want.host || g.hop != "" || g.expect != "" || !bytes.Equal(g.body, want.body) {
				t.Errorf("the server got %+v\nwant %+v", g, want)
			}
		})
	}
}

func TestProxyFailover(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	s2cert, s2key := p.server(t, "s2")
	ccert, ckey := p.client(t, "c9")

	tests := []struct {
		name   string
		method string
		// first is how the first server behaves: "down" (nothing
		// listens), "client" (presents a client certificate), "hangup"
		// (drops the connection after reading the request), "none" (no
		// server is known at all).
		first      string
		second     bool // a healthy second server is listed
		wantCode   int
		wantErr    string
		wantFirst  int // requests the first server's handler got
		wantSecond int
	}{
		{name: "first down, a read goes to the second", method: "GET", first: "down", second: true, wantCode: 200, wantSecond: 1},
		{name: "first down, a write goes to the second", method: "POST", first: "down", second: true, wantCode: 200, wantSecond: 1},
		{name: "first with a client certificate is refused", method: "POST", first: "client", second: true, wantCode: 200, wantSecond: 1},
		{name: "first dies during a read, which is sent again", method: "GET", first: "hangup", second: true, wantCode: 200, wantFirst: 1, wantSecond: 1},
		{name: "first dies during a write, which is not sent twice", method: "POST", first: "hangup", second: true, wantCode: 502, wantFirst: 1,
			wantErr: "the request reached a server of the fleet, which did not answer"},
		{name: "no server answers", method: "GET", first: "down", wantCode: 503,
			wantErr: "no server of the fleet answers from this agent: 127.0.0.1:"},
		{name: "only a client answers", method: "GET", first: "client", wantCode: 503,
			wantErr: "it has role client; only a server may connect here"},
		{name: "no server known", method: "GET", first: "none", wantCode: 503,
			wantErr: "no server of the fleet answers from this agent: it knows of no server (membership lists none yet); retry, or send the request to a server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addrs []string
			var first *upstream
			switch tt.first {
			case "down":
				addrs = append(addrs, downAddr(t))
			case "client":
				first = startUpstream(t, p, ccert, ckey, nil)
			case "hangup":
				first = startUpstream(t, p, s1cert, s1key, hangUp)
			}
			if first != nil {
				addrs = append(addrs, first.addr)
			}
			second := startUpstream(t, p, s2cert, s2key, nil)
			if tt.second {
				addrs = append(addrs, second.addr)
			}
			srv := newClientAgent(t, p, nil, addrs...)

			rec := serve(srv, tt.method, "/v1/namespaces/default/deployments", "s3cret", validBody)
			if rec.Code != tt.wantCode {
				t.Fatalf("%s = %d %s, want %d", tt.method, rec.Code, rec.Body, tt.wantCode)
			}
			if tt.wantErr != "" {
				got := errorText(t, rec)
				if !strings.Contains(got, tt.wantErr) {
					t.Errorf("error %q, want it to contain %q", got, tt.wantErr)
				}
				if tt.wantCode == 503 && !strings.HasSuffix(got, "; retry, or send the request to a server") {
					t.Errorf("error %q does not say what to do", got)
				}
			}
			if first != nil {
				if got := len(first.requests()); got != tt.wantFirst {
					t.Errorf("the first server's handler got %d requests, want %d", got, tt.wantFirst)
				}
			}
			got := second.requests()
			if len(got) != tt.wantSecond {
				t.Fatalf("the second server got %d requests, want %d", len(got), tt.wantSecond)
			}
			if len(got) == 1 && (got[0].auth != "Bearer s3cret" || string(got[0].body) != validBody) {
				t.Errorf("the second server got %+v; want the token and the whole body", got[0])
			}
		})
	}
}

// TestProxyLargeBodies: a request body larger than any JSON body is streamed
// rather than held, and still goes to the second server when the first
// cannot be reached.
func TestProxyLargeBodies(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	s1 := startUpstream(t, p, s1cert, s1key, nil)
	srv := newClientAgent(t, p, nil, downAddr(t), s1.addr)
	body := bytes.Repeat([]byte("0123456789abcdef"), 3*mib/16)
	for _, tt := range []struct {
		name   string
		length int64
	}{{"with a Content-Length", int64(len(body))}, {"chunked", -1}} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s1.requests())
			req := httptest.NewRequest(http.MethodPut, "/v1/namespaces/default/deployments/web", bytes.NewReader(body))
			req.ContentLength = tt.length
			req.Header.Set("Authorization", "Bearer s3cret")
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("PUT = %d %s", rec.Code, rec.Body)
			}
			got := s1.requests()[before:]
			if len(got) != 1 || !bytes.Equal(got[0].body, body) {
				t.Fatalf("the server got %d requests, the first of %d bytes; want one of %d", len(got), len(got[0].body), len(body))
			}
		})
	}
}

// TestProxyStreamsAnswers: the client gets the start of a large answer
// before the server has written the rest.
func TestProxyStreamsAnswers(t *testing.T) {
	const head, tail = 1 * mib, 16 * mib
	release := make(chan struct{})
	var waited atomic.Bool // the server gave up waiting: the head did not come through
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	s1 := startUpstream(t, p, s1cert, s1key, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(bytes.Repeat([]byte("h"), head))
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second): // a bound, so that a buffering proxy fails the test rather than hangs it
			waited.Store(true)
		}
		_, _ = w.Write(bytes.Repeat([]byte("t"), tail))
	})
	agent := httptest.NewServer(newClientAgent(t, p, nil, s1.addr))
	t.Cleanup(agent.Close)

	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, agent.URL+"/v1/big", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := agent.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, head)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("read the head: %v", err)
	}
	close(release)
	if waited.Load() {
		t.Fatal("the head of the answer arrived only once the server had written all of it: the proxy buffers answers")
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != tail {
		t.Fatalf("read the tail: %d bytes, %v; want %d", n, err, tail)
	}
}

func TestProxyNeverForwardsUnauthenticated(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	s1 := startUpstream(t, p, s1cert, s1key, nil)
	srv := newClientAgent(t, p, nil, s1.addr)
	for _, token := range []string{"", "wrong", pki.TokenHash("s3cret")} {
		for _, r := range []struct{ method, path string }{{"GET", "/v1/nodes"}, {"POST", "/v1/namespaces/default/deployments"}, {"GET", "/v1/status"}} {
			rec := serve(srv, r.method, r.path, token, validBody)
			if rec.Code != 401 || !strings.Contains(errorText(t, rec), "missing or wrong token") {
				t.Errorf("%s %s with token %q = %d %s, want 401", r.method, r.path, token, rec.Code, rec.Body)
			}
		}
	}
	if got := s1.requests(); len(got) != 0 {
		t.Errorf("unauthenticated requests reached the server: %+v", got)
	}
}

func TestProxyMetrics(t *testing.T) {
	p := newTestPKI(t)
	s1cert, s1key := p.server(t, "s1")
	s1 := startUpstream(t, p, s1cert, s1key, nil)
	srv := newClientAgent(t, p, prometheus.NewRegistry(), s1.addr)
	for _, path := range []string{"/v1/nodes", "/v1/namespaces/default/deployments/web"} {
		if rec := serve(srv, "GET", path, "s3cret", ""); rec.Code != 200 {
			t.Fatalf("GET %s = %d %s", path, rec.Code, rec.Body)
		}
	}
	rec := serve(srv, "GET", "/v1/metrics", "s3cret", "")
	for _, want := range []string{
		`flotilla_api_request_duration_seconds_count{code="200",route="proxy"} 2`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, rec.Body)
		}
	}
}

func TestNewProxyConfig(t *testing.T) {
	base := Config{Store: &memStore{}, TokenHash: tokenHash(t, "s3cret"), Upstream: func() []string { return nil }}
	if _, err := New(base); err == nil || !strings.Contains(err.Error(), "UpstreamTLS is required with Upstream") {
		t.Errorf("Upstream without UpstreamTLS: %v", err)
	}
	base.UpstreamTLS = &tls.Config{MinVersion: tls.VersionTLS13}
	if _, err := New(base); err != nil {
		t.Errorf("a proxying agent needs no Status: %v", err)
	}
	base.Upstream = nil
	if _, err := New(base); err == nil {
		t.Error("an agent holding the state was made without Status")
	}
}

// TestFailoverOrder: a server that failed is tried after the others for
// upstreamPenalty, then in its place again; one that answers is back at once.
func TestFailoverOrder(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &failover{log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }, failed: map[string]time.Time{}}
	servers := []string{"a:1", "b:1", "c:1"}
	steps := []struct {
		name string
		do   func()
		want []string
	}{
		{"all well", func() {}, servers},
		{"a failed", func() { f.fail("a:1", io.EOF) }, []string{"b:1", "c:1", "a:1"}},
		{"b failed too", func() { f.fail("b:1", io.EOF) }, []string{"c:1", "a:1", "b:1"}},
		{"a answered", func() { f.answered("a:1") }, []string{"a:1", "c:1", "b:1"}},
		{"b's penalty ended", func() { now = now.Add(upstreamPenalty) }, servers},
	}
	for _, s := range steps {
		s.do()
		if got := f.order(append(slices.Clone(servers), "")); !slices.Equal(got, s.want) {
			t.Errorf("%s: order %v, want %v", s.name, got, s.want)
		}
	}
}

// The error body of a 503 is an api.ErrorResponse, so api.Client reports it.
func TestProxyErrorIsAPIError(t *testing.T) {
	p := newTestPKI(t)
	agent := httptest.NewServer(newClientAgent(t, p, nil, downAddr(t)))
	t.Cleanup(agent.Close)
	c, err := api.NewClient(&api.Config{Address: agent.URL, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetDeployment(context.Background(), "default", "web")
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || !strings.HasPrefix(apiErr.Message, "no server of the fleet answers from this agent") {
		t.Fatalf("GetDeployment through an agent with no server: %v", err)
	}
}
