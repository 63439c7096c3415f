package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Environment variables the client reads in DefaultConfig.
const (
	EnvAddr  = "FLOTILLA_ADDR"
	EnvToken = "FLOTILLA_TOKEN"
)

// DefaultAddr is where a local agent listens unless told otherwise.
const DefaultAddr = "http://127.0.0.1:7400"

// Config configures a Client.
type Config struct {
	// Address is the agent's base URL, e.g. http://127.0.0.1:7400.
	Address string
	// Token is sent as a bearer token with every request.
	Token string
	// CACertPEM, when set, is the only CA an https agent's certificate is
	// verified against (a fleet's agents serve the API with certificates
	// of the cluster CA). It cannot be combined with HTTPClient.
	CACertPEM []byte
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
}

// DefaultConfig reads FLOTILLA_ADDR and FLOTILLA_TOKEN, falling back to DefaultAddr.
func DefaultConfig() *Config {
	c := &Config{Address: os.Getenv(EnvAddr), Token: os.Getenv(EnvToken)}
	if c.Address == "" {
		c.Address = DefaultAddr
	}
	return c
}

// Client calls the agent API.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	addr := cfg.Address
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("agent address %q is not a URL like http://127.0.0.1:7400: %v", cfg.Address, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("agent address %q: scheme must be http or https", cfg.Address)
	}
	hc := cfg.HTTPClient
	switch {
	case hc != nil && len(cfg.CACertPEM) > 0:
		return nil, errors.New("api.Config: set CACertPEM or HTTPClient, not both (configure the CA in HTTPClient's transport instead)")
	case hc == nil:
		tr, err := newTransport(cfg.CACertPEM)
		if err != nil {
			return nil, err
		}
		hc = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	return &Client{base: u, token: cfg.Token, hc: hc}, nil
}

// newTransport returns a transport with the standard library's defaults
// (proxy from the environment, dial and TLS handshake timeouts) that, when
// caPEM is set, trusts only the CAs in it.
func newTransport(caPEM []byte) (*http.Transport, error) {
	base, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("http.DefaultTransport is not an *http.Transport")
	}
	tr := base.Clone()
	if len(caPEM) == 0 {
		return tr, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("CA certificate: no PEM-encoded certificate found; pass the cluster's ca_cert_pem")
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// Address is the agent's base URL.
func (c *Client) Address() string { return c.base.String() }

// Error is a non-2xx answer of the API.
type Error struct {
	StatusCode int
	Message    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("flotilla API: %s (HTTP %d)", e.Message, e.StatusCode)
}

// IsNotFound reports whether err is an API 404.
func IsNotFound(err error) bool { return statusIs(err, http.StatusNotFound) }

// IsConflict reports whether err is an API 409 (the object exists already).
func IsConflict(err error) bool { return statusIs(err, http.StatusConflict) }

func statusIs(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == code
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in io.Reader, contentType string, out any) error {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), in)
	if err != nil {
		return fmt.Errorf("build request %s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w; is flotilla-agent running there? (set FLOTILLA_ADDR or the provider's address)", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var er ErrorResponse
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &er) == nil && er.Error != "" {
			msg = er.Error
		}
		return &Error{StatusCode: resp.StatusCode, Message: msg}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*rawText); ok {
		raw.b.Write(body)
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return c.do(ctx, method, path, query, body, ct, out)
}

func deploymentsPath(ns string) string {
	return "/v1/namespaces/" + url.PathEscape(ns) + "/deployments"
}

func deploymentPath(ns, name string) string { return deploymentsPath(ns) + "/" + url.PathEscape(name) }

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (*AgentStatus, error) {
	var s AgentStatus
	return &s, c.doJSON(ctx, http.MethodGet, "/v1/status", nil, nil, &s)
}

// CreateDeployment creates d; it fails with a 409 Error if it exists.
func (c *Client) CreateDeployment(ctx context.Context, d *Deployment) (*Deployment, error) {
	var out Deployment
	return &out, c.doJSON(ctx, http.MethodPost, deploymentsPath(d.Namespace), nil, d, &out)
}

// UpdateDeployment replaces the spec of an existing deployment.
func (c *Client) UpdateDeployment(ctx context.Context, d *Deployment) (*Deployment, error) {
	var out Deployment
	return &out, c.doJSON(ctx, http.MethodPut, deploymentPath(d.Namespace, d.Name), nil, d, &out)
}

// GetDeployment returns a deployment with its status.
func (c *Client) GetDeployment(ctx context.Context, ns, name string) (*Deployment, error) {
	var out Deployment
	return &out, c.doJSON(ctx, http.MethodGet, deploymentPath(ns, name), nil, nil, &out)
}

// ListDeployments returns the deployments of a namespace ("" for all).
func (c *Client) ListDeployments(ctx context.Context, ns string) ([]Deployment, error) {
	var out []Deployment
	path := "/v1/deployments"
	if ns != "" {
		path = deploymentsPath(ns)
	}
	return out, c.doJSON(ctx, http.MethodGet, path, nil, nil, &out)
}

