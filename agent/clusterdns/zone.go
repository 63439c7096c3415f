package clusterdns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// Service is one Service as the DNS server sees it.
type Service struct {
	Namespace string
	Name      string
	// ClusterIP is the service's virtual IP; the zero Addr for a headless
	// service, whose name then resolves to its Endpoints.
	ClusterIP netip.Addr
	// Ports with a Name get SRV records.
	Ports []Port
	// Endpoints are the addresses of the service's ready pods. Only a
	// headless service's name resolves to them.
	Endpoints []netip.Addr
}

// Port is one port of a Service.
type Port struct {
	// Name is the port's name; unnamed ports get no SRV record.
	Name string
	// Protocol is "TCP" (when empty), "UDP" or "SCTP", in any case.
	Protocol string
	Port     uint16
}

// Pod is one pod as the DNS server sees it. A pod without an IP has no name.
type Pod struct {
	Namespace string
	Name      string
	IP        netip.Addr
}

// Limits of the SOA record, as CoreDNS's kubernetes plugin sets them.
const (
	soaRefresh = 7200
	soaRetry   = 1800
	soaExpire  = 86400
	// maxUpdateErrors bounds the errors Update describes; it counts the rest.
	maxUpdateErrors = 10
)

// Indexes of node.wire, by the query type the fast path answers.
const (
	wireA = iota
	wireAAAA
	wireSRV
	numWire
)

// zone is an immutable index of the cluster's names. Queries read it without
// locks; Update replaces it whole.
type zone struct {
	origin string // canonical domain, "cluster.local."
	soa    *dns.SOA
	soaSet []dns.RR // soa alone, clipped so that appends copy
	nodes  map[string]*node
	// nxBody is the authority section of an NXDOMAIN answer (the SOA). Its
	// first two bytes are a compression pointer to the domain inside the
	// question, which the fast path writes for each query.
	nxBody []byte
	// nodata holds the authority section of NODATA answers (the SOA, its
	// owner pointing into the question) by question length, shared by
	// all the names of that length.
	nodata map[uint16][]byte
}

// node is one name of the zone: with records, or empty with names below it
// (an empty non-terminal, which answers NODATA rather than NXDOMAIN).
// The record slices are shared by every answer and never written after
// buildZone; they are clipped so that an append by a reader copies them.
type node struct {
	name                     string // canonical, lowercase with the final dot
	a, aaaa, srv, extra, any []dns.RR
	// wire holds for the fast path each answer encoded after the question,
	// owner names compressed to point into the question. Its bytes depend
	// only on the question's length, which is the name's length whatever
	// the case the client used.
	wire [numWire]wireAnswer
}

// wireAnswer is an answer's sections after the question, already encoded.
type wireAnswer struct {
	body       []byte
	an, ns, ar uint16
}

// zoneBuilder collects the records of a zone being built.
type zoneBuilder struct {
	z       *zone
	ttl     uint32
	owned   map[string]bool // names given records, to refuse duplicates
	errs    []error
	skipped int
}

// buildZone indexes services and pods under origin. Entries that cannot be
// named (bad names, duplicates) are skipped and described in the error; the
// zone holds all the others.
func buildZone(origin string, ttl, negTTL, serial uint32, services []Service, pods []Pod) (*zone, error) {
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
		Ns:      "ns.dns." + origin,
		Mbox:    "hostmaster." + origin,
		Serial:  serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  negTTL,
	}
	b := &zoneBuilder{
		z: &zone{
			origin: origin,
			soa:    soa,
			soaSet: []dns.RR{soa},
			nodes:  make(map[string]*node, len(services)*2+len(pods)+8),
		},
		ttl:   ttl,
		owned: make(map[string]bool, len(services)+len(pods)),
	}
	b.node(origin)
	b.node("svc." + origin)
	b.node("pod." + origin)
	for i := range services {
		b.service(&services[i])
	}
	for i := range pods {
		b.pod(&pods[i])
	}
	z := b.z
	z.nxBody = appendSOA(nil, 0, soa)
	z.nodata = make(map[uint16][]byte)
	for _, n := range z.nodes {
		n.a, n.aaaa, n.srv, n.extra = slices.Clip(n.a), slices.Clip(n.aaaa), slices.Clip(n.srv), slices.Clip(n.extra)
		n.any = slices.Clip(slices.Concat(n.a, n.aaaa, n.srv))
		n.encode(z)
	}
	if b.skipped == 0 {
		return z, nil
	}
	err := errors.Join(b.errs...)
	if b.skipped > len(b.errs) {
		err = errors.Join(err, fmt.Errorf("and %d more", b.skipped-len(b.errs)))
	}
	return z, fmt.Errorf("clusterdns: skipped %d of %d services and pods that cannot be named: %w", b.skipped, len(services)+len(pods), err)
}

