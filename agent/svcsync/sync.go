package svcsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/svcproxy"
	"github.com/flotilla-io/flotilla/api"
)

// Source is the cluster state a node syncs from: a server's store
// (*store.Store) or a client's watched view (*clientstate.Store). Its
// methods are called from the Syncer's goroutine and must not block.
type Source interface {
	// Changed returns a channel closed on the next state change. It is
	// taken before the state is read, so no change is missed.
	Changed() <-chan struct{}
	// ServicesChanged returns the index of the last change to any service
	// or endpoints.
	ServicesChanged() uint64
	// PodsChanged returns the index of the last change to a pod placed on
	// node (this node's pods are DNS names).
	PodsChanged(node string) uint64
	// Services returns every service; Endpoints every endpoints object, one
	// per service. Both are copies.
	Services() []api.Service
	Endpoints() []api.Endpoints
	// Pods returns the pods the filter selects (this node's).
	Pods(f state.PodFilter) []api.Pod
}

// Proxy programs the service rules: *svcproxy.Syncer.
type Proxy interface {
	Sync(ctx context.Context, st svcproxy.State) (svcproxy.SyncStats, error)
	// Forget makes the next Sync read the tables again (repair).
	Forget()
}

// DNS serves the cluster's names: *clusterdns.Server. Update's error
// describes entries it left out; it is not a failure to retry.
type DNS interface {
	Update(services []clusterdns.Service, pods []clusterdns.Pod) (names int, err error)
}

var (
	_ Proxy = (*svcproxy.Syncer)(nil)
	_ DNS   = (*clusterdns.Server)(nil)
)

// Config configures a Syncer. DefaultConfig gives the timings; NodeName and
// Source are required, and at least one of Proxy and DNS.
type Config struct {
	NodeName string
	Source   Source
	// Proxy receives the rules; nil syncs none.
	Proxy Proxy
	// DNS receives the names; nil syncs none.
	DNS DNS
	// Ready, when set, returns once Source holds the cluster's state (a
	// client's cached or first watched view): the first sync waits for it,
	// so an empty view never replaces the rules a previous run left.
	Ready func(ctx context.Context)
	// MinInterval is the least time between the starts of two syncs: the
	// changes that arrive meanwhile are synced together. 50 ms by default.
	MinInterval time.Duration
	// RetryMin and RetryMax bound the backoff after a failed sync, which
	// doubles from RetryMin. 200 ms and 30 s by default.
	RetryMin, RetryMax time.Duration
	// Repair is how often the rules are read back from the kernel and
	// rewritten where they differ (svcproxy's Forget), so a chain flushed
	// behind the agent's back comes back. 0 never; 5 min by default.
	Repair time.Duration
	// Logger receives what the syncer does; nil discards it.
	Logger *slog.Logger
}

// DefaultConfig returns the timings: a change is in force on the node
// within MinInterval plus the sync itself (svcproxy: ~20 ms at 1,000
// services).
func DefaultConfig() Config {
	return Config{
		MinInterval: 50 * time.Millisecond,
		RetryMin:    200 * time.Millisecond,
		RetryMax:    30 * time.Second,
		Repair:      5 * time.Minute,
	}
}

// Stats says what the Syncer did, for metrics.
type Stats struct {
	// Syncs counts the syncs that ran, Failures those that failed.
	Syncs, Failures uint64
	// LastDuration is how long the last sync took; LastSuccess when the
	// last successful one ended (zero before any).
	LastDuration time.Duration
	LastSuccess  time.Time
	// LastError is the last failure's message, "" once a sync succeeds.
	LastError string
	// ServicePorts is the number of service ports programmed; DNSNames the
	// names DNS serves.
	ServicePorts, DNSNames int
}

// Syncer keeps a Proxy and a DNS equal to a Source's services.
type Syncer struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	stats Stats
	// lastSkipped is what the last conversion or DNS update left out, so
	// the same warnings are not logged on every sync.
	lastSkipped string
}

