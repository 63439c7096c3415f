package ingress

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/api"
)

// Source is the cluster state the proxy serves: a server's store or a
// client's watched view. Its methods are called from the Proxy's goroutine
// and must not block; the slices returned are the caller's (copies).
type Source interface {
	// Changed returns a channel closed on the next state change. It is
	// taken before the state is read, so no change is missed.
	Changed() <-chan struct{}
	// Ingresses returns every ingress, TLS keys included.
	Ingresses() []api.Ingress
	Services() []api.Service
	Endpoints() []api.Endpoints
	// IngressesChanged and ServicesChanged only grow, with every change to
	// an ingress, or to a service or its endpoints: the proxy renders again
	// only when one moved, not at every change of the state (pod statuses).
	IngressesChanged() uint64
	ServicesChanged() uint64
}

// Config configures a Proxy. DefaultConfig gives the timings and limits;
// Source and Dir are required.
type Config struct {
	Source Source
	// Dir is the proxy's runtime directory (absolute), the agent's data
	// directory's "ingress": configuration, pid file and, in Dir/tls
	// (0700), the certificates and keys (0600).
	Dir string
	// Nginx is the nginx binary; "nginx" (PATH) by default.
	Nginx string
	// Settings are the listeners, timeouts and limits (Dir and the log
	// address are set from the Config).
	Settings Settings
	// Ready, when set, returns once Source holds the cluster's state: the
	// first configuration waits for it, so an empty view never replaces
	// the routes an adopted nginx serves.
	Ready func(ctx context.Context)
	// MinInterval is the least time between two reloads: the changes that
	// arrive meanwhile (an endpoint burst during a rollout) go in one
	// reload. 250 ms by default.
	MinInterval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed apply, and
	// HealthInterval is how often the nginx master's life is checked (it is
	// started again when it died). 500 ms, 30 s and 2 s by default.
	RetryMin, RetryMax, HealthInterval time.Duration
	// KeepRunning leaves nginx serving when Run returns, for an agent
	// restart that must not close the listeners (the next run adopts it).
	// Otherwise Run stops it and removes Dir.
	KeepRunning bool
	// NoAccessLog turns nginx's access log off: no request lines and no
	// request metrics, for ~10 µs less CPU per request (measured by
	// BenchmarkIngressVsNginx) on a node whose ingress is very busy.
	NoAccessLog bool
	// Logger receives what the proxy does and nginx's error log;
	// AccessLog one line per request (nil logs none; the metrics count
	// them all the same).
	Logger, AccessLog *slog.Logger
}

// DefaultConfig returns the timings and the default Settings.
func DefaultConfig() Config {
	return Config{
		Nginx:          "nginx",
		Settings:       DefaultSettings(),
		MinInterval:    250 * time.Millisecond,
		RetryMin:       500 * time.Millisecond,
		RetryMax:       30 * time.Second,
		HealthInterval: 2 * time.Second,
	}
}

// Stats says what the proxy did, for metrics and tests.
type Stats struct {
	// Applies counts configurations put in force (a start or a reload),
	// Failures the attempts that failed.
	Applies, Failures uint64
	// Routes is the number of host and path routes to a service in force.
	Routes int
	// LastError is the last failure's message, "" once an apply succeeds.
	LastError string
	// Skipped is what the configuration in force left out, and why.
	Skipped []string
}

// Proxy keeps an nginx on this node serving the cluster's ingresses.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	nginx *Nginx
	alog  *accessLog

	applies  *prometheus.Desc
	failures *prometheus.Desc
	routes   *prometheus.Desc

	mu    sync.Mutex
	stats Stats
}

var _ prometheus.Collector = (*Proxy)(nil)

