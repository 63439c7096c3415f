package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/coder/websocket"

	"github.com/flotilla-io/flotilla/agent/membership"
	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

// nodeLogs is how a server's API reads the logs of a pod on another node:
// that node's RPC address from gossip, the stream over rpc.LogClient,
// which presents the server's certificate (nodes serve their logs to
// servers only).
type nodeLogs struct {
	members *membership.Membership
	client  *rpc.LogClient
}

func newNodeLogs(b *fleetBase) *nodeLogs {
	return &nodeLogs{members: b.members, client: rpc.NewLogClient(b.id.Keypair)}
}

// OpenLogs implements apiserver.LogOpener.
func (n *nodeLogs) OpenLogs(ctx context.Context, node, ns, pod string, opts api.LogOptions) (io.ReadCloser, error) {
	for _, m := range n.members.Members() {
		if m.Name != node {
			continue
		}
		if m.Status != membership.StatusAlive || m.Meta.RPCAddr == "" {
			return nil, fmt.Errorf("node %s is %s: its logs cannot be read until it is back", node, m.Status)
		}
		return n.client.OpenLogs(ctx, m.Meta.RPCAddr, node, ns, pod, opts)
	}
	return nil, fmt.Errorf("node %s is not a member of the fleet: its logs cannot be read", node)
}

// serveNodeRPC serves a client agent's RPC: its containers' logs and
// execs, to servers only (the handshake refuses every other certificate).
func serveNodeRPC(cfg *Config, b *fleetBase, logs rpc.NodeLogs, execs rpc.NodeExec, lc *lifecycle) error {
	srv, err := rpc.NewNodeServer(rpc.NodeServerConfig{
		TLS:  b.id.Keypair.ServerTLS(tls.RequireAndVerifyClientCert, pki.RequireRole(pki.RoleServer)),
		Logs: logs, Exec: execs, Logger: cfg.Logger,
	})
	if err != nil {
		return err
	}
	addr := b.hostPort(b.bind, cfg.RPCPort)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for RPC on %s: %w", addr, err)
	}
	go func() { _ = srv.Serve(ln) }()
	lc.add("rpc", func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	return nil
}

// nodeExec is how a server's API opens an exec in a pod on another node:
// that node's RPC address from gossip, the session over rpc.ExecClient,
// which presents the server's certificate (nodes run execs for servers
// only).
type nodeExec struct {
	members *membership.Membership
	client  *rpc.ExecClient
}

func newNodeExec(b *fleetBase) *nodeExec {
	return &nodeExec{members: b.members, client: rpc.NewExecClient(b.id.Keypair)}
}

// OpenExec implements apiserver.ExecOpener.
func (n *nodeExec) OpenExec(ctx context.Context, node, ns, pod string, opts api.ExecOptions) (*websocket.Conn, error) {
	for _, m := range n.members.Members() {
		if m.Name != node {
			continue
		}
		if m.Status != membership.StatusAlive || m.Meta.RPCAddr == "" {
			return nil, fmt.Errorf("node %s is %s: nothing can be exec'd there until it is back", node, m.Status)
		}
		return n.client.OpenExec(ctx, m.Meta.RPCAddr, node, ns, pod, opts)
	}
	return nil, fmt.Errorf("node %s is not a member of the fleet: nothing can be exec'd there", node)
}