// New checks cfg and returns a Syncer; Run starts it.
func New(cfg Config) (*Syncer, error) {
	var errs []error
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("no node name"))
	}
	if cfg.Source == nil {
		errs = append(errs, errors.New("no source of services"))
	}
	if cfg.Proxy == nil && cfg.DNS == nil {
		errs = append(errs, errors.New("neither a proxy nor a DNS server to sync"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("service sync: %w", err)
	}
	def := DefaultConfig()
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = def.MinInterval
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = def.RetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(def.RetryMax, cfg.RetryMin)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Syncer{cfg: cfg, log: log.With("component", "svcsync")}, nil
}

// Stats returns the counters so far.
func (s *Syncer) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// synced is how far the Proxy and the DNS are in step with the Source.
type synced struct {
	proxyOK, dnsOK  bool   // a sync of each succeeded
	proxySvc        uint64 // ServicesChanged the proxy last synced
	dnsSvc, dnsPods uint64 // ServicesChanged and PodsChanged the DNS last synced
}

// Run syncs until ctx ends: once Ready returned, then after every change
// to a service, its endpoints or (for DNS) this node's pods.
func (s *Syncer) Run(ctx context.Context) {
	if s.cfg.Ready != nil {
		s.cfg.Ready(ctx)
	}
	var (
		st        synced
		failures  int
		notBefore time.Time // the earliest start of the next sync
		repair    <-chan time.Time
	)
	if s.cfg.Repair > 0 {
		t := time.NewTicker(s.cfg.Repair)
		defer t.Stop()
		repair = t.C
	}
	for ctx.Err() == nil {
		changed := s.cfg.Source.Changed()
		// Indexes before data: a change in between is synced now and
		// again next time, never missed.
		svcIdx := s.cfg.Source.ServicesChanged()
		podsIdx := s.cfg.Source.PodsChanged(s.cfg.NodeName)
		needProxy := s.cfg.Proxy != nil && (!st.proxyOK || svcIdx != st.proxySvc)
		needDNS := s.cfg.DNS != nil && (!st.dnsOK || svcIdx != st.dnsSvc || podsIdx != st.dnsPods)
		if !needProxy && !needDNS {
			select {
			case <-ctx.Done():
			case <-changed:
			case <-repair:
				s.forget(&st)
			}
			continue
		}
		if wait := time.Until(notBefore); wait > 0 {
			// Coalesce: whatever changes meanwhile is read after the wait.
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		start := time.Now()
		err := s.sync(ctx, &st, needProxy, needDNS, svcIdx, podsIdx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			backoff := s.cfg.RetryMin << min(failures-1, 20)
			backoff = min(backoff, s.cfg.RetryMax)
			notBefore = time.Now().Add(backoff)
			s.log.Warn("service sync failed; retrying", "err", err, "failures", failures, "retry_in", backoff)
			continue
		}
		if failures > 0 {
			s.log.Info("service sync recovered", "after_failures", failures)
		}
		failures = 0
		notBefore = start.Add(s.cfg.MinInterval)
	}
}

// forget makes the next pass read the rules back from the kernel.
func (s *Syncer) forget(st *synced) {
	if s.cfg.Proxy != nil {
		s.cfg.Proxy.Forget()
		st.proxyOK = false
	}
}

// sync brings what is needed in step with the state at svcIdx and podsIdx
// (read before the state itself) and records how far it got.
func (s *Syncer) sync(ctx context.Context, st *synced, needProxy, needDNS bool, svcIdx, podsIdx uint64) error {
	start := time.Now()
	services := s.cfg.Source.Services()
	endpoints := s.cfg.Source.Endpoints()
	var (
		errs    []error
		skipped []string
		ports   = -1
		names   = -1
	)
	if needProxy {
		ps, bad := ProxyState(services, endpoints)
		for _, e := range bad {
			skipped = append(skipped, e.Error())
		}
		stats, err := s.cfg.Proxy.Sync(ctx, ps)
		if err != nil {
			errs = append(errs, fmt.Errorf("service rules: %w", err))
		} else {
			st.proxyOK, st.proxySvc, ports = true, svcIdx, stats.ServicePorts
		}
	}
	if needDNS {
		local := s.cfg.Source.Pods(state.PodFilter{Node: s.cfg.NodeName})
		dsvcs, dpods := DNSView(services, endpoints, local)
		n, err := s.cfg.DNS.Update(dsvcs, dpods)
		if err != nil {
			// Entries left out, the rest served: nothing to retry.
			skipped = append(skipped, "dns: "+err.Error())
		}
		st.dnsOK, st.dnsSvc, st.dnsPods, names = true, svcIdx, podsIdx, n
	}
	s.logSkipped(skipped)
	err := errors.Join(errs...)
	took := time.Since(start)

	s.mu.Lock()
	s.stats.Syncs++
	s.stats.LastDuration = took
	if ports >= 0 {
		s.stats.ServicePorts = ports
	}
	if names >= 0 {
		s.stats.DNSNames = names
	}
	if err != nil {
		s.stats.Failures++
		s.stats.LastError = err.Error()
	} else {
		s.stats.LastError = ""
		s.stats.LastSuccess = time.Now()
	}
	s.mu.Unlock()
	s.log.Debug("services synced", "services", len(services), "proxy", needProxy, "dns", needDNS,
		"services_index", svcIdx, "took", took, "err", err)
	return err
}

// maxLoggedSkips bounds the warnings one sync logs.
const maxLoggedSkips = 20

// logSkipped warns about what was left out when it differs from last
// time, so one bad service does not repeat its warning on every sync.
func (s *Syncer) logSkipped(skipped []string) {
	joined := strings.Join(skipped, "\n")
	if joined == s.lastSkipped {
		return
	}
	s.lastSkipped = joined
	for i, msg := range skipped {
		if i == maxLoggedSkips {
			s.log.Warn("more service entries left out", "count", len(skipped)-i)
			break
		}
		s.log.Warn("service entry left out", "err", msg)
	}
}
