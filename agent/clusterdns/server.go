package clusterdns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// TCP timeouts: a client gets tcpTimeout to send its query and idleTimeout
// between queries on one connection (RFC 7766 suggests seconds, not minutes).
const (
	tcpTimeout    = 2 * time.Second
	idleTimeout   = 8 * time.Second
	maxTCPQueries = 128
	// maxQuery is the largest datagram read; longer ones are dropped.
	maxQuery = 4096
)

var _ dns.Handler = (*Server)(nil)

// Server answers DNS queries for the cluster's names and forwards the rest.
// Make one with New, feed it with Update, serve with Start, stop with Close.
// Its methods may be called concurrently.
type Server struct {
	cfg    Config
	origin string
	listen []netip.AddrPort
	ttl    uint32
	negTTL uint32
	log    *slog.Logger

	zone     atomic.Pointer[zone]
	updateMu sync.Mutex // orders Updates, so serials grow
	serial   uint32

	fwd    atomic.Pointer[forwarder]
	fwdSem chan struct{}
	shared counters // TCP, forwarded answers and handler calls

	// ctx is cancelled by Close; forwards in flight stop with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // readers, TCP servers, forwards

	mu       sync.Mutex
	started  bool
	closed   bool
	addrs    []netip.AddrPort
	udpConns []*net.UDPConn
	readers  []*counters
	tcp      []*dns.Server
	done     chan struct{}
}

// New checks cfg and returns a server with an empty view.
func New(cfg Config) (*Server, error) {
	origin, listen, upstreams, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    cfg,
		origin: origin,
		listen: listen,
		ttl:    uint32(cfg.TTL / time.Second),
		negTTL: uint32(cfg.NegativeTTL / time.Second),
		log:    log.With("component", "clusterdns"),
		fwdSem: make(chan struct{}, cfg.MaxForwards),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		// Start from the clock, as CoreDNS does, so serials grow across
		// restarts too.
		serial: uint32(time.Now().Unix()),
	}
	if len(upstreams) > 0 {
		s.fwd.Store(newForwarder(upstreams, cfg.ForwardTimeout))
	}
	if _, err := s.Update(nil, nil); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// Update replaces the view with these services and pods; the next query sees
// them. Entries that cannot be named (bad names, duplicates) are left out and
// described in the error, and all the others are served. It returns how many
// names the view has. Update copies what it needs: the caller may reuse the
// slices.
func (s *Server) Update(services []Service, pods []Pod) (names int, err error) {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	s.serial++
	z, err := buildZone(s.origin, s.ttl, s.negTTL, s.serial, services, pods)
	s.zone.Store(z)
	return len(z.nodes), err
}

// Start binds the listen addresses (UDP and TCP) and serves them in the
// background until ctx ends or Close is called. It may be called once, even
// if it fails. When Config.Upstreams is empty it reads the upstreams from
// Config.ResolvConf now; failing that, it logs a warning and forwards nothing.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("clusterdns: Start called twice or after Close")
	}
	s.started = true
	nsock := s.cfg.UDPSockets
	if nsock == 0 {
		nsock = runtime.GOMAXPROCS(0)
	}
	if !canReusePort {
		nsock = 1
	}
	var lns []net.Listener
	for _, ap := range s.listen {
		udp, ln, err := bind(ctx, ap, nsock)
		if err != nil {
			for _, c := range s.udpConns {
				c.Close()
			}
			for _, l := range lns {
				l.Close()
			}
			s.udpConns = nil
			return err
		}
		s.udpConns = append(s.udpConns, udp...)
		lns = append(lns, ln)
		s.addrs = append(s.addrs, netip.AddrPortFrom(ap.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port)))
	}
	s.setUpstreams()
	for _, c := range s.udpConns {
		rc := new(counters)
		s.readers = append(s.readers, rc)
		s.wg.Add(1)
		go s.readUDP(c, rc)
	}
	for _, ln := range lns {
		started := make(chan struct{})
		srv := &dns.Server{
			Listener:          &limitListener{Listener: ln, sem: make(chan struct{}, s.cfg.MaxTCPConns)},
			Net:               "tcp",
			Handler:           s,
			ReadTimeout:       tcpTimeout,
			WriteTimeout:      tcpTimeout,
			IdleTimeout:       func() time.Duration { return idleTimeout },
			MaxTCPQueries:     maxTCPQueries,
			MsgInvalidFunc:    func([]byte, error) { s.shared.invalid.Add(1) },
			NotifyStartedFunc: func() { close(started) },
		}
		s.tcp = append(s.tcp, srv)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("TCP server stopped", "addr", ln.Addr(), "err", err)
			}
		}()
		// Shutdown only works on a started server: wait, so Close cannot
		// come first.
		<-started
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.done:
		}
	}()
	s.log.Info("serving DNS", "addrs", s.addrs, "domain", s.origin, "udp_sockets_per_addr", nsock)
	return nil
}

// setUpstreams reads the upstreams from resolv.conf when none were given, and
// drops any that would reach this server. s.mu is held and s.addrs bound.
func (s *Server) setUpstreams() {
	var ups []netip.AddrPort
	if f := s.fwd.Load(); f != nil {
		for _, u := range f.upstreams {
			if pointsAt(u, s.addrs) {
				s.log.Warn("upstream is this server's own address; skipping it", "upstream", u)
				continue
			}
			ups = append(ups, u)
		}
	} else if s.cfg.ResolvConf != "" {
		var err error
		ups, err = readUpstreams(s.cfg.ResolvConf, s.addrs)
		if err != nil {
			s.log.Warn("no upstream resolvers: names outside the cluster domain get REFUSED", "err", err)
		}
	}
	if len(ups) == 0 {
		s.log.Warn("no upstream resolvers: names outside the cluster domain get REFUSED")
	} else {
		s.log.Info("forwarding to upstream resolvers", "upstreams", ups)
	}
	s.fwd.Store(newForwarder(ups, s.cfg.ForwardTimeout))
}