// DeleteDeployment asks for a deployment to be removed; its pods stop
// asynchronously and GetDeployment answers 404 once they are all gone.
func (c *Client) DeleteDeployment(ctx context.Context, ns, name string) error {
	return c.doJSON(ctx, http.MethodDelete, deploymentPath(ns, name), nil, nil, nil)
}

// ListPods returns the pods of a namespace ("" for all: GET /v1/pods,
// which agents before the CLI do not serve), of one deployment if
// deployment is set.
func (c *Client) ListPods(ctx context.Context, ns, deployment string) ([]Pod, error) {
	var out []Pod
	q := url.Values{}
	if deployment != "" {
		q.Set("deployment", deployment)
	}
	path := "/v1/pods"
	if ns != "" {
		path = "/v1/namespaces/" + url.PathEscape(ns) + "/pods"
	}
	return out, c.doJSON(ctx, http.MethodGet, path, q, nil, &out)
}

// ListEvents returns the events of a namespace's pods, newest last; with
// pod set, that pod's only (a 404 Error when there is no such pod).
func (c *Client) ListEvents(ctx context.Context, ns, pod string) ([]ObjectEvent, error) {
	var out []ObjectEvent
	q := url.Values{}
	if pod != "" {
		q.Set("object", "pod/"+pod)
	}
	return out, c.doJSON(ctx, http.MethodGet, "/v1/namespaces/"+url.PathEscape(ns)+"/events", q, nil, &out)
}

// ListNodes returns the cluster's nodes.
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	var out []Node
	return out, c.doJSON(ctx, http.MethodGet, "/v1/nodes", nil, nil, &out)
}

// RemoveNode removes a node from the fleet: its record and pods go, and
// every certificate issued to it is refused fleet-wide. It fails with a 404
// Error when there is no such node and a 403 Error when the agent refuses.
func (c *Client) RemoveNode(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("remove node: the node name is empty")
	}
	return c.doJSON(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), nil, nil, nil)
}

// ImportImage uploads an image archive (OCI layout or docker-save tar) to the
// agent, which imports it into its image store for pods to use without a registry.
func (c *Client) ImportImage(ctx context.Context, archive io.Reader) (*ImageImportResult, error) {
	var out ImageImportResult
	return &out, c.do(ctx, http.MethodPost, "/v1/images", nil, archive, "application/x-tar", &out)
}

// Metrics returns the agent's Prometheus metrics in text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	var b strings.Builder
	err := c.do(ctx, http.MethodGet, "/v1/metrics", nil, nil, "", &rawText{&b})
	return b.String(), err
}

// rawText receives a body that is not JSON.
type rawText struct{ b *strings.Builder }

// ListMembers lists the agents gossip knows, alive, failed or left.
func (c *Client) ListMembers(ctx context.Context) ([]Member, error) {
	var out []Member
	err := c.doJSON(ctx, http.MethodGet, "/v1/members", nil, nil, &out)
	return out, err
}

// RaftPeers lists the raft configuration: servers (voters) and, while
// clients are raft non-voters, clients.
func (c *Client) RaftPeers(ctx context.Context) ([]RaftPeer, error) {
	var out []RaftPeer
	err := c.doJSON(ctx, http.MethodGet, "/v1/raft/peers", nil, nil, &out)
	return out, err
}

// SetNodeSchedule cordons, uncordons or drains a node: PUT
// /v1/nodes/{name}/schedule. Draining implies unschedulable.
func (c *Client) SetNodeSchedule(ctx context.Context, name string, s NodeSchedule) (*Node, error) {
	if name == "" {
		return nil, errors.New("schedule node: the node name is empty")
	}
	var out Node
	return &out, c.doJSON(ctx, http.MethodPut, "/v1/nodes/"+url.PathEscape(name)+"/schedule", nil, s, &out)
}

// CheckCapacity asks how many of d's replicas the fleet's free capacity
// holds now, as the scheduler would place them (POST /v1/capacity). It
// writes nothing.
func (c *Client) CheckCapacity(ctx context.Context, d *Deployment) (*CapacityCheck, error) {
	var out CapacityCheck
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/capacity", nil, d, &out)
}

func servicesPath(ns string) string {
	return "/v1/namespaces/" + url.PathEscape(ns) + "/services"
}

func servicePath(ns, name string) string { return servicesPath(ns) + "/" + url.PathEscape(name) }

// CreateService creates s with its virtual IP (and node ports) assigned; it
// fails with a 409 Error if it exists, or if an address or node port it asks
// for is another service's (the message names it).
func (c *Client) CreateService(ctx context.Context, s *Service) (*Service, error) {
	var out Service
	return &out, c.doJSON(ctx, http.MethodPost, servicesPath(s.Namespace), nil, s, &out)
}

// UpdateService replaces the spec of an existing service. Its cluster IP
// cannot change; node ports left 0 keep the ones assigned.
func (c *Client) UpdateService(ctx context.Context, s *Service) (*Service, error) {
	var out Service
	return &out, c.doJSON(ctx, http.MethodPut, servicePath(s.Namespace, s.Name), nil, s, &out)
}

