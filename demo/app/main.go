// Command app is Flotilla's demo workload: a tiny static HTTP server that
// says which version and replica answered, so tests and demos can watch
// rollouts, load balancing and crash loops.
//
//	GET /         "flotilla-demo version=V hostname=H ip=A"
//	GET /healthz  "ok"
//
// Environment: PORT (default 8080); VERSION overrides the version baked in
// with -ldflags "-X main.version=..."; CRASH_AFTER (a Go duration) exits with
// code 3 after that long; EXIT_CODE exits at once with that code.
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
	"syscall"
	"time"
)

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

// newMux serves /, /healthz and /whoami (the caller's address as this pod
// sees it, so tests can tell whether pod-to-pod traffic was NATed).
func newMux(version, hostname string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "flotilla-demo version=%s hostname=%s ip=%s\n", version, hostname, firstIPv4())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, r.RemoteAddr)
	})
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
