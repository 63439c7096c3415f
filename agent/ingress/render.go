package ingress

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// Settings are what the nginx configuration needs besides the cluster
// state: where it listens, where its files live, its timeouts.
type Settings struct {
	// BindAddress is the IP address the listeners bind; "" binds all IPv4
	// addresses.
	BindAddress string
	// HTTPPort and HTTPSPort are the listeners' ports; 0 disables one.
	HTTPPort, HTTPSPort int
	// Dir is the proxy's runtime directory (absolute): its configuration,
	// pid file, temporary files and, in Dir/tls, the certificates and keys.
	Dir string
	// LogAddress is the loopback UDP address ("127.0.0.1:port") the access
	// log lines are sent to (syslog); "" logs none.
	LogAddress string
	// FallbackCert is the file name (in Dir/tls) of the certificate served
	// to TLS clients asking for a host that has none.
	FallbackCert string
	// Workers is nginx's worker_processes; 0 is one per core.
	Workers int
	// ConnectTimeout bounds a connection to an endpoint (then the next one
	// is tried); ReadTimeout and SendTimeout bound the wait between two
	// reads or writes from or to an endpoint.
	ConnectTimeout, ReadTimeout, SendTimeout time.Duration
	// ShutdownTimeout is how long the workers of a previous configuration
	// may finish their requests (WebSockets included) after a reload.
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds a request body (413 beyond it).
	MaxBodyBytes int64
	// Keepalive is the number of idle connections each nginx worker keeps
	// open to the endpoints of one service port.
	Keepalive int
}

// DefaultSettings returns the timeouts and limits; ports, Dir and the log
// address are the caller's.
func DefaultSettings() Settings {
	return Settings{
		HTTPPort:        api.DefaultIngressHTTP,
		HTTPSPort:       api.DefaultIngressHTTPS,
		ConnectTimeout:  5 * time.Second,
		ReadTimeout:     60 * time.Second,
		SendTimeout:     60 * time.Second,
		ShutdownTimeout: 2 * time.Minute,
		MaxBodyBytes:    1 << 30,
		Keepalive:       64,
	}
}

// Input is the cluster state the configuration is made from.
type Input struct {
	Ingresses []api.Ingress
	Services  []api.Service
	Endpoints []api.Endpoints
}

// Rendered is a configuration and the certificate files it names.
type Rendered struct {
	// Text is nginx.conf.
	Text string
	// Certs are the files Dir/tls must hold, by name: certificate chain then
	// key, PEM. Secret: they print as "(secret PEM)".
	Certs map[string]SecretPEM
	// Routes counts the locations that route to a service.
	Routes int
	// Skipped says what was left out and why (invalid input, conflicts),
	// without secrets.
	Skipped []string
}

// SecretPEM holds a certificate and its key. It prints, formats and logs
// as a placeholder, so a Rendered logged by mistake leaks no key.
type SecretPEM []byte

const secretText = "(secret PEM)"

// String implements fmt.Stringer.
func (SecretPEM) String() string { return secretText }

// GoString implements fmt.GoStringer.
func (SecretPEM) GoString() string { return secretText }

// Format implements fmt.Formatter: every verb, %x and %s included.
func (SecretPEM) Format(f fmt.State, _ rune) { io.WriteString(f, secretText) }

// LogValue implements slog.LogValuer.
func (SecretPEM) LogValue() slog.Value { return slog.StringValue(secretText) }

// MarshalText keeps the key out of JSON and text encodings.
func (SecretPEM) MarshalText() ([]byte, error) { return []byte(secretText), nil }

// location is one nginx location of a server.
type location struct {
	match   string // "= /p", "^~ /p/" or "/"
	ingress string // ns/name
	backend *backendRef
	exact   bool // from an exact path: beats a prefix's exact location
}

// backendRef is a resolved service port: an upstream, or why there is none.
type backendRef struct {
	upstream string // "" when no endpoint is ready
	noneMsg  string // the 503 body then
}

type server struct {
	host     string // "" is the catch-all
	locs     map[string]*location
	cert     string // file name in Dir/tls
	redirect bool
}

type upstream struct {
	name, comment string
	addrs         []string
}

