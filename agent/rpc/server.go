package rpc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/authz"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// Backend is what the RPC server serves from: the agent's store.
type Backend interface {
	authz.View
	// ApplyLocal proposes an authorized write on the leader.
	ApplyLocal(ctx context.Context, cmd state.Command) store.Reply
	// Revoked reports whether a certificate was revoked by a node removal.
	Revoked(id pki.Identity) bool
	// NodeRemoved reports whether, and when, a node name was removed from
	// the fleet.
	NodeRemoved(name string) (time.Time, bool)
	Servers() ([]store.Server, error)
	HasState() bool
	LeaderID() string
	// NodeView and WatchNodeView serve watches (watch.go); see
	// state.FSM.NodeView and state.FSM.WatchNodeView.
	NodeView(node string, since uint64) (changes []state.ViewChange, reset bool, now uint64)
	WatchNodeView(node string, since uint64) (now uint64, changed bool, wake <-chan struct{})
	// PodsChanged is state.FSM.PodsChanged: whether a watch was woken by
	// its own pods or by the rest of its view.
	PodsChanged(node string) uint64
	// ServicesChanged is state.FSM.ServicesChanged: a watch woken by a
	// service or endpoints change answers sooner than one woken by nodes.
	ServicesChanged() uint64
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// TLS is the server's configuration: pki.Keypair.ServerTLS with
	// tls.VerifyClientCertIfGiven, since joining agents have no certificate
	// yet. Every path but join requires a verified certificate. Required.
	TLS *tls.Config
	// Backend serves writes and the state joins are checked against. Required.
	Backend Backend
	// CA signs joining agents' certificates and renews clients'. Only
	// servers hold it; nil refuses join and renew.
	CA *pki.CA
	// JoinToken authenticates join requests. Required when CA is set.
	JoinToken string
	// APITokenHash verifies the API token that forwarded operator writes
	// carry (see authz); nil refuses every request that carries one.
	APITokenHash *[32]byte
	// CertValidity is how long certificates signed for agents last.
	CertValidity time.Duration
	// ApplyTimeout bounds how long a forwarded write waits to commit.
	ApplyTimeout time.Duration
	// NodeName is what ping answers.
	NodeName string
	// Logs reads this node's container logs, which the server serves to
	// other servers (pathLogs, logs.go); nil refuses such reads.
	Logs NodeLogs
	// Exec runs commands in this node's containers, for other servers
	// (pathExec, exec.go); nil refuses them.
	Exec   NodeExec
	Logger *slog.Logger
}

// Server serves agent-to-agent RPC over HTTPS. Every endpoint is an
// authorization boundary: nothing an agent sends is trusted because it was
// sent over mutual TLS; the sender's certificate decides what it may do.
type Server struct {
	cfg       ServerConfig
	tls       *tls.Config
	tokenHash [sha256.Size]byte
	log       *slog.Logger
	http      *http.Server
	watches   watchSlots
}

// NewServer validates cfg and returns a Server; zero durations and a nil
// Logger take defaults.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = pki.DefaultCertValidity
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TLS == nil || cfg.TLS.GetCertificate == nil && len(cfg.TLS.Certificates) == 0 {
		return nil, errors.New("rpc: ServerConfig.TLS with a node certificate is required (pki.Keypair.ServerTLS)")
	}
	if cfg.TLS.ClientAuth != tls.VerifyClientCertIfGiven && cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("rpc: ServerConfig.TLS must verify client certificates against the cluster CA, got ClientAuth %s", cfg.TLS.ClientAuth)
	}
	if cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert && cfg.CA != nil {
		return nil, errors.New("rpc: joining agents have no certificate yet, so a server that signs them needs tls.VerifyClientCertIfGiven")
	}
	if cfg.Backend == nil {
		return nil, errors.New("rpc: ServerConfig.Backend is required")
	}
	cfg.JoinToken = strings.TrimSpace(cfg.JoinToken)
	if cfg.CA != nil && cfg.JoinToken == "" {
		return nil, errors.New("rpc: a server that signs joining agents' certificates (CA set) needs the join token")
	}
	s := &Server{
		cfg:       cfg,
		tls:       cfg.TLS.Clone(),
		tokenHash: sha256.Sum256([]byte(cfg.JoinToken)),
		log:       cfg.Logger.With("component", "rpc"),
	}
	// Plain HTTP/1.1: small requests between agents gain nothing from h2.
	s.tls.NextProtos = []string{"http/1.1"}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathWrite+"{type}", s.write)
	mux.HandleFunc("POST "+pathWrites, s.writes)
	mux.HandleFunc("POST "+pathJoin, s.join)
	mux.HandleFunc("POST "+pathRenew, s.renew)
	mux.HandleFunc("GET "+pathRaft, s.raftState)
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
	// After s.http: watches and log streams end when it shuts down.
	mux.HandleFunc("GET "+pathWatch, s.watchHandler())
	if cfg.Logs != nil {
		mux.Handle("GET "+pathLogs, newLogsHandler(s.http, cfg.Logs, cfg.Backend.Revoked, s.log))
	}
	if cfg.Exec != nil {
		mux.Handle("GET "+pathExec, newExecHandler(s.http, cfg.Exec, cfg.Backend.Revoked, s.log))
	}
	return s, nil
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

