package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/api"
)

// Container logs (GET /rpc/v1/logs) are served by every agent, for the
// containers on its own node, and read by servers only.
//
// Who may read: an API request is authenticated with the API token by the
// agent that receives it. A server answers it from its own node or asks the
// pod's node here; a client agent proxies what is not its own to a server
// (apiserver). So a node needs to serve its logs to servers' certificates
// only, and does: the token never leaves the servers (client VMs hold only
// its hash), and a client certificate, which any client VM holds, reads no
// other node's logs. A server certificate is trusted as the CA key is:
// servers hold it.

// pathLogs: GET, query namespace, pod and api.LogOptions' parameters with
// the container named. The answer is the plain log lines, streamed.
const pathLogs = "/rpc/v1/logs"

// Bounds of the logs endpoint.
const (
	// DefaultMaxLogStreams bounds log reads an agent serves at once, for
	// the API and for RPC each: a follow holds a goroutine and a file.
	DefaultMaxLogStreams = 64
	// LogStallTimeout cuts off a reader that takes no output for this
	// long, so one that stopped reading cannot hold a stream forever.
	LogStallTimeout = 2 * time.Minute
	// logHeaderTimeout bounds the wait for a node's first answer: it sends
	// its headers as soon as it has found the logs.
	logHeaderTimeout = 30 * time.Second
	// maxLogError bounds the error body read from a node.
	maxLogError = 64 << 10
)

// NodeLogs reads the logs of this node's containers (node.Logs).
type NodeLogs interface {
	// ContainerLogs writes the logs of container opts.Container of pod
	// ns/pod to w, flushing w (an http.Flusher) whenever it caught up. It
	// returns errors wrapping containerlog.ErrNotFound or ErrNoPrevious
	// before it writes anything, and ends a follow when ctx ends.
	ContainerLogs(ctx context.Context, ns, pod string, opts api.LogOptions, w io.Writer) error
}

// logsHandler serves pathLogs.
type logsHandler struct {
	logs    NodeLogs
	revoked func(pki.Identity) bool
	slots   chan struct{}
	log     *slog.Logger
	// stop ends every stream: the server is shutting down, and a follow
	// would otherwise hold its shutdown for as long as its reader wants.
	stop context.Context
}

// newLogsHandler returns the handler of pathLogs on srv, whose shutdown
// ends its streams.
func newLogsHandler(srv *http.Server, logs NodeLogs, revoked func(pki.Identity) bool, log *slog.Logger) *logsHandler {
	return &logsHandler{logs: logs, revoked: revoked, slots: make(chan struct{}, DefaultMaxLogStreams), log: log, stop: shutdownContext(srv)}
}

func (h *logsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, msg string) {
		h.log.Info("rpc logs request refused", "remote", r.RemoteAddr, "status", code, "reason", msg)
		writeJSON(w, code, errorResponse{Error: msg})
	}
	if _, rf := serverPeer(r, h.revoked, "logs", "serves its containers' logs"); rf != nil {
		refuse(rf.code, rf.msg)
		return
	}
	ns, pod, opts, err := podRequest(r.URL.Query(), api.ParseLogOptions, func(o api.LogOptions) string { return o.Container })
	if err != nil {
		refuse(http.StatusBadRequest, "logs: "+err.Error())
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		refuse(http.StatusTooManyRequests, fmt.Sprintf("logs: this node serves %d log streams already; retry shortly", cap(h.slots)))
		return
	}
	ctx, done := streamContext(r.Context(), h.stop)
	defer done()
	sw := NewStreamWriter(w, LogStallTimeout)
	err = h.logs.ContainerLogs(ctx, ns, pod, opts, sw)
	switch {
	case err != nil && !sw.Started():
		refuse(LogErrorStatus(err), err.Error())
	case err != nil:
		h.log.Debug("rpc logs stream ended", "remote", r.RemoteAddr, "err", err)
	case !sw.Started():
		sw.Start() // nothing to send: an empty answer
	}
}

// LogErrorStatus is the HTTP status of an error reading logs: 404 when
// there are none, 400 for a previous run there is not, 500 otherwise.
func LogErrorStatus(err error) int {
	switch {
	case errors.Is(err, containerlog.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, containerlog.ErrNoPrevious):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// StreamWriter streams a log answer: its headers go with the first write
// or flush (so an error found before can still be answered with its
// status), each write gets stall to complete, and the server's read and
// write timeouts, made for short requests, no longer apply. Flush makes
// it an http.Flusher for containerlog.Read.
type StreamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	stall   time.Duration
	started bool
}

// NewStreamWriter returns a StreamWriter on w. It lifts the connection's
// read deadline: the server's ReadTimeout would otherwise end the request
// (it cancels the request's context) however long the stream is meant to
// last.
func NewStreamWriter(w http.ResponseWriter, stall time.Duration) *StreamWriter {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	return &StreamWriter{w: w, rc: rc, stall: stall}
}

// Start sends the headers of a 200 answer.
func (s *StreamWriter) Start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	s.w.WriteHeader(http.StatusOK)
}