// Render makes nginx's configuration for the state. It is pure: the same
// input gives the same text. Every value written into the text is checked
// here again (names, hosts, paths, addresses), so nothing the API let
// through can change the configuration's structure; what fails is left out
// and named in Skipped.
func Render(s Settings, in Input) Rendered {
	r := &renderer{
		s:         s,
		out:       Rendered{Certs: map[string]SecretPEM{}},
		servers:   map[string]*server{"": {locs: map[string]*location{}}},
		upstreams: map[string]*upstream{},
		services:  map[string]*api.Service{},
		endpoints: map[string]*api.Endpoints{},
	}
	for i := range in.Services {
		r.services[in.Services[i].ID()] = &in.Services[i]
	}
	for i := range in.Endpoints {
		e := &in.Endpoints[i]
		r.endpoints[e.Namespace+"/"+e.Name] = e
	}
	ings := slices.Clone(in.Ingresses)
	// The oldest ingress wins a clash the API should have refused.
	slices.SortFunc(ings, func(a, b api.Ingress) int {
		return cmp.Or(cmp.Compare(a.CreateIndex, b.CreateIndex), cmp.Compare(a.ID(), b.ID()))
	})
	for i := range ings {
		r.ingress(&ings[i])
	}
	r.write()
	return r.out
}

type renderer struct {
	s         Settings
	out       Rendered
	servers   map[string]*server
	upstreams map[string]*upstream
	services  map[string]*api.Service
	endpoints map[string]*api.Endpoints
	defLoc    *location
	b         strings.Builder
}

func (r *renderer) skip(format string, args ...any) {
	r.out.Skipped = append(r.out.Skipped, fmt.Sprintf(format, args...))
}

func (r *renderer) server(host string) *server {
	sv := r.servers[host]
	if sv == nil {
		sv = &server{host: host, locs: map[string]*location{}}
		r.servers[host] = sv
	}
	return sv
}

func (r *renderer) ingress(in *api.Ingress) {
	id := in.ID()
	if err := in.ValidateFields(); err != nil {
		r.skip("ingress %s: invalid: %v", id, err)
		return
	}
	for _, t := range in.TLS {
		r.tls(in, t)
	}
	for _, rule := range in.Rules {
		sv := r.server(rule.Host)
		for _, p := range rule.Paths {
			path, ok := nginxPath(p.Path, p.MatchType() == api.PathPrefix)
			if !ok {
				r.skip("ingress %s: path %q decodes to characters a route cannot hold", id, api.TruncateText(p.Path, 60))
				continue
			}
			be := r.backend(in.Namespace, p.Backend)
			add := func(match string, exact bool) {
				old := sv.locs[match]
				switch {
				case old == nil, exact && !old.exact:
					sv.locs[match] = &location{match: match, ingress: id, backend: be, exact: exact}
				case exact == old.exact:
					r.skip("ingress %s: host %q path %s is routed by %s already", id, rule.Host, match, old.ingress)
				}
			}
			switch {
			case p.MatchType() == api.PathExact:
				add("= "+path, true)
			case path == "/":
				add("/", false)
			default:
				add("= "+path, false)
				add("^~ "+path+"/", false)
			}
		}
	}
	if in.DefaultBackend != nil {
		if r.defLoc != nil {
			r.skip("ingress %s: default_backend: %s has one already", id, r.defLoc.ingress)
		} else {
			r.defLoc = &location{match: "/", ingress: id, backend: r.backend(in.Namespace, *in.DefaultBackend)}
		}
	}
}

// nginxPath returns the path as nginx matches it (percent-decoded; a
// prefix without its trailing slash but for "/"), and whether it is safe
// to write quoted.
func nginxPath(p string, prefix bool) (string, bool) {
	if api.ValidateIngressPath(p) != nil {
		return "", false
	}
	d, err := url.PathUnescape(p)
	if err != nil || api.ValidateIngressPath(d) != nil || strings.Contains(d, "%") {
		return "", false
	}
	if prefix && len(d) > 1 {
		d = strings.TrimSuffix(d, "/")
	}
	return d, true
}

func (r *renderer) tls(in *api.Ingress, t api.IngressTLS) {
	if t.Key == "" {
		r.skip("ingress %s: TLS for %s: no key on this node", in.ID(), strings.Join(t.Hosts, ","))
		return
	}
	// A pair nginx cannot load would fail the whole configuration.
	if _, err := tls.X509KeyPair([]byte(t.Certificate), []byte(t.Key)); err != nil {
		r.skip("ingress %s: TLS for %s: the certificate and key are not a usable pair", in.ID(), strings.Join(t.Hosts, ","))
		return
	}
	pem := []byte(strings.TrimSpace(t.Certificate) + "\n" + strings.TrimSpace(t.Key) + "\n")
	sum := sha256.Sum256(pem)
	name := "cert-" + hex.EncodeToString(sum[:12]) + ".pem"
	used := false
	for _, h := range t.Hosts {
		if api.ValidateIngressHost(h) != nil {
			continue // ValidateFields said so already
		}
		sv := r.server(h)
		if sv.cert != "" {
			r.skip("ingress %s: TLS host %s has a certificate already", in.ID(), h)
			continue
		}
		sv.cert, sv.redirect, used = name, in.SSLRedirect, true
	}
	if used {
		r.out.Certs[name] = pem
	}
}

