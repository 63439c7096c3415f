package ingress

// These tests run the real nginx (Debian's nginx-light, make deps installs
// it) with tiny Go backends on loopback.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flotilla-io/flotilla/api"
)

func paths(ps ...api.IngressPath) []api.IngressPath { return ps }

func prefix(p, svc string) api.IngressPath {
	return api.IngressPath{Path: p, Backend: api.IngressBackend{Service: svc}}
}

func exact(p, svc string) api.IngressPath {
	return api.IngressPath{Path: p, Match: api.PathExact, Backend: api.IngressBackend{Service: svc}}
}

func TestRoutingHostsAndPaths(t *testing.T) {
	web, apiB := newBackend(t, "web"), newBackend(t, "api")
	ws, we := service("web", web)
	as, ae := service("api", apiB)
	in := Input{
		Services:  []api.Service{ws, as},
		Endpoints: []api.Endpoints{we, ae},
		Ingresses: []api.Ingress{{
			Namespace: "default", Name: "app",
			Rules: []api.IngressRule{
				{Host: "app.test", Paths: paths(prefix("/", "web"), prefix("/api", "api"), exact("/exact", "api"), exact("/static/", "api"))},
				{Host: "*.wild.test", Paths: paths(prefix("/", "api"))},
				{Paths: paths(prefix("/anyhost", "api"))},
			},
			DefaultBackend: &api.IngressBackend{Service: "web"},
		}},
	}
	tp := startProxy(t, in)
	c := tp.client(nil)
	tests := []struct {
		url, wantSvc string
		wantStatus   int
	}{
		{"http://app.test/", "web", 200},
		{"http://app.test/api", "api", 200},
		{"http://app.test/api/", "api", 200},
		{"http://app.test/api/users/7", "api", 200},
		{"http://app.test/apix", "web", 200}, // prefix is by whole segment
		{"http://app.test/exact", "api", 200},
		{"http://app.test/exact/more", "web", 200}, // exact is exact
		{"http://app.test/static/", "api", 200},
		{"http://x.wild.test/a", "api", 200},
		{"http://x.y.wild.test/a", "web", 200}, // a wildcard spans one label; the default backend answers
		{"http://other.test/anyhost/z", "api", 200},
		{"http://other.test/nothing", "web", 200}, // default backend
	}
	for _, tc := range tests {
		status, body := get(t, c, tc.url)
		if status != tc.wantStatus || !strings.Contains(body, "svc="+tc.wantSvc+" ") {
			t.Errorf("GET %s = %d %q, want %d from %s", tc.url, status, body, tc.wantStatus, tc.wantSvc)
		}
	}
	_, body := get(t, c, "http://app.test/api/x")
	for _, want := range []string{"xff=127.0.0.1 ", "proto=http ", "fhost=app.test"} {
		if !strings.Contains(body, want) {
			t.Errorf("forwarded headers: %q lacks %q", body, want)
		}
	}

	// Without a default backend, an unrouted request is a 404 from the proxy.
	in.Ingresses[0].DefaultBackend = nil
	tp.set(t, in)
	c = tp.client(nil) // no keep-alive connection to a worker of the old configuration
	if status, body := get(t, c, "http://other.test/nothing"); status != 404 || !strings.Contains(body, "no ingress rule") {
		t.Errorf("unrouted request without default backend = %d %q, want 404", status, body)
	}

	// Streaming: the first chunk arrives before the backend has written the second.
	start := time.Now()
	resp, err := c.Get("http://app.test/stream")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first\n" {
		t.Fatalf("stream: %q %v", buf, err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("first chunk of a streamed response after %v: the proxy buffered it", d)
	}
	resp.Body.Close()

	// Streaming upload: the backend answers the first line of a body whose
	// end the client has not sent yet.
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(tp.http), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "POST /echo-line HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nupload line\n\r\n")
	br := bufio.NewReader(conn)
	up, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("streamed upload: %v (did the proxy wait for the whole body?)", err)
	}
	if line, err := bufio.NewReader(up.Body).ReadString('\n'); err != nil || line != "upload line\n" {
		t.Errorf("streamed upload: got %q, %v", line, err)
	}
	conn.Close()

	// Metrics: requests by ingress and status, and the access log lines.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(tp.Proxy)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := testutil.CollectAndCount(tp.alog.requests)
		out, _ := testutil.GatherAndCount(reg, "flotilla_ingress_request_duration_seconds")
		if n > 0 && out > 0 && strings.Contains(tp.access.String(), "status=404") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request metrics or access log lines: %d series; access log:\n%s", n, tp.access.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "flotilla_ingress_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["ingress"] == "default/app" && labels["status"] == "200" && m.GetHistogram().GetSampleCount() >= uint64(len(tests)) {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no histogram of default/app 200 with at least %d requests", len(tests))
	}
	if !strings.Contains(tp.access.String(), "ingress=default/app") {
		t.Errorf("access log lacks the ingress: %s", tp.access.String())
	}
}

