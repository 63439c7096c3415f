package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// probeKind says what a probe's result decides.
type probeKind int

const (
	liveness  probeKind = iota // failure restarts the container
	readiness                  // success makes the container ready
)

func (k probeKind) String() string {
	if k == liveness {
		return "liveness"
	}
	return "readiness"
}

// probeKey names one probe of one container.
type probeKey struct {
	id   string // runtime container ID
	kind probeKind
}

// probeTarget is what a probe checks: a container and its pod's IP.
type probeTarget struct {
	id, ip string
	pod    string // for logs
	name   string // container name, for logs
}

// Bounds on what a probe reads and reports.
const (
	probeBodyLimit    = 10 << 10 // bytes of an HTTP probe's body read (and dropped)
	probeHeaderLimit  = 64 << 10
	probeMessageLimit = 256 // bytes of a probe failure's message
)

// prober runs a worker goroutine per probe of every running container, as
// the kubelet's prober manager does. A worker waits the probe's initial
// delay after the container started, then probes every period and keeps a
// result that flips only after SuccessThreshold successes or
// FailureThreshold failures in a row. The reconciler starts workers when it
// sees a container run (ensure), reads their results when it syncs the pod
// and stops them when the container stops; a result that flips calls
// onChange so the pod is synced at once.
type prober struct {
	now      func() time.Time
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	exec     func(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error)
	http     *http.Client
	onChange func()
	log      *slog.Logger

	mu      sync.Mutex
	workers map[probeKey]*probeWorker
	wg      sync.WaitGroup
}

// probeWorker probes one container incarnation. Its result fields are
// guarded by prober.mu.
type probeWorker struct {
	run    uint64    // the incarnation (containerTrack.run) it probes
	spec   api.Probe // with defaults; compared to spot a changed probe
	start  time.Time // when the incarnation started: the initial delay counts from here
	target probeTarget
	cancel context.CancelFunc

	ok                  bool
	msg                 string // why the result last turned (or stayed) failed
	successes, failures int    // in a row
}