// backend resolves a service port to an upstream of its ready endpoints.
func (r *renderer) backend(ns string, b api.IngressBackend) *backendRef {
	id := ns + "/" + b.Service
	svc := r.services[id]
	if svc == nil {
		return &backendRef{noneMsg: "no service " + id}
	}
	var sp *api.ServicePort
	for i := range svc.Ports {
		p := &svc.Ports[i]
		if p.Proto() != "tcp" {
			continue
		}
		if (b.Port != 0 && p.Port == b.Port) || (b.PortName != "" && p.Name == b.PortName) ||
			(b.Port == 0 && b.PortName == "" && len(svc.Ports) == 1) {
			sp = p
			break
		}
	}
	if sp == nil {
		return &backendRef{noneMsg: "no such TCP port on service " + id}
	}
	key := id + " port " + strconv.Itoa(sp.Port)
	sum := sha256.Sum256([]byte(key))
	name := "svc_" + hex.EncodeToString(sum[:6])
	if u := r.upstreams[name]; u != nil {
		return &backendRef{upstream: name}
	}
	var addrs []string
	if e := r.endpoints[id]; e != nil {
		for _, a := range e.Addresses {
			ip, err := netip.ParseAddr(a.IP)
			if !a.Ready || err != nil {
				continue
			}
			for _, p := range a.Ports {
				if p.Name == sp.Name && p.Port > 0 && p.Port <= 65535 && (p.Protocol == "" || p.Protocol == "tcp") {
					addrs = append(addrs, netip.AddrPortFrom(ip.Unmap(), uint16(p.Port)).String())
				}
			}
		}
	}
	if len(addrs) == 0 {
		return &backendRef{noneMsg: "no ready endpoint for service " + id}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	r.upstreams[name] = &upstream{name: name, comment: key, addrs: addrs}
	return &backendRef{upstream: name}
}

func (r *renderer) p(format string, args ...any) { fmt.Fprintf(&r.b, format, args...) }

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) + "s" }

func (r *renderer) write() {
	s := r.s
	workers := "auto"
	if s.Workers > 0 {
		workers = strconv.Itoa(s.Workers)
	}
	r.p("# Written by the Flotilla agent (agent/ingress); changes are overwritten.\n")
	r.p("daemon off;\nmaster_process on;\nworker_processes %s;\npid %s/nginx.pid;\nerror_log stderr notice;\n", workers, s.Dir)
	r.p("worker_shutdown_timeout %s;\nworker_rlimit_nofile 16384;\n", secs(s.ShutdownTimeout))
	r.p("events {\n    worker_connections 4096;\n}\n")
	r.p("http {\n")
	r.p(`    server_tokens off;
    default_type text/plain;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    client_max_body_size %[2]d;
    client_header_timeout 15s;
    client_body_timeout %[3]s;
    send_timeout %[3]s;
    keepalive_timeout 75s;
    keepalive_requests 10000;
`, s.Dir, s.MaxBodyBytes, secs(s.ReadTimeout))
	if s.LogAddress != "" {
		r.p("    log_format flotilla escape=json '$fl_ingress\\t$status\\t$request_time\\t$request_method\\t$scheme\\t$host\\t$uri\\t$remote_addr\\t$upstream_addr\\t$upstream_status\\t$body_bytes_sent\\t$server_protocol';\n")
		r.p("    access_log syslog:server=%s,nohostname,tag=flotilla flotilla;\n", s.LogAddress)
	} else {
		r.p("    access_log off;\n")
	}
	r.p(`    map $http_upgrade $fl_connection {
        default upgrade;
        "" "";
    }
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $fl_connection;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_redirect off;
    proxy_connect_timeout %s;
    proxy_read_timeout %s;
    proxy_send_timeout %s;
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 3;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:flotilla_tls:10m;
    ssl_session_timeout 10m;
`, secs(s.ConnectTimeout), secs(s.ReadTimeout), secs(s.SendTimeout))
	names := make([]string, 0, len(r.upstreams))
	for n := range r.upstreams {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		u := r.upstreams[n]
		r.p("\n    # %s\n    upstream %s {\n", u.comment, u.name)
		for _, a := range u.addrs {
			r.p("        server %s max_fails=1 fail_timeout=5s;\n", a)
		}
		r.p("        keepalive %d;\n        keepalive_timeout 60s;\n    }\n", max(s.Keepalive, 1))
	}
	hosts := make([]string, 0, len(r.servers))
	for h := range r.servers {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts) // "" (the catch-all) first
	for _, h := range hosts {
		r.writeServer(r.servers[h])
	}
	r.p("}\n")
	r.out.Text = r.b.String()
}

