package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	"github.com/flotilla-io/flotilla/agent/state"
)

// ErrJoinTokenRejected means a server refused a join because the token was
// wrong: retrying will not help.
var ErrJoinTokenRejected = errors.New(tokenRejected)

// Client calls other agents' RPC servers. It is safe for concurrent use and
// keeps connections to each agent open between calls.
type Client struct {
	timeout time.Duration
	http    *http.Client // nil without a TLS configuration
}

// NewClient returns a client that presents the node certificate in tlsCfg
// (from pki.ClientTLS) and gives up on a call after timeout (0 means 30s).
// Make timeout longer than the leader's ServerConfig.ApplyTimeout, so that a
// write raft cannot commit comes back with the leader's explanation rather
// than a bare client timeout. A client made with a nil tlsCfg can only Join.
func NewClient(tlsCfg *tls.Config, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	c := &Client{timeout: timeout}
	if tlsCfg != nil {
		c.http = newHTTPClient(tlsCfg, timeout, false)
	}
	return c
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
			MaxIdleConnsPerHost: 4,
			// Shorter than the server's IdleTimeout, so the client closes
			// first and never writes into a connection the server dropped.
			IdleConnTimeout: 90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// CloseIdleConnections closes connections kept open for later calls.
func (c *Client) CloseIdleConnections() {
	if c.http != nil {
		c.http.CloseIdleConnections()
	}
}

// Apply forwards a raft log entry to the leader at addr (host:port of its
// RPC server) and returns once the leader has committed and applied it,
// with the log index and the FSM's response. Errors the leader's state
// returned keep their sentinel: errors.Is(err, state.ErrExists) and the like
// hold, and errors.As finds a *RemoteError. With a leader's error, index and
// resp are what its Applier returned along with it (a write the FSM refused
// was still committed); they are zero when the leader was not reached or
// refused the request itself. An empty addr fails with state.ErrNotLeader
// (no leader is known).
func (c *Client) Apply(ctx context.Context, addr string, entry []byte) (index uint64, resp []byte, err error) {
	op := "forward to leader at " + addr
	if addr == "" {
		return 0, nil, fmt.Errorf("forward to leader: %w; no leader address is known yet, retry once one is elected", state.ErrNotLeader)
	}
	req, err := c.newRequest(ctx, op, http.MethodPost, addr, pathApply, entry)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	code, body, err := c.do(req, op, addr)
	if err != nil {
		return 0, nil, err
	}
	var ar applyResponse
	if err := json.Unmarshal(body, &ar); err != nil {
		return 0, nil, fmt.Errorf("%s: unreadable answer (HTTP %d): %s", op, code, snippet(body))
	}
	if ar.Error != "" || code != http.StatusOK {
		if ar.Error == "" {
			ar.Error = fmt.Sprintf("HTTP %d without an error message", code)
		}
		if sentinel(ar.Kind) == nil {
			ar.Kind = KindOther
		}
		return ar.Index, ar.Response, &RemoteError{Addr: addr, Kind: ar.Kind, Message: ar.Error}
	}
	return ar.Index, ar.Response, nil
}

// Ping asks the agent at addr for its node name, proving that both sides'
// certificates are accepted.
func (c *Client) Ping(ctx context.Context, addr string) (string, error) {
	op := "ping " + addr
	req, err := c.newRequest(ctx, op, http.MethodGet, addr, pathPing, nil)
	if err != nil {
		return "", err
	}
	code, body, err := c.do(req, op, addr)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d: %s", op, code, errorMessage(body))
	}
	var pr pingResponse
	if err := json.Unmarshal(body, &pr); err != nil {
		return "", fmt.Errorf("%s: unreadable answer: %s", op, snippet(body))
	}
	return pr.NodeName, nil
}

// Join gets this node a certificate from the server at addr (host:port of
// its RPC server), as a new agent does with the join token: it generates a
// key and a CSR for nodeName and ips, sends them over TLS verifying the
// server's certificate against caPEM (the token goes to no one else), and
// checks that the signed certificate pairs with the key and chains to caPEM.
// The key never leaves this process. A wrong token fails with
// ErrJoinTokenRejected. Join needs no TLS configuration on c.
func (c *Client) Join(ctx context.Context, addr string, caPEM []byte, token, nodeName string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	op := "join via server at " + addr
	tlsCfg, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	csrPEM, keyPEM, err := pki.NewCSR(nodeName, ips)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	body, err := json.Marshal(joinRequest{NodeName: nodeName, CSRPEM: string(csrPEM)})
	if err != nil {
		return nil, nil, err
	}
	req, err := c.newRequest(ctx, op, http.MethodPost, addr, pathJoin, body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
	hc := newHTTPClient(tlsCfg, c.timeout, true)
	code, respBody, err := doWith(hc, req, op, addr)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case code == http.StatusUnauthorized:
		return nil, nil, fmt.Errorf("%s: %w", op, ErrJoinTokenRejected)
	case code != http.StatusOK:
		return nil, nil, fmt.Errorf("%s: HTTP %d: %s", op, code, errorMessage(respBody))
	}
	var jr joinResponse
	if err := json.Unmarshal(respBody, &jr); err != nil || jr.CertPEM == "" {
		return nil, nil, fmt.Errorf("%s: unreadable answer: %s", op, snippet(respBody))
	}
	certPEM = []byte(jr.CertPEM)
	// The certificate must work before it is saved: paired with our key,
	// signed by the CA we trust (not just the one the server names), and ours.
	if _, err := pki.ClientTLS(caPEM, certPEM, keyPEM); err != nil {
		return nil, nil, fmt.Errorf("%s: the signed certificate is unusable: %w", op, err)
	}
	if cn := leafName(certPEM); cn != nodeName {
		return nil, nil, fmt.Errorf("%s: the signed certificate is for %q, not %q", op, cn, nodeName)
	}
	return certPEM, keyPEM, nil
}

func (c *Client) newRequest(ctx context.Context, op, method, addr, path string, body []byte) (*http.Request, error) {
	if c.http == nil && path != pathJoin {
		return nil, fmt.Errorf("%s: this RPC client has no TLS configuration (NewClient(nil, …) can only join); build one with pki.ClientTLS", op)
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

func (c *Client) do(req *http.Request, op, addr string) (int, []byte, error) {
	return doWith(c.http, req, op, addr)
}

func doWith(hc *http.Client, req *http.Request, op, addr string) (int, []byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, transportError(req.Context(), op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return 0, nil, transportError(req.Context(), op, err)
	}
	return resp.StatusCode, body, nil
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

func leafName(certPEM []byte) string {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	return cert.Subject.CommonName
}