// caller returns the identity of the request's verified, unrevoked client
// certificate, or answers the request with why there is none.
func (s *Server) caller(w http.ResponseWriter, r *http.Request, op string) (pki.Identity, bool) {
	id, ok := pki.PeerIdentity(r.TLS)
	if !ok {
		s.refuse(w, r, http.StatusUnauthorized, op+": a client certificate signed by the cluster CA is required")
		return pki.Identity{}, false
	}
	if s.cfg.Backend.Revoked(id) {
		s.refuse(w, r, http.StatusForbidden, fmt.Sprintf("%s: the certificate of %s was revoked when the node was removed from the fleet", op, id))
		return pki.Identity{}, false
	}
	return id, true
}

// refuse answers with an error body: a Reply for writes, which the
// forwarding agent reads the kind from, a plain error otherwise.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.log.Info("rpc request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "status", code, "reason", msg)
	if strings.HasPrefix(r.URL.Path, "/rpc/v1/write") { // pathWrite and pathWrites
		kind := store.KindForbidden
		if code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge {
			kind = store.KindInvalid
		}
		writeJSON(w, code, writeReply{Error: &store.WireError{Kind: kind, Message: msg}})
		return
	}
	writeJSON(w, code, errorResponse{Error: msg})
}

func (s *Server) write(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("type")
	op := "write " + api.TruncateText(name, 40)
	caller, ok := s.writer(w, r, op)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, state.MaxEntryBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.refuse(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s: the request is larger than %d bytes", op, state.MaxEntryBytes))
			return
		}
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("%s: read the body: %v", op, err))
		return
	}
	reply, code := s.handleWrite(r.Context(), caller, name, body)
	if code != 0 {
		s.refuse(w, r, code, reply.Error.Message)
		return
	}
	s.reply(w, r, caller, reply)
}

