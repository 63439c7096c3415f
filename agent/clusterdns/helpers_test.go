package clusterdns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testView is the view most tests serve.
func testView() ([]Service, []Pod) {
	services := []Service{
		{Namespace: "default", Name: "web", ClusterIP: netip.MustParseAddr("10.96.0.10"),
			Ports: []Port{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "dns", Protocol: "UDP", Port: 53}, {Port: 9090}}},
		{Namespace: "default", Name: "db", // headless
			Endpoints: []netip.Addr{netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.2.7")},
			Ports:     []Port{{Name: "pg", Port: 5432}}},
		{Namespace: "prod", Name: "v6", ClusterIP: netip.MustParseAddr("fd00::10")},
		{Namespace: "prod", Name: "empty"}, // headless, nothing ready
	}
	pods := []Pod{
		{Namespace: "default", Name: "web-0", IP: netip.MustParseAddr("10.244.1.9")},
		{Namespace: "default", Name: "pending"},
	}
	return services, pods
}

// newTestServer starts a server on an ephemeral loopback port with the test
// view. It is closed when the test ends.
func newTestServer(t testing.TB, edit func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.ResolvConf = "" // no upstream unless the test gives one
	cfg.UDPSockets = 2
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	services, pods := testView()
	if _, err := s.Update(services, pods); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// ask sends one query to addr over network ("udp" or "tcp").
func ask(t testing.TB, network string, addr netip.AddrPort, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr.String())
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	return r
}

func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	return m
}

// rrStrings renders records as "name ttl class type data", one space apart,
// leaving out OPT.
func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return out
}

// recorder is a dns.ResponseWriter that keeps what is written, as CoreDNS's
// dnstest.Recorder does, so the handler can be tested without sockets.
type recorder struct {
	remote net.Addr
	msg    *dns.Msg
}

func (r *recorder) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
}
func (r *recorder) RemoteAddr() net.Addr        { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msg = m; return nil }
func (r *recorder) Write(b []byte) (int, error) { return 0, fmt.Errorf("recorder: raw write") }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

// fakeUpstream is a DNS server on loopback that answers every A query with
// 192.0.2.1, counting what it is asked. Names starting with "big." get a
// truncated answer over UDP and the whole one over TCP; names starting with
// "slow." get no answer at all.
type fakeUpstream struct {
	addr    netip.AddrPort
	queries atomic.Int64
	udp     atomic.Int64
	tcp     atomic.Int64
}

func startFakeUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	// The TCP port is the UDP one, which another process may hold for TCP:
	// try other ports, as the server's own bind does.
	var pc net.PacketConn
	var ln net.Listener
	var port int
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		port = pc.LocalAddr().(*net.UDPAddr).Port
		if ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatal(err)
		}
	}
	f.addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		f.queries.Add(1)
		_, isUDP := w.RemoteAddr().(*net.UDPAddr)
		if isUDP {
			f.udp.Add(1)
		} else {
			f.tcp.Add(1)
		}
		name := strings.ToLower(r.Question[0].Name)
		if strings.HasPrefix(name, "slow.") {
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if strings.HasPrefix(name, "nx.") {
			m.Rcode = dns.RcodeNameError
			_ = w.WriteMsg(m)
			return
		}
		n := 1
		if strings.HasPrefix(name, "big.") {
			n = 40
			if isUDP {
				m.Truncated = true
				n = 0
			}
		}
		for i := range n {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, 2, byte(1+i)),
			})
		}
		_ = w.WriteMsg(m)
	})
	ready := make(chan struct{}, 2)
	servers := []*dns.Server{
		{PacketConn: pc, Handler: handler, NotifyStartedFunc: func() { ready <- struct{}{} }},
		{Listener: ln, Handler: handler, NotifyStartedFunc: func() { ready <- struct{}{} }},
	}
	done := make(chan struct{}, 2)
	for _, srv := range servers {
		go func() {
			_ = srv.ActivateAndServe()
			done <- struct{}{}
		}()
	}
	<-ready
	<-ready
	t.Cleanup(func() {
		for _, srv := range servers {
			_ = srv.Shutdown()
		}
		<-done
		<-done
	})
	return f
}
