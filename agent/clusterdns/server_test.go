package clusterdns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// transports a query can take: UDP (the fast path for most cluster names),
// TCP (miekg/dns's server and the general path), and ServeDNS called directly.
var transports = []string{"udp", "tcp", "handler"}

func exchangeVia(t *testing.T, s *Server, transport string, m *dns.Msg) *dns.Msg {
	t.Helper()
	if transport == "handler" {
		rec := &recorder{remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}
		s.ServeDNS(rec, m)
		if rec.msg == nil {
			t.Fatal("handler wrote no answer")
		}
		// Round-trip, as a client would see it.
		b, err := rec.msg.Pack()
		if err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(b); err != nil {
			t.Fatal(err)
		}
		return r
	}
	return ask(t, transport, s.Addrs()[0], m)
}

func TestClusterNames(t *testing.T) {
	s := newTestServer(t, nil)
	const web = "web.default.svc.cluster.local. 5 IN A 10.96.0.10"
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		edns   bool
		rcode  int
		answer []string
		extra  []string
		soa    bool // the SOA in the authority section
	}{
		{name: "service A", qname: "web.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{web}},
		{name: "service A with EDNS", qname: "web.default.svc.cluster.local.", qtype: dns.TypeA, edns: true,
			answer: []string{web}},
		{name: "no trailing dot in the question as typed", qname: "web.default.svc.cluster.local", qtype: dns.TypeA,
			answer: []string{web}},
		{name: "case-insensitive, case echoed", qname: "WeB.DeFault.SVC.Cluster.LOCAL.", qtype: dns.TypeA,
			answer: []string{"WeB.DeFault.SVC.Cluster.LOCAL. 5 IN A 10.96.0.10"}},
		{name: "headless service: ready endpoints", qname: "db.default.svc.cluster.local.", qtype: dns.TypeA,
			answer: []string{"db.default.svc.cluster.local. 5 IN A 10.244.1.5", "db.default.svc.cluster.local. 5 IN A 10.244.2.7"}},
		{name: "headless service with none ready: NODATA", qname: "empty.prod.svc.cluster.local.", qtype: dns.TypeA,
			soa: true},
		{name: "IPv6 service AAAA", qname: "v6.prod.svc.cluster.local.", qtype: dns.TypeAAAA,
			answer: []string{"v6.prod.svc.cluster.local. 5 IN AAAA fd00::10"}},
		{name: "SRV of a named TCP port", qname: "_http._tcp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."},
			extra:  []string{web}},
		{name: "SRV of a named UDP port, EDNS", qname: "_dns._udp.web.default.svc.cluster.local.", qtype: dns.TypeSRV, edns: true,
			answer: []string{"_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."},
			extra:  []string{web}},
		{name: "SRV of a headless service", qname: "_pg._tcp.db.default.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 5432 db.default.svc.cluster.local."},
			extra:  []string{"db.default.svc.cluster.local. 5 IN A 10.244.1.5", "db.default.svc.cluster.local. 5 IN A 10.244.2.7"}},
		{name: "SRV of a port of the other protocol: NXDOMAIN", qname: "_http._udp.web.default.svc.cluster.local.", qtype: dns.TypeSRV,
			rcode: dns.RcodeNameError, soa: true},
		{name: "pod by name", qname: "web-0.default.pod.cluster.local.", qtype: dns.TypeA,
			answer: []string{"web-0.default.pod.cluster.local. 5 IN A 10.244.1.9"}},
		{name: "pod without IP: NXDOMAIN", qname: "pending.default.pod.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, soa: true},
		{name: "absent service: NXDOMAIN", qname: "nope.default.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, soa: true},
		{name: "absent namespace: NXDOMAIN", qname: "web.nope.svc.cluster.local.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, soa: true},
		{name: "search-path miss (ndots:5): NXDOMAIN", qname: "example.com.default.svc.cluster.local.", qtype: dns.TypeAAAA, edns: true,
			rcode: dns.RcodeNameError, soa: true},
		{name: "AAAA of an IPv4 service: NODATA", qname: "web.default.svc.cluster.local.", qtype: dns.TypeAAAA,
			soa: true},
		{name: "TXT of a service: NODATA", qname: "web.default.svc.cluster.local.", qtype: dns.TypeTXT,
			soa: true},
		{name: "namespace (empty non-terminal): NODATA", qname: "default.svc.cluster.local.", qtype: dns.TypeA,
			soa: true},
		{name: "ANY of a service", qname: "web.default.svc.cluster.local.", qtype: dns.TypeANY,
			answer: []string{web}},
		{name: "SOA at the apex", qname: "cluster.local.", qtype: dns.TypeSOA,
			answer: []string{"SOA"}},
	}
	for _, tr := range transports {
		for _, tc := range tests {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				m := question(tc.qname, tc.qtype)
				if tc.edns {
					m.SetEdns0(1232, false)
				}
				r := exchangeVia(t, s, tr, m)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if !r.Authoritative || !r.Response || r.Id != m.Id {
					t.Errorf("AA %v QR %v ID %d (want %d)", r.Authoritative, r.Response, r.Id, m.Id)
				}
				if len(r.Question) != 1 || r.Question[0].Name != dns.Fqdn(tc.qname) {
					t.Errorf("question %v, want %s echoed", r.Question, tc.qname)
				}
				got := rrStrings(r.Answer)
				if len(tc.answer) == 1 && tc.answer[0] == "SOA" {
					if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA {
						t.Errorf("answer %q, want the SOA", got)
					}
				} else if !slices.Equal(got, tc.answer) {
					t.Errorf("answer\n%q\nwant\n%q", got, tc.answer)
				}
				if got := rrStrings(r.Extra); !slices.Equal(got, tc.extra) {
					t.Errorf("additional\n%q\nwant\n%q", got, tc.extra)
				}
				if tc.soa {
					if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA || r.Ns[0].Header().Name != "cluster.local." {
						t.Fatalf("authority %q, want the SOA of cluster.local.", rrStrings(r.Ns))
					}
					soa := r.Ns[0].(*dns.SOA)
					if soa.Hdr.Ttl != 5 || soa.Minttl != 5 {
						t.Errorf("SOA TTL %d minimum %d, want 5 and 5", soa.Hdr.Ttl, soa.Minttl)
					}
				} else if len(r.Ns) != 0 {
					t.Errorf("authority %q, want none", rrStrings(r.Ns))
				}
				if (r.IsEdns0() != nil) != tc.edns {
					t.Errorf("OPT in the answer: %v, want %v", r.IsEdns0() != nil, tc.edns)
				}
			})
		}
	}
}

