package ingress

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/syncbuf"
)

// backend is a local HTTP server standing for one pod of a service. It
// answers "svc=<name> port=<port> path=<path>" plus the forwarded headers,
// and echoes a WebSocket-style upgrade on /ws.
type backend struct {
	svc  string
	srv  *httptest.Server
	port int
}

func newBackend(t *testing.T, svc string) *backend {
	t.Helper()
	b := &backend{svc: svc}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	_, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	b.port, _ = strconv.Atoi(port)
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ws" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw) // echo until the client closes
		return
	}
	if r.URL.Path == "/stream" {
		// Two chunks with a pause: the proxy must pass the first on at once.
		fmt.Fprintf(w, "first\n")
		http.NewResponseController(w).Flush()
		time.Sleep(800 * time.Millisecond)
		fmt.Fprintf(w, "second\n")
		return
	}
	if r.URL.Path == "/echo-line" {
		// Answers the request body's first line before the rest arrives
		// (full duplex: Go's server would read the whole body first).
		http.NewResponseController(w).EnableFullDuplex()
		line, err := bufio.NewReader(r.Body).ReadString('\n')
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, line)
		http.NewResponseController(w).Flush()
		io.Copy(io.Discard, r.Body)
		return
	}
	io.Copy(io.Discard, r.Body)
	fmt.Fprintf(w, "svc=%s port=%d path=%s xff=%s proto=%s fhost=%s\n", b.svc, b.port, r.URL.Path,
		r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host"))
}

// service returns a single-port service and its endpoints on the backends.
func service(name string, bs ...*backend) (api.Service, api.Endpoints) {
	svc := api.Service{Namespace: "default", Name: name, Ports: []api.ServicePort{{Port: 80}}}
	ep := api.Endpoints{Namespace: "default", Name: name}
	for i, b := range bs {
		ep.Addresses = append(ep.Addresses, api.EndpointAddress{
			Pod: fmt.Sprintf("%s-%d", name, i), Node: "n1", IP: "127.0.0.1", Ready: true,
			Ports: []api.EndpointPort{{Port: b.port}},
		})
	}
	return svc, ep
}

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a log sink a test reads while something writes it.
type syncBuffer = syncbuf.Buffer

// testProxy is a running Proxy with nginx on loopback ports.
type testProxy struct {
	*Proxy
	src         *FakeSource
	http, https int
	log, access *syncBuffer
	dir         string
	cancel      context.CancelFunc
	done        chan struct{}
}

func startProxy(t *testing.T, in Input, mods ...func(*testProxy, *Config)) *testProxy {
	t.Helper()
	tp := &testProxy{src: NewFakeSource(), http: freePort(t), https: freePort(t), log: &syncBuffer{}, access: &syncBuffer{}}
	tp.src.Set(in)
	cfg := DefaultConfig()
	cfg.Source = tp.src
	tp.dir = filepath.Join(t.TempDir(), "ingress")
	for _, m := range mods {
		m(tp, &cfg)
	}
	cfg.Dir = tp.dir
	cfg.Settings.BindAddress = "127.0.0.1"
	cfg.Settings.HTTPPort, cfg.Settings.HTTPSPort = tp.http, tp.https
	cfg.Settings.Workers = 2
	cfg.Settings.ShutdownTimeout = 10 * time.Second
	cfg.MinInterval = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(tp.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.AccessLog = slog.New(slog.NewTextHandler(tp.access, nil))
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tp.Proxy = p
	ctx, cancel := context.WithCancel(context.Background())
	tp.cancel, tp.done = cancel, make(chan struct{})
	go func() {
		defer close(tp.done)
		p.Run(ctx)
	}()
	t.Cleanup(tp.stop)
	tp.waitApplied(t, 1)
	return tp
}

func (tp *testProxy) stop() {
	tp.cancel()
	<-tp.done
}

// waitApplied waits until n configurations were put in force.
func (tp *testProxy) waitApplied(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for tp.Stats().Applies < n {
		if time.Now().After(deadline) {
			t.Fatalf("no configuration in force after 10s: %+v\nlog:\n%s", tp.Stats(), tp.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// set changes the state and waits until the proxy reloaded with it.
func (tp *testProxy) set(t *testing.T, in Input) {
	t.Helper()
	n := tp.Stats().Applies
	tp.src.Set(in)
	tp.waitApplied(t, n+1)
}

// client sends every request to the proxy whatever the URL's host (the
// host is the Host header and the TLS server name).
func (tp *testProxy) client(roots *x509.CertPool) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		port := tp.http
		if _, p, _ := net.SplitHostPort(addr); p == "443" {
			port = tp.https
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         dial,
			TLSClientConfig:     &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 64,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// get returns the status and body of GET url.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// load sends GETs from workers goroutines until stop is closed and counts
// the failures (transport errors and statuses other than 200).
type load struct {
	mu       sync.Mutex
	ok, fail int
	errs     []string
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startLoad(c *http.Client, workers int, urls ...string) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func(i int) {
			defer l.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				url := urls[(i+n)%len(urls)]
				resp, err := c.Get(url)
				msg := ""
				if err != nil {
					msg = err.Error()
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						msg = fmt.Sprintf("%s: status %d", url, resp.StatusCode)
					}
				}
				l.mu.Lock()
				if msg == "" {
					l.ok++
				} else {
					l.fail++
					if len(l.errs) < 5 {
						l.errs = append(l.errs, msg)
					}
				}
				l.mu.Unlock()
			}
		}(i)
	}
	return l
}

// end stops the load and fails the test on any failed request.
func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.fail > 0 || l.ok == 0 {
		t.Errorf("under load: %d ok, %d failed: %v", l.ok, l.fail, l.errs)
	} else {
		t.Logf("under load: %d requests, none failed", l.ok)
	}
}

// cert makes a CA-less self-signed certificate for hosts, PEM.
func cert(t *testing.T, cn string, hosts ...string) (certPEM, keyPEM string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              hosts,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})), pool
}

// wsEcho upgrades a connection through the proxy and checks an echo.
func wsEcho(t *testing.T, port int, host string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade through the proxy: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the proxy: status %d, want 101", resp.StatusCode)
	}
	for _, msg := range []string{"hello\n", "again\n"} {
		io.WriteString(conn, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo through the proxy: got %q, %v; want %q", got, err, msg)
		}
	}
}