func TestNoReadyEndpointIs503AtOnce(t *testing.T) {
	svc, ep := service("empty")
	ep.Addresses = []api.EndpointAddress{{Pod: "p", IP: "127.0.0.1", Ready: false, Ports: []api.EndpointPort{{Port: 1}}}}
	tp := startProxy(t, Input{
		Services: []api.Service{svc}, Endpoints: []api.Endpoints{ep},
		Ingresses: []api.Ingress{{Namespace: "default", Name: "e", Rules: []api.IngressRule{
			{Host: "e.test", Paths: paths(prefix("/", "empty"), prefix("/gone", "missing"))},
		}}},
	})
	c := tp.client(nil)
	start := time.Now()
	status, body := get(t, c, "http://e.test/x")
	if d := time.Since(start); d > time.Second {
		t.Errorf("503 took %v", d)
	}
	if status != 503 || !strings.Contains(body, "default/empty") {
		t.Errorf("no ready endpoint: %d %q, want 503 naming default/empty", status, body)
	}
	if status, body := get(t, c, "http://e.test/gone"); status != 503 || !strings.Contains(body, "default/missing") {
		t.Errorf("missing service: %d %q, want 503 naming default/missing", status, body)
	}
}

func TestTLSBySNIWithHTTP2(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	as, ae := service("a", a)
	bs, be := service("b", b)
	certA, keyA, poolA := cert(t, "a-cert", "a.test")
	certB, keyB, poolB := cert(t, "b-cert", "b.test")
	in := Input{
		Services: []api.Service{as, bs}, Endpoints: []api.Endpoints{ae, be},
		Ingresses: []api.Ingress{
			{Namespace: "default", Name: "a", SSLRedirect: true,
				Rules: []api.IngressRule{{Host: "a.test", Paths: paths(prefix("/", "a"))}},
				TLS:   []api.IngressTLS{{Hosts: []string{"a.test"}, Certificate: certA, Key: keyA}}},
			{Namespace: "default", Name: "b",
				Rules: []api.IngressRule{{Host: "b.test", Paths: paths(prefix("/", "b"))}},
				TLS:   []api.IngressTLS{{Hosts: []string{"b.test"}, Certificate: certB, Key: keyB}}},
		},
	}
	tp := startProxy(t, in)
	for _, tc := range []struct {
		host string
		pool *x509.CertPool
		svc  string
	}{{"a.test", poolA, "a"}, {"b.test", poolB, "b"}} {
		// Each client trusts only its host's certificate: SNI must pick it.
		c := tp.client(tc.pool)
		resp, err := c.Get("https://" + tc.host + "/p")
		if err != nil {
			t.Fatalf("GET https://%s: %v", tc.host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" {
			t.Errorf("https://%s: %s, want HTTP/2.0 negotiated by ALPN", tc.host, resp.Proto)
		}
		if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != tc.host[:1]+"-cert" {
			t.Errorf("https://%s: certificate %s", tc.host, cn)
		}
		if !strings.Contains(string(body), "svc="+tc.svc+" ") || !strings.Contains(string(body), "proto=https") {
			t.Errorf("https://%s: %q", tc.host, body)
		}
	}
	// ssl_redirect on a's ingress only.
	c := tp.client(nil)
	resp, err := c.Get("http://a.test/x?y=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://a.test:" + strconv.Itoa(tp.https) + "/x?y=1"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Errorf("ssl redirect: %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if status, _ := get(t, c, "http://b.test/x"); status != 200 {
		t.Errorf("b has no ssl_redirect: %d", status)
	}

	// The key files: 0600 in a 0700 directory, gone with the ingress.
	tlsDir := filepath.Join(tp.dir, "tls")
	if fi, err := os.Stat(tlsDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("tls directory: %v %v, want 0700", fi.Mode(), err)
	}
	files := func() []string {
		var out []string
		ents, _ := os.ReadDir(tlsDir)
		for _, e := range ents {
			fi, _ := e.Info()
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v, want 0600", e.Name(), fi.Mode().Perm())
			}
			out = append(out, e.Name())
		}
		return out
	}
	if got := files(); len(got) != 3 {
		t.Errorf("tls files %v, want the fallback and two", got)
	}
	in.Ingresses = in.Ingresses[:1]
	tp.set(t, in)
	if got := files(); len(got) != 2 {
		t.Errorf("tls files after b went: %v, want the fallback and a's", got)
	}

	// The keys appear in no log: the proxy's, nginx's or the access log.
	tp.stop()
	for _, key := range []string{keyA, keyB} {
		body := strings.Split(strings.TrimSpace(key), "\n")[1]
		for name, log := range map[string]string{"agent log": tp.log.String(), "access log": tp.access.String()} {
			if strings.Contains(log, body[:20]) {
				t.Errorf("the %s holds a TLS key", name)
			}
		}
	}
	if _, err := os.Stat(tp.dir); !os.IsNotExist(err) {
		t.Errorf("after Run: %s remains (%v)", tp.dir, err)
	}
}

func TestWebSocketEcho(t *testing.T) {
	b := newBackend(t, "ws")
	s, e := service("ws", b)
	tp := startProxy(t, Input{Services: []api.Service{s}, Endpoints: []api.Endpoints{e},
		Ingresses: []api.Ingress{{Namespace: "default", Name: "ws", Rules: []api.IngressRule{{Host: "ws.test", Paths: paths(prefix("/", "ws"))}}}}})
	wsEcho(t, tp.http, "ws.test")
}

func TestEndpointKilledUnderLoad(t *testing.T) {
	bs := []*backend{newBackend(t, "web"), newBackend(t, "web"), newBackend(t, "web")}
	s, e := service("web", bs...)
	in := Input{Services: []api.Service{s}, Endpoints: []api.Endpoints{e},
		Ingresses: []api.Ingress{{Namespace: "default", Name: "w", Rules: []api.IngressRule{{Host: "w.test", Paths: paths(prefix("/", "web"))}}}}}
	tp := startProxy(t, in)
	l := startLoad(tp.client(nil), 16, "http://w.test/a", "http://w.test/b")
	time.Sleep(500 * time.Millisecond)
	// The pod dies before the endpoints say so: nginx must retry on another.
	bs[0].srv.CloseClientConnections()
	bs[0].srv.Close()
	time.Sleep(time.Second)
	// Then the endpoints catch up (a reload under load).
	_, e2 := service("web", bs[1], bs[2])
	in.Endpoints = []api.Endpoints{e2}
	tp.set(t, in)
	time.Sleep(500 * time.Millisecond)
	l.end(t)
}

func TestRouteAndCertificateChangesUnderLoad(t *testing.T) {
	one, two := newBackend(t, "one"), newBackend(t, "two")
	s1, e1 := service("one", one)
	s2, e2 := service("two", two)
	certA, keyA, poolA := cert(t, "first", "c.test")
	certB, keyB, poolB := cert(t, "second", "c.test")
	ing := api.Ingress{Namespace: "default", Name: "c",
		Rules: []api.IngressRule{{Host: "c.test", Paths: paths(prefix("/", "one"))}},
		TLS:   []api.IngressTLS{{Hosts: []string{"c.test"}, Certificate: certA, Key: keyA}}}
	in := Input{Services: []api.Service{s1, s2}, Endpoints: []api.Endpoints{e1, e2}, Ingresses: []api.Ingress{ing}}
	tp := startProxy(t, in)
	// A client trusting both certificates keeps its TLS load going across
	// the change; new handshakes must get the new one.
	pool := poolA
	pool.AppendCertsFromPEM([]byte(certB))
	_ = poolB
	l := startLoad(tp.client(pool), 16, "http://c.test/x", "https://c.test/y")
	time.Sleep(500 * time.Millisecond)
	// A slow response in flight across the reloads completes.
	slow, err := tp.client(pool).Get("https://c.test/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Body.Close()
	for i := 0; i < 3; i++ {
		ing.Rules[0].Paths = paths(prefix("/", "one"), prefix("/two", "two"), exact("/n"+strconv.Itoa(i), "two"))
		if i%2 == 0 {
			ing.TLS[0].Certificate, ing.TLS[0].Key = certB, keyB
		} else {
			ing.TLS[0].Certificate, ing.TLS[0].Key = certA, keyA
		}
		in.Ingresses = []api.Ingress{ing}
		tp.set(t, in)
		time.Sleep(300 * time.Millisecond)
	}
	l.end(t)
	if b, err := io.ReadAll(slow.Body); err != nil || string(b) != "first\nsecond\n" {
		t.Errorf("a response in flight across reloads: %q, %v", b, err)
	}
	// The last change is in force: its route and its certificate (B).
	c := tp.client(pool)
	if status, body := get(t, c, "http://c.test/two/x"); status != 200 || !strings.Contains(body, "svc=two ") {
		t.Errorf("new route: %d %q", status, body)
	}
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(tp.https), &tls.Config{ServerName: "c.test", RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Errorf("certificate after the change: %s, want second", cn)
	}
}

// TestNginxRestartedAndAdopted: a dead nginx is started again; with
// KeepRunning a second Proxy on the same directory adopts the running one.
func TestNginxRestartedAndAdopted(t *testing.T) {
	b := newBackend(t, "r")
	s, e := service("r", b)
	in := Input{Services: []api.Service{s}, Endpoints: []api.Endpoints{e},
		Ingresses: []api.Ingress{{Namespace: "default", Name: "r", Rules: []api.IngressRule{{Host: "r.test", Paths: paths(prefix("/", "r"))}}}}}
	tp := startProxy(t, in)
	pid := tp.NginxPID()
	if pid == 0 {
		t.Fatal("no nginx pid")
	}
	p, _ := os.FindProcess(pid)
	p.Kill()
	deadline := time.Now().Add(15 * time.Second)
	for tp.NginxPID() == 0 || tp.NginxPID() == pid {
		if time.Now().After(deadline) {
			t.Fatalf("nginx not started again after it died\n%s", tp.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Killed master's workers hold the ports until they notice; wait for service.
	c := tp.client(nil)
	deadline = time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://r.test/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentRestartKeepsListeners: with KeepRunning, nginx outlives Run and
// the next run on the same directory adopts it: requests never stop.
func TestAgentRestartKeepsListeners(t *testing.T) {
	b := newBackend(t, "k")
	s, e := service("k", b)
	in := Input{Services: []api.Service{s}, Endpoints: []api.Endpoints{e},
		Ingresses: []api.Ingress{{Namespace: "default", Name: "k", Rules: []api.IngressRule{{Host: "k.test", Paths: paths(prefix("/", "k"))}}}}}
	first := startProxy(t, in, func(_ *testProxy, c *Config) { c.KeepRunning = true })
	pid := first.NginxPID()
	// The owner of the adopted process stops it in the end.
	t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
	l := startLoad(first.client(nil), 8, "http://k.test/")
	time.Sleep(200 * time.Millisecond)
	first.stop()
	if !first.nginx.isOurs(pid) {
		t.Fatal("nginx did not outlive Run with KeepRunning")
	}
	second := startProxy(t, in, func(tp *testProxy, c *Config) {
		tp.dir, tp.http, tp.https = first.dir, first.http, first.https
	})
	if got := second.NginxPID(); got != pid {
		t.Errorf("second run's nginx is pid %d, want the adopted %d", got, pid)
	}
	time.Sleep(200 * time.Millisecond)
	l.end(t)
	// Stop is graceful: a connection the load client opened but never
	// used keeps a worker up to the shutdown timeout (10 s here).
	second.stop()
	if first.nginx.isOurs(pid) {
		t.Error("nginx still runs after the second Run (without KeepRunning) returned")
	}

	// Cleanup of a node: Remove stops what a run left and removes the files.
	third := startProxy(t, in, func(_ *testProxy, c *Config) { c.KeepRunning = true })
	pid = third.NginxPID()
	third.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Remove(ctx, third.dir, nil); err != nil {
		t.Fatal(err)
	}
	if third.nginx.isOurs(pid) || syscall.Kill(-pid, 0) == nil {
		t.Error("nginx runs after Remove")
	}
	if _, err := os.Stat(third.dir); !os.IsNotExist(err) {
		t.Errorf("%s remains after Remove: %v", third.dir, err)
	}
	if err := Remove(ctx, third.dir, nil); err != nil {
		t.Errorf("Remove of nothing: %v", err)
	}
}

func TestNewRefusesBadSettings(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no source":  func(c *Config) { c.Source = nil },
		"same ports": func(c *Config) { c.Settings.HTTPSPort = c.Settings.HTTPPort },
		"bad bind":   func(c *Config) { c.Settings.BindAddress = "0.0.0.0; evil" },
		"bad port":   func(c *Config) { c.Settings.HTTPPort = 70000 },
		"both off":   func(c *Config) { c.Settings.HTTPPort, c.Settings.HTTPSPort = 0, 0 },
	} {
		cfg := DefaultConfig()
		cfg.Source, cfg.Dir = NewFakeSource(), t.TempDir()
		mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// TestBurstIsDebounced: a rollout's burst of endpoint changes costs a few
// reloads, not one per change, and the last state is the one in force.
func TestBurstIsDebounced(t *testing.T) {
	bs := []*backend{newBackend(t, "d"), newBackend(t, "d"), newBackend(t, "d")}
	s, e := service("d", bs[0])
	ing := []api.Ingress{{Namespace: "default", Name: "d", Rules: []api.IngressRule{{Host: "d.test", Paths: paths(prefix("/", "d"))}}}}
	tp := startProxy(t, Input{Services: []api.Service{s}, Endpoints: []api.Endpoints{e}, Ingresses: ing},
		func(_ *testProxy, c *Config) { c.MinInterval = 300 * time.Millisecond })
	before := tp.Stats().Applies
	for i := 0; i < 30; i++ {
		_, e := service("d", bs[i%3])
		tp.src.Set(Input{Services: []api.Service{s}, Endpoints: []api.Endpoints{e}, Ingresses: ing})
		time.Sleep(10 * time.Millisecond)
	}
	_, last := service("d", bs[2])
	tp.src.Set(Input{Services: []api.Service{s}, Endpoints: []api.Endpoints{last}, Ingresses: ing})
	c := tp.client(nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.CloseIdleConnections()
		_, body := get(t, c, "http://d.test/")
		if strings.Contains(body, "port="+strconv.Itoa(bs[2].port)+" ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the last endpoint is not in force: %q", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := tp.Stats().Applies - before; n > 4 {
		t.Errorf("31 changes in ~0.4 s cost %d reloads; want at most 4 (MinInterval 300ms)", n)
	} else {
		t.Logf("31 changes, %d reloads", n)
	}
}
