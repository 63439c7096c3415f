package clusterdns

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// Config configures a Server. DefaultConfig gives working values for every
// field but Listen; New validates.
type Config struct {
	// Domain is the cluster domain, "cluster.local" by default. Names under
	// it are answered from the view and never forwarded.
	Domain string
	// Listen are the addresses ("IP:port") served over UDP and TCP, typically
	// the pod bridge's address on port 53. Each must name one IP address, not
	// 0.0.0.0 or ::, so that the server answers only where it is meant to and
	// never becomes an open resolver on the node's other interfaces. Port 0
	// picks a free port (tests); Server.Addrs tells which.
	Listen []string
	// Upstreams are the resolvers ("IP" or "IP:port", port 53 when omitted)
	// that names outside Domain are forwarded to, tried in order. When empty,
	// they are read from ResolvConf when the server starts.
	Upstreams []string
	// ResolvConf is the file whose nameserver lines give the upstreams when
	// Upstreams is empty, "/etc/resolv.conf" by default. Addresses that would
	// reach this server itself (a listen address) are skipped. A loopback
	// resolver such as systemd-resolved's 127.0.0.53 is kept: the server runs
	// in the node's network namespace, where it is reachable. With no upstream
	// at all, names outside Domain get REFUSED.
	ResolvConf string
	// TTL of the answers, 5 s by default (1 s to 1 h): short, as pods come
	// and go.
	TTL time.Duration
	// NegativeTTL is how long NXDOMAIN and NODATA answers may be cached (the
	// SOA's TTL and minimum), 5 s by default (1 s to 1 h).
	NegativeTTL time.Duration
	// ForwardTimeout bounds all upstream tries of one forwarded query
	// together, 2 s by default; past it the client gets SERVFAIL.
	ForwardTimeout time.Duration
	// MaxForwards bounds the forwarded queries in flight, 256 by default;
	// queries beyond it get REFUSED at once.
	MaxForwards int
	// UDPSize is the largest UDP response sent, whatever the client
	// advertises, 1232 by default (512 to 4096); longer answers are truncated
	// so that the client retries over TCP.
	UDPSize int
	// UDPSockets is how many UDP sockets (SO_REUSEPORT), each with its own
	// reader, serve each listen address; 0 means one per CPU (GOMAXPROCS).
	UDPSockets int
	// MaxTCPConns bounds the open TCP connections per listen address, 128 by
	// default.
	MaxTCPConns int
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a configuration with working defaults. Listen must
// still be set.
func DefaultConfig() Config {
	return Config{
		Domain:         "cluster.local",
		ResolvConf:     "/etc/resolv.conf",
		TTL:            5 * time.Second,
		NegativeTTL:    5 * time.Second,
		ForwardTimeout: 2 * time.Second,
		MaxForwards:    256,
		UDPSize:        1232,
		MaxTCPConns:    128,
	}
}

// validate checks the configuration and returns the canonical domain
// ("cluster.local.") and the parsed listen and upstream addresses.
func (c *Config) validate() (origin string, listen, upstreams []netip.AddrPort, err error) {
	var errs []error
	origin, err = canonicalDomain(c.Domain)
	if err != nil {
		errs = append(errs, err)
	}
	if len(c.Listen) == 0 {
		errs = append(errs, errors.New("clusterdns: no listen address; set Listen to the pod bridge's address, e.g. 10.88.0.1:53"))
	}
	for _, l := range c.Listen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			errs = append(errs, fmt.Errorf("clusterdns: listen address %q: %w; give IP:port, e.g. 10.88.0.1:53", l, err))
			continue
		}
		if ap.Addr().IsUnspecified() {
			errs = append(errs, fmt.Errorf("clusterdns: listen address %q is a wildcard; name the one address to serve (the pod bridge's) so the server is not an open resolver", l))
			continue
		}
		listen = append(listen, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	for _, u := range c.Upstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		upstreams = append(upstreams, ap)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"TTL", c.TTL}, {"NegativeTTL", c.NegativeTTL}} {
		if d.v < time.Second || d.v > time.Hour {
			errs = append(errs, fmt.Errorf("clusterdns: %s %v is out of range; give 1s to 1h", d.name, d.v))
		}
	}
	if c.ForwardTimeout <= 0 || c.ForwardTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("clusterdns: ForwardTimeout %v is out of range; give up to 1m", c.ForwardTimeout))
	}
	if c.MaxForwards < 1 || c.MaxForwards > 1<<16 {
		errs = append(errs, fmt.Errorf("clusterdns: MaxForwards %d is out of range; give 1 to 65536", c.MaxForwards))
	}
	if c.UDPSize < 512 || c.UDPSize > 4096 {
		errs = append(errs, fmt.Errorf("clusterdns: UDPSize %d is out of range; give 512 to 4096", c.UDPSize))
	}
	if c.UDPSockets < 0 || c.UDPSockets > 256 {
		errs = append(errs, fmt.Errorf("clusterdns: UDPSockets %d is out of range; give 0 (one per CPU) to 256", c.UDPSockets))
	}
	if c.MaxTCPConns < 1 {
		errs = append(errs, fmt.Errorf("clusterdns: MaxTCPConns %d is out of range; give at least 1", c.MaxTCPConns))
	}
	return origin, listen, upstreams, errors.Join(errs...)
}

// parseUpstream reads "IP" or "IP:port" (port 53 when omitted).
func parseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("clusterdns: upstream %q is not IP or IP:port; name resolvers by address", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 53), nil
}

// canonicalDomain returns d lowercased with a trailing dot after checking
// that its labels are plain DNS labels.
func canonicalDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if d == "" {
		return "", errors.New("clusterdns: empty Domain; use \"cluster.local\"")
	}
	if len(d) > 200 {
		return "", fmt.Errorf("clusterdns: Domain %q is longer than 200 characters, leaving no room for names under it", d)
	}
	for _, l := range strings.Split(d, ".") {
		if !isLabel(l) {
			return "", fmt.Errorf("clusterdns: Domain %q: label %q is not a DNS label (a-z, 0-9, '-', at most 63)", d, l)
		}
	}
	return d + ".", nil
}

// isLabel reports whether s is a lowercase RFC 1123 label.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