func (r *renderer) listen(port int) string {
	if r.s.BindAddress == "" {
		return strconv.Itoa(port)
	}
	ip, err := netip.ParseAddr(r.s.BindAddress)
	if err != nil {
		return strconv.Itoa(port) // Config.check refuses it first
	}
	return netip.AddrPortFrom(ip, uint16(port)).String()
}

// serverName is a host as nginx's server_name: a wildcard matches one
// label only, as Kubernetes', so it is a regular expression.
func serverName(h string) string {
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		return `"~^[^.]+\.` + strings.ReplaceAll(rest, ".", `\.`) + `$"`
	}
	return h
}

// certFor picks a host's certificate: its own, or a wildcard one of its
// parent domain, or the fallback.
func (r *renderer) certFor(sv *server) (string, bool) {
	if sv.cert != "" {
		return sv.cert, sv.redirect
	}
	if i := strings.IndexByte(sv.host, '.'); i > 0 && !strings.HasPrefix(sv.host, "*.") {
		if w := r.servers["*"+sv.host[i:]]; w != nil && w.cert != "" {
			return w.cert, w.redirect
		}
	}
	return r.s.FallbackCert, false
}

func (r *renderer) writeServer(sv *server) {
	s := r.s
	r.p("\n    server {\n")
	def := ""
	if sv.host == "" {
		def = " default_server reuseport"
	}
	if s.HTTPPort > 0 {
		r.p("        listen %s%s;\n", r.listen(s.HTTPPort), def)
	}
	cert, redirect := r.certFor(sv)
	if s.HTTPSPort > 0 {
		r.p("        listen %s ssl http2%s;\n", r.listen(s.HTTPSPort), def)
		r.p("        ssl_certificate %[1]s/tls/%[2]s;\n        ssl_certificate_key %[1]s/tls/%[2]s;\n", s.Dir, cert)
	}
	if sv.host == "" {
		r.p("        server_name _;\n")
	} else {
		r.p("        server_name %s;\n", serverName(sv.host))
	}
	r.p("        set $fl_ingress \"-\";\n")
	if redirect && s.HTTPSPort > 0 && s.HTTPPort > 0 {
		port := ""
		if s.HTTPSPort != 443 {
			port = ":" + strconv.Itoa(s.HTTPSPort)
		}
		r.p("        if ($scheme = http) {\n            return 308 https://$host%s$request_uri;\n        }\n", port)
	}
	locs := make([]*location, 0, len(sv.locs)+1)
	for _, l := range sv.locs {
		locs = append(locs, l)
	}
	if sv.locs["/"] == nil {
		if r.defLoc != nil {
			locs = append(locs, r.defLoc)
		} else {
			locs = append(locs, &location{match: "/"})
		}
	}
	slices.SortFunc(locs, func(a, b *location) int { return cmp.Compare(locPath(a.match), locPath(b.match)) })
	for _, l := range locs {
		r.writeLocation(l)
	}
	r.p("    }\n")
}

// locPath orders locations by path, an exact one before its prefix one.
func locPath(m string) string {
	op, p, ok := strings.Cut(m, " ")
	if !ok {
		return m
	}
	return p + " " + op
}

func (r *renderer) writeLocation(l *location) {
	op, p, ok := strings.Cut(l.match, " ")
	if ok {
		r.p("        location %s \"%s\" {\n", op, p)
	} else {
		r.p("        location %s {\n", l.match)
	}
	switch {
	case l.backend == nil:
		r.p("            return 404 \"no ingress rule matches\\n\";\n")
	case l.backend.upstream == "":
		r.p("            set $fl_ingress \"%s\";\n            return 503 \"%s\\n\";\n", l.ingress, l.backend.noneMsg)
	default:
		r.out.Routes++
		r.p("            set $fl_ingress \"%s\";\n            proxy_pass http://%s;\n", l.ingress, l.backend.upstream)
	}
	r.p("        }\n")
}
