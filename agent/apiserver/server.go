package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flotilla-io/flotilla/agent/authz"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/state"
	"github.com/flotilla-io/flotilla/agent/store"
	"github.com/flotilla-io/flotilla/api"
)

// Store is the part of the replicated state the API reads and writes.
type Store interface {
	LocalState
	CreateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error)
	UpdateDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error)
	DeleteDeployment(ctx context.Context, ns, name string) error
	Deployment(ns, name string) (api.Deployment, bool)
	Deployments(ns string) []api.Deployment
	Pods(f state.PodFilter) []api.Pod
	Nodes() []api.Node
	RemoveNode(ctx context.Context, name string) error
	SetNodeSchedule(ctx context.Context, name string, sched api.NodeSchedule) (api.Node, error)
	RaftPeers() ([]api.RaftPeer, error)
	CreateService(ctx context.Context, s api.Service) (api.Service, error)
	UpdateService(ctx context.Context, s api.Service) (api.Service, error)
	DeleteService(ctx context.Context, ns, name string) error
	Service(ns, name string) (api.Service, bool)
	ListServices(ns string) []api.Service
	ServiceEndpoints(ns, name string) (api.Endpoints, bool)
	// Ingress writes return, and reads give, ingresses without keys.
	CreateIngress(ctx context.Context, in api.Ingress) (api.Ingress, error)
	UpdateIngress(ctx context.Context, in api.Ingress) (api.Ingress, error)
	DeleteIngress(ctx context.Context, ns, name string) error
	Ingress(ns, name string) (api.Ingress, bool)
	ListIngresses(ns string) []api.Ingress
}

// LocalState is what GET /v1/status says of this agent's view: the leader
// it knows and the raft index it is at.
type LocalState interface {
	Leader() string
	Index() uint64
}

// ImageImporter loads image archives for air-gapped nodes.
type ImageImporter interface {
	ImportImages(ctx context.Context, archive io.Reader) ([]string, error)
}

// Config configures a Server.
type Config struct {
	Store Store
	// Local answers GET /v1/status on an agent that proxies (Upstream set)
	// and holds no Store: a client's cache of its watch.
	Local  LocalState
	Images ImageImporter
	// Status computes a deployment's status (the controller's view);
	// Statuses, when set, does it for a listing with one read of the pods.
	// Status is required unless Upstream is set.
	Status   func(api.Deployment) api.DeploymentStatus
	Statuses func([]api.Deployment) []api.DeploymentStatus
	// Capacity answers POST /v1/capacity (how many replicas of a
	// deployment fit now); nil answers 501.
	Capacity func(api.Deployment) api.CapacityCheck
	// Members lists the gossip members; nil (a single agent) lists none.
	Members func() []api.Member
	// TokenHash is the SHA-256 of the API token (pki.TokenHash): the agent
	// keeps no other form of it. Every request must send the token.
	TokenHash [32]byte
	NodeName  string
	Version   string
	Logger    *slog.Logger
	// WriteTimeout bounds how long a write waits for raft to commit.
	WriteTimeout time.Duration
	// Metrics, when set, gets the API's request metrics and is served at
	// GET /v1/metrics (Prometheus text format, token required like every path).
	Metrics *prometheus.Registry

	// Upstream, when set, lists the API addresses (host:port, the IPs their
	// certificates name) of the fleet's servers, as membership knows them;
	// it is called once per proxied request and may be called concurrently.
	// The agent then holds no fleet state: it answers what is about itself
	// (GET /v1/status, POST /v1/images, GET /v1/metrics, GET
	// /v1/debug/pprof/...) and forwards every other authenticated request to
	// the first server that answers (see proxy.go). Nil: this agent holds
	// the state and serves every route itself.
	Upstream func() []string
	// UpstreamTLS is how the proxy dials the servers, required with
	// Upstream: pki.Keypair.ClientTLS(pki.RequireRole(pki.RoleServer)),
	// so that requests and their token go to servers only.
	UpstreamTLS *tls.Config
	// Logs serves GET /v1/namespaces/{ns}/pods/{pod}/logs (logs.go). Nil:
	// an agent with Upstream proxies it, any other answers 501.
	Logs *LogsConfig
	// Exec serves GET /v1/namespaces/{ns}/pods/{pod}/exec (exec.go). Nil:
	// an agent with Upstream proxies it, any other answers 501.
	Exec *ExecConfig
}

// Server is the API's http.Handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	requests *prometheus.HistogramVec
	proxy    *proxy // nil unless Config.Upstream is set
	// logSlots bounds the log streams served at once; streams ends them
	// all (StopStreams).
	logSlots    chan struct{}
	execSlots   chan struct{}
	streams     context.Context
	stopStreams context.CancelFunc
}

const maxJSONBody = 1 << 20