// what names an entry in errors; it is formatted only when one is reported.
type what struct{ kind, namespace, name string }

func (w what) String() string { return w.kind + " " + w.namespace + "/" + w.name }

func (b *zoneBuilder) fail(format string, args ...any) {
	b.skipped++
	if len(b.errs) < maxUpdateErrors {
		b.errs = append(b.errs, fmt.Errorf(format, args...))
	}
}

// node returns the node of name, making it and every empty node between it
// and the origin.
func (b *zoneBuilder) node(name string) *node {
	n := b.z.nodes[name]
	if n != nil {
		return n
	}
	n = &node{name: name}
	b.z.nodes[name] = n
	if name != b.z.origin {
		_, parent, _ := strings.Cut(name, ".")
		b.node(parent)
	}
	return n
}

// claim makes the node of a name that gets records, refusing a second owner.
func (b *zoneBuilder) claim(name string, what what) *node {
	if len(name) > 254 { // 253 characters and the final dot
		b.fail("%s: name %q is longer than 253 characters", what, name)
		return nil
	}
	if b.owned[name] {
		b.fail("%s: name %q is given twice; keeping the first", what, name)
		return nil
	}
	b.owned[name] = true
	return b.node(name)
}

func (b *zoneBuilder) addrRRs(n *node, addrs []netip.Addr) {
	var seen map[netip.Addr]bool // only for long lists: most have one address
	if len(addrs) > 1 {
		seen = make(map[netip.Addr]bool, len(addrs))
	}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.Zone() != "" || seen[a] {
			continue
		}
		if seen != nil {
			seen[a] = true
		}
		if a.Is4() {
			n.a = append(n.a, &dns.A{Hdr: dns.RR_Header{Name: n.name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: b.ttl}, A: a.AsSlice()})
		} else {
			n.aaaa = append(n.aaaa, &dns.AAAA{Hdr: dns.RR_Header{Name: n.name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: b.ttl}, AAAA: a.AsSlice()})
		}
	}
}

func (b *zoneBuilder) service(s *Service) {
	ns, name := strings.ToLower(s.Namespace), strings.ToLower(s.Name)
	what := what{"service", s.Namespace, s.Name}
	if !isLabel(ns) || !isLabel(name) {
		b.fail("%s: namespace and name must be DNS labels (a-z, 0-9, '-', at most 63)", what)
		return
	}
	n := b.claim(name+"."+ns+".svc."+b.z.origin, what)
	if n == nil {
		return
	}
	if s.ClusterIP.IsValid() {
		b.addrRRs(n, []netip.Addr{s.ClusterIP})
	} else {
		b.addrRRs(n, s.Endpoints)
	}
	for _, p := range s.Ports {
		if p.Name == "" {
			continue
		}
		pname, proto := strings.ToLower(p.Name), strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if !isLabel(pname) || (proto != "tcp" && proto != "udp" && proto != "sctp") || p.Port == 0 {
			b.fail("%s: port %q/%s %d: name must be a DNS label, protocol TCP, UDP or SCTP, port not 0", what, p.Name, p.Protocol, p.Port)
			continue
		}
		sn := b.claim("_"+pname+"._"+proto+"."+n.name, what)
		if sn == nil {
			continue
		}
		sn.srv = append(sn.srv, &dns.SRV{
			Hdr:      dns.RR_Header{Name: sn.name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: b.ttl},
			Priority: 0, Weight: 100, Port: p.Port, Target: n.name,
		})
		// The service's addresses: n's records are complete here, as
		// nothing else adds to a service's name.
		sn.extra = slices.Concat(n.a, n.aaaa)
	}
}

func (b *zoneBuilder) pod(p *Pod) {
	ns, name := strings.ToLower(p.Namespace), strings.ToLower(p.Name)
	what := what{"pod", p.Namespace, p.Name}
	if !isLabel(ns) || !isSubdomain(name) {
		b.fail("%s: namespace must be a DNS label and name a DNS subdomain (a-z, 0-9, '-', '.')", what)
		return
	}
	if !p.IP.IsValid() {
		return // not running yet: no name
	}
	n := b.claim(name+"."+ns+".pod."+b.z.origin, what)
	if n == nil {
		return
	}
	b.addrRRs(n, []netip.Addr{p.IP})
}

