package svcproxy

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func testConfig() Config {
	c := DefaultConfig()
	c.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	c.NodePodCIDR = netip.MustParsePrefix("10.244.1.0/24")
	return c
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func ep(s string) EndpointAddr {
	ap := netip.MustParseAddrPort(s)
	return EndpointAddr{IP: ap.Addr(), Port: ap.Port()}
}

func eps(ss ...string) []EndpointAddr {
	out := make([]EndpointAddr, len(ss))
	for i, s := range ss {
		out[i] = ep(s)
	}
	return out
}

func key(ns, name, port string) ServicePortKey {
	return ServicePortKey{Namespace: ns, Name: name, Port: port}
}

// web is default/web on 10.96.0.10:80/tcp with the given endpoints.
func web(endpoints ...string) State {
	return State{
		Services:  []Service{{Namespace: "default", Name: "web", ClusterIP: ip("10.96.0.10"), Ports: []ServicePort{{Protocol: "tcp", Port: 80}}}},
		Endpoints: map[ServicePortKey][]EndpointAddr{key("default", "web", ""): eps(endpoints...)},
	}
}

func TestRenderGolden(t *testing.T) {
	noCIDRs := DefaultConfig()
	oneShard := testConfig()
	oneShard.Shards = 1
	tests := []struct {
		name        string
		cfg         Config
		st          State
		wantSkipped int
	}{
		{name: "empty", cfg: testConfig()},
		{name: "no-endpoints", cfg: testConfig(), st: web()},
		{name: "one-endpoint", cfg: testConfig(), st: web("10.244.2.7:8080")},
		{
			// One local endpoint (hairpin rule), two on other nodes; given
			// out of order and with a duplicate.
			name: "three-endpoints", cfg: testConfig(),
			st: web("10.244.2.7:8080", "10.244.1.5:8080", "10.244.3.9:8080", "10.244.1.5:8080"),
		},
		{
			name: "affinity", cfg: testConfig(),
			st: State{
				Services: []Service{{Namespace: "default", Name: "sticky", ClusterIP: ip("10.96.0.20"), SessionAffinity: "client_ip",
					Ports: []ServicePort{{Protocol: "tcp", Port: 80}}}},
				Endpoints: map[ServicePortKey][]EndpointAddr{key("default", "sticky", ""): eps("10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080")},
			},
		},
		{
			name: "node-port", cfg: testConfig(),
			st: State{
				Services: []Service{
					{Namespace: "shop", Name: "front", ClusterIP: ip("10.96.1.1"), Ports: []ServicePort{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080}}},
					{Namespace: "shop", Name: "empty", ClusterIP: ip("10.96.1.2"), Ports: []ServicePort{{Protocol: "tcp", Port: 80, NodePort: 30081}}},
				},
				Endpoints: map[ServicePortKey][]EndpointAddr{key("shop", "front", "http"): eps("10.244.1.5:8080", "10.244.2.7:8080")},
			},
		},
		{
			// Node ports sent on from the bridge address, so that a pod on
			// another node sees a source inside the cluster's range.
			name: "node-port-snat", cfg: func() Config { c := testConfig(); c.SNATAddress = ip("10.244.1.1"); return c }(),
			st: State{
				Services:  []Service{{Namespace: "shop", Name: "front", ClusterIP: ip("10.96.1.1"), Ports: []ServicePort{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080}}}},
				Endpoints: map[ServicePortKey][]EndpointAddr{key("shop", "front", "http"): eps("10.244.1.5:8080", "10.244.2.7:8080")},
			},
		},
		{
			name: "udp", cfg: testConfig(),
			st: State{
				Services:  []Service{{Namespace: "kube-system", Name: "dns", ClusterIP: ip("10.96.0.10"), Ports: []ServicePort{{Name: "dns", Protocol: "udp", Port: 53}}}},
				Endpoints: map[ServicePortKey][]EndpointAddr{key("kube-system", "dns", "dns"): eps("10.244.1.5:5353", "10.244.2.7:5353")},
			},
		},
		{
			// Two ports of one Service, each with its own endpoints, and a
			// second Service in another shard.
			name: "multiple-ports", cfg: testConfig(),
			st: State{
				Services: []Service{
					{Namespace: "kube-system", Name: "dns", ClusterIP: ip("10.96.0.10"), Ports: []ServicePort{
						{Name: "dns", Protocol: "udp", Port: 53},
						{Name: "dns-tcp", Protocol: "tcp", Port: 53},
						{Name: "metrics", Protocol: "tcp", Port: 9153},
					}},
					{Namespace: "default", Name: "web", ClusterIP: ip("10.96.0.11"), Ports: []ServicePort{{Protocol: "tcp", Port: 80}}},
				},
				Endpoints: map[ServicePortKey][]EndpointAddr{
					key("kube-system", "dns", "dns"):     eps("10.244.1.5:53", "10.244.2.7:53"),
					key("kube-system", "dns", "dns-tcp"): eps("10.244.1.5:53", "10.244.2.7:53"),
					key("default", "web", ""):            eps("10.244.2.8:8080"),
				},
			},
		},
		{
			// Without the CIDRs: no masquerade of off-cluster ClusterIP
			// traffic, and every endpoint is treated as local (hairpin).
			name: "no-cidrs", cfg: noCIDRs,
			st: web("10.244.2.7:8080", "10.244.1.5:8080"),
		},
		{
			name: "one-shard", cfg: oneShard,
			st: web("10.244.2.7:8080"),
		},
		{
			name: "skipped", cfg: testConfig(), wantSkipped: 9,
			st: State{
				Services: []Service{
					{Namespace: "default", Name: "v6", ClusterIP: ip("fd00::10"), Ports: []ServicePort{{Port: 80}}},                               // 1
					{Namespace: "default", Name: "headless", Ports: []ServicePort{{Port: 80}}},                                                    // not an error
					{Namespace: "Bad_NS", Name: "x", ClusterIP: ip("10.96.0.30"), Ports: []ServicePort{{Port: 80}}},                               // 2
					{Namespace: "default", Name: "lo", ClusterIP: ip("127.0.0.1"), Ports: []ServicePort{{Port: 80}}},                              // 3
					{Namespace: "default", Name: "aff", ClusterIP: ip("10.96.0.31"), SessionAffinity: "cookie", Ports: []ServicePort{{Port: 80}}}, // 4
					{Namespace: "default", Name: "ok", ClusterIP: ip("10.96.0.32"), Ports: []ServicePort{
						{Name: "zero", Port: 0},                   // 5
						{Name: "sctp", Protocol: "sctp", Port: 9}, // 6
						{Name: "http", Port: 80, NodePort: 30080},
						{Name: "http", Port: 81}, // 7: name twice
					}},
					{Namespace: "default", Name: "same-vip", ClusterIP: ip("10.96.0.32"), Ports: []ServicePort{{Port: 80}}}, // 8
				},
				Endpoints: map[ServicePortKey][]EndpointAddr{
					key("default", "ok", "http"): {ep("10.244.2.7:8080"), {IP: ip("fd00::1"), Port: 80}}, // 9: not IPv4
					key("default", "gone", ""):   eps("10.244.2.9:80"),                                   // no such Service: ignored
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Render(tt.cfg, tt.st)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs.Skipped) != tt.wantSkipped {
				t.Errorf("skipped %d entries, want %d: %v", len(rs.Skipped), tt.wantSkipped, rs.Skipped)
			}
			checkGolden(t, tt.name, rs.Bytes())

			// The Syncer's caching renderer gives the same rules, the second
			// time (from its cache) too.
			r := newRenderer(tt.cfg)
			for range 2 {
				if got := r.render(tt.st).Bytes(); !bytes.Equal(got, rs.Bytes()) {
					t.Fatalf("cached render differs:\n%s", got)
				}
			}
		})
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rules differ from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestProbability(t *testing.T) {
	// What iptables-save prints for the fractions kube-proxy uses.
	for n, want := range map[int]string{2: "0.50000000000", 3: "0.33333333349", 4: "0.25000000000", 10: "0.10000000009", 7: "0.14285714272"} {
		if got := probability(n); got != want {
			t.Errorf("probability(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestRenderChainNames(t *testing.T) {
	cfg := testConfig()
	cfg.ChainPrefix = "ABCDEFGHIJ" // the longest allowed
	var st State
	for i := range 300 {
		st.Services = append(st.Services, Service{Namespace: "ns", Name: "svc-" + strings.Repeat("x", i%50) + string(rune('a'+i%26)) + "-" + strconv.Itoa(i),
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Ports: []ServicePort{{Port: 80}, {Name: "b", Port: 81, Protocol: "udp"}}})
	}
	rs, err := Render(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, tb := range []table{rs.filter, rs.nat} {
		for _, c := range tb.chains {
			if len(c.name) > maxChainName || !strings.HasPrefix(c.name, cfg.chainPrefix()) {
				t.Errorf("chain %q: longer than %d or without the prefix", c.name, maxChainName)
			}
			if seen[c.name] {
				t.Errorf("chain %q twice", c.name)
			}
			seen[c.name] = true
		}
	}
	if want := 600 + 64 + 5; len(seen) != want {
		t.Errorf("%d chains, want %d", len(seen), want)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	bad := []func(*Config){
		func(c *Config) { c.ChainPrefix = "" },
		func(c *Config) { c.ChainPrefix = "FLOTILLA-XY" }, // 11 characters
		func(c *Config) { c.ChainPrefix = "FLO TILLA" },
		func(c *Config) { c.ChainPrefix = "KUBE-X" },
		func(c *Config) { c.CommentTag = "a b" },
		func(c *Config) { c.ClusterCIDR = netip.MustParsePrefix("10.244.0.1/16") },
		func(c *Config) { c.NodePodCIDR = netip.MustParsePrefix("10.245.0.0/24") },
		func(c *Config) { c.NodePodCIDR = netip.MustParsePrefix("fd00::/64") },
		func(c *Config) { c.SNATAddress = netip.MustParsePrefix("10.244.2.1/32").Addr() }, // another node's
		func(c *Config) { c.MasqueradeMark = 0x6000 },
		func(c *Config) { c.RejectMark = c.MasqueradeMark },
		func(c *Config) { c.Shards = 48 },
		func(c *Config) { c.Shards = 512 },
		func(c *Config) { c.ChainsPerRestore = 0 },
		func(c *Config) { c.MaxEndpointsPerPort = 0 },
	}
	for i, f := range bad {
		c := testConfig()
		f(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: %+v validated", i, c)
		}
	}
}

func TestMaxEndpointsPerPort(t *testing.T) {
	cfg := testConfig()
	cfg.MaxEndpointsPerPort = 2
	rs, err := Render(cfg, web("10.244.2.1:80", "10.244.2.2:80", "10.244.2.3:80"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Skipped) != 1 {
		t.Fatalf("skipped = %v, want one error for the third endpoint", rs.Skipped)
	}
	if out := string(rs.Bytes()); strings.Contains(out, "10.244.2.3") || !strings.Contains(out, "10.244.2.2") {
		t.Fatalf("rules hold the wrong endpoints:\n%s", out)
	}
}
