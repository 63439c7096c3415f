package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/flotilla-io/flotilla/agent/execws"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// execRoute runs a command in a running container over a WebSocket
// (api.ExecProtocol). It is routed as logsRoute is: the pod's own node
// runs it; a server forwards it to the pod's node over the agents' RPC
// (rpc.ExecClient; a node runs execs for servers only) and relays the
// frames; a client agent proxies what is not its own to a server. Only
// the API token opens one, checked by the agent the request reaches.
const execRoute = "GET /v1/namespaces/{ns}/pods/{pod}/exec"

// DefaultMaxExecStreams bounds the exec sessions an agent's API serves
// at once (its own and relayed).
const DefaultMaxExecStreams = 64

// ExecConfig is how an agent serves exec.
type ExecConfig struct {
	// Pod returns a pod by ID ("namespace/name"), as LogsConfig.Pod.
	// Required.
	Pod func(id string) (api.Pod, bool)
	// Local runs commands in this node's containers (node.Exec). Required.
	Local rpc.NodeExec
	// Remote opens an exec on another node (servers). Nil on a client
	// agent, which proxies such requests to a server.
	Remote ExecOpener
	// MaxStreams bounds the sessions served at once; 0 is
	// DefaultMaxExecStreams.
	MaxStreams int
}

// ExecOpener opens an exec on another node. An error with an
// HTTPStatus() int method is that node's refusal.
type ExecOpener interface {
	OpenExec(ctx context.Context, node, ns, pod string, opts api.ExecOptions) (*websocket.Conn, error)
}

func (s *Server) podExec(w http.ResponseWriter, r *http.Request) {
	ec := s.cfg.Exec
	if ec == nil {
		writeError(w, http.StatusNotImplemented, "this agent serves no exec")
		return
	}
	ns, name := r.PathValue("ns"), r.PathValue("pod")
	opts, err := api.ParseExecOptions(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid exec options: "+strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	if !isUpgrade(r) {
		writeError(w, http.StatusUpgradeRequired, fmt.Sprintf("exec is a WebSocket: send the request as an upgrade offering the subprotocol %q (api.Client.Exec does)", api.ExecProtocol))
		return
	}
	p, route, rerr := s.locatePod(ec.Pod, ns, name, &opts.Container, ec.Remote != nil)
	switch {
	case rerr != nil:
		writeError(w, rerr.code, rerr.msg)
		return
	case route == routeServer:
		s.proxyUpgrade(w, r)
		return
	case route == routeUnplaced:
		writeError(w, http.StatusConflict, fmt.Sprintf("pod %s is not placed on a node yet, so nothing runs to exec in; retry when it is running", p.ID()))
		return
	}
	release, ok := takeSlot(w, s.execSlots, "exec sessions")
	if !ok {
		return
	}
	defer release()
	ctx, stop := s.streamContext(r.Context())
	defer stop()
	s.log.Info("exec", "pod", p.ID(), "node", p.Node, "container", opts.Container, "command", opts.Command[0], "tty", opts.TTY, "stdin", opts.Stdin)
	if route == routeHere {
		execws.ServeHTTP(ctx, w, r, opts, func(ctx context.Context, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error) {
			return ec.Local.StartExec(ctx, ns, name, opts, io)
		}, s.log)
		return
	}
	// The node first: its refusal (no such container, not running, busy)
	// is answered before the client's upgrade, with its status.
	nodeConn, err := ec.Remote.OpenExec(ctx, p.Node, ns, name, opts)
	if err != nil {
		// Bad options, no such container, not running, busy: the node's
		// status; anything else is a 502.
		writeError(w, nodeRefusalStatus(err, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusTooManyRequests), err.Error())
		return
	}
	client, err := execws.Accept(w, r)
	if err != nil {
		nodeConn.CloseNow()
		s.log.Debug("exec: WebSocket upgrade failed", "pod", p.ID(), "err", err)
		return
	}
	execws.Relay(ctx, client, nodeConn)
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// proxyUpgrade proxies an exec to a server. The proxy carries the
// upgraded connection both ways (httputil.ReverseProxy does for a 101
// answer); the server's read and write timeouts, which a hijacked
// connection keeps, are lifted, and StopStreams ends it.
func (s *Server) proxyUpgrade(w http.ResponseWriter, r *http.Request) {
	ctx, stop := s.streamContext(r.Context())
	defer stop()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	s.proxy.ServeHTTP(w, r.WithContext(ctx))
}