// New returns a Server; it refuses to run without a token.
func New(cfg Config) (*Server, error) {
	if cfg.TokenHash == ([32]byte{}) {
		return nil, errors.New("apiserver: a token hash is required; every request must authenticate")
	}
	if cfg.Upstream == nil && (cfg.Store == nil || cfg.Status == nil) {
		return nil, errors.New("apiserver: Store and Status are required unless Upstream is set")
	}
	if cfg.Upstream != nil && cfg.Store == nil && cfg.Local == nil {
		return nil, errors.New("apiserver: a proxying agent needs Local (or Store) for GET /v1/status")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Logs != nil {
		if cfg.Logs.Pod == nil || cfg.Logs.Local == nil {
			return nil, errors.New("apiserver: Logs needs Pod and Local")
		}
		if cfg.Logs.MaxStreams <= 0 {
			cfg.Logs.MaxStreams = rpc.DefaultMaxLogStreams
		}
	}
	if cfg.Exec != nil {
		if cfg.Exec.Pod == nil || cfg.Exec.Local == nil {
			return nil, errors.New("apiserver: Exec needs Pod and Local")
		}
		if cfg.Exec.MaxStreams <= 0 {
			cfg.Exec.MaxStreams = DefaultMaxExecStreams
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "api"), mux: http.NewServeMux()}
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	if cfg.Logs != nil {
		s.logSlots = make(chan struct{}, cfg.Logs.MaxStreams)
	}
	if cfg.Exec != nil {
		s.execSlots = make(chan struct{}, cfg.Exec.MaxStreams)
	}
	// Routes about this agent itself.
	s.mux.HandleFunc("GET /v1/status", s.status)
	s.mux.HandleFunc("POST /v1/images", s.importImages)
	// Go's profiler, as Nomad's /v1/agent/pprof: behind the token like
	// every path (a profile shows memory, not secrets, but costs CPU).
	s.mux.HandleFunc("GET /v1/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/v1") // pprof.Index reads the profile name after /debug/pprof/
		pprof.Index(w, r)
	})
	s.mux.HandleFunc("GET /v1/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /v1/debug/pprof/trace", pprof.Trace)
	// Logs: the pod's node answers from disk; others forward (logs.go).
	if cfg.Logs != nil || cfg.Upstream == nil {
		s.mux.HandleFunc(logsRoute, s.podLogs)
	}
	if cfg.Exec != nil || cfg.Upstream == nil {
		s.mux.HandleFunc(execRoute, s.podExec)
	}
	// Routes about the fleet: a server answers them from the state, any
	// other agent forwards them to a server. --- proxy dispatch (proxy.go) ---
	if cfg.Upstream != nil {
		p, err := newProxy(cfg.Upstream, cfg.UpstreamTLS, s.log.With("route", proxyRoute))
		if err != nil {
			return nil, err
		}
		s.proxy = p
		s.mux.Handle(proxyPattern, p)
	} else {
		s.handleFleet()
	}
	// --- end proxy dispatch ---
	if cfg.Metrics != nil {
		s.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_api_request_duration_seconds",
			Help:    "API requests by route and status code.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30},
		}, []string{"route", "code"})
		cfg.Metrics.MustRegister(s.requests)
		s.mux.Handle("GET /v1/metrics", promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{}))
	}
	return s, nil
}

// handleFleet routes what a server answers from the fleet state.
func (s *Server) handleFleet() {
	s.mux.HandleFunc("GET /v1/nodes", s.listNodes)
	s.mux.HandleFunc("DELETE /v1/nodes/{name}", s.removeNode)
	s.mux.HandleFunc("PUT /v1/nodes/{name}/schedule", s.setNodeSchedule)
	s.mux.HandleFunc("POST /v1/capacity", s.capacity)
	s.mux.HandleFunc("GET /v1/members", s.listMembers)
	s.mux.HandleFunc("GET /v1/raft/peers", s.raftPeers)
	s.mux.HandleFunc("GET /v1/deployments", s.listDeployments)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/deployments", s.listDeployments)
	s.mux.HandleFunc("POST /v1/namespaces/{ns}/deployments", s.createDeployment)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/deployments/{name}", s.getDeployment)
	s.mux.HandleFunc("PUT /v1/namespaces/{ns}/deployments/{name}", s.updateDeployment)
	s.mux.HandleFunc("DELETE /v1/namespaces/{ns}/deployments/{name}", s.deleteDeployment)
	s.mux.HandleFunc("GET /v1/pods", s.listPods)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/pods", s.listPods)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/events", s.listEvents)
	s.mux.HandleFunc("GET /v1/services", s.listServices)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/services", s.listServices)
	s.mux.HandleFunc("POST /v1/namespaces/{ns}/services", s.createService)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/services/{name}", s.getService)
	s.mux.HandleFunc("PUT /v1/namespaces/{ns}/services/{name}", s.updateService)
	s.mux.HandleFunc("DELETE /v1/namespaces/{ns}/services/{name}", s.deleteService)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/services/{name}/endpoints", s.getEndpoints)
	s.mux.HandleFunc("GET /v1/ingresses", s.listIngresses)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/ingresses", s.listIngresses)
	s.mux.HandleFunc("POST /v1/namespaces/{ns}/ingresses", s.createIngress)
	s.mux.HandleFunc("GET /v1/namespaces/{ns}/ingresses/{name}", s.getIngress)
	s.mux.HandleFunc("PUT /v1/namespaces/{ns}/ingresses/{name}", s.updateIngress)
	s.mux.HandleFunc("DELETE /v1/namespaces/{ns}/ingresses/{name}", s.deleteIngress)
}

