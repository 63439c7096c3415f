package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/flotilla-io/flotilla/api"
)

// What serves a request about one container of a pod (logs, exec) is
// decided once, here: the pod's own node serves it; a server forwards it to
// the pod's node over the agents' RPC; a client agent proxies what is not
// its own to a server. Each feature keeps what is its own: what an unplaced
// pod means for it, how it proxies, what it does on the node.

// podRoute is where a request about a pod's container is served.
type podRoute int

const (
	// routeHere: the pod runs on this node, which serves the request.
	routeHere podRoute = iota
	// routeNode: the pod runs on another node; this agent (a server)
	// forwards the request to it.
	routeNode
	// routeServer: this agent does not know the pod, or cannot reach its
	// node; a server it proxies to does.
	routeServer
	// routeUnplaced: the pod is on no node yet. What that means (no logs,
	// nothing to exec in) is the feature's to answer.
	routeUnplaced
)

// routeError is a refusal to answer as is: status and message.
type routeError struct {
	code int
	msg  string
}

// locatePod finds pod ns/name with lookup, checks the container the request
// names (naming it when the pod has only one and the request named none)
// and decides the route. canForward is whether this agent reaches other
// nodes (a server with a Remote). A non-nil error is the answer to send.
func (s *Server) locatePod(lookup func(id string) (api.Pod, bool), ns, name string, container *string, canForward bool) (api.Pod, podRoute, *routeError) {
	p, ok := lookup(ns + "/" + name)
	if !ok {
		if s.proxy != nil {
			return p, routeServer, nil
		}
		return p, 0, &routeError{http.StatusNotFound, fmt.Sprintf("pod %s/%s not found", ns, name)}
	}
	var names []string
	for _, c := range p.Containers {
		names = append(names, c.Name)
	}
	switch {
	case *container == "" && len(names) == 1:
		*container = names[0]
	case *container == "":
		return p, 0, &routeError{http.StatusBadRequest, fmt.Sprintf("pod %s has %d containers; name one with ?container= (%s)", p.ID(), len(names), strings.Join(names, ", "))}
	case !slices.Contains(names, *container):
		return p, 0, &routeError{http.StatusNotFound, fmt.Sprintf("pod %s has no container %q; its containers: %s", p.ID(), *container, strings.Join(names, ", "))}
	}
	switch {
	case p.Node == "":
		return p, routeUnplaced, nil
	case p.Node == s.cfg.NodeName:
		return p, routeHere, nil
	case canForward:
		return p, routeNode, nil
	case s.proxy != nil:
		return p, routeServer, nil
	}
	return p, 0, &routeError{http.StatusServiceUnavailable, fmt.Sprintf("pod %s runs on node %s, which this agent cannot reach; ask a server", p.ID(), p.Node)}
}

// takeSlot takes one of slots for a stream, or answers 429 naming what the
// slots count ("log streams") and returns false. Call release when done.
func takeSlot(w http.ResponseWriter, slots chan struct{}, what string) (release func(), ok bool) {
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, true
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("this agent serves %d %s already; retry shortly", cap(slots), what))
		return nil, false
	}
}

// streamContext is parent, ended too by StopStreams: a stream is not the
// server's to wait for at shutdown. Call stop when the stream is done.
func (s *Server) streamContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	unhook := context.AfterFunc(s.streams, cancel)
	return ctx, func() {
		unhook()
		cancel()
	}
}

// nodeRefusalStatus is the status to answer a node's refusal (an error
// with an HTTPStatus() int method) with: the node's when it is one of pass,
// which are about the request; 502 when the node could not be asked or
// failed.
func nodeRefusalStatus(err error, pass ...int) int {
	var se interface{ HTTPStatus() int }
	if errors.As(err, &se) && slices.Contains(pass, se.HTTPStatus()) {
		return se.HTTPStatus()
	}
	return http.StatusBadGateway
}
