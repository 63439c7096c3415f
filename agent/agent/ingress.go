package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flotilla-io/flotilla/agent/ingress"
)

// ingressDir is the proxy's runtime directory under the data dir.
func ingressDir(cfg *Config) string { return filepath.Join(cfg.DataDir, "ingress") }

// startIngress runs this node's ingress proxy (package ingress: an nginx
// the agent configures and reloads) on the configured ports, fed from src,
// its first configuration waiting for ready. Both ports 0 turn it off: nil,
// nil. nginx stays up across an agent restart, as the service rules do, so
// a restart closes no listener; `flotilla-agent cleanup` stops it.
func startIngress(cfg *Config, lc *lifecycle, src ingress.Source, ready func(context.Context)) (prometheus.Collector, error) {
	log := cfg.Logger
	if cfg.IngressHTTPPort == 0 && cfg.IngressHTTPSPort == 0 {
		log.Info("ingress off: --ingress-http-port and --ingress-https-port are 0")
		return nil, nil
	}
	icfg := ingress.DefaultConfig()
	icfg.Source, icfg.Dir, icfg.Ready, icfg.KeepRunning = src, ingressDir(cfg), ready, true
	icfg.Settings.BindAddress = cfg.IngressBind
	icfg.Settings.HTTPPort, icfg.Settings.HTTPSPort = cfg.IngressHTTPPort, cfg.IngressHTTPSPort
	icfg.NoAccessLog = cfg.IngressNoAccessLog
	// The package names itself (component=ingress) in what it logs.
	icfg.Logger, icfg.AccessLog = log, log.With("component", "ingress-access")
	p, err := ingress.New(icfg)
	if err != nil {
		return nil, fmt.Errorf("ingress: %w", err)
	}
	lc.loop("ingress", p.Run)
	log.Info("ingress proxy started", "bind", cfg.IngressBind, "http_port", cfg.IngressHTTPPort, "https_port", cfg.IngressHTTPSPort, "dir", icfg.Dir)
	return p, nil
}