// TestFastPathMatchesGeneral checks that the pre-encoded answers say what the
// general path says, for the same queries.
func TestFastPathMatchesGeneral(t *testing.T) {
	s := newTestServer(t, nil)
	names := []string{
		"web.default.svc.cluster.local.", "WEB.default.svc.cluster.local.", "db.default.svc.cluster.local.",
		"_http._tcp.web.default.svc.cluster.local.", "_pg._tcp.db.default.svc.cluster.local.",
		"web-0.default.pod.cluster.local.", "nope.default.svc.cluster.local.", "default.svc.cluster.local.",
		"cluster.local.", "v6.prod.svc.cluster.local.", "a.b.c.d.e.cluster.local.",
	}
	for _, name := range names {
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV} {
			for _, edns := range []bool{false, true} {
				m := question(name, qtype)
				if edns {
					m.SetEdns0(4096, true)
				}
				pkt, err := m.Pack()
				if err != nil {
					t.Fatal(err)
				}
				fast, _, ok := s.zone.Load().fastAnswer(pkt, nil, s.cfg.UDPSize)
				if !ok {
					t.Errorf("%s %s: not answered by the fast path", name, dns.TypeToString[qtype])
					continue
				}
				f := new(dns.Msg)
				if err := f.Unpack(fast); err != nil {
					t.Fatalf("%s %s: fast answer does not parse: %v", name, dns.TypeToString[qtype], err)
				}
				rec := &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}
				s.ServeDNS(rec, m)
				g := rec.msg
				if f.MsgHdr != g.MsgHdr ||
					!slices.Equal(rrStrings(f.Answer), rrStrings(g.Answer)) ||
					!slices.Equal(rrStrings(f.Ns), rrStrings(g.Ns)) ||
					!slices.Equal(rrStrings(f.Extra), rrStrings(g.Extra)) ||
					(f.IsEdns0() == nil) != (g.IsEdns0() == nil) ||
					(edns && f.IsEdns0().Do() != g.IsEdns0().Do()) {
					t.Errorf("%s %s edns=%v: fast\n%v\ngeneral\n%v", name, dns.TypeToString[qtype], edns, f, g)
				}
			}
		}
	}
}

