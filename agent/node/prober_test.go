package node

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// fakePodNet stands for the pods' network as probes see it: a port with a
// handler answers HTTP (and accepts TCP connections) on every pod IP, a
// port marked blackhole never answers, any other refuses connections.
// Connections are net.Pipes, so it works inside a synctest bubble.
type fakePodNet struct {
	mu        sync.Mutex
	handlers  map[int]http.Handler
	blackhole map[int]bool
	dials     map[string]int
}

func newFakePodNet() *fakePodNet {
	return &fakePodNet{handlers: map[int]http.Handler{}, blackhole: map[int]bool{}, dials: map[string]int{}}
}

func (n *fakePodNet) handle(port int, h http.HandlerFunc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handlers[port] = h
}

func (n *fakePodNet) dialed(addr string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dials[addr]
}

// Dial implements Config.Dial.
func (n *fakePodNet) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(portStr)
	n.mu.Lock()
	n.dials[addr]++
	h, black := n.handlers[port], n.blackhole[port]
	n.mu.Unlock()
	switch {
	case black:
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
	case h == nil:
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	client, server := net.Pipe()
	go serveConn(server, h)
	return client, nil
}

// serveConn answers one HTTP request on c.
func serveConn(c net.Conn, h http.Handler) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return // a TCP probe: connected and closed
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	_ = rec.Result().Write(c)
}

// probeHarness is a prober over a Fake runtime running container "c1" and
// a fakePodNet; it counts result changes.
type probeHarness struct {
	p       *prober
	rt      *runtime.Fake
	net     *fakePodNet
	changes atomic.Int32
}

func newProbeHarness(t *testing.T) *probeHarness {
	t.Helper()
	h := &probeHarness{rt: runtime.NewFake(), net: newFakePodNet()}
	createStarted(t, h.rt, runtime.ContainerSpec{ID: "c1"})
	h.p = newProber(time.Now, h.net.Dial, h.rt.Exec, func() { h.changes.Add(1) }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(h.p.wait) // after t.Context() ends
	return h
}

var c1 = probeTarget{id: "c1", ip: "10.0.0.2", pod: "default/p", name: "app"}

// script makes Exec exit with the codes of outcomes in turn (true: 0,
// false: 1), then as the last one.
func (h *probeHarness) script(outcomes ...bool) {
	var mu sync.Mutex
	i := 0
	h.rt.SetExecFunc(func(context.Context, string, []string) (int, []byte, error) {
		mu.Lock()
		defer mu.Unlock()
		ok := outcomes[min(i, len(outcomes)-1)]
		i++
		if ok {
			return 0, nil, nil
		}
		return 1, []byte("not yet\n"), nil
	})
}

func execProbe(mod func(*api.Probe)) api.Probe {
	p := api.Probe{Exec: &api.ExecProbe{Command: []string{"/bin/check"}}, PeriodSeconds: 1}
	if mod != nil {
		mod(&p)
	}
	return p
}

// A result flips only after SuccessThreshold successes or FailureThreshold
// failures in a row; readiness starts failed, liveness alive; a failed
// liveness probe stops probing (the container is restarted).
func TestProberThresholds(t *testing.T) {
	tests := []struct {
		name     string
		kind     probeKind
		success  int
		failure  int
		outcomes []bool
		want     []bool // the result after each probe
		changes  int32
	}{
		{"readiness: one success", readiness, 1, 3, []bool{true}, []bool{true}, 1},
		{"readiness: failures before the threshold keep it ready", readiness, 1, 3,
			[]bool{true, false, false, true, false, false}, []bool{true, true, true, true, true, true}, 1},
		{"readiness: failure threshold", readiness, 1, 3, []bool{true, false, false, false}, []bool{true, true, true, false}, 2},
		{"readiness: success threshold", readiness, 2, 3, []bool{true, false, true, true}, []bool{false, false, false, true}, 1},
		{"readiness: never succeeds", readiness, 1, 2, []bool{false, false, false, false}, []bool{false, false, false, false}, 1},
		{"liveness: failure threshold", liveness, 1, 3, []bool{false, false, false}, []bool{true, true, false}, 1},
		{"liveness: a success resets the count", liveness, 1, 2,
			[]bool{false, true, false, true}, []bool{true, true, true, true}, 0},
		{"liveness: threshold one", liveness, 1, 1, []bool{false}, []bool{false}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newProbeHarness(t)
				h.script(tt.outcomes...)
				key := probeKey{"c1", tt.kind}
				spec := execProbe(func(p *api.Probe) { p.SuccessThreshold, p.FailureThreshold = tt.success, tt.failure })
				h.p.ensure(t.Context(), key, 1, spec, time.Now(), c1, tt.kind == liveness)
				for i, want := range tt.want {
					if i > 0 {
						time.Sleep(time.Second)
					}
					synctest.Wait()
					if ok, _, found := h.p.result(key, 1); !found || ok != want {
						t.Fatalf("after probe %d: result %v (found %v), want %v", i+1, ok, found, want)
					}
				}
				if got := h.changes.Load(); got != tt.changes {
					t.Errorf("%d result changes reported, want %d", got, tt.changes)
				}
				if tt.kind == liveness && !tt.want[len(tt.want)-1] {
					// A failed liveness worker probes no more.
					n := h.rt.Execs()
					time.Sleep(5 * time.Second)
					if h.rt.Execs() != n {
						t.Errorf("liveness probed on after failing: %d execs, then %d", n, h.rt.Execs())
					}
				}
			})
		})
	}
}

