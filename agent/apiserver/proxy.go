package apiserver

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// proxyPattern is the mux pattern of the proxy on an agent that holds no
// fleet state (Config.Upstream): every request the local routes do not match.
// Its requests are counted under the route label proxyRoute.
const (
	proxyPattern = "/"
	proxyRoute   = "proxy"
)

// Bounds of the proxy's connections to the servers.
const (
	// upstreamDialTimeout bounds a TCP connect: servers are on the fleet's
	// network, and a server that does not accept within it is skipped.
	upstreamDialTimeout = 5 * time.Second
	// upstreamTLSTimeout bounds a TLS handshake.
	upstreamTLSTimeout = 10 * time.Second
	// upstreamHeaderTimeout bounds the wait for a server's answer once the
	// request is sent. A server answers a write within its WriteTimeout
	// (30 s by default); giving up before this agent's own WriteTimeout
	// (60 s) leaves time to tell the client why.
	upstreamHeaderTimeout = 40 * time.Second
	// upstreamIdleTimeout is shorter than the servers' IdleTimeout, so this
	// side closes first and never writes into a connection a server dropped.
	upstreamIdleTimeout = 90 * time.Second
	// upstreamIdlePerHost keeps enough connections for concurrent requests
	// (the provider applies many resources at once).
	upstreamIdlePerHost = 32
	// upstreamPenalty is how long a server that failed is tried after the
	// others, so that a server that is gone (until membership notices)
	// does not cost every request a dial timeout.
	upstreamPenalty = 10 * time.Second
)

// proxy forwards requests to the fleet's servers: what a client agent does
// with every request that is not about itself.
type proxy struct {
	rp  *httputil.ReverseProxy
	tr  *http.Transport
	log *slog.Logger
}

// newProxy returns a proxy to the servers upstream lists (host:port), dialed
// with tlsCfg, which must accept server certificates only.
func newProxy(upstream func() []string, tlsCfg *tls.Config, log *slog.Logger) (*proxy, error) {
	if tlsCfg == nil {
		return nil, errors.New("apiserver: UpstreamTLS is required with Upstream: pass pki.Keypair.ClientTLS(pki.RequireRole(pki.RoleServer)), so that requests and their token go to servers only")
	}
	tlsCfg = tlsCfg.Clone()
	// HTTP/1.1 as the agents' RPC client: one request per connection at a
	// time, so a failed attempt is never mixed with another request's.
	tlsCfg.NextProtos = []string{"http/1.1"}
	dialer := &net.Dialer{Timeout: upstreamDialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		// Proxy stays nil: agent-to-agent traffic must not follow HTTPS_PROXY.
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   upstreamTLSTimeout,
		ResponseHeaderTimeout: upstreamHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       upstreamIdleTimeout,
		MaxIdleConnsPerHost:   upstreamIdlePerHost,
		// Relay encodings as the client and server agree on them, rather
		// than decompressing here.
		DisableCompression: true,
	}
	p := &proxy{tr: tr, log: log}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Method, path, query, body and headers (Authorization among
			// them) go as they came; failover sets the host per attempt.
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = ""
			pr.Out.Host = ""
			pr.SetXForwarded()
			if pr.In.GetBody != nil {
				// The whole body is here already (replayableBody): the
				// server need not be asked whether to send it.
				pr.Out.Header.Del("Expect")
			}
		},
		Transport: &failover{
			upstream: upstream,
			rt:       tr,
			log:      log,
			now:      time.Now,
			failed:   map[string]time.Time{},
		},
		ErrorHandler: p.answerError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// ServeHTTP forwards r to the first server that answers and relays its
// answer, whatever its status, streaming the body.
func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := replayableBody(r); err != nil {
		writeError(w, http.StatusBadRequest, "read the request body: "+err.Error())
		return
	}
	p.rp.ServeHTTP(w, r)
}

// answerError answers a request no server answered.
func (p *proxy) answerError(w http.ResponseWriter, r *http.Request, err error) {
	var fe *failoverError
	switch {
	case r.Context().Err() != nil:
		p.log.Debug("the client went away before a server answered", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusBadGateway, "the client went away before a server answered")
	case errors.As(err, &fe) && fe.sent:
		p.log.Warn("a server failed during a request", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusBadGateway, fmt.Sprintf("the request reached a server of the fleet, which did not answer: %v; it may have been applied, so check before you retry", err))
	default:
		p.log.Warn("no server answers", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("no server of the fleet answers from this agent: %v; retry, or send the request to a server", err))
	}
}

