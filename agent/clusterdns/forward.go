package clusterdns

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// upstreamUDPSize is the EDNS size asked of upstreams, the DNS flag day 2020
// value that avoids IP fragmentation.
const upstreamUDPSize = 1232

// errNoUpstream is the error of a forward with no upstream configured.
var errNoUpstream = errors.New("no upstream resolver")

// forwarder sends queries to upstream resolvers in order, over UDP and again
// over TCP when the UDP answer is truncated.
type forwarder struct {
	upstreams []netip.AddrPort
	timeout   time.Duration
	udp, tcp  *dns.Client
}

func newForwarder(upstreams []netip.AddrPort, timeout time.Duration) *forwarder {
	return &forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		udp:       &dns.Client{Net: "udp", UDPSize: upstreamUDPSize, Timeout: timeout},
		tcp:       &dns.Client{Net: "tcp", Timeout: timeout},
	}
}

// exchange asks the upstreams for req's question and returns the first
// answer, with req's ID and question. The upstream query is built afresh (a
// random ID per try, EDNS with the client's DO bit, none of the client's EDNS
// options) so nothing of the client's packet but the question goes out.
func (f *forwarder) exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	if len(f.upstreams) == 0 {
		return nil, errNoUpstream
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	q := new(dns.Msg)
	q.RecursionDesired = true
	q.CheckingDisabled = req.CheckingDisabled
	q.Question = []dns.Question{req.Question[0]}
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	q.SetEdns0(upstreamUDPSize, do)
	var errs []error
	for i, up := range f.upstreams {
		// Share what time is left among the upstreams not yet tried, so a
		// dead first resolver does not eat the whole budget.
		deadline, _ := ctx.Deadline()
		tctx, tcancel := context.WithTimeout(ctx, time.Until(deadline)/time.Duration(len(f.upstreams)-i))
		r, err := f.try(tctx, q, up)
		tcancel()
		if err == nil {
			r.Id = req.Id
			r.Question = []dns.Question{req.Question[0]}
			// Drop the upstream's OPT (and anything signed for it); the
			// server adds its own for clients that use EDNS.
			r.Extra = slices.DeleteFunc(r.Extra, func(rr dns.RR) bool {
				t := rr.Header().Rrtype
				return t == dns.TypeOPT || t == dns.TypeTSIG
			})
			if r.Rcode > 0xF { // extended RCODEs need the upstream's OPT
				return nil, fmt.Errorf("%s: extended rcode %d", up, r.Rcode)
			}
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// try asks one upstream, over UDP and then over TCP if the answer is truncated.
func (f *forwarder) try(ctx context.Context, q *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	q.Id = dns.Id()
	r, err := exchange(ctx, f.udp, q, up.String())
	if err == nil && r.Truncated {
		r, err = exchange(ctx, f.tcp, q, up.String())
	}
	if err != nil {
		return nil, err
	}
	if !r.Response || len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || r.Question[0].Qclass != q.Question[0].Qclass {
		return nil, errors.New("answer does not match the question")
	}
	return r, nil
}

// exchange is Client.ExchangeContext, but it also stops waiting when ctx is
// cancelled (the client only heeds deadlines), so Close does not wait for
// upstreams.
func exchange(ctx context.Context, c *dns.Client, q *dns.Msg, addr string) (*dns.Msg, error) {
	co, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { _ = co.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, q, co)
	return r, err
}

// maxResolvConf bounds how much of a resolv.conf is read.
const maxResolvConf = 64 << 10

// readUpstreams returns the nameservers of a resolv.conf, port 53, skipping
// any in self (the server's own addresses) so that forwarding cannot loop
// straight back.
func readUpstreams(path string, self []netip.AddrPort) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("clusterdns: read upstreams: %w; set Upstreams or ResolvConf", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxResolvConf))
	if err != nil {
		return nil, fmt.Errorf("clusterdns: read upstreams from %s: %w", path, err)
	}
	return parseResolvConf(data, self), nil
}

func parseResolvConf(data []byte, self []netip.AddrPort) []netip.AddrPort {
	var ups []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		ap := netip.AddrPortFrom(a.Unmap(), 53)
		if slices.Contains(ups, ap) || pointsAt(ap, self) {
			continue
		}
		ups = append(ups, ap)
	}
	return ups
}

// pointsAt reports whether a query to up would reach one of the addresses self.
func pointsAt(up netip.AddrPort, self []netip.AddrPort) bool {
	for _, s := range self {
		if s.Port() == up.Port() && (s.Addr() == up.Addr().WithZone("") || s.Addr().IsUnspecified()) {
			return true
		}
	}
	return false
}
