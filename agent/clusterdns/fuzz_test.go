package clusterdns

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandler feeds arbitrary datagrams to the UDP path (fast path, header
// checks, miekg/dns parsing, general path) and, when miekg/dns can parse them,
// to ServeDNS. Neither may panic; every reply must parse and answer the
// query's ID; and when the fast path answers, the general path must say the
// same. `go test` runs the seeds; `go test -fuzz FuzzHandler` explores.
func FuzzHandler(f *testing.F) {
	seed := func(name string, qtype uint16, edns bool) {
		m := question(name, qtype)
		if edns {
			m.SetEdns0(1232, true)
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed("web.default.svc.cluster.local.", dns.TypeA, false)
	seed("WEB.default.svc.cluster.local.", dns.TypeA, true)
	seed("db.default.svc.cluster.local.", dns.TypeA, false)
	seed("_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, true)
	seed("web-0.default.pod.cluster.local.", dns.TypeA, false)
	seed("v6.prod.svc.cluster.local.", dns.TypeAAAA, false)
	seed("nope.default.svc.cluster.local.", dns.TypeA, false)
	seed("default.svc.cluster.local.", dns.TypeTXT, true)
	seed("cluster.local.", dns.TypeSOA, false)
	seed("example.com.", dns.TypeA, false) // forwarded: REFUSED here, no upstream
	seed(".", dns.TypeNS, false)
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1}) // pointer loop

	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.ResolvConf = ""
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	services, pods := testView()
	if _, err := s.Update(services, pods); err != nil {
		f.Fatal(err)
	}
	c := new(counters)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fast, _, fastOK := s.zone.Load().fastAnswer(pkt, nil, s.cfg.UDPSize)
		reply, fwd := s.handleUDP(pkt, make([]byte, 0, 4096+optLen), c)
		if reply != nil {
			r := new(dns.Msg)
			if err := r.Unpack(reply); err != nil && len(reply) != headerLen {
				t.Fatalf("reply does not parse: %v\n% x", err, reply)
			}
			if !r.Response || len(pkt) < 2 || r.Id != uint16(pkt[0])<<8|uint16(pkt[1]) {
				t.Fatalf("reply is not a response to the query: %v", r)
			}
		}
		if fwd != nil {
			rec := &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}
			s.ServeDNS(rec, fwd)
			if rec.msg == nil || rec.msg.Rcode != dns.RcodeRefused {
				t.Fatalf("forward with no upstream: %v, want REFUSED", rec.msg)
			}
		}
		req := new(dns.Msg)
		if req.Unpack(pkt) != nil || req.Response {
			return
		}
		rec := &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}}
		s.ServeDNS(rec, req)
		if rec.msg == nil {
			t.Fatal("ServeDNS wrote nothing")
		}
		b, err := rec.msg.Pack()
		if err != nil {
			t.Fatalf("ServeDNS reply does not pack: %v", err)
		}
		if len(b) > max(s.cfg.UDPSize, dns.MinMsgSize) {
			t.Fatalf("UDP reply of %d bytes", len(b))
		}
		if !fastOK {
			return
		}
		fm := new(dns.Msg)
		if err := fm.Unpack(fast); err != nil {
			t.Fatalf("fast reply does not parse: %v", err)
		}
		g := rec.msg
		if fm.Rcode != g.Rcode || fm.Truncated != g.Truncated ||
			// Names compare without case: the fast path points owner names
			// into the question as the client spelled it.
			!slices.Equal(lowerRRStrings(fm.Answer), lowerRRStrings(g.Answer)) ||
			!slices.Equal(lowerRRStrings(fm.Ns), lowerRRStrings(g.Ns)) ||
			!slices.Equal(lowerRRStrings(fm.Extra), lowerRRStrings(g.Extra)) {
			t.Fatalf("fast path\n%v\ngeneral path\n%v", fm, g)
		}
	})
}

func lowerRRStrings(rrs []dns.RR) []string {
	out := rrStrings(rrs)
	for i := range out {
		out[i] = strings.ToLower(out[i])
	}
	return out
}
