// Command dnsbench serves a clusterdns.Server with N synthetic services on
// loopback, for load tools to measure (see ../../bench.sh). It writes the
// names it serves as a dnsperf query file and as a hosts file, so that another
// server (dnsmasq) can be given the same names, and runs until interrupted.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve (UDP and TCP)")
	n := flag.Int("services", 1000, "number of services, svc-<i>.bench.svc.cluster.local")
	queries := flag.String("queries", "", "write a dnsperf query file (one A query per service) here")
	hosts := flag.String("hosts", "", "write a hosts file of the same names and addresses here")
	ready := flag.String("ready", "", "write the served address (IP:port) here once serving")
	sockets := flag.Int("udp-sockets", 0, "UDP sockets per address (0: one per CPU)")
	freePort := flag.Bool("free-port", false, "print a port free for UDP and TCP on 127.0.0.1 and exit")
	flag.Parse()
	if *freePort {
		return printFreePort()
	}
	services := make([]clusterdns.Service, *n)
	for i := range services {
		services[i] = clusterdns.Service{
			Namespace: "bench", Name: fmt.Sprintf("svc-%d", i),
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}),
			Ports:     []clusterdns.Port{{Name: "http", Port: 80}},
		}
	}
	if *queries != "" {
		if err := writeLines(*queries, services, func(s clusterdns.Service) string {
			return fmt.Sprintf("%s.%s.svc.cluster.local A", s.Name, s.Namespace)
		}); err != nil {
			return err
		}
	}
	if *hosts != "" {
		if err := writeLines(*hosts, services, func(s clusterdns.Service) string {
			return fmt.Sprintf("%s %s.%s.svc.cluster.local", s.ClusterIP, s.Name, s.Namespace)
		}); err != nil {
			return err
		}
	}
	cfg := clusterdns.DefaultConfig()
	cfg.Listen = []string{*listen}
	cfg.ResolvConf = "" // forward nothing: this is a closed network
	cfg.UDPSockets = *sockets
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := clusterdns.New(cfg)
	if err != nil {
		return err
	}
	if _, err := srv.Update(services, nil); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(srv.Addrs()[0].String()+"\n"), 0o644); err != nil {
			_ = srv.Close()
			return err
		}
	}
	<-ctx.Done()
	err = srv.Close()
	st := srv.Stats()
	fmt.Fprintf(os.Stderr, "dnsbench: responses %v, invalid %d\n", st.Responses, st.Invalid)
	return err
}

func writeLines(path string, services []clusterdns.Service, line func(clusterdns.Service) string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, s := range services {
		fmt.Fprintln(w, line(s))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printFreePort finds a port free for both UDP and TCP on 127.0.0.1.
func printFreePort() error {
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err != nil {
			continue
		}
		ln.Close()
		fmt.Println(port)
		return nil
	}
	return fmt.Errorf("no port free for both UDP and TCP on 127.0.0.1")
}
