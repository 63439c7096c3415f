package rpc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

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
	stop, cancel := context.WithCancel(context.Background())
	srv.RegisterOnShutdown(cancel)
	return &execHandler{exec: exec, revoked: revoked, log: log, stop: stop}
}

func (h *execHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, msg string) {
		h.log.Info("rpc exec request refused", "remote", r.RemoteAddr, "status", code, "reason", msg)
		execws.WriteError(w, code, msg)
	}
	id, ok := pki.PeerIdentity(r.TLS)
	if !ok {
		refuse(http.StatusUnauthorized, "exec: a client certificate signed by the cluster CA is required")
		return
	}
	if h.revoked != nil && h.revoked(id) {
		refuse(http.StatusForbidden, fmt.Sprintf("exec: the certificate of %s was revoked when the node was removed from the fleet", id))
		return
	}
	if id.Role != pki.RoleServer {
		refuse(http.StatusForbidden, fmt.Sprintf("exec: %s is not a server; a node runs execs for servers only (send the request to the API, which checks the token)", id))
		return
	}
	q := r.URL.Query()
	ns, pod := q.Get("namespace"), q.Get("pod")
	q.Del("namespace")
	q.Del("pod")
	opts, err := api.ParseExecOptions(q)
	if err == nil && opts.Container == "" {
		err = fmt.Errorf("container: required")
	}
	if err != nil {
		refuse(http.StatusBadRequest, "exec: "+err.Error())
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.stop, cancel)()
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
	tlsCfg := c.kp.ClientTLS(func(id pki.Identity) error {
		if id.Name != node {
			return fmt.Errorf("it is %s, not node %s; check that node's address", id, node)
		}
		return nil
	})
	tlsCfg.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: logHeaderTimeout,
		DisableKeepAlives:     true,
		DisableCompression:    true,
	}
	q := opts.Query()
	q.Set("namespace", ns)
	q.Set("pod", pod)
	u := (&url.URL{Scheme: "https", Host: addr, Path: pathExec, RawQuery: q.Encode()}).String()
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
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
