package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/testcert"
)

func baseIngress() api.Ingress {
	return api.Ingress{Namespace: "default", Name: "shop", Rules: []api.IngressRule{{
		Host:  "shop.example.com",
		Paths: []api.IngressPath{{Path: "/api", Backend: api.IngressBackend{Service: "web", Port: 80}}},
	}}}
}

func TestIngressValidate(t *testing.T) {
	cert, key, err := testcert.Pair("shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := testcert.Pair("other.example.com")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*api.Ingress)
		want   string // "" for valid; else a substring naming the field
	}{
		{"valid", func(*api.Ingress) {}, ""},
		{"valid with TLS", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert, Key: key}}
		}, ""},
		{"valid default backend only", func(in *api.Ingress) {
			in.Rules = nil
			in.DefaultBackend = &api.IngressBackend{Service: "web", PortName: "http"}
		}, ""},
		{"wildcard host", func(in *api.Ingress) { in.Rules[0].Host = "*.example.com" }, ""},
		{"any host", func(in *api.Ingress) { in.Rules[0].Host = "" }, ""},
		{"bad name", func(in *api.Ingress) { in.Name = "Shop" }, "name"},
		{"nothing to route", func(in *api.Ingress) { in.Rules = nil }, "rules: an ingress needs at least one rule or a default_backend"},
		{"host with a port", func(in *api.Ingress) { in.Rules[0].Host = "shop.example.com:80" }, "rules[0].host"},
		{"host upper case", func(in *api.Ingress) { in.Rules[0].Host = "Shop.example.com" }, "rules[0].host"},
		{"host an IP", func(in *api.Ingress) { in.Rules[0].Host = "10.0.0.1" }, "rules[0].host: \"10.0.0.1\" looks like an IP address"},
		{"bare wildcard", func(in *api.Ingress) { in.Rules[0].Host = "*.com" }, "rules[0].host"},
		{"host twice", func(in *api.Ingress) { in.Rules = append(in.Rules, in.Rules[0]) }, "rules[1].host"},
		{"no paths", func(in *api.Ingress) { in.Rules[0].Paths = nil }, "rules[0].paths: must have at least one path"},
		{"relative path", func(in *api.Ingress) { in.Rules[0].Paths[0].Path = "api" }, "rules[0].paths[0].path: \"api\" must start with /"},
		{"path with a quote", func(in *api.Ingress) { in.Rules[0].Paths[0].Path = `/a"b` }, "rules[0].paths[0].path"},
		{"path with a semicolon", func(in *api.Ingress) { in.Rules[0].Paths[0].Path = "/a;b" }, "rules[0].paths[0].path"},
		{"path with dot dot", func(in *api.Ingress) { in.Rules[0].Paths[0].Path = "/a/../b" }, "rules[0].paths[0].path"},
		{"path too long", func(in *api.Ingress) { in.Rules[0].Paths[0].Path = "/" + strings.Repeat("a", api.MaxIngressPathLen) }, "rules[0].paths[0].path"},
		{"bad match", func(in *api.Ingress) { in.Rules[0].Paths[0].Match = "regex" }, "rules[0].paths[0].match"},
		{"path twice", func(in *api.Ingress) {
			in.Rules[0].Paths = append(in.Rules[0].Paths, in.Rules[0].Paths[0])
		}, "rules[0].paths[1].path"},
		{"same path, both matches", func(in *api.Ingress) {
			p := in.Rules[0].Paths[0]
			p.Match = api.PathExact
			in.Rules[0].Paths = append(in.Rules[0].Paths, p)
		}, ""},
		{"backend without service", func(in *api.Ingress) { in.Rules[0].Paths[0].Backend.Service = "" }, "rules[0].paths[0].backend.service"},
		{"backend port out of range", func(in *api.Ingress) { in.Rules[0].Paths[0].Backend.Port = 70000 }, "rules[0].paths[0].backend.port"},
		{"backend port and name", func(in *api.Ingress) { in.Rules[0].Paths[0].Backend.PortName = "http" }, "rules[0].paths[0].backend.port_name: give port or port_name, not both"},
		{"default backend bad", func(in *api.Ingress) { in.DefaultBackend = &api.IngressBackend{Service: "Web"} }, "default_backend.service"},
		{"tls without hosts", func(in *api.Ingress) { in.TLS = []api.IngressTLS{{Certificate: cert, Key: key}} }, "tls[0].hosts: must name at least one host"},
		{"tls host bad", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"bad host"}, Certificate: cert, Key: key}}
		}, "tls[0].hosts[0]"},
		{"tls host twice", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"a.example.com"}, Certificate: cert, Key: key}, {Hosts: []string{"a.example.com"}, Certificate: cert, Key: key}}
		}, "tls[1].hosts[0]"},
		{"tls without certificate", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Key: key}}
		}, "tls[0].certificate: is required"},
		{"tls without key", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert}}
		}, "tls[0].key: is required"},
		{"tls key of another certificate", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert, Key: otherKey}}
		}, "tls[0]: the certificate and key are not a PEM pair that fits (private key does not match public key)"},
		{"tls key not PEM", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert, Key: "SECRET-NOT-PEM"}}
		}, "tls[0]: the certificate and key are not a PEM pair"},
		{"tls key too big", func(in *api.Ingress) {
			in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert, Key: strings.Repeat("k", api.MaxIngressPEMBytes+1)}}
		}, "tls[0].key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseIngress()
			tt.change(&in)
			err := in.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v; want an error containing %q", err, tt.want)
			}
			if err != nil {
				for _, t0 := range in.TLS {
					for _, line := range strings.Split(t0.Key, "\n") {
						if len(line) > 8 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line) {
							t.Errorf("the error quotes the key: %v", err)
						}
					}
				}
				if strings.Contains(err.Error(), "SECRET-NOT-PEM") {
					t.Errorf("the error quotes the key: %v", err)
				}
			}
		})
	}
}