func TestTruncationAndTCP(t *testing.T) {
	s := newTestServer(t, nil)
	var eps []netip.Addr
	for i := range 100 {
		eps = append(eps, netip.AddrFrom4([4]byte{10, 244, byte(i / 200), byte(1 + i%200)}))
	}
	if _, err := s.Update([]Service{{Namespace: "default", Name: "many", Endpoints: eps}}, nil); err != nil {
		t.Fatal(err)
	}
	name := "many.default.svc.cluster.local."
	udp := ask(t, "udp", s.Addrs()[0], question(name, dns.TypeA))
	if !udp.Truncated || len(udp.Answer) >= 100 {
		t.Errorf("UDP: TC %v with %d answers, want truncated", udp.Truncated, len(udp.Answer))
	}
	tcp := ask(t, "tcp", s.Addrs()[0], question(name, dns.TypeA))
	if tcp.Truncated || len(tcp.Answer) != 100 {
		t.Errorf("TCP: TC %v with %d answers, want all 100", tcp.Truncated, len(tcp.Answer))
	}
}

func TestUpdateSeenByNextQuery(t *testing.T) {
	s := newTestServer(t, nil)
	addr := s.Addrs()[0]
	name := "api.default.svc.cluster.local."
	if r := ask(t, "udp", addr, question(name, dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	before := s.zone.Load().soa.Serial
	for _, ip := range []string{"10.96.0.20", "10.96.0.21"} {
		if _, err := s.Update([]Service{{Namespace: "default", Name: "api", ClusterIP: netip.MustParseAddr(ip)}}, nil); err != nil {
			t.Fatal(err)
		}
		r := ask(t, "udp", addr, question(name, dns.TypeA))
		if got := rrStrings(r.Answer); len(got) != 1 || !strings.HasSuffix(got[0], " A "+ip) {
			t.Fatalf("after update to %s: %q", ip, got)
		}
	}
	if after := s.zone.Load().soa.Serial; after <= before {
		t.Errorf("SOA serial %d after updates, want more than %d", after, before)
	}
	if _, err := s.Update(nil, nil); err != nil {
		t.Fatal(err)
	}
	if r := ask(t, "udp", addr, question(name, dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("after removal: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestUpdateSkipsBadEntries(t *testing.T) {
	s, err := New(Config{Domain: "Cluster.Local.", Listen: []string{"127.0.0.1:0"}, TTL: time.Second, NegativeTTL: time.Second,
		ForwardTimeout: time.Second, MaxForwards: 1, UDPSize: 512, MaxTCPConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ip := netip.MustParseAddr("10.0.0.1")
	services := []Service{
		{Namespace: "default", Name: "ok", ClusterIP: ip},
		{Namespace: "default", Name: "ok", ClusterIP: ip},       // duplicate
		{Namespace: "default", Name: "bad_name", ClusterIP: ip}, // not a label
		{Namespace: "a.b", Name: "x", ClusterIP: ip},            // namespace with a dot
		{Namespace: "default", Name: strings.Repeat("x", 64)},   // label too long
		{Namespace: "default", Name: "p", Ports: []Port{{Name: "x", Protocol: "icmp", Port: 1}}},
	}
	pods := []Pod{{Namespace: "default", Name: "a.b", IP: ip}, {Namespace: "default", Name: "-x", IP: ip}}
	_, err = s.Update(services, pods)
	if err == nil || !strings.Contains(err.Error(), "skipped 6 of 8") {
		t.Fatalf("err %v, want 6 of 8 skipped", err)
	}
	z := s.zone.Load()
	if z.origin != "cluster.local." {
		t.Errorf("origin %q, want cluster.local.", z.origin)
	}
	for _, name := range []string{"ok.default.svc.cluster.local.", "p.default.svc.cluster.local.", "a.b.default.pod.cluster.local.", "b.default.pod.cluster.local."} {
		if z.nodes[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}

func TestForwarding(t *testing.T) {
	up := startFakeUpstream(t)
	s := newTestServer(t, func(c *Config) {
		c.Upstreams = []string{up.addr.String()}
		c.ForwardTimeout = 500 * time.Millisecond
	})
	tests := []struct {
		name    string
		qname   string
		rcode   int
		answers int
		viaTCP  bool // the upstream is asked again over TCP
	}{
		{name: "answered upstream", qname: "example.com.", answers: 1},
		{name: "mixed case", qname: "ExAmple.COM.", answers: 1},
		{name: "NXDOMAIN upstream passed on", qname: "nx.example.com.", rcode: dns.RcodeNameError},
		{name: "truncated over UDP: retried over TCP", qname: "big.example.com.", answers: 40, viaTCP: true},
		{name: "upstream timeout: SERVFAIL", qname: "slow.example.com.", rcode: dns.RcodeServerFailure},
	}
	for _, tr := range transports {
		for _, tc := range tests {
			t.Run(tr+"/"+tc.name, func(t *testing.T) {
				tcpBefore := up.tcp.Load()
				m := question(tc.qname, dns.TypeA)
				m.SetEdns0(4096, false)
				r := exchangeVia(t, s, tr, m)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if r.Id != m.Id || r.Question[0].Name != tc.qname {
					t.Errorf("ID %d question %v, want %d and %s", r.Id, r.Question, m.Id, tc.qname)
				}
				if len(r.Answer) != tc.answers {
					t.Errorf("%d answers, want %d", len(r.Answer), tc.answers)
				}
				if (up.tcp.Load() > tcpBefore) != tc.viaTCP {
					t.Errorf("upstream asked over TCP: %v, want %v", up.tcp.Load() > tcpBefore, tc.viaTCP)
				}
			})
		}
	}
	st := s.Stats()
	if st.Forwarded == 0 || st.ForwardFailures == 0 || st.Responses["SERVFAIL"] == 0 || st.Responses["NOERROR"] == 0 {
		t.Errorf("stats %+v: want forwards, failures, SERVFAIL and NOERROR counted", st)
	}
}

func TestClusterNamesNeverForwarded(t *testing.T) {
	up := startFakeUpstream(t)
	s := newTestServer(t, func(c *Config) { c.Upstreams = []string{up.addr.String()} })
	names := []string{
		"nope.default.svc.cluster.local.", "NOPE.CLUSTER.LOCAL.", "cluster.local.", "a.b.pod.cluster.local.",
		`we\.b.default.svc.cluster.local.`, "_x._tcp.nope.default.svc.cluster.local.", "1.2.3.4.cluster.local.",
	}
	for _, tr := range transports {
		for _, name := range names {
			for _, qtype := range []uint16{dns.TypeA, dns.TypeMX, dns.TypeANY} {
				r := exchangeVia(t, s, tr, question(name, qtype))
				if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused || !r.Authoritative {
					t.Errorf("%s %s %s: %s AA %v, want an authoritative answer", tr, name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], r.Authoritative)
				}
			}
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Errorf("upstream got %d queries for cluster names, want none", n)
	}
	// And a name outside does reach it, so the check above means something.
	if r := exchangeVia(t, s, "udp", question("example.org.", dns.TypeA)); r.Rcode != dns.RcodeSuccess || up.queries.Load() != 1 {
		t.Errorf("example.org: %s, upstream queries %d; want NOERROR and 1", dns.RcodeToString[r.Rcode], up.queries.Load())
	}
}

func TestNoUpstreamRefused(t *testing.T) {
	s := newTestServer(t, nil)
	for _, tr := range transports {
		if r := exchangeVia(t, s, tr, question("example.com.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
			t.Errorf("%s: %s, want REFUSED with no upstream", tr, dns.RcodeToString[r.Rcode])
		}
	}
}

func TestForwardLimit(t *testing.T) {
	up := startFakeUpstream(t)
	s := newTestServer(t, func(c *Config) {
		c.Upstreams = []string{up.addr.String()}
		c.MaxForwards = 1
		c.ForwardTimeout = 2 * time.Second
	})
	// Hold the only slot with a query the upstream never answers.
	held := make(chan *dns.Msg, 1)
	go func() {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		r, _, _ := c.Exchange(question("slow.example.com.", dns.TypeA), s.Addrs()[0].String())
		held <- r
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(s.fwdSem) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow query never reached the forwarder")
		}
		time.Sleep(time.Millisecond)
	}
	if r := ask(t, "udp", s.Addrs()[0], question("example.com.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("second forward: %s, want REFUSED while the limit is reached", dns.RcodeToString[r.Rcode])
	}
	// Cluster names are still answered.
	if r := ask(t, "udp", s.Addrs()[0], question("web.default.svc.cluster.local.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("cluster name: %s, want NOERROR", dns.RcodeToString[r.Rcode])
	}
	if st := s.Stats(); st.ForwardRefused != 1 {
		t.Errorf("ForwardRefused %d, want 1", st.ForwardRefused)
	}
	if r := <-held; r == nil || r.Rcode != dns.RcodeServerFailure {
		t.Errorf("held query: %v, want SERVFAIL", r)
	}
}

func TestMalformedQueries(t *testing.T) {
	s := newTestServer(t, nil)
	conn, err := net.Dial("udp", s.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	good, _ := question("web.default.svc.cluster.local.", dns.TypeA).Pack()
	response := slices.Clone(good)
	response[2] |= flagQR
	twoQ, _ := (&dns.Msg{MsgHdr: dns.MsgHdr{Id: 7}, Question: []dns.Question{{Name: "a.", Qtype: 1, Qclass: 1}, {Name: "b.", Qtype: 1, Qclass: 1}}}).Pack()
	notify := slices.Clone(good)
	notify[2] |= dns.OpcodeNotify << 3
	tests := []struct {
		name  string
		pkt   []byte
		rcode int // -1: no answer
	}{
		{"short", []byte{1, 2, 3}, -1},
		{"a response", response, -1},
		{"two questions", twoQ, dns.RcodeFormatError},
		{"cut question", good[:len(good)-3], dns.RcodeFormatError},
		{"notify", notify, dns.RcodeNotImplemented},
	}
	buf := make([]byte, 4096)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Write(tc.pkt); err != nil {
				t.Fatal(err)
			}
			// A good query after each: its answer, or the bad one's, comes
			// first; nothing needs a timeout to prove silence.
			if _, err := conn.Write(good); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			r := new(dns.Msg)
			if err := r.Unpack(buf[:n]); err != nil && tc.rcode != -1 {
				// Header-only replies parse.
				t.Fatalf("reply does not parse: %v", err)
			}
			if tc.rcode == -1 {
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					t.Errorf("first reply %s with %d answers: want the good query's, the bad one unanswered", dns.RcodeToString[r.Rcode], len(r.Answer))
				}
				return
			}
			if r.Rcode != tc.rcode || n > len(tc.pkt) {
				t.Errorf("reply %s of %d bytes, want %s no longer than the query", dns.RcodeToString[r.Rcode], n, dns.RcodeToString[tc.rcode])
			}
			if _, err := conn.Read(buf); err != nil { // the good query's
				t.Fatal(err)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	base := DefaultConfig()
	base.Listen = []string{"10.88.0.1:53"}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"default with a listen address", func(*Config) {}, ""},
		{"no listen address", func(c *Config) { c.Listen = nil }, "no listen address"},
		{"wildcard", func(c *Config) { c.Listen = []string{"0.0.0.0:53"} }, "wildcard"},
		{"IPv6 wildcard", func(c *Config) { c.Listen = []string{"[::]:53"} }, "wildcard"},
		{"no port", func(c *Config) { c.Listen = []string{"10.88.0.1"} }, "IP:port"},
		{"bad domain", func(c *Config) { c.Domain = "clu_ster.local" }, "not a DNS label"},
		{"upstream by name", func(c *Config) { c.Upstreams = []string{"dns.google"} }, "by address"},
		{"TTL", func(c *Config) { c.TTL = 0 }, "TTL"},
		{"UDP size", func(c *Config) { c.UDPSize = 100 }, "UDPSize"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			s, err := New(c)
			if s != nil {
				defer s.Close()
			}
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
	// Upstreams given as IP or IP:port.
	c := base
	c.Upstreams = []string{"192.0.2.53", "192.0.2.54:5353", "2001:db8::53", "[2001:db8::54]:53"}
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := "[192.0.2.53:53 192.0.2.54:5353 [2001:db8::53]:53 [2001:db8::54]:53]"
	if got := fmt.Sprint(s.Upstreams()); got != want {
		t.Errorf("upstreams %s, want %s", got, want)
	}
}

func TestStartAndClose(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.ResolvConf = ""
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	addr := s.Addrs()[0]
	ask(t, "udp", addr, question("web.default.svc.cluster.local.", dns.TypeA))
	cancel() // ends the server, as Close does
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("server still running 5 s after its context ended")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	// The port is free again: nothing is left listening.
	pc, err := net.ListenPacket("udp4", addr.String())
	if err != nil {
		t.Fatalf("UDP port still bound after Close: %v", err)
	}
	pc.Close()
	ln, err := net.Listen("tcp4", addr.String())
	if err != nil {
		t.Fatalf("TCP port still bound after Close: %v", err)
	}
	ln.Close()
}