// Addrs returns the addresses served (UDP and TCP alike), once started.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.addrs...)
}

// Upstreams returns the resolvers forwarded to.
func (s *Server) Upstreams() []netip.AddrPort {
	if f := s.fwd.Load(); f != nil {
		return append([]netip.AddrPort(nil), f.upstreams...)
	}
	return nil
}

// Close stops serving and waits for the server's goroutines, forwards in
// flight included (they are cancelled). It may be called more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	tcp, udp := s.tcp, s.udpConns
	s.mu.Unlock()
	var errs []error
	for _, srv := range tcp {
		ctx, cancel := context.WithTimeout(context.Background(), tcpTimeout)
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("clusterdns: stop TCP server: %w", err))
		}
		cancel()
	}
	for _, c := range udp {
		c.Close()
	}
	s.wg.Wait()
	close(s.done)
	return errors.Join(errs...)
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	st := Stats{Responses: make(map[string]uint64)}
	s.shared.addTo(&st)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.readers {
		c.addTo(&st)
	}
	return st
}

// ServeDNS answers one query; it serves TCP, and tests can call it with a
// recorder. A query to forward blocks until the upstreams answer or time out.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	reply := s.answer(req)
	if reply == nil {
		if !s.acquireForward() {
			s.shared.refused.Add(1)
			reply = rcodeReply(req, dns.RcodeRefused)
		} else {
			reply = s.forward(req, &s.shared)
			s.releaseForward()
		}
	}
	s.finish(req, reply, udp)
	if err := w.WriteMsg(reply); err != nil {
		s.log.Debug("write response", "remote", w.RemoteAddr(), "err", err)
		return
	}
	s.shared.response(reply.Rcode)
}

// answer returns the reply to req when the server makes it itself (a name
// under the domain, or a malformed query), or nil when req is to be forwarded.
func (s *Server) answer(req *dns.Msg) *dns.Msg {
	if req.Opcode != dns.OpcodeQuery {
		return rcodeReply(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return rcodeReply(req, dns.RcodeFormatError)
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		m := rcodeReply(req, dns.RcodeBadVers)
		m.SetEdns0(uint16(s.cfg.UDPSize), false)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z := s.zone.Load()
	if !z.has(name) {
		return nil
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	n := z.nodes[name]
	if n == nil {
		m.Rcode = dns.RcodeNameError
		m.Ns = z.soaSet
		return m
	}
	var answer, extra []dns.RR
	switch q.Qtype {
	case dns.TypeA:
		answer = n.a
	case dns.TypeAAAA:
		answer = n.aaaa
	case dns.TypeSRV:
		answer, extra = n.srv, n.extra
	case dns.TypeANY:
		answer = n.any
	case dns.TypeSOA:
		if n.name == z.origin {
			answer = z.soaSet
		}
	}
	if len(answer) == 0 {
		m.Ns = z.soaSet
		return m
	}
	if q.Name != n.name {
		answer = withOwner(answer, q.Name)
	}
	m.Answer, m.Extra = answer, extra
	return m
}

// withOwner returns copies of rrs named name: the client's spelling of the
// name, echoed as resolvers using 0x20 case randomization expect.
func withOwner(rrs []dns.RR, name string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
		out[i].Header().Name = name
	}
	return out
}

func rcodeReply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

// finish fits reply to the client: an OPT record when the query had one, and
// no more than the client can take over UDP (the TC bit tells it to retry
// over TCP). reply's record slices may be the zone's: only appends (which
// copy, as they are clipped) and reslices touch them.
func (s *Server) finish(req, reply *dns.Msg, udp bool) {
	limit := dns.MaxMsgSize
	if opt := req.IsEdns0(); opt != nil {
		if reply.IsEdns0() == nil {
			o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
			o.SetUDPSize(uint16(s.cfg.UDPSize))
			o.SetDo(opt.Do())
			reply.Extra = append(reply.Extra, o)
		}
		if udp {
			limit = min(max(int(opt.UDPSize()), dns.MinMsgSize), s.cfg.UDPSize)
		}
	} else if udp {
		limit = dns.MinMsgSize
	}
	reply.Truncate(limit)
}

func (s *Server) acquireForward() bool {
	select {
	case s.fwdSem <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *Server) releaseForward() { <-s.fwdSem }

// forward asks the upstreams and returns their answer, or SERVFAIL when none
// answers in time, or REFUSED when there is no upstream.
func (s *Server) forward(req *dns.Msg, c *counters) *dns.Msg {
	f := s.fwd.Load()
	if f == nil || len(f.upstreams) == 0 {
		return rcodeReply(req, dns.RcodeRefused)
	}
	c.forwarded.Add(1)
	r, err := f.exchange(s.ctx, req)
	if err != nil {
		c.fwdFailed.Add(1)
		s.log.Debug("forward failed", "name", req.Question[0].Name, "type", dns.TypeToString[req.Question[0].Qtype], "err", err)
		return rcodeReply(req, dns.RcodeServerFailure)
	}
	return r
}

// limitListener closes connections past its bound at once rather than
// queueing them, so a flood of idle connections cannot pin the server.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: sync.OnceFunc(func() { <-l.sem })}, nil
		default:
			c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	c.release()
	return c.Conn.Close()
}
