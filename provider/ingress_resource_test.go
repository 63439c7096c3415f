package provider

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/testcert"
)

// The fake agent's ingress endpoints: the agent's validation, conflicts
// and redaction (api package), over an in-memory table holding the keys.

func (f *fakeAgent) handleIngresses(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/namespaces/{ns}/ingresses", f.putIngressHTTP)
	mux.HandleFunc("PUT /v1/namespaces/{ns}/ingresses/{name}", f.putIngressHTTP)
	mux.HandleFunc("GET /v1/namespaces/{ns}/ingresses/{name}", f.getIngress)
	mux.HandleFunc("DELETE /v1/namespaces/{ns}/ingresses/{name}", f.deleteIngress)
}

func (f *fakeAgent) putIngressHTTP(w http.ResponseWriter, r *http.Request) {
	var in api.Ingress
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "decode ingress: "+err.Error())
		return
	}
	if in.Namespace == "" {
		in.Namespace = r.PathValue("ns")
	}
	if err := in.Validate(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid ingress: "+err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := in.ID()
	_, exists := f.ingresses[key]
	create := r.Method == http.MethodPost
	switch {
	case create && exists:
		writeError(w, http.StatusConflict, fmt.Sprintf("ingress %s: already exists", key))
		return
	case !create && (!exists || in.Name != r.PathValue("name")):
		writeError(w, http.StatusNotFound, fmt.Sprintf("ingress %s: not found", key))
		return
	}
	for k, other := range f.ingresses {
		if k == key {
			continue
		}
		if msg, clash := api.IngressConflict(other, &in); clash {
			writeError(w, http.StatusConflict, fmt.Sprintf("ingress %s: %s as ingress %s does; change or delete one of them", key, msg, k))
			return
		}
	}
	for i := range in.TLS {
		in.TLS[i].KeySHA256 = api.KeyDigest(in.TLS[i].Key)
	}
	f.ingresses[key] = &in
	code := http.StatusOK
	if create {
		code = http.StatusCreated
	}
	writeJSON(w, code, in.Redacted())
}

func (f *fakeAgent) getIngress(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	in, ok := f.ingresses[key]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("ingress %s not found", key))
		return
	}
	writeJSON(w, http.StatusOK, in.Redacted())
}

func (f *fakeAgent) deleteIngress(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.PathValue("ns") + "/" + r.PathValue("name")
	if _, ok := f.ingresses[key]; !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("ingress %s not found", key))
		return
	}
	delete(f.ingresses, key)
	w.WriteHeader(http.StatusNoContent)
}

// ingress returns a copy of what the fake holds for key, keys included.
func (f *fakeAgent) ingress(key string) (api.Ingress, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.ingresses[key]
	if !ok {
		return api.Ingress{}, false
	}
	return *in, true
}

func (f *fakeAgent) editIngress(key string, fn func(in *api.Ingress)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in, ok := f.ingresses[key]; ok {
		fn(in)
	}
}

func (f *fakeAgent) seedIngress(in api.Ingress) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.Namespace == "" {
		in.Namespace = api.DefaultNamespace
	}
	for i := range in.TLS {
		in.TLS[i].KeySHA256 = api.KeyDigest(in.TLS[i].Key)
	}
	f.ingresses[in.ID()] = &in
}

const ingAddr = "flotilla_ingress.shop"

func ingConfig(f *fakeAgent, body string) string {
	return providerConfig(f) + "resource \"flotilla_ingress\" \"shop\" {\n" + body + "\n}\n"
}

// pemPair is a certificate and key for host, failing the test otherwise.
func pemPair(t *testing.T, host string) (cert, key string) {
	t.Helper()
	cert, key, err := testcert.Pair(host)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// ingressBody is an ingress "shop" routing shop.example.com /api to web:80
// and / to front:http, with TLS from cert and key.
func ingressBody(cert, key string) string {
	return fmt.Sprintf(`
  name = "shop"
  rule {
    host = "shop.example.com"
    path {
      path    = "/api"
      service = "web"
      port    = 80
    }
    path {
      path      = "/"
      match     = "exact"
      service   = "front"
      port_name = "http"
    }
  }
  tls {
    hosts       = ["shop.example.com"]
    certificate = <<-EOT
%sEOT
    key         = <<-EOT
%sEOT
  }`, cert, key)
}

func checkIngressGone(f *fakeAgent, keys ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, k := range keys {
			if _, ok := f.ingress(k); ok {
				return fmt.Errorf("ingress %s still exists in the agent", k)
			}
		}
		return nil
	}
}

func checkIngressKey(f *fakeAgent, key, want string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		in, ok := f.ingress(key)
		if !ok || len(in.TLS) == 0 || in.TLS[0].Key != want {
			return fmt.Errorf("agent's ingress %s does not hold the configured key", key)
		}
		return nil
	}
}

func TestIngressResource_lifecycle(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	cert, key := pemPair(t, "shop.example.com")
	cert2, key2 := pemPair(t, "shop.example.com")
	_, outOfBand := pemPair(t, "shop.example.com")
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkIngressGone(f, "default/shop"),
		Steps: []resource.TestStep{
			{
				Config: ingConfig(f, ingressBody(cert, key)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(ingAddr, plancheck.ResourceActionCreate),
					// The digest is known at plan time; the key is sensitive.
					plancheck.ExpectKnownValue(ingAddr, svcPath("tls", 0, "key_sha256"), knownvalue.StringExact(api.KeyDigest(key))),
					plancheck.ExpectSensitiveValue(ingAddr, svcPath("tls", 0, "key")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(ingAddr, svcPath("id"), knownvalue.StringExact("default/shop")),
					statecheck.ExpectKnownValue(ingAddr, svcPath("namespace"), knownvalue.StringExact("default")),
					statecheck.ExpectKnownValue(ingAddr, svcPath("ssl_redirect"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue(ingAddr, svcPath("rule", 0, "path", 0), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"path": knownvalue.StringExact("/api"), "match": knownvalue.StringExact("prefix"),
						"service": knownvalue.StringExact("web"), "port": knownvalue.Int64Exact(80), "port_name": knownvalue.Null(),
					})),
					statecheck.ExpectKnownValue(ingAddr, svcPath("rule", 0, "path", 1, "match"), knownvalue.StringExact("exact")),
					statecheck.ExpectKnownValue(ingAddr, svcPath("default_backend"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectSensitiveValue(ingAddr, svcPath("tls", 0, "key")),
				},
				Check: checkIngressKey(f, "default/shop", key),
			},
			{
				// A new certificate and key: an update in place.
				Config: ingConfig(f, ingressBody(cert2, key2)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(ingAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(ingAddr, svcPath("tls", 0, "key_sha256"), knownvalue.StringExact(api.KeyDigest(key2))),
				}},
				Check: resource.ComposeTestCheckFunc(
					checkCalls(f, "PUT /v1/namespaces/default/ingresses/shop", 1),
					checkIngressKey(f, "default/shop", key2),
				),
			},
			{
				// Import cannot read the key back.
				ResourceName:            ingAddr,
				ImportState:             true,
				ImportStateId:           "default/shop",
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"tls.0.key"},
			},
			{
				// Drift: the key was replaced outside Terraform. key_sha256
				// shows it, and the apply puts the configured key back.
				PreConfig: func() {
					f.editIngress("default/shop", func(in *api.Ingress) {
						in.TLS[0].Key = outOfBand
						in.TLS[0].KeySHA256 = api.KeyDigest(outOfBand)
					})
				},
				Config: ingConfig(f, ingressBody(cert2, key2)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(ingAddr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(ingAddr, svcPath("tls", 0, "key_sha256"), knownvalue.StringExact(api.KeyDigest(key2))),
				}},
				Check: resource.ComposeTestCheckFunc(
					checkCalls(f, "PUT /v1/namespaces/default/ingresses/shop", 2),
					checkIngressKey(f, "default/shop", key2),
				),
			},
			{
				// Drift: a route changed outside Terraform.
				PreConfig: func() {
					f.editIngress("default/shop", func(in *api.Ingress) { in.Rules[0].Paths[0].Path = "/other" })
				},
				Config: ingConfig(f, ingressBody(cert2, key2)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(ingAddr, plancheck.ResourceActionUpdate),
				}},
				Check: func(*terraform.State) error {
					if in, _ := f.ingress("default/shop"); in.Rules[0].Paths[0].Path != "/api" {
						return fmt.Errorf("agent has path %s", in.Rules[0].Paths[0].Path)
					}
					return nil
				},
			},
			{
				// Drift: deleted outside Terraform; the plan creates it again.
				PreConfig: func() {
					f.mu.Lock()
					delete(f.ingresses, "default/shop")
					f.mu.Unlock()
				},
				Config: ingConfig(f, ingressBody(cert2, key2)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(ingAddr, plancheck.ResourceActionCreate),
				}},
				Check: checkIngressKey(f, "default/shop", key2),
			},
			{
				// No TLS, a default backend, ssl_redirect.
				Config: ingConfig(f, `
  name         = "shop"
  ssl_redirect = true
  default_backend {
    service = "web"
  }`),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(ingAddr, svcPath("tls"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(ingAddr, svcPath("rule"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue(ingAddr, svcPath("default_backend", 0), knownvalue.ObjectExact(map[string]knownvalue.Check{
						"service": knownvalue.StringExact("web"), "port": knownvalue.Null(), "port_name": knownvalue.Null(),
					})),
				},
				Check: func(*terraform.State) error {
					if in, _ := f.ingress("default/shop"); !in.SSLRedirect || in.DefaultBackend == nil || len(in.TLS) != 0 {
						return fmt.Errorf("agent has %+v", in)
					}
					return nil
				},
			},
		},
	})
}

// TestIngressResource_importThenApply: an imported ingress has no key in
// state; the first apply with the configuration sends it and converges.
func TestIngressResource_importThenApply(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	cert, key := pemPair(t, "shop.example.com")
	f.seedIngress(api.Ingress{Name: "shop",
		Rules: []api.IngressRule{{Host: "shop.example.com", Paths: []api.IngressPath{
			{Path: "/api", Match: api.PathPrefix, Backend: api.IngressBackend{Service: "web", Port: 80}},
			{Path: "/", Match: api.PathExact, Backend: api.IngressBackend{Service: "front", PortName: "http"}},
		}}},
		TLS: []api.IngressTLS{{Hosts: []string{"shop.example.com"}, Certificate: cert, Key: key}}})
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		Steps: []resource.TestStep{
			{
				Config:             ingConfig(f, ingressBody(cert, key)),
				ResourceName:       ingAddr,
				ImportState:        true,
				ImportStateId:      "shop",
				ImportStatePersist: true,
				ImportStateCheck: func(states []*terraform.InstanceState) error {
					s := states[0].Attributes
					if s["tls.0.key"] != "" || s["tls.0.key_sha256"] != api.KeyDigest(key) {
						return fmt.Errorf("imported tls: key %q, key_sha256 %q", s["tls.0.key"], s["tls.0.key_sha256"])
					}
					return nil
				},
			},
			{
				Config: ingConfig(f, ingressBody(cert, key)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(ingAddr, plancheck.ResourceActionUpdate),
				}},
				Check: checkIngressKey(f, "default/shop", key),
			},
			{
				// And then it is stable.
				Config: ingConfig(f, ingressBody(cert, key)),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
			},
		},
	})
}

// TestIngressResource_conflict: a route another ingress holds fails the
// apply with the agent's message naming both.
func TestIngressResource_conflict(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.seedIngress(api.Ingress{Name: "other", Rules: []api.IngressRule{{Host: "shop.example.com",
		Paths: []api.IngressPath{{Path: "/api", Backend: api.IngressBackend{Service: "api"}}}}}})
	cert, key := pemPair(t, "shop.example.com")
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkIngressGone(f, "default/shop"),
		Steps: []resource.TestStep{{
			Config:      ingConfig(f, ingressBody(cert, key)),
			ExpectError: wrappedRE(regexp.QuoteMeta("ingress default/shop: both route shop.example.com prefix /api as ingress default/other does")),
		}},
	})
}

func TestIngressResource_invalidConfig(t *testing.T) {
	cert, key := pemPair(t, "shop.example.com")
	_, otherKey := pemPair(t, "other.example.com")
	tlsBlock := func(hosts, cert, key string) string {
		return fmt.Sprintf("tls {\n hosts = %s\n certificate = <<-EOT\n%sEOT\n key = <<-EOT\n%sEOT\n}\n", hosts, cert, key)
	}
	const rule = `rule {
	  host = "shop.example.com"
	  path {
	    path    = "/api"
	    service = "web"
	  }
	}`
	tests := []struct {
		name   string
		config string
		want   string
	}{
		{"nothing to route", `name = "shop"`, `an ingress needs at least one rule block or a default_backend block`},
		{"bad name", `name = "Shop"` + "\n" + rule, `name: "Shop" must be lower-case`},
		{"bad host", `name = "shop"
			rule {
			  host = "shop.example.com:8080"
			  path {
			    path    = "/"
			    service = "web"
			  }
			}`, `rule\[0\]\.host: "shop.example.com:8080" must be a lower-case DNS name`},
		{"ip host", `name = "shop"
			rule {
			  host = "10.0.0.1"
			  path {
			    path    = "/"
			    service = "web"
			  }
			}`, `rule\[0\]\.host: "10.0.0.1" looks like an IP address`},
		{"no path", `name = "shop"
			rule {
			  host = "shop.example.com"
			}`, `Block rule\[0\]\.path must have a configuration value`},
		{"bad path", `name = "shop"
			rule {
			  path {
			    path    = "/a;b"
			    service = "web"
			  }
			}`, `rule\[0\]\.path\[0\]\.path: "/a;b": character ';' is not allowed`},
		{"relative path", `name = "shop"
			rule {
			  path {
			    path    = "api"
			    service = "web"
			  }
			}`, `rule\[0\]\.path\[0\]\.path: "api" must start with /`},
		{"bad match", `name = "shop"
			rule {
			  path {
			    path    = "/"
			    match   = "regex"
			    service = "web"
			  }
			}`, `rule\[0\]\.path\[0\]\.match value must be one of`},
		{"bad service", `name = "shop"
			rule {
			  path {
			    path    = "/"
			    service = "Web"
			  }
			}`, `rule\[0\]\.path\[0\]\.service: "Web" must be lower-case`},
		{"port and port_name", `name = "shop"
			rule {
			  path {
			    path      = "/"
			    service   = "web"
			    port      = 80
			    port_name = "http"
			  }
			}`, `Attribute "rule\[0\]\.path\[0\]\.port_name" cannot be specified when "rule\[0\]\.path\[0\]\.port" is specified`},
		{"port out of range", `name = "shop"
			default_backend {
			  service = "web"
			  port    = 70000
			}`, `default_backend\[0\]\.port value must be between 1 and 65535`},
		{"duplicate host", `name = "shop"` + "\n" + rule + "\n" + rule, `rule\[1\]\.host: shop.example.com has another rule in this ingress; put its paths in one rule. It is also given by rule\[0\]\.host`},
		{"duplicate path", `name = "shop"
			rule {
			  path {
			    path    = "/api"
			    service = "web"
			  }
			  path {
			    path    = "/api"
			    service = "other"
			  }
			}`, `rule\[0\]\.path\[1\]\.path: prefix /api appears twice in this rule; it is also given by rule\[0\]\.path\[0\]\.path`},
		{"two default backends", `name = "shop"
			default_backend {
			  service = "a"
			}
			default_backend {
			  service = "b"
			}`, `default_backend list must contain at most 1 elements`},
		{"tls without hosts", `name = "shop"` + "\n" + rule + "\n" + tlsBlock("[]", cert, key), `tls\[0\]\.hosts list must contain at least 1 elements`},
		{"tls bad host", `name = "shop"` + "\n" + rule + "\n" + tlsBlock(`["Shop"]`, cert, key), `tls\[0\]\.hosts\[0\]: "Shop" must be a lower-case DNS name`},
		{"tls host twice", `name = "shop"` + "\n" + rule + "\n" + tlsBlock(`["shop.example.com"]`, cert, key) + tlsBlock(`["shop.example.com"]`, cert, key),
			`tls\[1\]\.hosts\[0\]: shop.example.com has another certificate in this ingress; it is also named by tls\[0\]\.hosts\[0\]`},
		{"tls bad certificate", `name = "shop"` + "\n" + rule + "\n" + tlsBlock(`["shop.example.com"]`, key, key), `tls\[0\]\.certificate: no PEM certificate`},
		{"tls key not a key", `name = "shop"` + "\n" + rule + "\n" + tlsBlock(`["shop.example.com"]`, cert, "not a key\n"), `tls\[0\]\.key: not a PEM private key .* the value is not shown`},
		{"tls key of another certificate", `name = "shop"` + "\n" + rule + "\n" + tlsBlock(`["shop.example.com"]`, cert, otherKey),
			`tls\[0\]: the certificate and key are not a PEM pair that fits \(private key does not match public key\)`},
	}
	testPlanErrors(t, "flotilla_ingress", tests)
}

