package rpc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/coder/websocket"

	"github.com/flotilla-io/flotilla/agent/execws"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// Exec (GET /rpc/v1/exec, upgraded to a WebSocket) is served by every
// agent, for the containers on its own node, to servers only, as container
// logs are (logs.go): an API request is authenticated with the token by
// the agent that receives it, and a server forwards it here. A client
// certificate, which any client VM holds, runs nothing on another node.

// pathExec: GET, query namespace, pod and api.ExecOptions' parameters with
// the container named; then api.ExecProtocol.
const pathExec = "/rpc/v1/exec"

// NodeExec runs commands in this node's containers (node.Exec).
type NodeExec interface {
	StartExec(ctx context.Context, ns, pod string, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error)
}

// execHandler serves pathExec.
type execHandler struct {
	exec    NodeExec
	revoked func(pki.Identity) bool
	log     *slog.Logger
	// stop ends every session when the server shuts down: hijacked
	// connections are not the server's to wait for.
	stop context.Context
}

func newExecHandler(srv *http.Server, exec NodeExec, revoked func(pki.Identity) bool, log *slog.Logger) *execHandler {
	return &execHandler{exec: exec, revoked: revoked, log: log, stop: shutdownContext(srv)}
}

func (h *execHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, msg string) {
		h.log.Info("rpc exec request refused", "remote", r.RemoteAddr, "status", code, "reason", msg)
		execws.WriteError(w, code, msg)
	}
	id, rf := serverPeer(r, h.revoked, "exec", "runs execs")
	if rf != nil {
		refuse(rf.code, rf.msg)
		return
	}
	ns, pod, opts, err := podRequest(r.URL.Query(), api.ParseExecOptions, func(o api.ExecOptions) string { return o.Container })
	if err != nil {
		refuse(http.StatusBadRequest, "exec: "+err.Error())
		return
	}
	ctx, done := streamContext(r.Context(), h.stop)
	defer done()
	h.log.Info("exec", "peer", id.String(), "pod", ns+"/"+pod, "container", opts.Container, "command", opts.Command[0], "tty", opts.TTY)
	execws.ServeHTTP(ctx, w, r, opts, func(ctx context.Context, opts api.ExecOptions, io runtime.ExecIO) (runtime.ExecProcess, error) {
		return h.exec.StartExec(ctx, ns, pod, opts, io)
	}, h.log)
}

// ExecClient opens execs on the node that runs the container. Servers use
// it: nodes run execs for server certificates only. It is safe for
// concurrent use.
type ExecClient struct {
	kp *pki.Keypair
}

// NewExecClient returns an ExecClient presenting kp's certificate.
func NewExecClient(kp *pki.Keypair) *ExecClient { return &ExecClient{kp: kp} }

// ExecError is a node's refusal to run an exec, with its HTTP status.
type ExecError struct {
	Node    string
	Code    int
	Message string
}

func (e *ExecError) Error() string {
	return fmt.Sprintf("node %s: %s (HTTP %d)", e.Node, e.Message, e.Code)
}

// HTTPStatus is the status the node answered.
func (e *ExecError) HTTPStatus() int { return e.Code }

// OpenExec asks node, at addr (its RPC address), to run opts.Command in
// container opts.Container of pod ns/pod, and returns the session's
// WebSocket (api.ExecProtocol) once the command runs. The handshake checks
// the peer is that node. A node's refusal comes back as an *ExecError.
func (c *ExecClient) OpenExec(ctx context.Context, addr, node, ns, pod string, opts api.ExecOptions) (*websocket.Conn, error) {
	op := fmt.Sprintf("exec in %s/%s on node %s at %s", ns, pod, node, addr)
	tr := nodeTransport(c.kp, node)
	q := opts.Query()
	q.Set("namespace", ns)
	q.Set("pod", pod)
	u := (&url.URL{Scheme: "https", Host: addr, Path: pathExec, RawQuery: q.Encode()}).String()
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr, CheckRedirect: noRedirects},
		Subprotocols:    []string{api.ExecProtocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		tr.CloseIdleConnections()
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, maxLogError))
			}
			return nil, &ExecError{Node: node, Code: resp.StatusCode, Message: errorMessage(body)}
		}
		return nil, transportError(ctx, op, err)
	}
	if conn.Subprotocol() != api.ExecProtocol {
		conn.CloseNow()
		return nil, fmt.Errorf("%s: the node does not speak %s; is it running an older agent?", op, api.ExecProtocol)
	}
	conn.SetReadLimit(1 + api.MaxExecFrame + 1024)
	return conn, nil
}