// The first probe waits InitialDelaySeconds after the container started;
// a new incarnation gets a fresh worker and waits again.
func TestProberInitialDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newProbeHarness(t)
		h.script(true)
		key := probeKey{"c1", readiness}
		spec := execProbe(func(p *api.Probe) { p.InitialDelaySeconds, p.PeriodSeconds = 5, 10 })
		// Started 2 s ago: 3 s to go.
		h.p.ensure(t.Context(), key, 1, spec, time.Now().Add(-2*time.Second), c1, false)
		time.Sleep(3*time.Second - time.Millisecond)
		synctest.Wait()
		if n := h.rt.Execs(); n != 0 {
			t.Fatalf("%d probes before the initial delay", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if ok, _, _ := h.p.result(key, 1); h.rt.Execs() != 1 || !ok {
			t.Fatalf("after the initial delay: %d probes, ready %v; want 1, true", h.rt.Execs(), ok)
		}
		// Ensuring the same incarnation again changes nothing.
		h.p.ensure(t.Context(), key, 1, spec, time.Now(), c1, false)
		if ok, _, _ := h.p.result(key, 1); !ok {
			t.Fatal("ensure of the running worker reset its result")
		}
		// The container restarted: incarnation 2 starts not ready and waits 5 s.
		h.p.ensure(t.Context(), key, 2, spec, time.Now(), c1, false)
		if _, _, found := h.p.result(key, 1); found {
			t.Error("the old incarnation's result is still there")
		}
		time.Sleep(5*time.Second - time.Millisecond)
		synctest.Wait()
		if ok, _, _ := h.p.result(key, 2); h.rt.Execs() != 1 || ok {
			t.Fatalf("new incarnation before its initial delay: %d probes, ready %v", h.rt.Execs(), ok)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if ok, _, _ := h.p.result(key, 2); h.rt.Execs() != 2 || !ok {
			t.Fatalf("new incarnation after its initial delay: %d probes, ready %v", h.rt.Execs(), ok)
		}
		// Stopped: it probes no more.
		h.p.stop("c1")
		time.Sleep(time.Minute)
		if _, _, found := h.p.result(key, 2); found || h.rt.Execs() != 2 {
			t.Errorf("after stop: found %v, %d probes", found, h.rt.Execs())
		}
	})
}

