package acceptance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// profileRow, when BENCH_PROFILE_DIR is set, takes a CPU profile of every
// Flotilla server for d through its API (GET /v1/debug/pprof/profile) and
// writes <dir>/<row>-<node>.pprof; the returned func waits for them. For
// finding where a write's time goes: `go tool pprof -top FILE`.
func profileRow(b *testing.B, c benchCluster, row string, d time.Duration) func() {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	fc, ok := c.(fleetCluster)
	if dir == "" || !ok {
		return func() {}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(fc.bf.caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: d + 30*time.Second}
	var wg sync.WaitGroup
	for _, n := range fc.bf.nodes {
		if !n.server {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("%s/v1/debug/pprof/profile?seconds=%d", n.endpoint(), int(d.Seconds()))
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+fc.bf.apiToken)
			resp, err := hc.Do(req)
			if err != nil {
				b.Logf("profile %s: %v", n.Name, err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(dir, row+"-"+n.Name+".pprof"))
			if err != nil {
				b.Logf("profile %s: %v", n.Name, err)
				return
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
		}()
	}
	return wg.Wait
}