// replayableBody reads a body of up to maxJSONBody (the largest any server
// route takes) into memory, so that it can be sent again to another server
// (r.GetBody) if the first fails. A larger body is streamed as it arrives,
// and goes to a second server only if the first could not be connected to.
func replayableBody(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || r.ContentLength > maxJSONBody {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
	if err != nil {
		return err
	}
	if len(buf) > maxJSONBody {
		// Chunked and larger than any JSON body: send what was read first,
		// then the rest.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil
	}
	r.ContentLength = int64(len(buf))
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// failover is the proxy's http.RoundTripper: it sends a request to the
// servers upstream lists, in order, until one answers. Servers that failed
// lately are tried last. It is safe for concurrent use.
type failover struct {
	upstream func() []string
	rt       http.RoundTripper
	log      *slog.Logger
	now      func() time.Time

	mu     sync.Mutex
	failed map[string]time.Time // server → until when it is tried last
}

// failoverError is a request no server answered.
type failoverError struct {
	// errs are the attempts' errors, one per server tried.
	errs []error
	// sent is whether the last attempt got a connection, so the request
	// may have reached that server.
	sent bool
}

func (e *failoverError) Error() string {
	if len(e.errs) == 0 {
		return "it knows of no server (membership lists none yet)"
	}
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e *failoverError) Unwrap() []error { return e.errs }

// RoundTrip sends req to one server after another until one answers. After
// a failed attempt it moves on to the next server when the request cannot
// have reached the failed one (no connection was made: dial, TLS
// handshake), or when sending it again is harmless (a safe method, GET, HEAD
// or OPTIONS, whose body, if any, can be sent again). A write that may have
// been received is never sent twice.
func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	servers := f.order(f.upstream())
	fe := &failoverError{}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for i, addr := range servers {
		var connected atomic.Bool
		ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
		})
		out := req.Clone(ctx)
		out.URL.Host, out.Host = addr, ""
		switch {
		case i > 0 && req.GetBody != nil:
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			out.Body = body
		case !replayable:
			// The transport closes the body of a failed attempt, and then
			// it could not go to the next server even when unread.
			out.Body = io.NopCloser(req.Body)
		}
		res, err := f.rt.RoundTrip(out)
		if err == nil {
			f.answered(addr)
			return res, nil
		}
		fe.errs = append(fe.errs, fmt.Errorf("%s: %w", addr, err))
		fe.sent = connected.Load()
		if req.Context().Err() != nil {
			return nil, fe
		}
		f.fail(addr, err)
		if fe.sent && !(safeMethod(req.Method) && replayable) {
			return nil, fe
		}
	}
	return nil, fe
}

// order returns servers with those that failed in the last upstreamPenalty
// moved to the end, each group in its given order.
func (f *failover) order(servers []string) []string {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, until := range f.failed {
		if !now.Before(until) {
			delete(f.failed, s)
		}
	}
	ok := make([]string, 0, len(servers))
	var late []string
	for _, s := range servers {
		switch {
		case s == "":
		case f.failed[s].IsZero():
			ok = append(ok, s)
		default:
			late = append(late, s)
		}
	}
	return append(ok, late...)
}

// fail notes that addr failed; the first failure in a while is logged.
func (f *failover) fail(addr string, err error) {
	f.mu.Lock()
	_, known := f.failed[addr]
	f.failed[addr] = f.now().Add(upstreamPenalty)
	f.mu.Unlock()
	if !known {
		f.log.Warn("a server does not answer API requests; trying the others first", "server", addr, "for", upstreamPenalty, "err", err)
	}
}

// answered notes that addr answered.
func (f *failover) answered(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.failed, addr)
}

// safeMethod reports whether a request with method changes nothing, so it
// may be sent to another server after one failed with it.
func safeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, "":
		return true
	}
	return false
}

// CloseIdleConnections closes the proxy's idle connections to servers (when
// Config.Upstream is set); call it once the API has stopped serving.
func (s *Server) CloseIdleConnections() {
	if s.proxy != nil {
		s.proxy.tr.CloseIdleConnections()
	}
}
