package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
)

// What only a pod's own node can do for a request (read its containers'
// logs, run an exec in one) it does for servers only; see logs.go for why.
// The endpoints share their gate and their request's shape, here; each
// keeps its own answer.

// refusal is a node's answer to a request it will not serve.
type refusal struct {
	code int
	msg  string
}

// serverPeer returns the identity of r's peer when it is a server whose
// certificate was not revoked, or the refusal to answer. op prefixes the
// messages ("logs"); serves says what a node does for servers only ("runs
// execs").
func serverPeer(r *http.Request, revoked func(pki.Identity) bool, op, serves string) (pki.Identity, *refusal) {
	id, ok := pki.PeerIdentity(r.TLS)
	switch {
	case !ok:
		return id, &refusal{http.StatusUnauthorized, op + ": a client certificate signed by the cluster CA is required"}
	case revoked != nil && revoked(id):
		return id, &refusal{http.StatusForbidden, fmt.Sprintf("%s: the certificate of %s was revoked when the node was removed from the fleet", op, id)}
	case id.Role != pki.RoleServer:
		return id, &refusal{http.StatusForbidden, fmt.Sprintf("%s: %s is not a server; a node %s for servers only (send the request to the API, which checks the token)", op, id, serves)}
	}
	return id, nil
}

// podRequest reads a node endpoint's query: namespace, pod and the
// feature's options (parse), which must name the container.
func podRequest[O any](q url.Values, parse func(url.Values) (O, error), container func(O) string) (ns, pod string, opts O, err error) {
	ns, pod = q.Get("namespace"), q.Get("pod")
	q.Del("namespace")
	q.Del("pod")
	opts, err = parse(q)
	if err == nil && container(opts) == "" {
		err = errors.New("container: required")
	}
	return ns, pod, opts, err
}

// shutdownContext ends when srv shuts down: the streams a node endpoint
// serves (a follow, a hijacked exec) are not the server's to wait for.
func shutdownContext(srv *http.Server) context.Context {
	stop, cancel := context.WithCancel(context.Background())
	srv.RegisterOnShutdown(cancel)
	return stop
}

// nodeTransport is the transport of one request to node, presenting kp's
// certificate. One connection per stream, checked against the node asked
// for: a pooled one could have been made for another node at the address.
func nodeTransport(kp *pki.Keypair, node string) *http.Transport {
	tlsCfg := kp.ClientTLS(func(id pki.Identity) error {
		if id.Name != node {
			return fmt.Errorf("it is %s, not node %s; check that node's address", id, node)
		}
		return nil
	})
	tlsCfg.NextProtos = []string{"http/1.1"}
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: logHeaderTimeout,
		DisableKeepAlives:     true,
		DisableCompression:    true,
	}
}

// noRedirects is an http.Client CheckRedirect: a node answers, it does not
// send the request elsewhere.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// streamContext is parent, ended too by stop (a shutdownContext). Call
// done when the stream is over.
func streamContext(parent, stop context.Context) (ctx context.Context, done func()) {
	ctx, cancel := context.WithCancel(parent)
	unhook := context.AfterFunc(stop, cancel)
	return ctx, func() {
		unhook()
		cancel()
	}
}