// ServeHTTP authenticates, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	if tok, ok := s.authenticated(r); !ok {
		rec.Header().Set("WWW-Authenticate", `Bearer realm="flotilla"`)
		writeError(rec, http.StatusUnauthorized, "missing or wrong token: send 'Authorization: Bearer <token>' (the provider reads FLOTILLA_TOKEN or its token attribute; a --dev agent writes it to <data-dir>/token)")
	} else {
		// A write this agent forwards to the leader carries the token, so
		// the leader knows an operator asked for it.
		r = r.WithContext(authz.WithToken(r.Context(), tok))
		s.mux.ServeHTTP(rec, r)
	}
	if s.requests != nil {
		// r.Pattern (set by the mux) keeps label values bounded; unmatched
		// and unauthenticated requests share one.
		route := r.Pattern
		switch {
		case route == "":
			route = "other"
		case s.proxy != nil && route == proxyPattern:
			route = proxyRoute
		}
		s.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Observe(time.Since(start).Seconds())
	}
	level := slog.LevelDebug
	if rec.code >= 400 {
		level = slog.LevelInfo
	}
	s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", rec.code, "duration", time.Since(start))
}

func (s *Server) authenticated(r *http.Request) (string, bool) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return got, ok && pki.TokenMatches(s.cfg.TokenHash, got)
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.ErrorResponse{Error: msg})
}

// writeStoreError answers a failed write with the status of its kind, the
// codec the agents' RPC uses too.
func (s *Server) writeStoreError(w http.ResponseWriter, err error) {
	kind := store.ErrorKind(err)
	msg := err.Error()
	switch kind {
	case store.KindNotLeader:
		msg += "; retry shortly"
	case store.KindDeadline:
		msg = "the write was not committed in time: " + msg + "; check that a majority of servers is up, then retry"
	case store.KindInternal:
		s.log.Error("store write failed", "err", err)
	}
	writeError(w, store.HTTPStatus(kind), msg)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	var local LocalState = s.cfg.Local
	if s.cfg.Store != nil {
		local = s.cfg.Store
	}
	writeJSON(w, http.StatusOK, api.AgentStatus{Node: s.cfg.NodeName, Version: s.cfg.Version, Leader: local.Leader(), Index: local.Index()})
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, nonNil(s.cfg.Store.Nodes()))
}

// listMembers answers what gossip says, for `consul members`-style
// troubleshooting: an agent that is a member but not a node has not
// registered (or was not verified).
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	var ms []api.Member
	if s.cfg.Members != nil {
		ms = s.cfg.Members()
	}
	writeJSON(w, http.StatusOK, nonNil(ms))
}

// raftPeers answers the raft configuration, as `consul operator raft
// list-peers` does: who votes, and who leads.
func (s *Server) raftPeers(w http.ResponseWriter, r *http.Request) {
	peers, err := s.cfg.Store.RaftPeers()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, nonNil(peers))
}

