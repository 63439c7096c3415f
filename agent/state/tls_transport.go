package state

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// tlsHandshakeTimeout bounds the TLS handshake of an accepted raft
// connection, so a peer that connects and never speaks TLS does not hold a
// goroutine of the transport.
const tlsHandshakeTimeout = 10 * time.Second

// tlsStreamLayer is raft's network stream over mutually authenticated TLS:
// a raft.StreamLayer for raft.NewNetworkTransportWithConfig. The config
// requires and verifies client certificates on accept (checked by
// Config.validate) and verifies the server on dial.
type tlsStreamLayer struct {
	net.Listener          // tls.Listen on the bind address
	advertise    net.Addr // what peers dial; nil: the listener's address
	config       *tls.Config
	logger       *slog.Logger
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// newTLSStreamLayer listens on bind. advertise, when not nil, is the
// address reported to raft (and so recorded in the cluster's configuration)
// instead of the one listened on.
func newTLSStreamLayer(bind string, advertise net.Addr, config *tls.Config, logger *slog.Logger) (*tlsStreamLayer, error) {
	ln, err := tls.Listen("tcp", bind, config)
	if err != nil {
		return nil, err
	}
	addr := advertise
	if addr == nil {
		addr = ln.Addr()
	}
	// raft dials the address it records; one that says "any interface"
	// cannot be dialed by a peer. validate rejects it from the config, and
	// this catches a host name that resolved to one.
	if tcp, ok := addr.(*net.TCPAddr); !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, fmt.Errorf("raft address %s is not one peers can dial; set RaftAdvertiseAddr", addr)
	}
	return &tlsStreamLayer{Listener: ln, advertise: advertise, config: config, logger: logger}, nil
}

// Addr is the address peers dial.
func (l *tlsStreamLayer) Addr() net.Addr {
	if l.advertise != nil {
		return l.advertise
	}
	return l.Listener.Addr()
}

// Accept returns the next connection; its handshake runs on first use, in
// the transport's goroutine for that connection, so a slow peer does not
// hold up the others.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &serverConn{Conn: c.(*tls.Conn), logger: l.logger}, nil
}

// Dial opens a TLS connection to a peer; timeout bounds the TCP connect
// and the handshake together.
func (l *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	config := l.config
	if config.ServerName == "" {
		host, _, err := net.SplitHostPort(string(address))
		if err != nil {
			return nil, fmt.Errorf("raft peer address %q: %w", address, err)
		}
		config = config.Clone()
		config.ServerName = host
	}
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(address), config)
	if err != nil {
		return nil, fmt.Errorf("raft: TLS connection to %s: %w", address, err)
	}
	return c, nil
}

// serverConn is an accepted connection that completes its handshake, with
// a deadline, before the first read or write, and logs why one failed: a
// peer refused for its certificate is otherwise hard to tell from a crash.
type serverConn struct {
	*tls.Conn
	logger *slog.Logger
	once   sync.Once
	err    error
}

func (c *serverConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
		defer cancel()
		if err := c.Conn.HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("raft: TLS handshake with %s: %w", c.RemoteAddr(), err)
			c.logger.Warn("refused a raft connection: TLS handshake failed; is the peer's certificate issued by this cluster's CA?",
				"remote", c.RemoteAddr().String(), "error", err)
		}
	})
	return c.err
}

func (c *serverConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *serverConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