// isSubdomain reports whether s is dot-separated DNS labels.
func isSubdomain(s string) bool {
	for l := range strings.SplitSeq(s, ".") {
		if !isLabel(l) {
			return false
		}
	}
	return true
}

// has reports whether a lowercase name with its final dot is in the domain.
func (z *zone) has(name string) bool {
	return name == z.origin ||
		len(name) > len(z.origin) && strings.HasSuffix(name, z.origin) && name[len(name)-len(z.origin)-1] == '.'
}

// encode fills n.wire for the fast path.
func (n *node) encode(z *zone) {
	// Offsets in a response whose question starts at 12 with n's name, which
	// is plain (no escapes), so its wire form is one byte longer than its text.
	originPtr := uint16(12 + len(n.name) - len(z.origin))
	soa := z.nodata[originPtr]
	if soa == nil {
		soa = slices.Clone(z.nxBody)
		binary.BigEndian.PutUint16(soa, 0xC000|originPtr)
		z.nodata[originPtr] = soa
	}
	nodata := wireAnswer{body: soa, ns: 1}
	set := func(i int, answer, extra []dns.RR) {
		if len(answer) == 0 {
			n.wire[i] = nodata
			return
		}
		var w wireAnswer
		for _, rr := range answer {
			w.body = appendRR(w.body, 12, rr)
			w.an++
		}
		for _, rr := range extra {
			// Additional records are the SRV target's, a suffix of the
			// question's name.
			w.body = appendRR(w.body, uint16(12+len(n.name)-len(rr.Header().Name)), rr)
			w.ar++
		}
		n.wire[i] = w
	}
	set(wireA, n.a, nil)
	set(wireAAAA, n.aaaa, nil)
	set(wireSRV, n.srv, n.extra)
}

// appendRR encodes an A, AAAA or SRV record whose owner is at offset ptr of
// the message.
func appendRR(b []byte, ptr uint16, rr dns.RR) []byte {
	h := rr.Header()
	b = binary.BigEndian.AppendUint16(b, 0xC000|ptr)
	b = binary.BigEndian.AppendUint16(b, h.Rrtype)
	b = binary.BigEndian.AppendUint16(b, h.Class)
	b = binary.BigEndian.AppendUint32(b, h.Ttl)
	switch rr := rr.(type) {
	case *dns.A:
		b = binary.BigEndian.AppendUint16(b, 4)
		b = append(b, rr.A.To4()...)
	case *dns.AAAA:
		b = binary.BigEndian.AppendUint16(b, 16)
		b = append(b, rr.AAAA.To16()...)
	case *dns.SRV:
		// RFC 2782: the target is not compressed.
		target := appendName(nil, rr.Target)
		b = binary.BigEndian.AppendUint16(b, uint16(6+len(target)))
		b = binary.BigEndian.AppendUint16(b, rr.Priority)
		b = binary.BigEndian.AppendUint16(b, rr.Weight)
		b = binary.BigEndian.AppendUint16(b, rr.Port)
		b = append(b, target...)
	default:
		panic(fmt.Sprintf("clusterdns: appendRR of %T", rr)) // only the builder calls it
	}
	return b
}

// appendSOA encodes the zone's SOA with its owner at offset ptr.
func appendSOA(b []byte, ptr uint16, soa *dns.SOA) []byte {
	b = binary.BigEndian.AppendUint16(b, 0xC000|ptr)
	b = binary.BigEndian.AppendUint16(b, dns.TypeSOA)
	b = binary.BigEndian.AppendUint16(b, dns.ClassINET)
	b = binary.BigEndian.AppendUint32(b, soa.Hdr.Ttl)
	rdata := appendName(nil, soa.Ns)
	rdata = appendName(rdata, soa.Mbox)
	for _, v := range []uint32{soa.Serial, soa.Refresh, soa.Retry, soa.Expire, soa.Minttl} {
		rdata = binary.BigEndian.AppendUint32(rdata, v)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(rdata)))
	return append(b, rdata...)
}

// appendName encodes a plain name (labels without escapes, final dot).
func appendName(b []byte, name string) []byte {
	for l := range strings.SplitSeq(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}
