package ingress

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// A test-only pair (ten years), so the golden files stay stable.
const goldenCert = `-----BEGIN CERTIFICATE-----
MIIBmTCCAT6gAwIBAgIUJ2nX1zx0IVSgeqXJRvkmO6tiE2EwCgYIKoZIzj0EAwIw
ETEPMA0GA1UEAwwGZ29sZGVuMB4XDTI2MTIwMTAzMTgwOVoXDTM2MTEyODAzMTgw
OVowETEPMA0GA1UEAwwGZ29sZGVuMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
lWqJ35mCY+7cuVd8q8bphZI4EvFCsT35v2ntLUCLCXZivhfLJaE11EGZs6t5ECt5
JdwVbClR5iiH8QC+QRWcfqN0MHIwHQYDVR0OBBYEFMwwMMH/KnJaVfSsfDLFU1DQ
eNSaMB8GA1UdIwQYMBaAFMwwMMH/KnJaVfSsfDLFU1DQeNSaMA8GA1UdEwEB/wQF
MAMBAf8wHwYDVR0RBBgwFoIJYS5leGFtcGxlggkqLmV4YW1wbGUwCgYIKoZIzj0E
AwIDSQAwRgIhAOFWJt4xtkMW8eJD5U+euqCIwddfrD9xmcBqCeDudre5AiEAzzP6
YQ1XprvwwOUHBLm4+LIhJVeL3yO2e/OYV3o7oG0=
-----END CERTIFICATE-----`

const goldenKey = `-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIHFt4DMUsjGgx/pQ1THLgw8hf29E7sPXr2GWKlEe4NnAoAoGCCqGSM49
AwEHoUQDQgAElWqJ35mCY+7cuVd8q8bphZI4EvFCsT35v2ntLUCLCXZivhfLJaE1
1EGZs6t5ECt5JdwVbClR5iiH8QC+QRWcfg==
-----END EC PRIVATE KEY-----`

func goldenSettings() Settings {
	s := DefaultSettings()
	s.Dir = "/var/lib/flotilla/ingress"
	s.LogAddress = "127.0.0.1:5140"
	s.FallbackCert = "fallback.pem"
	s.BindAddress = "127.0.0.1"
	return s
}

func twoServices() ([]api.Service, []api.Endpoints) {
	svcs := []api.Service{
		{Namespace: "default", Name: "web", Ports: []api.ServicePort{{Port: 80}}},
		{Namespace: "default", Name: "api", Ports: []api.ServicePort{{Name: "http", Port: 8080}, {Name: "grpc", Port: 9090}}},
		{Namespace: "default", Name: "down", Ports: []api.ServicePort{{Port: 80}}},
	}
	eps := []api.Endpoints{
		{Namespace: "default", Name: "web", Addresses: []api.EndpointAddress{
			{Pod: "web-1", IP: "10.244.1.5", Ready: true, Ports: []api.EndpointPort{{Port: 8080}}},
			{Pod: "web-0", IP: "10.244.0.7", Ready: true, Ports: []api.EndpointPort{{Port: 8080}}},
			{Pod: "web-2", IP: "10.244.2.9", Ready: false, Ports: []api.EndpointPort{{Port: 8080}}},
		}},
		{Namespace: "default", Name: "api", Addresses: []api.EndpointAddress{
			{Pod: "api-0", IP: "10.244.1.8", Ready: true, Ports: []api.EndpointPort{{Name: "http", Port: 8000}, {Name: "grpc", Port: 9000}}},
		}},
		{Namespace: "default", Name: "down", Addresses: []api.EndpointAddress{
			{Pod: "down-0", IP: "10.244.1.9", Ready: false, Ports: []api.EndpointPort{{Port: 80}}},
		}},
	}
	return svcs, eps
}

func TestRenderGolden(t *testing.T) {
	svcs, eps := twoServices()
	tests := []struct {
		name        string
		in          Input
		mod         func(*Settings)
		wantSkipped int
	}{
		{name: "empty"},
		{name: "routes", in: Input{Services: svcs, Endpoints: eps, Ingresses: []api.Ingress{{
			Namespace: "default", Name: "shop",
			Rules: []api.IngressRule{
				{Host: "shop.example", Paths: []api.IngressPath{
					{Path: "/", Backend: api.IngressBackend{Service: "web"}},
					{Path: "/api/", Backend: api.IngressBackend{Service: "api", PortName: "http"}},
					{Path: "/api", Match: api.PathExact, Backend: api.IngressBackend{Service: "api", Port: 9090}},
					{Path: "/down", Backend: api.IngressBackend{Service: "down"}},
					{Path: "/a%41b", Backend: api.IngressBackend{Service: "web"}},
				}},
				{Host: "*.shop.example", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}},
				{Paths: []api.IngressPath{{Path: "/healthz", Match: api.PathExact, Backend: api.IngressBackend{Service: "nope"}}}},
			},
			DefaultBackend: &api.IngressBackend{Service: "web"},
		}}}},
		{name: "tls", in: Input{Services: svcs, Endpoints: eps, Ingresses: []api.Ingress{{
			Namespace: "default", Name: "secure", SSLRedirect: true,
			Rules: []api.IngressRule{
				{Host: "a.shop.example", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}},
				{Host: "b.shop.example", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}},
				{Host: "plain.other", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}},
			},
			TLS: []api.IngressTLS{{Hosts: []string{"a.shop.example", "*.shop.example"}, Certificate: goldenCert, Key: goldenKey}},
		}}}},
		{name: "no-https", mod: func(s *Settings) { s.HTTPSPort = 0; s.LogAddress = ""; s.BindAddress = "" }, in: Input{Services: svcs, Endpoints: eps, Ingresses: []api.Ingress{{
			Namespace: "default", Name: "x", Rules: []api.IngressRule{{Host: "x.example", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web"}}}}},
		}}}},
		{name: "hostile", wantSkipped: 7, in: hostileInput()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := goldenSettings()
			if tc.mod != nil {
				tc.mod(&s)
			}
			r := Render(s, tc.in)
			if len(r.Skipped) != tc.wantSkipped {
				t.Errorf("skipped %d, want %d: %q", len(r.Skipped), tc.wantSkipped, r.Skipped)
			}
			if r2 := Render(s, tc.in); r2.Text != r.Text {
				t.Error("two renders of the same input differ")
			}
			for _, sk := range r.Skipped {
				if strings.Contains(sk, "PRIVATE KEY") {
					t.Errorf("a skip reason holds a key: %q", sk)
				}
			}
			if strings.Contains(r.Text, "PRIVATE KEY") {
				t.Error("the configuration text holds a key")
			}
			var logged bytes.Buffer
			slog.New(slog.NewJSONHandler(&logged, nil)).Info("r", "rendered", r, "certs", r.Certs)
			for _, s := range []string{fmt.Sprintf("%v %+v %#v %s %x", r, r, r, r.Certs, r.Certs), logged.String()} {
				if strings.Contains(s, "PRIVATE") || strings.Contains(s, "BEGIN") || strings.Contains(s, "2d2d2d2d2d") {
					t.Errorf("a printed or logged Rendered holds a key: %.200s", s)
				}
			}
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				os.WriteFile(path, []byte(r.Text), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -run TestRenderGolden -update writes it)", err)
			}
			if r.Text != string(want) {
				t.Errorf("%s differs from the rendered text:\n%s", path, r.Text)
			}
			nginxTest(t, s, r)
		})
	}
}

// hostileInput tries to write into the configuration through every field
// that reaches it; all of it must be left out.
func hostileInput() Input {
	svcs, eps := twoServices()
	eps = append(eps, api.Endpoints{Namespace: "default", Name: "evil", Addresses: []api.EndpointAddress{
		{Pod: "e", IP: "10.0.0.1;}server{", Ready: true, Ports: []api.EndpointPort{{Port: 80}}},
		{Pod: "f", IP: "10.0.0.2", Ready: true, Ports: []api.EndpointPort{{Port: 70000}}},
	}})
	svcs = append(svcs, api.Service{Namespace: "default", Name: "evil", Ports: []api.ServicePort{{Port: 80}}})
	web := api.IngressBackend{Service: "web"}
	return Input{Services: svcs, Endpoints: eps, Ingresses: []api.Ingress{
		{Namespace: "default", Name: "badhost", Rules: []api.IngressRule{{Host: "a.example;}", Paths: []api.IngressPath{{Path: "/", Backend: web}}}}},
		{Namespace: "default", Name: "badpath", Rules: []api.IngressRule{{Host: "p.example", Paths: []api.IngressPath{{Path: "/x\";return 200 \"owned", Backend: web}}}}},
		{Namespace: "default", Name: "encoded", Rules: []api.IngressRule{{Host: "q.example", Paths: []api.IngressPath{{Path: "/x%22%3B%7D", Backend: web}}}}},
		{Namespace: "default", Name: "badsvc", Rules: []api.IngressRule{{Host: "s.example", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web;"}}}}}},
		{Namespace: "Bad NS", Name: "x", Rules: []api.IngressRule{{Host: "n.example", Paths: []api.IngressPath{{Path: "/", Backend: web}}}}},
		{Namespace: "default", Name: "badtls", Rules: []api.IngressRule{{Host: "t.example", Paths: []api.IngressPath{{Path: "/", Backend: web}}}},
			TLS: []api.IngressTLS{{Hosts: []string{"t.example"}, Certificate: goldenCert, Key: "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----"}}},
		// An endpoint address that is not an IP, and a port out of range:
		// both dropped, so evil has no ready endpoint (a 503, not a skip).
		{Namespace: "default", Name: "evilsvc", Rules: []api.IngressRule{{Host: "e.example", Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "evil"}}}}}},
		// A clash the API should have refused: the older ingress keeps it.
		{Namespace: "default", Name: "zclash", Rules: []api.IngressRule{{Host: "e.example", Paths: []api.IngressPath{{Path: "/", Backend: web}}}}},
	}}
}

// nginxTest has the real nginx check a rendered configuration.
func nginxTest(t *testing.T, s Settings, r Rendered) {
	t.Helper()
	dir := t.TempDir()
	text := strings.ReplaceAll(r.Text, s.Dir, dir)
	os.MkdirAll(filepath.Join(dir, "tls"), 0o700)
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
	fallback, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tls", s.FallbackCert), fallback, 0o600)
	for name, pem := range r.Certs {
		os.WriteFile(filepath.Join(dir, "tls", name), pem, 0o600)
	}
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(text), 0o644)
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatalf("nginx is not installed (make deps installs Debian's nginx-light): %v", err)
	}
	if out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
		t.Errorf("nginx -t refused the rendered configuration: %v\n%s", err, out)
	}
}

func TestRenderTimeoutsAndPaths(t *testing.T) {
	s := goldenSettings()
	s.ConnectTimeout, s.ReadTimeout = 3*time.Second, 90*time.Second
	r := Render(s, Input{})
	for _, want := range []string{"proxy_connect_timeout 3s;", "proxy_read_timeout 90s;", "listen 127.0.0.1:8080 default_server reuseport;", "listen 127.0.0.1:8443 ssl http2 default_server reuseport;"} {
		if !strings.Contains(r.Text, want) {
			t.Errorf("rendered text lacks %q", want)
		}
	}
	for _, tc := range []struct {
		in     string
		prefix bool
		want   string
		ok     bool
	}{
		{"/", true, "/", true},
		{"/api/", true, "/api", true},
		{"/api/", false, "/api/", true},
		{"/a%20b", true, "/a b", false}, // a space may not be written
		{"/a%41", true, "/aA", true},
		{"/a%2F%2E%2E", true, "", false}, // decodes to a dot segment
		{"/a%zz", true, "", false},
		{"/a;b", true, "", false},
	} {
		got, ok := nginxPath(tc.in, tc.prefix)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("nginxPath(%q, %v) = %q, %v; want %q, %v", tc.in, tc.prefix, got, ok, tc.want, tc.ok)
		}
	}
}