// TestIngressKeyNotInPlanOutput runs the real terraform binary's plan and
// apply against the fake agent, with this repository's provider, and
// looks for the key (or any line of it) in what terraform prints.
func TestIngressKeyNotInPlanOutput(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	cert, key := pemPair(t, "shop.example.com")
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "terraform-provider-flotilla"), ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the provider: %v\n%s", err, out)
	}
	rc := filepath.Join(dir, "terraformrc")
	rcText := fmt.Sprintf("provider_installation {\n  dev_overrides {\n    %q = %q\n  }\n  direct {}\n}\n", "registry.terraform.io/flotilla-io/flotilla", dir)
	work := filepath.Join(dir, "work")
	main := "terraform {\n  required_providers {\n    flotilla = { source = \"flotilla-io/flotilla\" }\n  }\n}\n" +
		ingConfig(f, ingressBody(cert, key)) + "\noutput \"tls\" {\n  value = flotilla_ingress.shop.tls\n  sensitive = true\n}\n"
	if err := os.WriteFile(rc, []byte(rcText), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if bin == "" {
		bin = "terraform"
	}
	run := func(args ...string) string {
		t.Helper()
		if args[0] != "show" {
			args = append(args, "-input=false")
		}
		cmd := exec.Command(bin, append(args, "-no-color")...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
		cmd.WaitDelay = time.Minute
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("terraform %s: %v\n%s", args[0], err, out)
		}
		return string(out)
	}
	keyLines := []string{}
	for _, l := range strings.Split(key, "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			keyLines = append(keyLines, l)
		}
	}
	check := func(what, out string) {
		t.Helper()
		for _, l := range keyLines {
			if strings.Contains(out, l) {
				t.Errorf("terraform %s prints the key:\n%s", what, out)
				return
			}
		}
	}
	plan := run("plan")
	if !strings.Contains(plan, "(sensitive value)") || !strings.Contains(plan, api.KeyDigest(key)) {
		t.Errorf("the plan shows neither a sensitive key nor its digest:\n%s", plan)
	}
	check("plan", plan)
	check("apply", run("apply", "-auto-approve"))
	check("show", run("show"))
	_, key2 := pemPair(t, "shop.example.com")
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(strings.Replace(main, key, key2, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	// key2 does not fit cert: the plan must fail without printing either key.
	cmd := exec.Command(bin, "plan", "-input=false", "-no-color")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a PEM pair that fits") {
		t.Errorf("a key that does not fit: %v\n%s", err, out)
	}
	check("plan (bad key)", string(out))
	for _, l := range strings.Split(key2, "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") && strings.Contains(string(out), l) {
			t.Errorf("terraform plan prints the new key:\n%s", out)
		}
	}
	if _, ok := f.ingress("default/shop"); !ok {
		t.Error("the apply did not create the ingress")
	}
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	check("destroy", run("destroy", "-auto-approve"))
}