func newProber(now func() time.Time, dial func(ctx context.Context, network, addr string) (net.Conn, error),
	exec func(ctx context.Context, id string, cmd []string, timeout time.Duration) (int, []byte, error),
	onChange func(), log *slog.Logger) *prober {
	return &prober{
		now:  now,
		dial: dial,
		exec: exec,
		// Probes go straight to the pod: no proxy, no reused connections
		// (a probe opens one, as the kubelet's do), no redirects followed
		// (a 3xx is a success), and a per-probe timeout through the context.
		http: &http.Client{
			Transport: &http.Transport{
				DialContext:            dial,
				DisableKeepAlives:      true,
				DisableCompression:     true,
				MaxResponseHeaderBytes: probeHeaderLimit,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		onChange: onChange,
		log:      log,
		workers:  map[probeKey]*probeWorker{},
	}
}

// ensure makes sure a worker probes incarnation run of the container with
// spec, starting one (and stopping one of another incarnation or spec) if
// needed. initialOK is the result until the probe decides otherwise:
// liveness starts alive, readiness not ready unless the container was
// adopted ready. The worker stops when ctx ends.
func (p *prober) ensure(ctx context.Context, key probeKey, run uint64, spec api.Probe, start time.Time, target probeTarget, initialOK bool) {
	spec = sanitizeProbe(spec)
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := p.workers[key]; w != nil {
		if w.run == run && reflect.DeepEqual(w.spec, spec) {
			return
		}
		w.cancel()
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &probeWorker{run: run, spec: spec, start: start, target: target, cancel: cancel, ok: initialOK}
	p.workers[key] = w
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer cancel()
		p.work(wctx, key, w)
	}()
}

// result returns the result of the worker probing incarnation run; found
// is false when there is none.
func (p *prober) result(key probeKey, run uint64) (ok bool, msg string, found bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.workers[key]
	if w == nil || w.run != run {
		return false, "", false
	}
	return w.ok, w.msg, true
}

// stop stops the container's workers of the given kinds (all if none).
func (p *prober) stop(id string, kinds ...probeKind) {
	if len(kinds) == 0 {
		kinds = []probeKind{liveness, readiness}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range kinds {
		key := probeKey{id, k}
		if w := p.workers[key]; w != nil {
			w.cancel()
			delete(p.workers, key)
		}
	}
}

// retain stops the workers of containers keep says no pod owns any more.
func (p *prober) retain(keep func(id string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, w := range p.workers {
		if !keep(key.id) {
			w.cancel()
			delete(p.workers, key)
		}
	}
}

// wait waits for every worker to end: they end when stopped or when the
// context they were started with ends.
func (p *prober) wait() { p.wg.Wait() }

// work is one worker's loop.
func (p *prober) work(ctx context.Context, key probeKey, w *probeWorker) {
	delay := w.start.Add(seconds(w.spec.InitialDelaySeconds)).Sub(p.now())
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	tick := time.NewTicker(seconds(w.spec.PeriodSeconds))
	defer tick.Stop()
	for {
		ok, msg := p.probe(ctx, w.spec, w.target)
		if ctx.Err() != nil {
			return // stopped while probing: the result is not about this incarnation any more
		}
		if p.record(key, w, ok, msg) && key.kind == liveness {
			// The container is restarted; a new incarnation gets a new
			// worker. Probing on could flip the result back before the
			// reconciler acts, and a container is restarted once per failure.
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record counts one probe outcome and reports whether a liveness result
// turned failed. A flip of the result wakes the reconciler.
func (p *prober) record(key probeKey, w *probeWorker, ok bool, msg string) (livenessFailed bool) {
	p.mu.Lock()
	if ok {
		w.successes++
		w.failures = 0
	} else {
		w.failures++
		w.successes = 0
	}
	was, wasMsg := w.ok, w.msg
	switch {
	case ok && w.successes >= w.spec.SuccessThreshold:
		w.ok, w.msg = true, ""
	case !ok && w.failures == w.spec.FailureThreshold:
		// Failed FailureThreshold times in a row: the result fails, with
		// this failure as the reason. Later failures of the same run keep
		// the message, so a status is not re-reported for each one.
		w.ok, w.msg = false, msg
	}
	now := w.ok
	changed := now != was || w.msg != wasMsg
	current := p.workers[key] == w
	p.mu.Unlock()
	if !changed || !current {
		return false
	}
	log := p.log.With("pod", w.target.pod, "container", w.target.name, "probe", key.kind.String())
	switch {
	case now:
		log.Info("probe succeeded")
	case key.kind == liveness:
		log.Warn("liveness probe failed; the container will be restarted", "reason", msg, "failures", w.spec.FailureThreshold)
	default:
		log.Info("readiness probe failed", "reason", msg, "failures", w.spec.FailureThreshold)
	}
	p.onChange()
	return key.kind == liveness && !now
}

// probe runs one probe with its timeout and says whether it succeeded and,
// if not, why, briefly ("HTTP GET /healthz: status 500").
func (p *prober) probe(ctx context.Context, spec api.Probe, t probeTarget) (bool, string) {
	timeout := seconds(spec.TimeoutSeconds)
	switch {
	case spec.HTTPGet != nil:
		what := "HTTP GET " + probePath(spec.HTTPGet.Path)
		if err := p.probeHTTP(ctx, spec.HTTPGet, t.ip, timeout); err != nil {
			return false, probeMessage(what, err, timeout)
		}
		return true, ""
	case spec.TCPSocket != nil:
		what := "TCP :" + strconv.Itoa(spec.TCPSocket.Port)
		if err := p.probeTCP(ctx, spec.TCPSocket.Port, t.ip, timeout); err != nil {
			return false, probeMessage(what, err, timeout)
		}
		return true, ""
	case spec.Exec != nil:
		return p.probeExec(ctx, spec.Exec.Command, t.id, timeout)
	}
	return false, "probe has no http_get, tcp_socket or exec"
}

// errStatus is an HTTP probe's failure by status code.
type errStatus int

func (e errStatus) Error() string { return "status " + strconv.Itoa(int(e)) }

func (p *prober) probeHTTP(ctx context.Context, h *api.HTTPGetProbe, ip string, timeout time.Duration) error {
	addr, err := probeAddr(ip, h.Port)
	if err != nil {
		return err
	}
	u, err := url.Parse("http://" + addr + probePath(h.Path))
	if err != nil || u.Host != addr {
		return fmt.Errorf("bad path %.64q", h.Path)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("bad path %.64q", h.Path)
	}
	req.Header.Set("User-Agent", "flotilla-probe/1.0")
	req.Header.Set("Accept", "*/*")
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	// Read a little of the body so the server is not reset mid-write, not all of it.
	_, _ = io.CopyN(io.Discard, resp.Body, probeBodyLimit)
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return errStatus(resp.StatusCode)
	}
	return nil
}

func (p *prober) probeTCP(ctx context.Context, port int, ip string, timeout time.Duration) error {
	addr, err := probeAddr(ip, port)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

func (p *prober) probeExec(ctx context.Context, cmd []string, id string, timeout time.Duration) (bool, string) {
	if len(cmd) == 0 {
		return false, "exec: empty command"
	}
	what := "exec " + api.TruncateText(cmd[0], 64)
	code, out, err := p.exec(ctx, id, cmd, timeout)
	switch {
	case errors.Is(err, runtime.ErrExecTimeout):
		return false, what + ": timed out after " + timeout.String()
	case err != nil:
		return false, probeMessage(what, err, timeout)
	case code != 0:
		msg := fmt.Sprintf("%s: exit code %d", what, code)
		if line := firstLine(out); line != "" {
			msg += ": " + line
		}
		return false, api.TruncateText(msg, probeMessageLimit)
	}
	return true, ""
}

// probeAddr is ip:port, or an error for a probe that cannot be made.
func probeAddr(ip string, port int) (string, error) {
	if port < 1 || port > 65535 {
		return "", fmt.Errorf("port %d is out of range", port)
	}
	if ip == "" {
		return "", errors.New("the pod has no IP")
	}
	return net.JoinHostPort(ip, strconv.Itoa(port)), nil
}

func probePath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// probeMessage says briefly why a probe failed, without the pod's address
// (the status names the pod already) or Go's error chains.
func probeMessage(what string, err error, timeout time.Duration) string {
	var reason string
	var ne net.Error
	var es errStatus
	var ue *url.Error
	switch {
	case errors.As(err, &es):
		reason = es.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		reason = "timed out after " + timeout.String()
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		reason = "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		reason = "no route to host"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		reason = "connection closed before a response"
	case errors.As(err, &ue):
		reason = ue.Err.Error()
	default:
		reason = err.Error()
	}
	return api.TruncateText(what+": "+reason, probeMessageLimit)
}

// firstLine is the first non-empty line of a command's output, shortened.
func firstLine(out []byte) string {
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return strings.ToValidUTF8(api.TruncateText(l, 128), "?")
		}
	}
	return ""
}

// sanitizeProbe sets defaults and keeps timings and thresholds in the
// ranges the API validates, so a bad value in the state cannot make a
// worker spin, wait forever or overflow a duration.
func sanitizeProbe(p api.Probe) api.Probe {
	clamp := func(v, lo, hi int) int { return max(lo, min(v, hi)) }
	p.InitialDelaySeconds = clamp(p.InitialDelaySeconds, 0, api.MaxProbeSeconds)
	for _, v := range []*int{&p.PeriodSeconds, &p.TimeoutSeconds, &p.SuccessThreshold, &p.FailureThreshold} {
		if *v < 0 {
			*v = 0
		}
	}
	p = p.WithDefaults()
	p.PeriodSeconds = clamp(p.PeriodSeconds, 1, api.MaxProbeSeconds)
	p.TimeoutSeconds = clamp(p.TimeoutSeconds, 1, api.MaxProbeSeconds)
	p.SuccessThreshold = clamp(p.SuccessThreshold, 1, api.MaxProbeThreshold)
	p.FailureThreshold = clamp(p.FailureThreshold, 1, api.MaxProbeThreshold)
	return p
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }
