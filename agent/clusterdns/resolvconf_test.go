package clusterdns

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPodResolvConf(t *testing.T) {
	bridge := netip.MustParseAddr("10.88.0.1")
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example"
	tests := []struct {
		name      string
		ns        netip.Addr
		namespace string
		domain    string
		extra     []string
		want      string
		err       string
	}{
		{name: "Kubernetes defaults", ns: bridge, namespace: "default", domain: "cluster.local",
			want: "nameserver 10.88.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:3\n"},
		{name: "domain with a dot and capitals", ns: bridge, namespace: "Prod", domain: "Corp.Example.",
			want: "nameserver 10.88.0.1\nsearch prod.svc.corp.example svc.corp.example corp.example\noptions ndots:5 timeout:1 attempts:3\n"},
		{name: "IPv6 nameserver", ns: netip.MustParseAddr("fd00::1"), namespace: "default", domain: "cluster.local",
			want: "nameserver fd00::1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:3\n"},
		{name: "node's search domains appended, bad and duplicate ones left out", ns: bridge, namespace: "default", domain: "cluster.local",
			extra: []string{"corp.example.", "bad domain\nnameserver 6.6.6.6", "cluster.local", "lab.example"},
			want:  "nameserver 10.88.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\noptions ndots:5 timeout:1 attempts:3\n"},
		{name: "at most 6 domains", ns: bridge, namespace: "default", domain: "cluster.local",
			extra: []string{"a.x", "b.x", "c.x", "d.x", "e.x"},
			want:  "nameserver 10.88.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local a.x b.x c.x\noptions ndots:5 timeout:1 attempts:3\n"},
		{name: "search line within 255 bytes", ns: bridge, namespace: "default", domain: "cluster.local",
			extra: []string{long, long + "2", "short.example"},
			want:  "nameserver 10.88.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local " + long + "\noptions ndots:5 timeout:1 attempts:3\n"},
		{name: "namespace with a newline", ns: bridge, namespace: "a\nnameserver 6.6.6.6", domain: "cluster.local", err: "not a DNS label"},
		{name: "no nameserver", namespace: "default", domain: "cluster.local", err: "not an address"},
		{name: "bad domain", ns: bridge, namespace: "default", domain: "cluster local", err: "not a DNS label"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PodResolvConf(tc.ns, tc.namespace, tc.domain, tc.extra...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			for _, line := range strings.Split(string(got), "\n") {
				if len(line)+1 > maxSearchLine+1 {
					t.Errorf("line of %d bytes: %q", len(line), line)
				}
			}
		})
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	self := []netip.AddrPort{netip.MustParseAddrPort("10.88.0.1:53")}
	tests := []struct {
		name string
		conf string
		want string
	}{
		{name: "plain", conf: "nameserver 192.0.2.1\nnameserver 192.0.2.2\n", want: "[192.0.2.1:53 192.0.2.2:53]"},
		{name: "comments, options, junk and duplicates", conf: "# nameserver 6.6.6.6\n; x\nsearch a b\noptions ndots:2\nnameserver bogus\nnameserver\nnameserver 192.0.2.1 # c\nnameserver 192.0.2.1\n",
			want: "[192.0.2.1:53]"},
		{name: "our own address skipped", conf: "nameserver 10.88.0.1\nnameserver 192.0.2.1\n", want: "[192.0.2.1:53]"},
		{name: "host loopback resolver kept (reachable from the agent, not us)", conf: "nameserver 127.0.0.53\n", want: "[127.0.0.53:53]"},
		{name: "IPv6 with zone", conf: "nameserver fe80::1%eth0\nnameserver 2001:db8::1\n", want: "[[fe80::1%eth0]:53 [2001:db8::1]:53]"},
		{name: "none", conf: "search example\n", want: "[]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(path, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := readUpstreams(path, self)
			if err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(got); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
		})
	}
	if _, err := readUpstreams(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Error("missing file: no error")
	}
	// A server listening on a wildcard would reach itself through any local
	// address on its port.
	if !pointsAt(netip.MustParseAddrPort("127.0.0.1:53"), []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:53")}) {
		t.Error("wildcard listener not seen as self")
	}
}

// TestResolvConfUpstreamsAtStart checks the default: upstreams come from the
// resolv.conf file when none are given.
func TestResolvConfUpstreamsAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, func(c *Config) { c.ResolvConf = path })
	got := s.Upstreams()
	if len(got) != 1 || got[0] != netip.MustParseAddrPort("127.0.0.1:53") {
		t.Fatalf("upstreams %v, want 127.0.0.1:53", got)
	}
}