// One probe of each kind: what succeeds and what the failure says.
func TestProbeOnce(t *testing.T) {
	status := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc // on port 8080
		exec    runtime.ExecFunc
		probe   api.Probe
		wantOK  bool
		wantMsg string
	}{
		{name: "HTTP 200", handler: status(200), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}}, wantOK: true},
		{name: "HTTP 204", handler: status(204), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}}, wantOK: true},
		{name: "HTTP 399", handler: status(399), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Port: 8080}}, wantOK: true},
		{name: "HTTP 302", handler: status(302), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Port: 8080}}, wantOK: true},
		{name: "HTTP 400", handler: status(400), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/x", Port: 8080}}, wantMsg: "HTTP GET /x: status 400"},
		{name: "HTTP 404", handler: status(404), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/nope", Port: 8080}}, wantMsg: "HTTP GET /nope: status 404"},
		{name: "HTTP 500", handler: status(500), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}}, wantMsg: "HTTP GET /healthz: status 500"},
		{name: "HTTP 503", handler: status(503), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}}, wantMsg: "HTTP GET /healthz: status 503"},
		{name: "HTTP redirect is not followed", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				http.Redirect(w, r, "/broken", http.StatusFound)
				return
			}
			w.WriteHeader(500)
		}, probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}}, wantOK: true},
		{name: "HTTP path with a query", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" || r.URL.Query().Get("deep") != "1" || r.Host != "10.0.0.2:8080" {
				w.WriteHeader(400)
			}
		}, probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz?deep=1", Port: 8080}}, wantOK: true},
		{name: "HTTP large body", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(make([]byte, 1<<20))
		}, probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Port: 8080}}, wantOK: true},
		{name: "HTTP connection refused", probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 9}}, wantMsg: "HTTP GET /healthz: connection refused"},
		{name: "HTTP port out of range", probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Port: 70000}}, wantMsg: "HTTP GET /: port 70000 is out of range"},
		{name: "HTTP bad path", handler: status(200), probe: api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "x@evil:80", Port: 8080}}, wantMsg: `HTTP GET x@evil:80: bad path "x@evil:80"`},
		{name: "TCP open", handler: status(200), probe: api.Probe{TCPSocket: &api.TCPSocketProbe{Port: 8080}}, wantOK: true},
		{name: "TCP refused", probe: api.Probe{TCPSocket: &api.TCPSocketProbe{Port: 8081}}, wantMsg: "TCP :8081: connection refused"},
		{name: "TCP port 0", probe: api.Probe{TCPSocket: &api.TCPSocketProbe{Port: 0}}, wantMsg: "TCP :0: port 0 is out of range"},
		{name: "exec exit 0", exec: func(context.Context, string, []string) (int, []byte, error) { return 0, []byte("fine"), nil },
			probe: api.Probe{Exec: &api.ExecProbe{Command: []string{"/bin/check", "-q"}}}, wantOK: true},
		{name: "exec exit 1", exec: func(context.Context, string, []string) (int, []byte, error) {
			return 1, []byte("\n  database unreachable \nsecond line\n"), nil
		}, probe: api.Probe{Exec: &api.ExecProbe{Command: []string{"/bin/check"}}}, wantMsg: "exec /bin/check: exit code 1: database unreachable"},
		{name: "exec exit 137 without output", exec: func(context.Context, string, []string) (int, []byte, error) { return 137, nil, nil },
			probe: api.Probe{Exec: &api.ExecProbe{Command: []string{"check"}}}, wantMsg: "exec check: exit code 137"},
		{name: "exec error", exec: func(context.Context, string, []string) (int, []byte, error) {
			return -1, nil, errors.New("exec: \"check\": executable file not found in $PATH")
		}, probe: api.Probe{Exec: &api.ExecProbe{Command: []string{"check"}}}, wantMsg: `exec check: exec: "check": executable file not found in $PATH`},
		{name: "exec empty command", probe: api.Probe{Exec: &api.ExecProbe{}}, wantMsg: "exec: empty command"},
		{name: "no action", probe: api.Probe{}, wantMsg: "probe has no http_get, tcp_socket or exec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newProbeHarness(t)
				if tt.handler != nil {
					h.net.handle(8080, tt.handler)
				}
				if tt.exec != nil {
					h.rt.SetExecFunc(tt.exec)
				}
				ok, msg := h.p.probe(t.Context(), sanitizeProbe(tt.probe), c1)
				if ok != tt.wantOK || msg != tt.wantMsg {
					t.Errorf("probe = %v, %q; want %v, %q", ok, msg, tt.wantOK, tt.wantMsg)
				}
			})
		})
	}
}