// removeNode removes a node from the fleet: its record and pods go, and
// every certificate issued for it until now is refused fleet-wide.
func (s *Server) removeNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := api.ValidateNodeName(name); err != nil {
		writeError(w, http.StatusBadRequest, "node name: "+err.Error())
		return
	}
	known := false
	for _, n := range s.cfg.Store.Nodes() {
		known = known || n.Name == name
	}
	if !known {
		writeError(w, http.StatusNotFound, fmt.Sprintf("node %s not found", name))
		return
	}
	if name == s.cfg.NodeName {
		writeError(w, http.StatusConflict, fmt.Sprintf("node %s is the agent answering this request; send the removal to another agent", name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	if err := s.cfg.Store.RemoveNode(ctx, name); err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Warn("node removed from the fleet; its certificates are revoked", "node", name)
	w.WriteHeader(http.StatusNoContent)
}

// setNodeSchedule cordons, uncordons or drains a node.
func (s *Server) setNodeSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := api.ValidateNodeName(name); err != nil {
		writeError(w, http.StatusBadRequest, "node name: "+err.Error())
		return
	}
	var sched api.NodeSchedule
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sched); err != nil {
		writeError(w, http.StatusBadRequest, `malformed schedule JSON (want {"unschedulable": bool, "draining": bool}): `+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	n, err := s.cfg.Store.SetNodeSchedule(ctx, name, sched)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("node schedule set", "node", name, "unschedulable", n.Unschedulable, "draining", n.Draining)
	writeJSON(w, http.StatusOK, n)
}

// capacity answers how many replicas of the deployment in the body fit the
// fleet's free capacity now; it writes nothing.
func (s *Server) capacity(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Capacity == nil {
		writeError(w, http.StatusNotImplemented, "this agent cannot check capacity")
		return
	}
	var d api.Deployment
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		writeError(w, http.StatusBadRequest, "malformed deployment JSON: "+err.Error())
		return
	}
	if d.Namespace == "" {
		d.Namespace = api.DefaultNamespace
	}
	if err := d.Validate(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid deployment: "+strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Capacity(d))
}

func (s *Server) withStatus(d api.Deployment) api.Deployment {
	d.Status = s.cfg.Status(d)
	return d
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request) {
	ds := s.cfg.Store.Deployments(r.PathValue("ns"))
	if s.cfg.Statuses != nil {
		for i, st := range s.cfg.Statuses(ds) {
			ds[i].Status = st
		}
	} else {
		for i := range ds {
			ds[i] = s.withStatus(ds[i])
		}
	}
	writeJSON(w, http.StatusOK, nonNil(ds))
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	d, ok := s.cfg.Store.Deployment(ns, name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("deployment %s/%s not found", ns, name))
		return
	}
	writeJSON(w, http.StatusOK, s.withStatus(d))
}

// decodeDeployment reads and validates a deployment body whose namespace
// (and name, for updates) must agree with the path.
func decodeDeployment(w http.ResponseWriter, r *http.Request) (api.Deployment, bool) {
	var d api.Deployment
	if !decodeNamed(w, r, "deployment", &d, &d.Namespace, &d.Name, d.Validate) {
		return d, false
	}
	// Server-owned fields are never taken from a client.
	d.Generation, d.CreateIndex, d.ModifyIndex, d.Deleting, d.Status = 0, 0, 0, false, api.DeploymentStatus{}
	return d, true
}

// decodeNamed decodes a namespaced object from the body into obj, whose
// namespace and name are at ns and name: unset ones are taken from the
// path, ones that differ from it are refused. validate runs last. It
// answers the request itself when it returns false.
func decodeNamed(w http.ResponseWriter, r *http.Request, what string, obj any, ns, name *string, validate func() error) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		writeError(w, http.StatusBadRequest, "malformed "+what+" JSON: "+err.Error())
		return false
	}
	pathNS := r.PathValue("ns")
	if *ns == "" {
		*ns = pathNS
	}
	if *ns != pathNS {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("namespace %q in the body differs from %q in the path", *ns, pathNS))
		return false
	}
	if pathName := r.PathValue("name"); pathName != "" {
		if *name == "" {
			*name = pathName
		}
		if *name != pathName {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("name %q in the body differs from %q in the path", *name, pathName))
			return false
		}
	}
	if err := validate(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid "+what+": "+strings.ReplaceAll(err.Error(), "\n", "; "))
		return false
	}
	return true
}

func (s *Server) createDeployment(w http.ResponseWriter, r *http.Request) {
	d, ok := decodeDeployment(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	out, err := s.cfg.Store.CreateDeployment(ctx, d)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("deployment created", "deployment", d.Namespace+"/"+d.Name, "replicas", d.Replicas)
	writeJSON(w, http.StatusCreated, s.withStatus(out))
}

func (s *Server) updateDeployment(w http.ResponseWriter, r *http.Request) {
	d, ok := decodeDeployment(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	out, err := s.cfg.Store.UpdateDeployment(ctx, d)
	if err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("deployment updated", "deployment", d.Namespace+"/"+d.Name, "replicas", d.Replicas, "generation", out.Generation)
	writeJSON(w, http.StatusOK, s.withStatus(out))
}

func (s *Server) deleteDeployment(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	if err := s.cfg.Store.DeleteDeployment(ctx, ns, name); err != nil {
		s.writeStoreError(w, err)
		return
	}
	s.log.Info("deployment deleting", "deployment", ns+"/"+name)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) listPods(w http.ResponseWriter, r *http.Request) {
	pods := s.cfg.Store.Pods(state.PodFilter{Namespace: r.PathValue("ns"), Deployment: r.URL.Query().Get("deployment")})
	writeJSON(w, http.StatusOK, nonNil(pods))
}

// nonNil makes empty lists encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
