package ingress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// BenchmarkIngressVsNginx drives wrk (64 connections, 2 threads) through
// Flotilla's ingress and through an nginx configured by hand as a reverse
// proxy to the same three local backends, plain and TLS, alternating in
// the same run, and reports requests/s, p99 and the proxy's CPU per
// request (nginx's processes; for Flotilla also the agent's access log
// reader, measured as this process's extra CPU). It runs once whatever
// b.N. BENCH_INGRESS_SECONDS (8) and BENCH_INGRESS_ROUNDS (2) tune it.
//
//	go test -run '^$' -bench IngressVsNginx -benchtime 1x ./agent/ingress/
func BenchmarkIngressVsNginx(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatal("wrk is not installed (make deps installs it)")
	}
	secs := envInt("BENCH_INGRESS_SECONDS", 8)
	rounds := envInt("BENCH_INGRESS_ROUNDS", 2)

	var ports []int
	body := []byte("hello from a backend of the ingress benchmark\n")
	for i := 0; i < 3; i++ {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
		b.Cleanup(srv.Close)
		ports = append(ports, srv.Listener.Addr().(*net.TCPAddr).Port)
	}

	// Flotilla's ingress: one catch-all rule to a service of three
	// endpoints, access log lines to a logger as the agent has them.
	svc := api.Service{Namespace: "default", Name: "bench", Ports: []api.ServicePort{{Port: 80}}}
	ep := api.Endpoints{Namespace: "default", Name: "bench"}
	for i, p := range ports {
		ep.Addresses = append(ep.Addresses, api.EndpointAddress{Pod: "b" + strconv.Itoa(i), IP: "127.0.0.1", Ready: true, Ports: []api.EndpointPort{{Port: p}}})
	}
	in := Input{Services: []api.Service{svc}, Endpoints: []api.Endpoints{ep}, Ingresses: []api.Ingress{{
		Namespace: "default", Name: "bench", Rules: []api.IngressRule{{Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "bench"}}}}},
	}}}
	type flotilla struct {
		p           *Proxy
		http, https int
	}
	start := func(noLog bool) flotilla {
		src := NewFakeSource()
		src.Set(in)
		cfg := DefaultConfig()
		cfg.Source = src
		cfg.Dir = filepath.Join(b.TempDir(), "ingress")
		f := flotilla{http: freePortB(b), https: freePortB(b)}
		cfg.Settings.BindAddress = "127.0.0.1"
		cfg.Settings.HTTPPort, cfg.Settings.HTTPSPort = f.http, f.https
		cfg.AccessLog = slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg.NoAccessLog = noLog
		p, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		f.p = p
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.Run(ctx) }()
		b.Cleanup(func() { cancel(); <-done })
		deadline := time.Now().Add(10 * time.Second)
		for p.Stats().Applies == 0 {
			if time.Now().After(deadline) {
				b.Fatal("the ingress did not start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		waitHTTP(b, f.http)
		return f
	}
	flo, floNoLog := start(false), start(true)

	// The references: nginx by hand, the same workers, keep-alive upstream,
	// an ECDSA P-256 certificate as the fallback one; one with no access
	// log, one logging every request to a file as Debian's nginx does by
	// default (the same work per request as Flotilla's, which logs each).
	pemBytes, _ := selfSigned()
	var ups strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&ups, "server 127.0.0.1:%d; ", p)
	}
	type reference struct{ http, https, pgid int }
	startRef := func(withLog bool) reference {
		r := reference{http: freePortB(b), https: freePortB(b)}
		refDir := b.TempDir()
		os.WriteFile(filepath.Join(refDir, "cert.pem"), pemBytes, 0o600)
		accessLog := "off"
		if withLog {
			accessLog = filepath.Join(refDir, "access.log")
		}
		conf := fmt.Sprintf(`daemon off; worker_processes auto; pid %[1]s/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log %[5]s;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi; uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  upstream b { %[2]s keepalive 64; }
  server {
    listen 127.0.0.1:%[3]d reuseport;
    listen 127.0.0.1:%[4]d ssl http2 reuseport;
    ssl_certificate %[1]s/cert.pem; ssl_certificate_key %[1]s/cert.pem;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }
  }
}
`, refDir, ups.String(), r.http, r.https, accessLog)
		os.WriteFile(filepath.Join(refDir, "nginx.conf"), []byte(conf), 0o644)
		cmd := exec.Command("nginx", "-p", refDir, "-c", filepath.Join(refDir, "nginx.conf"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		waitHTTP(b, r.http)
		r.pgid = cmd.Process.Pid
		return r
	}
	ref, refLog := startRef(false), startRef(true)

	type row struct{ rps, p99, cpu, extra []float64 }
	rows := map[string]*row{}
	modes := []string{"plain", "tls"}
	systems := []string{"flotilla", "nginx", "flotilla-nolog", "nginx-log"}
	for r := 0; r < rounds; r++ {
		for _, mode := range modes {
			for _, sys := range systems {
				port, tlsPort, pgid := ref.http, ref.https, ref.pgid
				switch sys {
				case "nginx-log":
					port, tlsPort, pgid = refLog.http, refLog.https, refLog.pgid
				case "flotilla":
					port, tlsPort, pgid = flo.http, flo.https, flo.p.NginxPID()
				case "flotilla-nolog":
					port, tlsPort, pgid = floNoLog.http, floNoLog.https, floNoLog.p.NginxPID()
				}
				scheme := "http"
				if mode == "tls" {
					scheme, port = "https", tlsPort
				}
				url := fmt.Sprintf("%s://127.0.0.1:%d/", scheme, port)
				cpu0, self0 := groupCPU(pgid), selfCPU()
				out, err := exec.Command(wrk, "-t2", "-c64", "-d"+strconv.Itoa(secs)+"s", "--latency", url).CombinedOutput()
				cpu1, self1 := groupCPU(pgid), selfCPU()
				if err != nil {
					b.Fatalf("wrk %s: %v\n%s", url, err, out)
				}
				res := parseWrk(string(out))
				if res.errors != "" {
					b.Errorf("%s %s: %s", sys, mode, res.errors)
				}
				k := sys + " " + mode
				if rows[k] == nil {
					rows[k] = &row{}
				}
				rw := rows[k]
				rw.rps = append(rw.rps, res.rps)
				rw.p99 = append(rw.p99, res.p99ms)
				rw.cpu = append(rw.cpu, (cpu1-cpu0).Seconds()*1e6/res.requests)
				rw.extra = append(rw.extra, (self1-self0).Seconds()*1e6/res.requests)
			}
		}
	}
	// Lines starting "ingress| " are the table scripts/bench.sh prints.
	fmt.Printf("ingress| \nIngress data plane (agent/ingress BenchmarkIngressVsNginx): wrk -t2 -c64 -d%ds to 3 local Go backends, median of %d rounds, alternating\n", secs, rounds)
	fmt.Printf("ingress|   flotilla: the agent's nginx as Flotilla configures it (access log to the agent, metrics, no buffering);\n")
	fmt.Printf("ingress|   nginx:    nginx 1.22 configured by hand (keep-alive upstream, access log off); CPU: the nginx processes,\n")
	fmt.Printf("ingress|   plus for flotilla the agent's access log reader (this process's CPU beyond the nginx rows);\n")
	fmt.Printf("ingress|   flotilla-nolog: the same with Config.NoAccessLog (no request lines, no request metrics)\n")
	fmt.Printf("ingress|   nginx-log: the hand-made nginx logging every request to a file, as Debian's does by default\n")
	fmt.Printf("ingress| %-20s %10s %9s %12s\n", "", "req/s", "p99 ms", "CPU µs/req")
	for _, mode := range modes {
		for _, sys := range systems {
			rw := rows[sys+" "+mode]
			cpu := median(rw.cpu)
			if !strings.HasPrefix(sys, "nginx") {
				cpu += max(median(rw.extra)-median(rows["nginx "+mode].extra), 0)
			}
			fmt.Printf("ingress| %-20s %10.0f %9.2f %12.1f\n", sys+" "+mode, median(rw.rps), median(rw.p99), cpu)
		}
		f, n, nl := rows["flotilla "+mode], rows["nginx "+mode], rows["nginx-log "+mode]
		b.ReportMetric(median(nl.rps), mode+"-nginx-log-req/s")
		b.ReportMetric(median(nl.p99), mode+"-nginx-log-p99-ms")
		b.ReportMetric(median(f.rps), mode+"-flotilla-req/s")
		b.ReportMetric(median(n.rps), mode+"-nginx-req/s")
		b.ReportMetric(median(f.p99), mode+"-flotilla-p99-ms")
		b.ReportMetric(median(n.p99), mode+"-nginx-p99-ms")
		// The access log reader's cost: this process's CPU beyond the reference's (same backends).
		b.ReportMetric(median(f.cpu)+max(median(f.extra)-median(n.extra), 0), mode+"-flotilla-µs/req")
		b.ReportMetric(median(n.cpu), mode+"-nginx-µs/req")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func freePortB(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHTTP(b *testing.B, port int) {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("nothing answers on port %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupCPU sums the user and system time of the live processes of a
// process group (an nginx master and its workers).
func groupCPU(pgid int) time.Duration {
	ps, _ := processes()
	var ticks int64
	for _, p := range ps {
		f := p.fields
		if len(f) < 13 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type wrkResult struct {
	rps, p99ms, requests float64
	errors               string
}

func parseWrk(out string) wrkResult {
	var r wrkResult
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) >= 2 && f[0] == "99%":
			r.p99ms = wrkDuration(f[1])
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.ParseFloat(f[0], 64)
		case strings.Contains(line, "Socket errors") || strings.Contains(line, "Non-2xx"):
			r.errors += strings.TrimSpace(line) + " "
		}
	}
	if r.requests == 0 {
		r.requests = 1
	}
	return r
}

// wrkDuration reads wrk's "812.00us", "8.40ms" or "1.02s" as milliseconds.
func wrkDuration(s string) float64 {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 0.001}, {"ms", 1}, {"s", 1000}, {"m", 60000}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			x, _ := strconv.ParseFloat(v, 64)
			return x * u.ms
		}
	}
	return 0
}