// Started reports whether the headers were sent.
func (s *StreamWriter) Started() bool { return s.started }

// Write sends p, within the stall timeout.
func (s *StreamWriter) Write(p []byte) (int, error) {
	s.Start()
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.stall))
	return s.w.Write(p)
}

// Flush sends what is buffered (the headers, at least).
func (s *StreamWriter) Flush() {
	s.Start()
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.stall))
	_ = s.rc.Flush()
}

// LogClient reads container logs from the node that runs them. Servers use
// it: nodes serve their logs to server certificates only. It is safe for
// concurrent use.
type LogClient struct {
	kp *pki.Keypair
}

// NewLogClient returns a LogClient presenting kp's certificate.
func NewLogClient(kp *pki.Keypair) *LogClient { return &LogClient{kp: kp} }

// LogError is a node's refusal to serve logs, with its HTTP status.
type LogError struct {
	Node    string
	Code    int
	Message string
}

func (e *LogError) Error() string {
	return fmt.Sprintf("node %s: %s (HTTP %d)", e.Node, e.Message, e.Code)
}

// HTTPStatus is the status the node answered.
func (e *LogError) HTTPStatus() int { return e.Code }

// OpenLogs asks node, at addr (its RPC address), for the logs of a
// container of pod ns/pod (opts.Container set) and returns the stream once
// the node has found them. The handshake checks the peer is that node. A
// node's refusal comes back as a *LogError. Close the stream when done;
// ending ctx ends it too.
func (c *LogClient) OpenLogs(ctx context.Context, addr, node, ns, pod string, opts api.LogOptions) (io.ReadCloser, error) {
	op := fmt.Sprintf("read logs of %s/%s from node %s at %s", ns, pod, node, addr)
	tr := nodeTransport(c.kp, node)
	q := opts.Query()
	q.Set("namespace", ns)
	q.Set("pod", pod)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, (&url.URL{Scheme: "https", Host: addr, Path: pathLogs, RawQuery: q.Encode()}).String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := (&http.Client{Transport: tr, CheckRedirect: noRedirects}).Do(req)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, transportError(ctx, op, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxLogError))
		resp.Body.Close()
		tr.CloseIdleConnections()
		return nil, &LogError{Node: node, Code: resp.StatusCode, Message: errorMessage(body)}
	}
	return resp.Body, nil
}

// NodeServerConfig configures a NodeServer.
type NodeServerConfig struct {
	// TLS is the server's configuration:
	// pki.Keypair.ServerTLS(tls.RequireAndVerifyClientCert,
	// pki.RequireRole(pki.RoleServer)). Required.
	TLS *tls.Config
	// Logs reads this node's container logs. Required.
	Logs NodeLogs
	// Exec runs commands in this node's containers; nil refuses them.
	Exec   NodeExec
	Logger *slog.Logger
}

// NodeServer is the RPC server of a client agent: it serves what only the
// node itself can, its containers' logs and execs, to servers. (A server agent
// serves the same path on its Server.)
type NodeServer struct {
	tls  *tls.Config
	http *http.Server
}

// NewNodeServer checks cfg and returns a NodeServer.
func NewNodeServer(cfg NodeServerConfig) (*NodeServer, error) {
	if cfg.TLS == nil || cfg.TLS.GetCertificate == nil && len(cfg.TLS.Certificates) == 0 {
		return nil, errors.New("rpc: NodeServerConfig.TLS with a node certificate is required (pki.Keypair.ServerTLS)")
	}
	if cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("rpc: a node server must require client certificates (tls.RequireAndVerifyClientCert), got ClientAuth %s", cfg.TLS.ClientAuth)
	}
	if cfg.Logs == nil {
		return nil, errors.New("rpc: NodeServerConfig.Logs is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "rpc")
	t := cfg.TLS.Clone()
	t.NextProtos = []string{"http/1.1"}
	mux := http.NewServeMux()
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Log streams lift both for themselves (StreamWriter).
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	mux.Handle("GET "+pathLogs, newLogsHandler(hs, cfg.Logs, nil, log))
	if cfg.Exec != nil {
		mux.Handle("GET "+pathExec, newExecHandler(hs, cfg.Exec, nil, log))
	}
	return &NodeServer{tls: t, http: hs}, nil
}

// Serve accepts connections on ln (plain TCP: Serve adds TLS) until
// Shutdown, and then returns nil.
func (s *NodeServer) Serve(ln net.Listener) error {
	err := s.http.Serve(tls.NewListener(ln, s.tls))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("rpc: serve on %s: %w", ln.Addr(), err)
}

// Shutdown stops accepting connections, ends the log streams and waits,
// until ctx is done, for them to finish.
func (s *NodeServer) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }
