// Package ingress is the data plane of Flotilla's ingresses: every agent
// runs one nginx that routes HTTP and HTTPS requests arriving on the
// node's ingress ports, by host and path, straight to the ready endpoints
// of services (not through their virtual IPs).
//
// It owns its runtime directory (Config.Dir: nginx.conf, the pid file,
// temporary files, and Dir/tls, 0700, with one 0600 file per certificate
// and key), the nginx process group it starts, and a loopback UDP port for
// the access log. It reads the cluster state through Source and never
// writes it; it does not validate ingresses for the API (api.Ingress does)
// nor decide conflicts between them, beyond leaving out what would break
// the configuration.
//
// # Why nginx, driven by the agent
//
// An in-process Go proxy (httputil.ReverseProxy, tuned transport) reached
// 0.30x nginx's throughput on this kind of machine (issue 11: 7,382 against
// 24,870 req/s, 154 against ~30 µs of CPU per request). Between the two
// proven proxies Debian ships, measured in one run here (wrk -t2 -c64 -d8s,
// three local Go backends, keep-alive upstreams, 2 cores shared with other
// work, two rounds):
//
//	                 plain req/s  p99      µs CPU/req   TLS req/s  p99      µs CPU/req
//	nginx 1.22       33,357       14.5 ms  17           9,542      41.3 ms  28
//	                 16,968       23.8 ms  22           14,691     122 ms   29
//	HAProxy 2.6      18,607       36.9 ms  19           9,940      50.9 ms  33
//	                 16,097       32.2 ms  24           13,788     38.4 ms  24
//
// nginx was as fast or faster in plain HTTP and even with TLS, at less or
// equal CPU per request. HAProxy's runtime API would change endpoints
// without a reload; with nginx every change is a reload (SIGHUP), which is
// graceful: the listening sockets are inherited by the new workers, the old
// ones stop accepting, close idle keep-alive connections and finish their
// in-flight requests (WebSockets up to Settings.ShutdownTimeout). The
// tests show no request failing across endpoint, route and certificate
// changes under load. Reloads are debounced (Config.MinInterval) so a
// rollout's burst of endpoint changes costs one or two. nginx also gives
// longest-prefix location matching with exact locations first, SNI by
// server_name, HTTP/2 by ALPN and syslog access logs with no glue, which
// made it the one we could make correct in the time.
//
// What Flotilla's configuration costs over nginx configured by hand to the
// same backends (BenchmarkIngressVsNginx, one run, 2 rounds of 8 s, the
// machine's 1-minute load average 1-7 from other work; requests/s and p99
// move by 20% between runs here, CPU per request much less):
//
//	                        plain req/s  p99      µs/req   TLS req/s  p99      µs/req
//	flotilla                47,291        9.4 ms  20.5     31,583     27.7 ms  25.5
//	nginx by hand           52,014       18.5 ms  11.8     35,756     36.0 ms  16.8
//	flotilla, NoAccessLog   42,701       16.1 ms  13.6     44,731     14.4 ms  18.0
//
// Routing, headers and unbuffered streaming cost ~1-2 µs per request; the
// per-request access log (a syslog datagram from nginx, parsed and logged
// by the agent, ~2.6 µs of it in the agent: BenchmarkAccessLogLine) costs
// ~7-9 µs, which is most of the gap in requests/s. Config.NoAccessLog
// trades the request lines and metrics for it. A buffered file log that
// the agent tails would save nginx's syscall per request; not done.
//
// # Routing
//
// One nginx server per host (a wildcard "*.example.com" is a regular
// expression matching one label, as Kubernetes'), plus a catch-all default
// server for the rules without a host. Each server listens on both ports;
// its certificate is the host's, or a wildcard one of its parent domain,
// or a self-signed fallback made at start. An exact path is `location =`;
// a prefix /p is `location = /p` plus `location ^~ /p/`, so it matches
// whole segments (/api matches /api and /api/x, not /apix) and the longest
// wins; an exact path beats a prefix of the same length. A host's
// unmatched paths go to the default backend, else 404. A backend without a
// ready endpoint is `return 503` naming the service, answered at once.
// Idempotent requests whose connection fails are retried on another
// endpoint (proxy_next_upstream, up to three tries; nginx never retries
// POST, LOCK or PATCH). Request and response bodies stream (no buffering);
// X-Forwarded-For is set to the client's address (a client's own is not
// trusted), -Proto, -Host and -Port to what the client used.
//
// # Safety of the configuration
//
// Render is pure and checks again everything it writes: ingresses must
// pass api.Ingress.ValidateFields (names are DNS labels, hosts lower-case
// DNS names), paths api.ValidateIngressPath both as given and once
// percent-decoded (nginx matches decoded paths) and are written quoted,
// endpoint addresses are parsed as IPs, ports checked, and TLS pairs
// parsed; what fails is left out and named in Rendered.Skipped (never with
// a key). nginx tests every configuration (nginx -t) before the running
// one is replaced, so a bad one leaves the last good one serving.
//
// # Process
//
// Nginx starts the master in its own process group with daemon off,
// passes its error log to slog, reloads with SIGHUP and waits until the
// new workers run, restarts a master that died (killing workers it left),
// adopts a master a previous agent run left (Config.KeepRunning) so an
// agent restart closes no listener, and stops with SIGQUIT. Workers run as
// nginx's default user (nobody) when the agent is root; the master reads
// the keys.
//
// # Access log and metrics
//
// nginx sends one syslog datagram per request to a loopback UDP port
// (the workers, as nobody, may not reach a socket under the agent's data
// directory). Proxy counts each in flotilla_ingress_request_duration_seconds
// (a histogram by ingress and status; its _count is the request count) and
// passes it to Config.AccessLog. Proxy is a prometheus.Collector for the
// agent's registry.
package ingress
