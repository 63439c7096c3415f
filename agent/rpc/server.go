package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
)

// ServerConfig configures a Server. Start from DefaultServerConfig.
type ServerConfig struct {
	// TLS is the server's configuration, from pki.ServerTLS with
	// tls.VerifyClientCertIfGiven: agents without a certificate must reach
	// the join endpoint. tls.RequireAndVerifyClientCert works when Joiner is
	// nil. Required.
	TLS *tls.Config
	// Applier applies forwarded writes. Required.
	Applier Applier
	// Joiner signs joining agents' certificates. Nil on agents that do not
	// hold the CA key (clients): they refuse join requests.
	Joiner *pki.CA
	// JoinToken authenticates join requests. Required when Joiner is set.
	JoinToken string
	// CertValidity is how long certificates signed for joining agents last.
	CertValidity time.Duration
	// ApplyTimeout bounds how long a forwarded write waits to commit.
	ApplyTimeout time.Duration
	// NodeName is what ping answers; empty means the common name of the
	// TLS certificate.
	NodeName string
	Logger   *slog.Logger
}

// DefaultServerConfig returns a configuration with working defaults for all
// but TLS, Applier and the join settings.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		CertValidity: 365 * 24 * time.Hour,
		ApplyTimeout: 30 * time.Second,
		Logger:       slog.Default(),
	}
}

// Server serves agent-to-agent RPC over HTTPS.
type Server struct {
	cfg       ServerConfig
	tls       *tls.Config
	tokenHash [sha256.Size]byte
	log       *slog.Logger
	http      *http.Server
}

// NewServer validates cfg and returns a Server; zero durations and a nil
// Logger take the DefaultServerConfig values.
func NewServer(cfg ServerConfig) (*Server, error) {
	def := DefaultServerConfig()
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = def.CertValidity
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = def.ApplyTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if cfg.TLS == nil || (len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil) {
		return nil, errors.New("rpc: ServerConfig.TLS with a node certificate is required (pki.ServerTLS with tls.VerifyClientCertIfGiven)")
	}
	switch cfg.TLS.ClientAuth {
	case tls.VerifyClientCertIfGiven:
	case tls.RequireAndVerifyClientCert:
		if cfg.Joiner != nil {
			return nil, errors.New("rpc: joining agents have no certificate yet, so a server that signs them needs tls.VerifyClientCertIfGiven, not RequireAndVerifyClientCert")
		}
	default:
		return nil, fmt.Errorf("rpc: ServerConfig.TLS must verify client certificates against the cluster CA (tls.VerifyClientCertIfGiven), got ClientAuth %s", cfg.TLS.ClientAuth)
	}
	if cfg.TLS.ClientCAs == nil {
		return nil, errors.New("rpc: ServerConfig.TLS has no ClientCAs to verify peers against; build it with pki.ServerTLS")
	}
	if cfg.Applier == nil {
		return nil, errors.New("rpc: ServerConfig.Applier is required")
	}
	cfg.JoinToken = strings.TrimSpace(cfg.JoinToken)
	if cfg.Joiner != nil && cfg.JoinToken == "" {
		return nil, errors.New("rpc: a server that signs joining agents' certificates (Joiner set) needs the join token")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = certName(cfg.TLS)
	}
	s := &Server{
		cfg:       cfg,
		tls:       cfg.TLS.Clone(),
		tokenHash: sha256.Sum256([]byte(cfg.JoinToken)),
		log:       cfg.Logger.With("component", "rpc"),
	}
	// Plain HTTP/1.1: a few small requests between agents gain nothing from h2.
	s.tls.NextProtos = []string{"http/1.1"}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathApply, s.apply)
	mux.HandleFunc("POST "+pathJoin, s.join)
	mux.HandleFunc("GET "+pathPing, s.ping)
	s.http = &http.Server{
		Handler:           s.logRequests(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Room for a write that waits the whole ApplyTimeout, and its answer.
		WriteTimeout:   cfg.ApplyTimeout + 15*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		// Handshake failures (a peer from another CA, a port scanner) land here.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// certName returns the common name of cfg's first certificate, or "".
func certName(cfg *tls.Config) string {
	if len(cfg.Certificates) == 0 || len(cfg.Certificates[0].Certificate) == 0 {
		return ""
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
			return ""
		}
	}
	return leaf.Subject.CommonName
}

// Serve accepts connections on ln (plain TCP: Serve adds TLS) until
// Shutdown, and then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(tls.NewListener(ln, s.tls))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("rpc: serve on %s: %w", ln.Addr(), err)
}

// Shutdown stops accepting connections and waits, until ctx is done, for
// requests in flight (forwarded writes among them) to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