// GetService returns a service.
func (c *Client) GetService(ctx context.Context, ns, name string) (*Service, error) {
	var out Service
	return &out, c.doJSON(ctx, http.MethodGet, servicePath(ns, name), nil, nil, &out)
}

// ListServices returns the services of a namespace ("" for all).
func (c *Client) ListServices(ctx context.Context, ns string) ([]Service, error) {
	var out []Service
	path := "/v1/services"
	if ns != "" {
		path = servicesPath(ns)
	}
	return out, c.doJSON(ctx, http.MethodGet, path, nil, nil, &out)
}

// DeleteService removes a service; every node stops serving it within a
// second or so.
func (c *Client) DeleteService(ctx context.Context, ns, name string) error {
	return c.doJSON(ctx, http.MethodDelete, servicePath(ns, name), nil, nil, nil)
}

// GetEndpoints returns a service's endpoints.
func (c *Client) GetEndpoints(ctx context.Context, ns, name string) (*Endpoints, error) {
	var out Endpoints
	return &out, c.doJSON(ctx, http.MethodGet, servicePath(ns, name)+"/endpoints", nil, nil, &out)
}

// logsHeaderTimeout bounds the wait for a logs answer to begin: agents
// answer as soon as they found the logs, before any line.
const logsHeaderTimeout = 30 * time.Second

// PodLogs opens a container's log (GET
// /v1/namespaces/{ns}/pods/{pod}/logs): plain lines, stdout and stderr
// together. The caller reads and then closes the stream. With Follow it
// lasts until ctx ends or the pod is removed, whatever the client's
// timeout: only the wait for the answer to begin is bounded. A refusal
// (no such pod or container, no previous run) is an *Error.
func (c *Client) PodLogs(ctx context.Context, ns, pod string, opts LogOptions) (io.ReadCloser, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("logs of pod %s/%s: %w", ns, pod, err)
	}
	u := c.base.JoinPath("/v1/namespaces/" + url.PathEscape(ns) + "/pods/" + url.PathEscape(pod) + "/logs")
	u.RawQuery = opts.Query().Encode()
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("build logs request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// The client's Timeout covers reading the whole body: a stream needs
	// a client without it, on the same transport.
	hc := *c.hc
	hc.Timeout = 0
	timer := time.AfterFunc(logsHeaderTimeout, cancel)
	resp, err := hc.Do(req)
	if !timer.Stop() {
		// Timed out, even if an answer came just after: its context is gone.
		if err == nil {
			resp.Body.Close()
			err = context.DeadlineExceeded
		}
		err = fmt.Errorf("no answer within %s: %w", logsHeaderTimeout, err)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("GET %s: %w; is flotilla-agent running there? (set FLOTILLA_ADDR)", u.Redacted(), err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var er ErrorResponse
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &er) == nil && er.Error != "" {
			msg = er.Error
		}
		return nil, &Error{StatusCode: resp.StatusCode, Message: msg}
	}
	return &logStream{ReadCloser: resp.Body, cancel: cancel}, nil
}

// logStream ends its request when closed.
type logStream struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (s *logStream) Close() error {
	err := s.ReadCloser.Close()
	s.cancel()
	return err
}

func ingressesPath(ns string) string {
	return "/v1/namespaces/" + url.PathEscape(ns) + "/ingresses"
}

func ingressPath(ns, name string) string { return ingressesPath(ns) + "/" + url.PathEscape(name) }

// CreateIngress creates in and returns it without its TLS keys (KeySHA256
// stands for each). It fails with a 409 Error if it exists, or if another
// ingress routes one of its hosts and paths, has a certificate for one of
// its TLS hosts, or has a default backend (the message names it); with a
// 422 Error naming the field for a bad one.
func (c *Client) CreateIngress(ctx context.Context, in *Ingress) (*Ingress, error) {
	var out Ingress
	return &out, c.doJSON(ctx, http.MethodPost, ingressesPath(in.Namespace), nil, in, &out)
}

// UpdateIngress replaces the spec of an existing ingress, TLS keys
// included (the API never returns them, so a caller sends them again).
func (c *Client) UpdateIngress(ctx context.Context, in *Ingress) (*Ingress, error) {
	var out Ingress
	return &out, c.doJSON(ctx, http.MethodPut, ingressPath(in.Namespace, in.Name), nil, in, &out)
}

// GetIngress returns an ingress without its TLS keys.
func (c *Client) GetIngress(ctx context.Context, ns, name string) (*Ingress, error) {
	var out Ingress
	return &out, c.doJSON(ctx, http.MethodGet, ingressPath(ns, name), nil, nil, &out)
}

// ListIngresses returns the ingresses of a namespace ("" for all), without
// their TLS keys.
func (c *Client) ListIngresses(ctx context.Context, ns string) ([]Ingress, error) {
	var out []Ingress
	path := "/v1/ingresses"
	if ns != "" {
		path = ingressesPath(ns)
	}
	return out, c.doJSON(ctx, http.MethodGet, path, nil, nil, &out)
}

// DeleteIngress removes an ingress.
func (c *Client) DeleteIngress(ctx context.Context, ns, name string) error {
	return c.doJSON(ctx, http.MethodDelete, ingressPath(ns, name), nil, nil, nil)
}
