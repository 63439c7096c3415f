package membership

import (
	"errors"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// transport is memberlist's NetTransport (one bind address, TCP for
// streams, UDP for packets) with one change: a UDP packet is read into a
// buffer the listener reuses and handed to memberlist as a copy of its own
// size. NetTransport reads every packet into a fresh 64 KiB buffer, for
// packets of at most UDPBufferSize (1,400 bytes): that was 61 % of all bytes
// allocated by 400 simulated nodes (TestAccSimulatedFleet's profile), and
// the collector's work with it most of their CPU. A real agent receives
// several packets a second from its peers and gains the same.
type transport struct {
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	logger   *log.Logger
	wg       sync.WaitGroup
	shutdown atomic.Bool
}

const (
	// maxUDPPacket is the largest UDP payload.
	maxUDPPacket = 65536
	// udpRecvBuf is the socket receive buffer asked for (halved until the
	// kernel takes it), as NetTransport does: a burst of gossip waits in
	// it while the listener hands a packet to memberlist.
	udpRecvBuf = 2 << 20
	// bindTries is how many ports a transport on port 0 tries: the kernel
	// picks a free TCP port, which may be taken for UDP.
	bindTries = 10
)

var _ memberlist.Transport = (*transport)(nil)

// newTransport listens on addr:port (TCP and UDP, the same port; 0 picks
// one) and starts handing what arrives to memberlist.
func newTransport(addr string, port int, logger *log.Logger) (*transport, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, fmt.Errorf("bind address %q is not an IP", addr)
	}
	tries := 1
	if port == 0 {
		tries = bindTries
	}
	var err error
	for range tries {
		var t *transport
		if t, err = listenTransport(ip, port, logger); err == nil {
			return t, nil
		}
	}
	return nil, err
}

func listenTransport(ip net.IP, port int, logger *log.Logger) (*transport, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, fmt.Errorf("listen for gossip streams on %s: %w", net.JoinHostPort(ip.String(), strconv.Itoa(port)), err)
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("listen for gossip packets on %s: %w", net.JoinHostPort(ip.String(), strconv.Itoa(port)), err)
	}
	for size := udpRecvBuf; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &transport{
		tcp: tcp, udp: udp, logger: logger,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
	}
	t.wg.Add(2)
	go t.acceptStreams()
	go t.readPackets()
	return t, nil
}

// Port is the port the transport listens on.
func (t *transport) Port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr is the address peers are told: the one given, else
// the bound IP, else (bound to every address) a private IP of the host,
// as NetTransport chooses it.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.Port()
	}
	if ip != "" {
		adv := net.ParseIP(ip)
		if adv == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP", ip)
		}
		if v4 := adv.To4(); v4 != nil {
			adv = v4
		}
		return adv, port, nil
	}
	bound := t.tcp.Addr().(*net.TCPAddr).IP
	if !bound.IsUnspecified() {
		return bound, port, nil
	}
	private, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("find a private IP to advertise: %w", err)
	}
	if private == "" {
		return nil, 0, errors.New("no private IP to advertise: set the advertise address")
	}
	return net.ParseIP(private), port, nil
}

// WriteTo sends one packet to addr ("host:port").
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the listeners and waits for their goroutines.
func (t *transport) Shutdown() error {
	t.shutdown.Store(true)
	t.tcp.Close()
	t.udp.Close()
	t.wg.Wait()
	return nil
}

// acceptStreams hands accepted TCP connections to memberlist, backing off
// on accept errors as NetTransport does.
func (t *transport) acceptStreams() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		t.streamCh <- conn
	}
}

// readPackets hands received UDP packets to memberlist, each in a slice of
// its own size (memberlist keeps parts of it).
func (t *transport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxUDPPacket)
	for {
		n, addr, err := t.udp.ReadFrom(buf)
		ts := time.Now()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			t.logger.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 {
			t.logger.Printf("[ERR] memberlist: UDP packet too short (%d bytes) %s", n, memberlist.LogAddress(addr))
			continue
		}
		t.packetCh <- &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: addr, Timestamp: ts}
	}
}