// peer returns the common name of the request's verified client
// certificate; ok is false when there is none.
func peer(r *http.Request) (name string, ok bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName, true
}

const needCert = "a client certificate signed by the cluster CA is required: this agent's RPC client must present its node certificate (pki.ClientTLS with the certificate and key)"

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	from, ok := peer(r)
	if !ok {
		writeJSON(w, http.StatusUnauthorized, applyResponse{Error: "apply: " + needCert, Kind: KindOther})
		return
	}
	entry, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxEntrySize))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeJSON(w, http.StatusRequestEntityTooLarge, applyResponse{Error: fmt.Sprintf("apply: the entry is larger than %d bytes", MaxEntrySize), Kind: KindOther})
		return
	case err != nil:
		writeJSON(w, http.StatusBadRequest, applyResponse{Error: "apply: read entry: " + err.Error(), Kind: KindOther})
		return
	case len(entry) == 0:
		writeJSON(w, http.StatusBadRequest, applyResponse{Error: "apply: the entry is empty", Kind: KindOther})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyTimeout)
	defer cancel()
	index, resp, err := s.cfg.Applier.ApplyRaw(ctx, entry)
	if err != nil {
		kind := kindOf(err)
		msg := err.Error()
		if kind == KindOther && errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			msg = fmt.Sprintf("%s: not committed within %s; check that a majority of servers is up, then retry (the write may still be applied)", msg, s.cfg.ApplyTimeout)
		}
		level := slog.LevelDebug
		if kind == KindOther {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "forwarded write failed", "from", from, "kind", kind, "err", err)
		// index and resp go back too: a write the FSM refused was still
		// committed, and resp may encode the refusal for the forwarder.
		writeJSON(w, statusOf(kind), applyResponse{Index: index, Response: resp, Error: msg, Kind: kind})
		return
	}
	writeJSON(w, http.StatusOK, applyResponse{Index: index, Response: resp})
}

func statusOf(kind string) int {
	switch kind {
	case KindNotFound:
		return http.StatusNotFound
	case KindExists, KindConflict:
		return http.StatusConflict
	case KindNotLeader:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// tokenRejected is the message a join with a wrong or missing token gets.
const tokenRejected = "join token rejected: check the token flotilla_cluster generated"

func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Joiner == nil {
		writeJSON(w, http.StatusForbidden, errorResponse{Error: fmt.Sprintf("agent %q is not a server (it holds no CA key), so it cannot sign certificates; join through a server agent's address", s.cfg.NodeName)})
		return
	}
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	gotHash := sha256.Sum256([]byte(strings.TrimSpace(got)))
	if subtle.ConstantTimeCompare(gotHash[:], s.tokenHash[:]) != 1 {
		s.log.Warn("join refused: wrong token", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="flotilla-join"`)
		writeJSON(w, http.StatusUnauthorized, errorResponse{Error: tokenRejected})
		return
	}
	var req joinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJoinBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "join: decode request: " + err.Error()})
		return
	}
	if req.NodeName == "" || req.CSRPEM == "" {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "join: node_name and csr_pem are required"})
		return
	}
	if cn := csrName([]byte(req.CSRPEM)); cn != req.NodeName {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: fmt.Sprintf("join: the CSR is for %q but node_name is %q; they must match", cn, req.NodeName)})
		return
	}
	certPEM, err := s.cfg.Joiner.SignCSR([]byte(req.CSRPEM), s.cfg.CertValidity)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorResponse{Error: "join: " + err.Error()})
		return
	}
	s.log.Info("signed a certificate for a joining agent", "node", req.NodeName, "remote", r.RemoteAddr, "validity", s.cfg.CertValidity)
	writeJSON(w, http.StatusOK, joinResponse{CertPEM: string(certPEM), CAPEM: string(s.cfg.Joiner.CertPEM())})
}

// csrName returns the common name of a PEM CSR, or "" if it does not parse
// (SignCSR then says why).
func csrName(csrPEM []byte) string {
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return ""
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return ""
	}
	return csr.Subject.CommonName
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	if _, ok := peer(r); !ok {
		writeJSON(w, http.StatusUnauthorized, errorResponse{Error: "ping: " + needCert})
		return
	}
	writeJSON(w, http.StatusOK, pingResponse{NodeName: s.cfg.NodeName})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		level := slog.LevelDebug
		if rec.code >= 400 {
			level = slog.LevelInfo
		}
		from, _ := peer(r)
		s.log.Log(r.Context(), level, "rpc request", "method", r.Method, "path", r.URL.Path, "status", rec.code,
			"remote", r.RemoteAddr, "peer", from, "duration", time.Since(start))
	})
}
