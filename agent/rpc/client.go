package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
)

// ErrJoinTokenRejected means a server refused a join because the token was
// wrong: retrying will not help.
var ErrJoinTokenRejected = errors.New(tokenRejected)

// Client calls servers' RPC endpoints with this node's certificate. It is
// safe for concurrent use and keeps connections to each server open between
// calls. Every peer it talks to must hold a server certificate: only
// servers serve writes, joins, renewals and raft state.
type Client struct {
	timeout time.Duration
	http    *http.Client

	mu      sync.Mutex
	batches map[batchKey]*batcher
}

// NewClient returns a client presenting kp's current certificate (renewals
// apply to new connections) that gives up on a call after timeout (0
// means 30s). Make timeout longer than the leader's ApplyTimeout, so that a
// write raft cannot commit comes back with the leader's explanation rather
// than a bare client timeout.
func NewClient(kp *pki.Keypair, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &Client{timeout: timeout, http: newHTTPClient(kp.ClientTLS(pki.RequireRole(pki.RoleServer)), timeout, false)}
}

func newHTTPClient(tlsCfg *tls.Config, timeout time.Duration, oneShot bool) *http.Client {
	tlsCfg = tlsCfg.Clone()
	tlsCfg.NextProtos = []string{"http/1.1"}
	dialer := &net.Dialer{Timeout: min(timeout, 10*time.Second), KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			// Proxy stays nil: agent-to-agent traffic must not follow HTTPS_PROXY.
			DialContext:         dialer.DialContext,
			TLSClientConfig:     tlsCfg,
			TLSHandshakeTimeout: min(timeout, 10*time.Second),
			DisableKeepAlives:   oneShot,
			// Enough idle connections to the leader for every writer
			// (forwarded writes are one request each, many at a time).
			MaxIdleConnsPerHost: 128,
			// Shorter than the server's IdleTimeout, so the client closes
			// first and never writes into a connection the server dropped.
			IdleConnTimeout: 90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// CloseIdleConnections closes connections kept open for later calls.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Ping asks the server at addr for its node name, proving that both sides'
// certificates are accepted.
func (c *Client) Ping(ctx context.Context, addr string) (string, error) {
	var pr pingResponse
	if err := c.getJSON(ctx, "ping "+addr, addr, pathPing, &pr); err != nil {
		return "", err
	}
	return pr.NodeName, nil
}

// RaftState asks the server at addr what it knows of the raft cluster.
func (c *Client) RaftState(ctx context.Context, addr string) (RaftState, error) {
	var st RaftState
	err := c.getJSON(ctx, "ask "+addr+" for its raft state", addr, pathRaft, &st)
	return st, err
}

func (c *Client) getJSON(ctx context.Context, op, addr, path string, out any) error {
	req, err := c.newRequest(ctx, op, http.MethodGet, addr, path, nil)
	if err != nil {
		return err
	}
	code, body, _, err := c.do(req, op, addr)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", op, code, errorMessage(body))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: unreadable answer: %s", op, snippet(body))
	}
	return nil
}