func TestIngressConflict(t *testing.T) {
	with := func(change func(*api.Ingress)) *api.Ingress {
		in := baseIngress()
		in.Name = "other"
		change(&in)
		return &in
	}
	a := baseIngress()
	tests := []struct {
		name string
		b    *api.Ingress
		want string // "" for none
	}{
		{"same host and path", with(func(*api.Ingress) {}), "both route shop.example.com prefix /api"},
		{"other host", with(func(in *api.Ingress) { in.Rules[0].Host = "blog.example.com" }), ""},
		{"other path", with(func(in *api.Ingress) { in.Rules[0].Paths[0].Path = "/apix" }), ""},
		{"same path, exact", with(func(in *api.Ingress) { in.Rules[0].Paths[0].Match = api.PathExact }), ""},
		{"wildcard is not the host", with(func(in *api.Ingress) { in.Rules[0].Host = "*.example.com" }), ""},
		{"both any host", with(func(in *api.Ingress) { in.Rules[0].Host = "" }), ""},
		{"same TLS host", with(func(in *api.Ingress) {
			in.Rules[0].Host = "blog.example.com"
			in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}}}
		}), ""},
		{"one default", with(func(in *api.Ingress) {
			in.Rules[0].Host = "blog.example.com"
			in.DefaultBackend = &api.IngressBackend{Service: "x"}
		}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, clash := api.IngressConflict(&a, tt.b)
			if clash != (tt.want != "") || !strings.Contains(msg, tt.want) {
				t.Errorf("IngressConflict = %q, %v; want %q", msg, clash, tt.want)
			}
		})
	}
	// TLS hosts and default backends clash when both have them.
	b := a
	b.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}}}
	c := *with(func(in *api.Ingress) {
		in.Rules[0].Host = "blog.example.com"
		in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}}}
	})
	if msg, ok := api.IngressConflict(&b, &c); !ok || msg != "both have a TLS certificate for shop.example.com" {
		t.Errorf("TLS clash: %q, %v", msg, ok)
	}
	b.DefaultBackend = &api.IngressBackend{Service: "x"}
	c.DefaultBackend = &api.IngressBackend{Service: "y"}
	if msg, ok := api.IngressConflict(&b, &c); !ok || msg != "both have a default_backend" {
		t.Errorf("default clash: %q, %v", msg, ok)
	}
	// Any host ("") on both sides clashes on the same path.
	b, c = baseIngress(), baseIngress()
	b.Rules[0].Host, c.Rules[0].Host = "", ""
	if msg, ok := api.IngressConflict(&b, &c); !ok || msg != "both route any host prefix /api" {
		t.Errorf("any host clash: %q, %v", msg, ok)
	}
}

func TestIngressRedacted(t *testing.T) {
	in := baseIngress()
	in.TLS = []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: "CERT", Key: "KEY"}}
	r := in.Redacted()
	if r.TLS[0].Key != "" || r.TLS[0].KeySHA256 != api.KeyDigest("KEY") || r.TLS[0].Certificate != "CERT" {
		t.Errorf("Redacted = %+v", r.TLS[0])
	}
	if in.TLS[0].Key != "KEY" {
		t.Error("Redacted changed the original")
	}
	r.TLS[0].Hosts[0] = "x"
	if in.TLS[0].Hosts[0] != "shop.example.com" {
		t.Error("Redacted shares the hosts")
	}
	// Redacting again keeps the digest.
	if rr := r.Redacted(); rr.TLS[0].KeySHA256 != api.KeyDigest("KEY") {
		t.Errorf("redacted twice: %+v", rr.TLS[0])
	}
	if (&api.Ingress{}).Redacted().TLS != nil {
		t.Error("no TLS becomes an empty list")
	}
	if d := api.KeyDigest("KEY"); len(d) != 64 || strings.Contains(d, "KEY") {
		t.Errorf("KeyDigest = %q", d)
	}
}

// FuzzIngress: whatever a client sends, validation, conflicts and
// redaction answer without panicking, and an error never quotes the key.
func FuzzIngress(f *testing.F) {
	f.Add(`{"namespace":"default","name":"a","rules":[{"host":"shop.example.com","paths":[{"path":"/api","backend":{"service":"web","port":80}}]}]}`)
	f.Add(`{"namespace":"default","name":"a","default_backend":{"service":"web"},"tls":[{"hosts":["*.example.com"],"certificate":"x","key":"SECRETKEY"}]}`)
	f.Add(`{"rules":[{"paths":[{"path":"/a/../b","match":"exact"}]}],"tls":[{"hosts":[""],"key":"-----BEGIN PRIVATE KEY-----\nSECRETKEY\n-----END PRIVATE KEY-----\n"}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var in api.Ingress
		if json.Unmarshal([]byte(body), &in) != nil {
			return
		}
		err := in.Validate()
		_ = in.ValidateFields()
		other := baseIngress()
		api.IngressConflict(&in, &other)
		api.IngressConflict(&other, &in)
		r := in.Redacted()
		for i, tl := range r.TLS {
			if tl.Key != "" {
				t.Fatalf("Redacted kept tls[%d].key", i)
			}
		}
		if err == nil {
			return
		}
		for _, tl := range in.TLS {
			if len(tl.Key) >= 12 && strings.Contains(err.Error(), tl.Key) {
				t.Fatalf("the error quotes a key: %v", err)
			}
		}
	})
}
