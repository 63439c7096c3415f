// Command app is Flotilla's demo workload: a tiny static HTTP server that
// says which version and replica answered, so tests and demos can watch
// rollouts, load balancing and crash loops, and a small client that makes
// requests from inside its pod, so tests can see what a pod sees of
// services and cluster DNS.
//
//	GET  /          "flotilla-demo version=V hostname=H ip=A"
//	GET  /hostname  the hostname (the pod's name), alone on a line
//	GET  /whoami    the caller's address as this pod sees it
//	GET  /healthz   "ok", or 503 "not ready" after POST /ready?ok=false
//	POST /ready?ok=false|true  fails or passes /healthz from now on
//	GET  /fetch?url=URL&n=N    N requests to URL from inside the pod (each on
//	                           a new connection, names resolved through the
//	                           pod's /etc/resolv.conf), answers counted as JSON;
//	                           udp=HOST:PORT sends datagrams instead; see fetch.go
//	GET  /lookup?name=N&type=A|SRV  one DNS lookup through the pod's resolv.conf
//
// Environment: PORT (default 8080); UDP_PORT, when set, answers every
// datagram on that port with the hostname; VERSION overrides the version
// baked in with -ldflags "-X main.version=..."; CRASH_AFTER (a Go duration)
// exits with code 3 after that long; EXIT_CODE exits at once with that code.
//
// The image is built with CGO_ENABLED=0, so names are resolved by Go's own
// resolver, which reads /etc/resolv.conf (nameserver, search, ndots) as a
// pod's libc would.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// hold keeps what ALLOCATE_MIB allocated reachable, so it stays resident.
var hold [][]byte

// allocate allocates n MiB and writes every page of it, so it counts
// against the container's memory limit (ALLOCATE_MIB: tests of OOM kills).
func allocate(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		out[i] = b
	}
	return out
}

// version is set at build time with -ldflags "-X main.version=v2".
var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	if s := os.Getenv("EXIT_CODE"); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad EXIT_CODE %q: %v\n", s, err)
			return 2
		}
		fmt.Printf("exiting with code %d\n", code)
		return code
	}
	if s := os.Getenv("ALLOCATE_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1<<16 {
			fmt.Fprintf(os.Stderr, "bad ALLOCATE_MIB %q: want 0..65536\n", s)
			return 2
		}
		fmt.Printf("allocating %d MiB\n", n)
		hold = allocate(n)
	}
	if v := os.Getenv("VERSION"); v != "" {
		version = v
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	hostname, _ := os.Hostname()

	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           newMux(version, hostname),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var crash <-chan time.Time
	if s := os.Getenv("CRASH_AFTER"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad CRASH_AFTER %q: %v\n", s, err)
			return 2
		}
		crash = time.After(d)
	}

	serveErr := make(chan error, 1)
	if s := os.Getenv("UDP_PORT"); s != "" {
		pc, err := net.ListenPacket("udp", ":"+s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "listen udp :%s: %v\n", s, err)
			return 2
		}
		go func() {
			if err := serveUDP(ctx, pc, []byte(hostname+"\n")); err != nil {
				serveErr <- fmt.Errorf("udp: %w", err)
			}
		}()
		fmt.Printf("flotilla-demo answering UDP on :%s\n", s)
	}
	go func() { serveErr <- srv.ListenAndServe() }()
	fmt.Printf("flotilla-demo version=%s listening on :%s\n", version, port)

	select {
	case err := <-serveErr:
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		return 1
	case <-crash:
		fmt.Fprintln(os.Stderr, "crashing on purpose")
		return 3
	case <-ctx.Done():
		fmt.Println("shutting down")
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutCtx); err != nil {
			fmt.Fprintf(os.Stderr, "shutdown: %v\n", err)
			return 1
		}
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "serve: %v\n", err)
			return 1
		}
		return 0
	}
}

// newMux serves the endpoints listed in the package comment. /ready's
// switch lives in the mux, so each server (and test) has its own.
func newMux(version, hostname string) *http.ServeMux {
	var notReady atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "flotilla-demo version=%s hostname=%s ip=%s\n", version, hostname, firstIPv4())
	})
	mux.HandleFunc("GET /hostname", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, hostname)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if notReady.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("POST /ready", func(w http.ResponseWriter, r *http.Request) {
		ok, err := strconv.ParseBool(r.URL.Query().Get("ok"))
		if err != nil {
			http.Error(w, "ok must be true or false", http.StatusBadRequest)
			return
		}
		notReady.Store(!ok)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "ready=%v\n", ok)
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, r.RemoteAddr)
	})
	mux.HandleFunc("GET /fetch", handleFetch)
	mux.HandleFunc("GET /lookup", handleLookup)
	return mux
}

// firstIPv4 returns the first non-loopback IPv4 address, or "none".
func firstIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "none"
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() {
			if ip4 := ipn.IP.To4(); ip4 != nil {
				return ip4.String()
			}
		}
	}
	return "none"
}