// A probe that does not answer within TimeoutSeconds fails, and says so.
func TestProbeTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		probe   api.Probe
		wantMsg string
	}{
		{"HTTP", api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/slow", Port: 8080}, TimeoutSeconds: 2}, "HTTP GET /slow: timed out after 2s"},
		{"TCP", api.Probe{TCPSocket: &api.TCPSocketProbe{Port: 8082}}, "TCP :8082: timed out after 1s"},
		{"exec", api.Probe{Exec: &api.ExecProbe{Command: []string{"/bin/sleep", "60"}}, TimeoutSeconds: 3}, "exec /bin/sleep: timed out after 3s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newProbeHarness(t)
				h.net.handle(8080, func(w http.ResponseWriter, r *http.Request) { time.Sleep(time.Minute) })
				h.net.blackhole[8082] = true
				h.rt.SetExecFunc(func(ctx context.Context, _ string, _ []string) (int, []byte, error) {
					<-ctx.Done()
					return -1, nil, ctx.Err()
				})
				spec := sanitizeProbe(tt.probe)
				start := time.Now()
				ok, msg := h.p.probe(t.Context(), spec, c1)
				if ok || msg != tt.wantMsg {
					t.Errorf("probe = %v, %q; want false, %q", ok, msg, tt.wantMsg)
				}
				if d, want := time.Since(start), seconds(spec.TimeoutSeconds); d != want {
					t.Errorf("probe took %s, want its timeout %s", d, want)
				}
				time.Sleep(time.Minute) // lets the slow handler end
			})
		})
	}
}

// Probes against real sockets, with the default dialer: what the node does.
func TestProbeRealNetwork(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()

	p := newProber(time.Now, DefaultConfig().Dial, nil, func() {}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	target := probeTarget{id: "c1", ip: "127.0.0.1"}
	tests := []struct {
		probe   api.Probe
		wantOK  bool
		wantMsg string
	}{
		{api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/ok", Port: port}}, true, ""},
		{api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/fail", Port: port}}, false, "HTTP GET /fail: status 500"},
		{api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/ok", Port: closed}}, false, "HTTP GET /ok: connection refused"},
		{api.Probe{TCPSocket: &api.TCPSocketProbe{Port: port}}, true, ""},
		{api.Probe{TCPSocket: &api.TCPSocketProbe{Port: closed}}, false, "TCP :" + strconv.Itoa(closed) + ": connection refused"},
	}
	for _, tt := range tests {
		ok, msg := p.probe(t.Context(), sanitizeProbe(tt.probe), target)
		if ok != tt.wantOK || msg != tt.wantMsg {
			t.Errorf("%+v: probe = %v, %q; want %v, %q", tt.probe, ok, msg, tt.wantOK, tt.wantMsg)
		}
	}
}

// Values the API would refuse never make a worker spin or wait forever.
func TestSanitizeProbe(t *testing.T) {
	got := sanitizeProbe(api.Probe{InitialDelaySeconds: -1, PeriodSeconds: -5, TimeoutSeconds: 1 << 40, SuccessThreshold: 0, FailureThreshold: 1 << 20})
	want := api.Probe{InitialDelaySeconds: 0, PeriodSeconds: api.DefaultProbePeriodSeconds, TimeoutSeconds: api.MaxProbeSeconds,
		SuccessThreshold: 1, FailureThreshold: api.MaxProbeThreshold}
	if got != want {
		t.Errorf("sanitizeProbe = %+v, want %+v", got, want)
	}
	if got := sanitizeProbe(api.Probe{}); got != (api.Probe{}).WithDefaults() {
		t.Errorf("sanitizeProbe of zero values = %+v, want the defaults", got)
	}
}

// A long message from a probe stays short.
func TestProbeMessageIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newProbeHarness(t)
		h.rt.SetExecFunc(func(context.Context, string, []string) (int, []byte, error) {
			return 2, []byte(strings.Repeat("x", 10000)), nil
		})
		_, msg := h.p.probe(t.Context(), sanitizeProbe(api.Probe{Exec: &api.ExecProbe{Command: []string{strings.Repeat("c", 500)}}}), c1)
		if len(msg) > probeMessageLimit {
			t.Errorf("message of %d bytes: %q", len(msg), msg)
		}
	})
}

// HealthyDial passes every HTTP and TCP probe without a network.
func TestHealthyDial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newProber(time.Now, HealthyDial, nil, func() {}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		for _, pr := range []api.Probe{
			{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}},
			{TCPSocket: &api.TCPSocketProbe{Port: 5432}},
		} {
			if ok, msg := p.probe(t.Context(), sanitizeProbe(pr), c1); !ok {
				t.Errorf("%+v: %s", pr, msg)
			}
		}
	})
}
