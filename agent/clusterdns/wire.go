package clusterdns

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// DNS header flag bits, in the two bytes at offset 2.
const (
	flagQR = 0x80 // byte 2
	flagAA = 0x04 // byte 2
	flagRD = 0x01 // byte 2
	flagRA = 0x80 // byte 3
	flagCD = 0x10 // byte 3

	headerLen = 12
	optLen    = 11 // an OPT record without options
)

// query is what the fast path reads of a query.
type query struct {
	end     int // offset just past the question
	qtype   uint16
	edns    bool
	do      bool // EDNS DNSSEC OK, echoed (RFC 3225)
	udpSize int
}

// parseQuery reads a query the fast path can answer: a query (opcode 0) with
// one question of class IN whose name is plain (letters, digits, '-', '_',
// no compression), no answer or authority records, and at most an EDNS(0) OPT
// record. It writes the name lowercased, dotted, with its final dot, into key,
// which must hold 256 bytes. Anything else returns ok false, for the general
// path to handle.
func parseQuery(pkt []byte, key *[256]byte) (q query, keyLen int, ok bool) {
	if len(pkt) < headerLen+5 || pkt[2]&(flagQR|0x78) != 0 ||
		binary.BigEndian.Uint16(pkt[4:]) != 1 || // QDCOUNT
		binary.BigEndian.Uint16(pkt[6:]) != 0 || binary.BigEndian.Uint16(pkt[8:]) != 0 {
		return q, 0, false
	}
	arcount := binary.BigEndian.Uint16(pkt[10:])
	if arcount > 1 {
		return q, 0, false
	}
	off := headerLen
	for {
		if off >= len(pkt) {
			return q, 0, false
		}
		l := int(pkt[off])
		off++
		if l == 0 {
			break
		}
		// No compression pointers or extended labels; the whole name,
		// with the final dot, fits in 254 bytes (255 on the wire).
		if l > 63 || off+l > len(pkt) || keyLen+l+1 > 254 {
			return q, 0, false
		}
		for _, c := range pkt[off : off+l] {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			default:
				return q, 0, false
			}
			key[keyLen] = c
			keyLen++
		}
		key[keyLen] = '.'
		keyLen++
		off += l
	}
	if keyLen == 0 || off+4 > len(pkt) || binary.BigEndian.Uint16(pkt[off+2:]) != dns.ClassINET {
		return q, 0, false // the root goes upstream, other classes the general path
	}
	q.qtype = binary.BigEndian.Uint16(pkt[off:])
	off += 4
	q.end = off
	if arcount == 1 {
		// OPT: root owner, type 41, class = UDP size, TTL = extended RCODE,
		// version, flags; RDATA options (cookies and the like) are ignored.
		if off+optLen > len(pkt) || pkt[off] != 0 || binary.BigEndian.Uint16(pkt[off+1:]) != dns.TypeOPT ||
			pkt[off+6] != 0 { // version 0 only; the general path answers BADVERS
			return q, 0, false
		}
		q.edns = true
		q.udpSize = int(binary.BigEndian.Uint16(pkt[off+3:]))
		q.do = pkt[off+7]&0x80 != 0
		off += optLen + int(binary.BigEndian.Uint16(pkt[off+9:]))
	}
	if off != len(pkt) {
		return q, 0, false
	}
	return q, keyLen, true
}

// fastAnswer appends to out the answer to pkt when it is a query for a name in
// the zone (or an absent name under the domain) of type A, AAAA or SRV whose
// answer fits in a UDP response of the client's size (capped at maxUDP). It
// returns the answer's RCODE, and ok false for the general path to handle the
// query instead. It does not allocate when out has room.
func (z *zone) fastAnswer(pkt, out []byte, maxUDP int) (resp []byte, rcode int, ok bool) {
	var key [256]byte
	q, keyLen, ok := parseQuery(pkt, &key)
	if !ok {
		return nil, 0, false
	}
	name := key[:keyLen]
	if !z.hasBytes(name) {
		return nil, 0, false // forwarded by the general path
	}
	var w *wireAnswer
	n := z.nodes[string(name)] // no allocation: the compiler reads the bytes in place
	switch {
	case n == nil:
		rcode = dns.RcodeNameError
	case q.qtype == dns.TypeA:
		w = &n.wire[wireA]
	case q.qtype == dns.TypeAAAA:
		w = &n.wire[wireAAAA]
	case q.qtype == dns.TypeSRV:
		w = &n.wire[wireSRV]
	default:
		return nil, 0, false
	}
	limit := dns.MinMsgSize
	if q.edns {
		limit = min(max(q.udpSize, dns.MinMsgSize), maxUDP)
	}
	size := q.end
	if w != nil {
		size += len(w.body)
	} else {
		size += len(z.nxBody)
	}
	if q.edns {
		size += optLen
	}
	if size > limit {
		return nil, 0, false // the general path truncates
	}
	out = append(out, pkt[:q.end]...)
	out[2] = flagQR | flagAA | pkt[2]&flagRD
	out[3] = flagRA | pkt[3]&flagCD | byte(rcode)
	var an, ns, ar uint16
	if w != nil {
		an, ns, ar = w.an, w.ns, w.ar
		out = append(out, w.body...)
	} else {
		ns = 1
		at := len(out)
		out = append(out, z.nxBody...)
		// Point the SOA's owner at the domain, the tail of the question.
		binary.BigEndian.PutUint16(out[at:], 0xC000|uint16(headerLen+keyLen-len(z.origin)))
	}
	if q.edns {
		ar++
		var flags byte
		if q.do {
			flags = 0x80
		}
		out = append(out, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT),
			byte(maxUDP>>8), byte(maxUDP), 0, 0, flags, 0, 0, 0)
	}
	binary.BigEndian.PutUint16(out[6:], an)
	binary.BigEndian.PutUint16(out[8:], ns)
	binary.BigEndian.PutUint16(out[10:], ar)
	return out, rcode, true
}

// hasBytes is has for a name being read from a packet.
func (z *zone) hasBytes(name []byte) bool {
	o := z.origin
	if len(name) < len(o) || string(name[len(name)-len(o):]) != o {
		return false
	}
	return len(name) == len(o) || name[len(name)-len(o)-1] == '.'
}