// Renew gets a new certificate for kp's node from the server at addr: a new
// key, and a certificate with the same name, role and address as the
// current one, which the request is authenticated with. It returns the new
// certificate and key; kp is not changed.
func (c *Client) Renew(ctx context.Context, addr string, kp *pki.Keypair) (certPEM, keyPEM []byte, err error) {
	op := "renew the node certificate via server at " + addr
	id := kp.Identity()
	csrPEM, keyPEM, err := pki.NewCSR(id.Name, id.IPs)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	body, _ := json.Marshal(renewRequest{CSRPEM: string(csrPEM)})
	req, err := c.newRequest(ctx, op, http.MethodPost, addr, pathRenew, body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	code, respBody, _, err := c.do(req, op, addr)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = readCert(op, code, respBody, kp.CAPEM(), keyPEM, id.Name)
	return certPEM, keyPEM, err
}

// Join gets this node a client certificate from the server at addr (host:
// port of its RPC server), as a new agent does with the join token: it
// generates a key and a CSR for nodeName and ip (the address it connects
// from, the only one a server signs), sends them over TLS verifying that
// the peer holds a server certificate of caPEM (the token goes to no one
// else), and checks that the signed certificate pairs with the key, chains
// to caPEM and names this node. The key never leaves this process. A wrong
// token fails with ErrJoinTokenRejected.
func Join(ctx context.Context, addr string, caPEM []byte, token, nodeName string, ip net.IP, timeout time.Duration) (certPEM, keyPEM []byte, err error) {
	op := "join via server at " + addr
	tlsCfg, err := pki.JoinTLS(caPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	var ips []net.IP
	if ip != nil {
		ips = []net.IP{ip}
	}
	csrPEM, keyPEM, err := pki.NewCSR(nodeName, ips)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	body, err := json.Marshal(joinRequest{NodeName: nodeName, CSRPEM: string(csrPEM)})
	if err != nil {
		return nil, nil, err
	}
	c := &Client{timeout: timeout, http: newHTTPClient(tlsCfg, timeout, true)}
	req, err := c.newRequest(ctx, op, http.MethodPost, addr, pathJoin, body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
	code, respBody, _, err := c.do(req, op, addr)
	if err != nil {
		return nil, nil, err
	}
	if code == http.StatusUnauthorized {
		return nil, nil, fmt.Errorf("%s: %w", op, ErrJoinTokenRejected)
	}
	certPEM, err = readCert(op, code, respBody, caPEM, keyPEM, nodeName)
	return certPEM, keyPEM, err
}

// readCert reads a signed certificate answer and checks it works before
// it is saved: paired with our key, signed by the CA we trust (not just the
// one the server names), and for this node.
func readCert(op string, code int, body, caPEM, keyPEM []byte, name string) ([]byte, error) {
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d: %s", op, code, errorMessage(body))
	}
	var cr certResponse
	if err := json.Unmarshal(body, &cr); err != nil || cr.CertPEM == "" {
		return nil, fmt.Errorf("%s: unreadable answer: %s", op, snippet(body))
	}
	certPEM := []byte(cr.CertPEM)
	kp, err := pki.NewKeypair(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: the signed certificate is unusable: %w", op, err)
	}
	if got := kp.Identity().Name; got != name {
		return nil, fmt.Errorf("%s: the signed certificate is for %q, not %q", op, got, name)
	}
	return certPEM, nil
}

func (c *Client) newRequest(ctx context.Context, op, method, addr, path string, body []byte) (*http.Request, error) {
	if addr == "" {
		return nil, fmt.Errorf("%s: %w; no server address is known yet, retry shortly", op, state.ErrNotLeader)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%s: the address must be host:port: %w", op, err)
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return req, nil
}

// do sends req and returns the answer's status, body and the identity of
// the server that answered.
func (c *Client) do(req *http.Request, op, addr string) (int, []byte, pki.Identity, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, pki.Identity{}, transportError(req.Context(), op, err)
	}
	defer resp.Body.Close()
	peer, _ := pki.PeerIdentity(resp.TLS)
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return 0, nil, peer, transportError(req.Context(), op, err)
	}
	return resp.StatusCode, body, peer, nil
}

// transportError says what to check when a call did not get an answer.
func transportError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	var (
		verr     *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		netOp    *net.OpError
	)
	// crypto/tls reports the peer's alert (it refused our certificate) as a
	// net.OpError with Op "remote error".
	remoteAlert := errors.As(err, &netOp) && netOp.Op == "remote error"
	if remoteAlert || errors.As(err, &verr) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) {
		return fmt.Errorf("%s: %w; check that both agents have valid certificates from the same cluster CA and that the server's certificate names this address", op, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Errorf("%s: %w; is it reachable? (a request that timed out may still have taken effect)", op, err)
	}
	return fmt.Errorf("%s: %w; is it reachable?", op, err)
}

// errorMessage returns the error field of a JSON error answer, or the body.
func errorMessage(body []byte) string {
	var er errorResponse
	if json.Unmarshal(body, &er) == nil && er.Error != "" {
		return er.Error
	}
	return snippet(body)
}

func snippet(b []byte) string {
	const max = 200
	s := strings.TrimSpace(string(b))
	if len(s) > max {
		s = s[:max] + "…"
	}
	if s == "" {
		s = "(empty)"
	}
	return s
}
