package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

// logsRoute serves a container's logs. Any agent answers it: the pod's own
// node from its disk; a server for a pod on another node by asking that
// node over the agents' RPC (rpc.LogClient; a node serves its logs to
// servers only); a client agent for a pod not its own by proxying the
// request to a server. The token is checked by the agent the request
// reaches, as for every route.
const logsRoute = "GET /v1/namespaces/{ns}/pods/{pod}/logs"

// LogsConfig is how an agent serves container logs.
type LogsConfig struct {
	// Pod returns a pod by ID ("namespace/name"): any pod of the state on
	// a server, the node's own pods on a client. Required.
	Pod func(id string) (api.Pod, bool)
	// Local reads the logs of this node's containers (node.Logs). Required.
	Local LogReader
	// Remote opens the logs of a container on another node (servers). Nil
	// on a client agent, which proxies such requests to a server.
	Remote LogOpener
	// MaxStreams bounds the log requests served at once; 0 is
	// rpc.DefaultMaxLogStreams.
	MaxStreams int
}

// LogReader reads the logs of this node's containers; see rpc.NodeLogs.
type LogReader interface {
	ContainerLogs(ctx context.Context, ns, pod string, opts api.LogOptions, w io.Writer) error
}

// LogOpener opens the logs of a container on another node. An error with
// an HTTPStatus() int method is that node's refusal.
type LogOpener interface {
	OpenLogs(ctx context.Context, node, ns, pod string, opts api.LogOptions) (io.ReadCloser, error)
}

// StopStreams ends every log stream the server serves; register it with
// http.Server.RegisterOnShutdown, or a follow holds the shutdown for as long
// as its reader wants.
func (s *Server) StopStreams() { s.stopStreams() }

func (s *Server) podLogs(w http.ResponseWriter, r *http.Request) {
	lc := s.cfg.Logs
	if lc == nil {
		writeError(w, http.StatusNotImplemented, "this agent serves no container logs")
		return
	}
	ns, name := r.PathValue("ns"), r.PathValue("pod")
	opts, err := api.ParseLogOptions(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid log options: "+strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	p, route, rerr := s.locatePod(lc.Pod, ns, name, &opts.Container, lc.Remote != nil)
	switch {
	case rerr != nil:
		writeError(w, rerr.code, rerr.msg)
		return
	case route == routeServer:
		// Not this node's, or on a node this agent cannot reach: a server
		// knows where it runs.
		s.proxyStream(w, r)
		return
	case route == routeUnplaced:
		writeError(w, http.StatusNotFound, fmt.Sprintf("pod %s is not placed on a node yet, so it has no logs", p.ID()))
		return
	}
	release, ok := takeSlot(w, s.logSlots, "log streams")
	if !ok {
		return
	}
	defer release()
	ctx, stop := s.streamContext(r.Context())
	defer stop()
	sw := rpc.NewStreamWriter(w, rpc.LogStallTimeout)
	if route == routeHere {
		err = lc.Local.ContainerLogs(ctx, ns, name, opts, sw)
		if err != nil && !sw.Started() {
			writeError(w, rpc.LogErrorStatus(err), err.Error())
			return
		}
	} else {
		var body io.ReadCloser
		body, err = lc.Remote.OpenLogs(ctx, p.Node, ns, name, opts)
		if err != nil {
			// Bad options, no such logs, busy: the node's status; anything
			// else is a 502.
			writeError(w, nodeRefusalStatus(err, http.StatusBadRequest, http.StatusNotFound, http.StatusTooManyRequests), err.Error())
			return
		}
		sw.Flush() // the node found the logs: answer now, before they come
		err = copyFlushing(sw, body)
		body.Close()
	}
	if err != nil && ctx.Err() == nil {
		s.log.Debug("log stream ended", "pod", p.ID(), "container", opts.Container, "err", err)
	}
	sw.Start() // an empty answer, if nothing was written
}

// copyFlushing copies a stream, flushing after each read so a follower
// sees each line as the node sends it.
func copyFlushing(sw *rpc.StreamWriter, r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := sw.Write(buf[:n]); werr != nil {
				return werr
			}
			sw.Flush()
		}
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// proxyStream proxies a log request to a server, as a stream: the
// server's read timeout is lifted and each write gets rpc.LogStallTimeout
// (the proxy flushes each write of a streamed answer).
func (s *Server) proxyStream(w http.ResponseWriter, r *http.Request) {
	ctx, stop := s.streamContext(r.Context())
	defer stop()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	s.proxy.ServeHTTP(&stallWriter{ResponseWriter: w, rc: rc}, r.WithContext(ctx))
}

// stallWriter gives each write of a proxied stream rpc.LogStallTimeout.
type stallWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
}

func (w *stallWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(rpc.LogStallTimeout))
	return w.ResponseWriter.Write(p)
}

// Unwrap lets the proxy flush through it.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