// New checks cfg, makes Dir and its fallback certificate and returns a
// Proxy; Run starts it.
func New(cfg Config) (*Proxy, error) {
	def := DefaultConfig()
	var errs []error
	if cfg.Source == nil {
		errs = append(errs, errors.New("no source of ingresses"))
	}
	if cfg.Dir == "" {
		errs = append(errs, errors.New("no directory"))
	}
	s := cfg.Settings
	if s.HTTPPort < 0 || s.HTTPPort > 65535 || s.HTTPSPort < 0 || s.HTTPSPort > 65535 {
		errs = append(errs, fmt.Errorf("ports %d and %d: each must be 0 (off) or 1..65535", s.HTTPPort, s.HTTPSPort))
	}
	if s.HTTPPort == 0 && s.HTTPSPort == 0 {
		errs = append(errs, errors.New("both ports are 0: the ingress is off, so do not start it"))
	}
	if s.HTTPPort != 0 && s.HTTPPort == s.HTTPSPort {
		errs = append(errs, fmt.Errorf("the HTTP and HTTPS ports are both %d; give two ports", s.HTTPPort))
	}
	if s.BindAddress != "" {
		if _, err := netip.ParseAddr(s.BindAddress); err != nil {
			errs = append(errs, fmt.Errorf("bind address %q is not an IP address", api.TruncateText(s.BindAddress, 60)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ingress: %w", err)
	}
	ds := def.Settings
	s.ConnectTimeout = positive(s.ConnectTimeout, ds.ConnectTimeout)
	s.ReadTimeout = positive(s.ReadTimeout, ds.ReadTimeout)
	s.SendTimeout = positive(s.SendTimeout, ds.SendTimeout)
	s.ShutdownTimeout = positive(s.ShutdownTimeout, ds.ShutdownTimeout)
	if s.MaxBodyBytes <= 0 {
		s.MaxBodyBytes = ds.MaxBodyBytes
	}
	if s.Keepalive <= 0 {
		s.Keepalive = ds.Keepalive
	}
	s.Dir = cfg.Dir
	s.FallbackCert = "fallback.pem"
	cfg.Settings = s
	if cfg.Nginx == "" {
		cfg.Nginx = def.Nginx
	}
	cfg.MinInterval = positive(cfg.MinInterval, def.MinInterval)
	cfg.RetryMin = positive(cfg.RetryMin, def.RetryMin)
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryMin)
	cfg.HealthInterval = positive(cfg.HealthInterval, def.HealthInterval)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "ingress")
	ngx, err := NewNginx(cfg.Nginx, cfg.Dir, log)
	if err != nil {
		return nil, err
	}
	alog, err := newAccessLog(cfg.AccessLog)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		log:      log,
		nginx:    ngx,
		alog:     alog,
		applies:  prometheus.NewDesc("flotilla_ingress_applies_total", "Ingress configurations put in force on this node (nginx started or reloaded).", nil, nil),
		failures: prometheus.NewDesc("flotilla_ingress_apply_failures_total", "Ingress configurations that failed to apply (retried with backoff; the agent log says why).", nil, nil),
		routes:   prometheus.NewDesc("flotilla_ingress_routes", "Host and path routes to a service in force on this node.", nil, nil),
	}
	if !cfg.NoAccessLog {
		p.cfg.Settings.LogAddress = alog.addr()
	}
	if err := p.prepare(); err != nil {
		alog.conn.Close()
		return nil, err
	}
	return p, nil
}

func positive(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Skipped = slices.Clone(st.Skipped)
	return st
}

// NginxPID returns the nginx master's pid, 0 when none runs.
func (p *Proxy) NginxPID() int { return p.nginx.PID() }

// Describe implements prometheus.Collector.
func (p *Proxy) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.applies
	ch <- p.failures
	ch <- p.routes
	p.alog.requests.Describe(ch)
}