// writes serves a batch of writes (batch.go): each is checked and
// authorized on its own, the valid ones are proposed together, and each
// gets its own Reply.
func (s *Server) writes(w http.ResponseWriter, r *http.Request) {
	caller, ok := s.writer(w, r, "writes")
	if !ok {
		return
	}
	var req batchRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBatchBytes+maxBatchWrites*64)).Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.refuse(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("writes: the request is larger than %d bytes", maxBatchBytes))
			return
		}
		s.refuse(w, r, http.StatusBadRequest, "writes: the body does not decode: "+err.Error())
		return
	}
	if n := len(req.Writes); n == 0 || n > maxBatchWrites {
		s.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("writes: %d writes in one request; send 1 to %d", n, maxBatchWrites))
		return
	}
	out := batchReply{Replies: make([]store.Reply, len(req.Writes))}
	var wg sync.WaitGroup
	for i, bw := range req.Writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Replies[i], _ = s.handleWrite(r.Context(), caller, bw.Type, bw.Body)
		}()
	}
	wg.Wait()
	for _, reply := range out.Replies {
		if reply.Error != nil {
			s.logRefusal(r, caller, reply)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// writer authenticates the sender of writes: its certificate, and the API
// token when it carries one.
func (s *Server) writer(w http.ResponseWriter, r *http.Request, op string) (authz.Caller, bool) {
	id, ok := s.caller(w, r, op)
	if !ok {
		return authz.Caller{}, false
	}
	caller := authz.Caller{Identity: id}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if s.cfg.APITokenHash == nil || !pki.TokenMatches(*s.cfg.APITokenHash, tok) {
			s.refuse(w, r, http.StatusUnauthorized, op+": the API token the request carries is wrong")
			return authz.Caller{}, false
		}
		caller.Operator = true
	}
	return caller, true
}

// handleWrite decodes, validates, authorizes and proposes one write. A
// non-zero code means the request itself was malformed (unknown type, a
// body that does not decode): answer it with that status.
func (s *Server) handleWrite(ctx context.Context, caller authz.Caller, name string, body []byte) (store.Reply, int) {
	op := "write " + api.TruncateText(name, 40)
	malformed := func(code int, msg string) (store.Reply, int) {
		return store.Reply{Error: &store.WireError{Kind: store.KindInvalid, Message: msg}}, code
	}
	t, known := state.ParseMessageType(name)
	cmd, _ := state.NewCommand(t)
	if !known || cmd == nil {
		return malformed(http.StatusBadRequest, fmt.Sprintf("%s: no such write; is the sending agent newer than this one?", op))
	}
	if len(body) > state.MaxEntryBytes {
		return malformed(http.StatusRequestEntityTooLarge, fmt.Sprintf("%s: the request is larger than %d bytes", op, state.MaxEntryBytes))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cmd); err != nil {
		return malformed(http.StatusBadRequest, fmt.Sprintf("%s: the body does not decode: %v", op, err))
	}
	if err := cmd.Validate(); err != nil {
		return store.NewReply(0, nil, err), 0
	}
	if err := authz.Authorize(caller, cmd, s.cfg.Backend); err != nil {
		return store.NewReply(0, nil, err), 0
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	reply := s.cfg.Backend.ApplyLocal(actx, cmd)
	if reply.Error != nil && reply.Error.Kind == store.KindDeadline && ctx.Err() == nil {
		reply.Error.Message += fmt.Sprintf(": not committed within %s; check that a majority of servers is up, then retry (the write may still be applied)", s.cfg.ApplyTimeout)
	}
	return reply, 0
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, caller authz.Caller, reply store.Reply) {
	code := http.StatusOK
	if reply.Error != nil {
		code = store.HTTPStatus(reply.Error.Kind)
		s.logRefusal(r, caller, reply)
	}
	writeJSON(w, code, reply)
}

// logRefusal logs a write that was not applied: loudly when someone sent
// what it should not have, or when raft could not take it.
func (s *Server) logRefusal(r *http.Request, caller authz.Caller, reply store.Reply) {
	level := slog.LevelDebug
	switch reply.Error.Kind {
	case store.KindForbidden, store.KindInvalid, store.KindInternal, store.KindDeadline:
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "forwarded write not applied", "path", r.URL.Path, "from", caller.String(), "kind", reply.Error.Kind, "err", reply.Error.Message)
}

// tokenRejected is the message a join with a wrong or missing token gets.
const tokenRejected = "join token rejected: check the token flotilla_cluster generated"

// join signs a joining agent's certificate: a client certificate for the
// name it asks and the IP it connects from, nothing else. A name that is a
// server's, or a node's registered at another address, is refused: the
// join token would otherwise let any holder take over another node's name.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	if s.cfg.CA == nil {
		s.refuse(w, r, http.StatusForbidden, fmt.Sprintf("agent %q is not a server (it holds no CA key), so it cannot sign certificates; join through a server agent's address", s.cfg.NodeName))
		return
	}
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	gotHash := sha256.Sum256([]byte(strings.TrimSpace(got)))
	if subtle.ConstantTimeCompare(gotHash[:], s.tokenHash[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="flotilla-join"`)
		s.refuse(w, r, http.StatusUnauthorized, tokenRejected)
		return
	}
	var req joinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJoinBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.refuse(w, r, http.StatusBadRequest, "join: decode request: "+err.Error())
		return
	}
	if err := pki.ValidNodeName(req.NodeName); err != nil {
		s.refuse(w, r, http.StatusBadRequest, "join: node_name: "+err.Error())
		return
	}
	remote := remoteIP(r)
	if remote == nil {
		s.refuse(w, r, http.StatusBadRequest, "join: cannot tell the address the request came from")
		return
	}
	if msg := s.nameTaken(req.NodeName, remote); msg != "" {
		s.refuse(w, r, http.StatusForbidden, "join: "+msg)
		return
	}
	certPEM, err := s.cfg.CA.SignJoin([]byte(req.CSRPEM), req.NodeName, remote, s.cfg.CertValidity)
	if err != nil {
		s.refuse(w, r, http.StatusForbidden, "join: "+err.Error())
		return
	}
	s.log.Info("signed a client certificate for a joining agent", "node", req.NodeName, "address", remote.String(), "validity", s.cfg.CertValidity)
	writeJSON(w, http.StatusOK, certResponse{CertPEM: string(certPEM), CAPEM: string(s.cfg.CA.CertPEM())})
}

// nameTaken says why name cannot be given to an agent at ip, or "".
func (s *Server) nameTaken(name string, ip net.IP) string {
	if at, removed := s.cfg.Backend.NodeRemoved(name); removed {
		// Its machine may still hold the join token: a removed name stays
		// removed, or removing a compromised node would achieve nothing.
		return fmt.Sprintf("node %q was removed from the fleet at %s, and a removed name cannot join again; give the machine another name (FLOTILLA_NODE_NAME)", name, at.UTC().Format(time.RFC3339))
	}
	if servers, err := s.cfg.Backend.Servers(); err == nil {
		for _, srv := range servers {
			if srv.ID == name && srv.Voter {
				return fmt.Sprintf("%q is a server's name; servers get their certificates from the CA key, never by joining", name)
			}
		}
	}
	n, ok := s.cfg.Backend.Node(name)
	if !ok {
		return ""
	}
	if n.Server {
		return fmt.Sprintf("%q is a server's name; servers get their certificates from the CA key, never by joining", name)
	}
	if reg := net.ParseIP(n.Address); reg == nil || !reg.Equal(ip) {
		return fmt.Sprintf("node %q is registered at %s, and this request comes from %s; if this machine replaces it, remove the old node first (flotilla-agent remove-node %s), or give this one another name", name, n.Address, ip, name)
	}
	return ""
}

// renew signs a new certificate for a client agent's new key, with the
// name, role and address of its current certificate.
func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	id, ok := s.caller(w, r, "renew")
	if !ok {
		return
	}
	if s.cfg.CA == nil {
		s.refuse(w, r, http.StatusForbidden, fmt.Sprintf("agent %q is not a server (it holds no CA key); renew through a server", s.cfg.NodeName))
		return
	}
	if id.Role != pki.RoleClient {
		s.refuse(w, r, http.StatusForbidden, fmt.Sprintf("renew: %s holds a server certificate; servers issue their own from the CA key", id))
		return
	}
	var req renewRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJoinBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.refuse(w, r, http.StatusBadRequest, "renew: decode request: "+err.Error())
		return
	}
	certPEM, err := s.cfg.CA.Renew(id, []byte(req.CSRPEM), s.cfg.CertValidity)
	if err != nil {
		s.refuse(w, r, http.StatusForbidden, "renew: "+err.Error())
		return
	}
	s.log.Info("renewed a client certificate", "node", id.Name, "validity", s.cfg.CertValidity)
	writeJSON(w, http.StatusOK, certResponse{CertPEM: string(certPEM), CAPEM: string(s.cfg.CA.CertPEM())})
}

// raftState tells another server whether a raft cluster exists here: a
// server with an empty data dir asks before it bootstraps a new one.
func (s *Server) raftState(w http.ResponseWriter, r *http.Request) {
	id, ok := s.caller(w, r, "raft state")
	if !ok {
		return
	}
	if id.Role != pki.RoleServer {
		s.refuse(w, r, http.StatusForbidden, fmt.Sprintf("raft state: %s is not a server", id))
		return
	}
	st := RaftState{HasState: s.cfg.Backend.HasState(), Leader: s.cfg.Backend.LeaderID()}
	st.Servers, _ = s.cfg.Backend.Servers()
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.caller(w, r, "ping"); !ok {
		return
	}
	writeJSON(w, http.StatusOK, pingResponse{NodeName: s.cfg.NodeName})
}

// remoteIP is the address the request's connection comes from.
func remoteIP(r *http.Request) net.IP {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
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
		if !s.log.Enabled(r.Context(), slog.LevelDebug) {
			return // reading the peer's identity costs a certificate parse
		}
		from := ""
		if id, ok := pki.PeerIdentity(r.TLS); ok {
			from = id.String()
		}
		s.log.Debug("rpc request", "method", r.Method, "path", r.URL.Path, "status", rec.code,
			"remote", r.RemoteAddr, "peer", from, "duration", time.Since(start))
	})
}
