package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/flotilla-io/flotilla/agent/pki"
)

// tlsHandshakeTimeout bounds the TLS handshake of an accepted raft
// connection, so a peer that connects and never speaks TLS does not hold a
// goroutine of the transport.
const tlsHandshakeTimeout = 10 * time.Second

// tlsStreamLayer is raft's network stream over mutually authenticated TLS:
// a raft.StreamLayer for raft.NewNetworkTransportWithConfig.
//
// Who may talk raft is decided per connection, on the peer certificate's
// identity (name and role, see pki.Identity):
//   - accept: only servers. Leaders and candidates are servers; a non-voter
//     never dials anyone. A client certificate (all a client VM holds)
//     therefore cannot append to any log.
//   - dial: only the node the raft configuration lists at that address (and
//     a server if it votes), so an address taken over by another machine
//     gets no entries and no votes from us.
//
// Both also refuse revoked certificates, and closeRevoked drops the
// connections of a peer revoked after they were made.
type tlsStreamLayer struct {
	ln        net.Listener // plain TCP; the layer runs TLS itself
	advertise net.Addr     // what peers dial
	server    *tls.Config
	client    *tls.Config
	dialCheck func(addr raft.ServerAddress, id pki.Identity) error
	revoked   func(id pki.Identity) bool
	logger    *slog.Logger

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// newTLSStreamLayer listens on bind. advertise, when not nil, is the
// address reported to raft (and so recorded in the cluster's configuration)
// instead of the one listened on.
func newTLSStreamLayer(bind string, advertise net.Addr, kp *pki.Keypair, accept pki.PeerCheck,
	dial func(raft.ServerAddress, pki.Identity) error, revoked func(pki.Identity) bool, logger *slog.Logger) (*tlsStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	// raft dials the address it records; one that says "any interface"
	// cannot be dialed by a peer. validate rejects it from the config, and
	// this catches a host name that resolved to one.
	if tcp, ok := advertise.(*net.TCPAddr); !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, fmt.Errorf("raft address %s is not one peers can dial; set RaftAdvertiseAddr", advertise)
	}
	l := &tlsStreamLayer{
		ln: ln, advertise: advertise, dialCheck: dial, revoked: revoked, logger: logger,
		server: kp.ServerTLS(tls.RequireAndVerifyClientCert, accept),
		client: kp.ClientTLS(nil),
		conns:  map[*trackedConn]struct{}{},
	}
	return l, nil
}

// Addr is the address peers dial.
func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

// Close stops listening and drops every connection.
func (l *tlsStreamLayer) Close() error {
	err := l.ln.Close()
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Conn.Close()
	}
	l.mu.Unlock()
	return err
}

// Accept returns the next connection; its handshake runs on first use, in
// the transport's goroutine for that connection, so a slow peer does not
// hold up the others.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: tls.Server(c, l.server), layer: l, accepted: true}
	l.track(tc)
	return tc, nil
}

// Dial opens a TLS connection to a peer and checks it is who the raft
// configuration says; timeout bounds the TCP connect and the handshake.
func (l *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, fmt.Errorf("raft peer address %q: %w", address, err)
	}
	config := l.client.Clone()
	config.ServerName = host
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(address), config)
	if err != nil {
		return nil, fmt.Errorf("raft: TLS connection to %s: %w", address, err)
	}
	cs := c.ConnectionState()
	id, ok := pki.PeerIdentity(&cs)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("raft: the peer at %s presented no verified certificate", address)
	}
	if err := l.dialCheck(address, id); err != nil {
		_ = c.Close()
		l.logger.Warn("refused to talk raft to a peer: its certificate is not the raft configuration's server at that address", "address", address, "peer", id.String(), "err", err)
		return nil, fmt.Errorf("raft: peer at %s: %w", address, err)
	}
	tc := &trackedConn{Conn: c, layer: l, id: id, known: true}
	l.track(tc)
	if l.revoked(id) { // revoked between the check and track
		_ = tc.Close()
		return nil, fmt.Errorf("raft: the certificate of %s was revoked", id)
	}
	return tc, nil
}

func (l *tlsStreamLayer) track(c *trackedConn) {
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
}

func (l *tlsStreamLayer) untrack(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// closeRevoked closes the connections of peers whose certificate was
// revoked since they connected.
func (l *tlsStreamLayer) closeRevoked() {
	l.mu.Lock()
	var drop []*trackedConn
	for c := range l.conns {
		if id, ok := c.identity(); ok && l.revoked(id) {
			drop = append(drop, c)
		}
	}
	l.mu.Unlock()
	for _, c := range drop {
		id, _ := c.identity()
		l.logger.Warn("closing the raft connection of a removed node", "peer", id.String(), "remote", c.RemoteAddr().String())
		_ = c.Close()
	}
}

// trackedConn is a raft connection the layer knows the peer of. An
// accepted one completes its handshake, with a deadline, before its first
// read or write, and logs why one failed: a peer refused for its
// certificate is otherwise hard to tell from a crash.
type trackedConn struct {
	*tls.Conn
	layer    *tlsStreamLayer
	accepted bool

	once  sync.Once
	err   error
	mu    sync.Mutex
	id    pki.Identity
	known bool
}

func (c *trackedConn) identity() (pki.Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id, c.known
}

func (c *trackedConn) handshake() error {
	if !c.accepted {
		return nil
	}
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
		defer cancel()
		if err := c.Conn.HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("raft: TLS handshake with %s: %w", c.RemoteAddr(), err)
			level := slog.LevelWarn
			if errors.Is(err, net.ErrClosed) {
				level = slog.LevelDebug
			}
			c.layer.logger.Log(ctx, level, "refused a raft connection: only servers of this cluster whose certificates are not revoked may connect",
				"remote", c.RemoteAddr().String(), "error", err)
			return
		}
		cs := c.Conn.ConnectionState()
		if id, ok := pki.PeerIdentity(&cs); ok {
			c.mu.Lock()
			c.id, c.known = id, true
			c.mu.Unlock()
			// A removal that committed during the handshake found no
			// identity here to close on: check again now that there is.
			if c.layer.revoked(id) {
				c.err = fmt.Errorf("raft: the certificate of %s was revoked", id)
				_ = c.Close()
			}
		}
	})
	return c.err
}

func (c *trackedConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *trackedConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *trackedConn) Close() error {
	c.layer.untrack(c)
	return c.Conn.Close()
}