// Collect implements prometheus.Collector.
func (p *Proxy) Collect(ch chan<- prometheus.Metric) {
	st := p.Stats()
	ch <- prometheus.MustNewConstMetric(p.applies, prometheus.CounterValue, float64(st.Applies))
	ch <- prometheus.MustNewConstMetric(p.failures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(p.routes, prometheus.GaugeValue, float64(st.Routes))
	p.alog.requests.Collect(ch)
}

// Run serves until ctx ends: it adopts or starts nginx, then applies the
// configuration after every change to ingresses, services or endpoints,
// MinInterval apart at most, and starts nginx again when it died. On
// return nginx is stopped and Dir removed, unless KeepRunning. Failures
// are logged and retried; Stats says how it goes.
func (p *Proxy) Run(ctx context.Context) {
	actx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.alog.run(actx)
	defer p.shutdown()
	p.nginx.Adopt()
	if p.cfg.Ready != nil {
		p.cfg.Ready(ctx)
	}
	health := time.NewTicker(p.cfg.HealthInterval)
	defer health.Stop()
	var (
		last      string    // the configuration in force
		lastVer   [2]uint64 // the source's versions it was rendered from
		failures  int
		notBefore time.Time
	)
	src := p.cfg.Source
	for ctx.Err() == nil {
		// The channel, then the versions, then the state: a change after
		// any of them is seen at the next turn.
		changed := src.Changed()
		ver := [2]uint64{src.IngressesChanged(), src.ServicesChanged()}
		if last == "" || ver != lastVer || !p.nginx.Running() {
			in := Input{Ingresses: src.Ingresses(), Services: src.Services(), Endpoints: src.Endpoints()}
			r := Render(p.cfg.Settings, in)
			if r.Text != last || !p.nginx.Running() {
				if err := p.apply(ctx, r, r.Text != last); err != nil {
					failures++
					wait := min(p.cfg.RetryMin<<min(failures-1, 16), p.cfg.RetryMax)
					p.log.Warn("ingress configuration not applied; retrying", "err", err, "retry_in", wait)
					if !sleep(ctx, wait) {
						break
					}
					continue
				}
				failures, last = 0, r.Text
				notBefore = time.Now().Add(p.cfg.MinInterval)
				p.alog.setKnown(in.Ingresses)
			}
			lastVer = ver
		}
		select {
		case <-ctx.Done():
		case <-health.C:
		case <-changed:
			// Debounce: a burst of changes lands in one reload.
			if !sleep(ctx, time.Until(notBefore)) {
				return
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (p *Proxy) apply(ctx context.Context, r Rendered, changed bool) error {
	start := time.Now()
	err := p.nginx.Apply(ctx, r, p.cfg.Settings.FallbackCert)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.stats.Failures++
		p.stats.LastError = err.Error()
		return err
	}
	if !slices.Equal(r.Skipped, p.stats.Skipped) {
		for _, s := range r.Skipped {
			p.log.Warn("ingress route left out", "reason", s)
		}
	}
	p.stats.Applies++
	p.stats.Routes, p.stats.Skipped, p.stats.LastError = r.Routes, r.Skipped, ""
	p.log.Info("ingress configuration in force", "routes", r.Routes, "certificates", len(r.Certs), "changed", changed, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// prepare writes the fallback certificate, served to TLS clients that ask
// for a host without one (and to those that send no SNI).
func (p *Proxy) prepare() error {
	pemBytes, err := selfSigned()
	if err != nil {
		return err
	}
	return p.nginx.Prepare(p.cfg.Settings.FallbackCert, pemBytes)
}

func (p *Proxy) shutdown() {
	if p.cfg.KeepRunning {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Settings.ShutdownTimeout+5*time.Second)
	defer cancel()
	if err := p.nginx.Stop(ctx); err != nil {
		p.log.Warn("stopping nginx", "err", err)
	}
	if err := p.nginx.Cleanup(); err != nil {
		p.log.Warn("removing the ingress files", "err", err)
	}
}

// selfSigned makes a throwaway certificate and key, PEM, for hosts
// without a certificate of their own.
func selfSigned() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ingress: fallback key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "flotilla-ingress-fallback"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ingress: fallback certificate: %w", err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ingress: fallback key: %w", err)
	}
	var b strings.Builder
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	return []byte(b.String()), nil
}
