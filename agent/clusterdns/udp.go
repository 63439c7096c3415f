package clusterdns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/miekg/dns"
)

// bindTries bounds the attempts to find a port free for both UDP and TCP when
// the listen port is 0.
const bindTries = 10

// bind opens nsock UDP sockets (SO_REUSEPORT) and a TCP listener on ap. With
// port 0 they share the port the first UDP socket got.
func bind(ctx context.Context, ap netip.AddrPort, nsock int) ([]*net.UDPConn, net.Listener, error) {
	var lastErr error
	for range bindTries {
		udp, ln, err := bindOnce(ctx, ap, nsock)
		if err == nil {
			return udp, ln, nil
		}
		lastErr = err
		if ap.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, nil, fmt.Errorf("clusterdns: listen on %s: %w; is another DNS server (dnsmasq, systemd-resolved) bound there?", ap, lastErr)
}

func bindOnce(ctx context.Context, ap netip.AddrPort, nsock int) (udp []*net.UDPConn, ln net.Listener, err error) {
	udpNet, tcpNet := "udp4", "tcp4"
	if ap.Addr().Is6() {
		udpNet, tcpNet = "udp6", "tcp6"
	}
	defer func() {
		if err != nil {
			for _, c := range udp {
				c.Close()
			}
			udp = nil
		}
	}()
	lc := net.ListenConfig{}
	if nsock > 1 {
		lc.Control = reusePort
	}
	addr := ap
	for i := range nsock {
		pc, err := lc.ListenPacket(ctx, udpNet, addr.String())
		if err != nil {
			return udp, nil, err
		}
		c := pc.(*net.UDPConn)
		// A larger receive queue rides out bursts; the kernel caps it at
		// net.core.rmem_max.
		_ = c.SetReadBuffer(1 << 20)
		udp = append(udp, c)
		if i == 0 {
			addr = netip.AddrPortFrom(ap.Addr(), uint16(c.LocalAddr().(*net.UDPAddr).Port))
		}
	}
	// No SO_REUSEPORT for TCP: its bind fails if another server holds the
	// address, which the UDP sockets alone would not notice (sharing its
	// datagrams instead), so TCP guards the UDP sockets too.
	ln, err = (&net.ListenConfig{}).Listen(ctx, tcpNet, addr.String())
	if err != nil {
		return udp, nil, err
	}
	return udp, ln, nil
}

// readUDP serves one UDP socket: it answers what the fast path can in this
// goroutine, without allocating, and hands the rest to the general path.
func (s *Server) readUDP(conn *net.UDPConn, c *counters) {
	defer s.wg.Done()
	buf := make([]byte, maxQuery)
	out := make([]byte, 0, 4096+optLen)
	for {
		n, _, flags, addr, err := conn.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("read UDP", "err", err)
			continue
		}
		if flags&msgTrunc != 0 {
			c.invalid.Add(1)
			continue
		}
		reply, fwd := s.handleUDP(buf[:n], out[:0], c)
		if reply != nil {
			if _, err := conn.WriteToUDPAddrPort(reply, addr); err != nil {
				s.log.Debug("write UDP", "remote", addr, "err", err)
			}
			continue
		}
		if fwd == nil {
			continue
		}
		if !s.acquireForward() {
			c.refused.Add(1)
			s.writeUDP(conn, addr, fwd, rcodeReply(fwd, dns.RcodeRefused), c)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.releaseForward()
			s.writeUDP(conn, addr, fwd, s.forward(fwd, &s.shared), &s.shared)
		}()
	}
}

// handleUDP answers one datagram. It returns the reply (appended to out), or
// the query to forward, or neither when the datagram is to be dropped. It
// counts the replies it returns.
func (s *Server) handleUDP(pkt, out []byte, c *counters) (reply []byte, fwd *dns.Msg) {
	if resp, rcode, ok := s.zone.Load().fastAnswer(pkt, out, s.cfg.UDPSize); ok {
		c.response(rcode)
		return resp, nil
	}
	if len(pkt) < headerLen || pkt[2]&flagQR != 0 {
		c.invalid.Add(1) // never answer a response: that could loop between servers
		return nil, nil
	}
	// What miekg/dns's server refuses before parsing: other opcodes, and
	// queries with other than one question or with records they should not
	// carry (updates, mostly).
	if op := pkt[2] >> 3 & 0xF; op != dns.OpcodeQuery {
		c.response(dns.RcodeNotImplemented)
		return headerReply(pkt, out, dns.RcodeNotImplemented), nil
	}
	if binary.BigEndian.Uint16(pkt[4:]) != 1 || binary.BigEndian.Uint16(pkt[6:]) > 0 ||
		binary.BigEndian.Uint16(pkt[8:]) > 0 || binary.BigEndian.Uint16(pkt[10:]) > 2 {
		c.response(dns.RcodeFormatError)
		return headerReply(pkt, out, dns.RcodeFormatError), nil
	}
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		c.response(dns.RcodeFormatError)
		return headerReply(pkt, out, dns.RcodeFormatError), nil
	}
	m := s.answer(req)
	if m == nil {
		return nil, req
	}
	s.finish(req, m, true)
	b, err := m.PackBuffer(out[:cap(out)])
	if err != nil {
		s.log.Debug("pack response", "name", req.Question[0].Name, "err", err)
		c.response(dns.RcodeServerFailure)
		return headerReply(pkt, out, dns.RcodeServerFailure), nil
	}
	c.response(m.Rcode)
	return b, nil
}

// headerReply is a reply of a header alone: no question echoed, so it is no
// longer than the query, and no use for amplification.
func headerReply(pkt, out []byte, rcode int) []byte {
	out = append(out[:0], pkt[:headerLen]...)
	out[2] = flagQR | pkt[2]&(0x78|flagRD)
	out[3] = flagRA | byte(rcode&0xF)
	clear(out[4:headerLen])
	return out
}

// writeUDP sends a forwarded (or refused) reply.
func (s *Server) writeUDP(conn *net.UDPConn, addr netip.AddrPort, req, reply *dns.Msg, c *counters) {
	s.finish(req, reply, true)
	b, err := reply.Pack()
	if err != nil {
		s.log.Debug("pack response", "name", req.Question[0].Name, "err", err)
		b, _ = rcodeReply(req, dns.RcodeServerFailure).Pack()
		reply.Rcode = dns.RcodeServerFailure
	}
	if _, err := conn.WriteToUDPAddrPort(b, addr); err != nil {
		s.log.Debug("write UDP", "remote", addr, "err", err)
		return
	}
	c.response(reply.Rcode)
}
