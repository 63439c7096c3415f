package cloudinit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
)

// testParams returns the parameters of a three-server cluster with real
// secrets, as flotilla_cluster generates them.
func testParams(t *testing.T, role string) Params {
	t.Helper()
	p, _ := testParamsToken(t, role)
	return p
}

// testAgentSHA256 is the agent checksum of testParams.
const testAgentSHA256 = "0f343b0931126a20f133d67c2b018a3b5e7c2a9c4d5e6f708192a3b4c5d6e7f8"

// testParamsToken returns testParams and the API token whose hash they hold.
func testParamsToken(t *testing.T, role string) (Params, string) {
	t.Helper()
	caPEM, keyPEM, err := pki.NewCA("flotilla-test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gossip, err := pki.GossipKey()
	if err != nil {
		t.Fatal(err)
	}
	join, err := pki.JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	apiTok, err := pki.JoinToken()
	if err != nil {
		t.Fatal(err)
	}
	return Params{
		ClusterName:     "prod",
		Role:            role,
		ServerAddresses: []string{"10.0.1.10", "10.0.1.11", "10.0.1.12"},
		PodCIDR:         "10.244.0.0/16",
		ServiceCIDR:     "10.96.0.0/16",
		APIPort:         7400,
		AgentURL:        "https://releases.example.com/flotilla-agent_0.1.0_linux_amd64?sig=a'b",
		AgentSHA256:     testAgentSHA256,
		CACertPEM:       string(caPEM),
		CAKeyPEM:        string(keyPEM),
		GossipKey:       gossip,
		JoinToken:       join,
		APITokenHash:    pki.TokenHash(apiTok),
	}, apiTok
}

// requireTool returns the path of a tool the test needs. Under make test
// (TF_ACC set) a missing tool fails the test: install-deps.sh installs it.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("TF_ACC") != "" {
		t.Fatalf("%s is not installed; make test needs it (apt-get install %s, or scripts/install-deps.sh)", name, pkg)
	}
	t.Skipf("%s is not installed (apt-get install %s); make test runs this test", name, pkg)
	return ""
}

type writeFile struct {
	Path        string `json:"path"`
	Owner       string `json:"owner"`
	Permissions string `json:"permissions"`
	Content     string `json:"content"`
}

type userData struct {
	WriteFiles []writeFile `json:"write_files"`
	RunCmd     [][]string  `json:"runcmd"`
}

// TestUserDataSchema renders both roles, checks them with Debian's
// cloud-init (`cloud-init schema`), and reads them back with the YAML parser
// cloud-init uses to check every file lands with the right content and mode.
func TestUserDataSchema(t *testing.T) {
	t.Parallel()
	cloudInit := requireTool(t, "cloud-init", "cloud-init")
	python := requireTool(t, "python3", "python3-yaml")
	for _, role := range []string{RoleServer, RoleClient} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			p, apiToken := testParamsToken(t, role)
			out, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			// Nodes get the API token's hash, never the token.
			if strings.Contains(out, apiToken) {
				t.Errorf("%s user-data contains the API token", role)
			}
			if hasKey := strings.Contains(out, "PRIVATE KEY"); hasKey != (role == RoleServer) {
				t.Errorf("%s user-data contains a private key: %v", role, hasKey)
			}
			if !strings.HasPrefix(out, "#cloud-config\n") {
				t.Fatalf("user-data must start with #cloud-config:\n%.200s", out)
			}
			file := filepath.Join(t.TempDir(), "user-data.yaml")
			if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if b, err := exec.CommandContext(ctx, cloudInit, "schema", "--config-file", file).CombinedOutput(); err != nil {
				t.Fatalf("cloud-init schema --config-file: %v\n%s\n--- user-data:\n%s", err, b, out)
			}

			b, err := exec.CommandContext(ctx, python, "-c",
				"import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", file).Output()
			if err != nil {
				t.Fatalf("parse YAML: %v", err)
			}
			var ud userData
			if err := json.Unmarshal(b, &ud); err != nil {
				t.Fatal(err)
			}
			want := map[string]writeFile{
				"/etc/flotilla/ca.pem":                      {Permissions: "0644", Content: p.CACertPEM},
				"/etc/flotilla/gossip.key":                  {Permissions: "0600", Content: p.GossipKey + "\n"},
				"/etc/flotilla/join.token":                  {Permissions: "0600", Content: p.JoinToken + "\n"},
				"/etc/flotilla/api-token.sha256":            {Permissions: "0600", Content: pki.TokenHash(apiToken) + "\n"},
				"/usr/local/lib/flotilla/bootstrap-node.sh": {Permissions: "0755", Content: BootstrapScript()},
				"/etc/flotilla/env": {Permissions: "0644", Content: fmt.Sprintf(`# Settings of bootstrap-node.sh; a variable set in its environment wins.
FLOTILLA_ROLE='%s'
FLOTILLA_BOOTSTRAP_EXPECT='3'
FLOTILLA_RETRY_JOIN='10.0.1.10 10.0.1.11 10.0.1.12'
FLOTILLA_CLUSTER_POD_CIDR='10.244.0.0/16'
FLOTILLA_SERVICE_CIDR='10.96.0.0/16'
FLOTILLA_API_PORT='7400'
FLOTILLA_AGENT_URL='https://releases.example.com/flotilla-agent_0.1.0_linux_amd64?sig=a'\''b'
FLOTILLA_AGENT_SHA256='%s'
`, role, testAgentSHA256)},
			}
			if role == RoleServer {
				want["/etc/flotilla/ca-key.pem"] = writeFile{Permissions: "0600", Content: p.CAKeyPEM}
			}
			got := map[string]writeFile{}
			for _, f := range ud.WriteFiles {
				if f.Owner != "root:root" {
					t.Errorf("%s: owner %q", f.Path, f.Owner)
				}
				got[f.Path] = writeFile{Permissions: f.Permissions, Content: f.Content}
			}
			for path, w := range want {
				g, ok := got[path]
				switch {
				case !ok:
					t.Errorf("%s is not written", path)
				case g.Permissions != w.Permissions:
					t.Errorf("%s: permissions %s, want %s", path, g.Permissions, w.Permissions)
				case g.Content != w.Content:
					t.Errorf("%s: content differs:\n got %q\nwant %q", path, g.Content, w.Content)
				}
			}
			for path := range got {
				if _, ok := want[path]; !ok {
					t.Errorf("%s is written but should not be", path)
				}
			}
			if wantCmd := [][]string{{"/usr/local/lib/flotilla/bootstrap-node.sh"}}; !reflect.DeepEqual(ud.RunCmd, wantCmd) {
				t.Errorf("runcmd = %v, want %v", ud.RunCmd, wantCmd)
			}
		})
	}
}

// TestUserDataSize keeps the user-data under 16 KiB, EC2's limit (the
// smallest of the big clouds), with the largest cluster allowed.
func TestUserDataSize(t *testing.T) {
	t.Parallel()
	p := testParams(t, RoleServer)
	p.ServerAddresses = []string{"10.100.200.101", "10.100.200.102", "10.100.200.103", "10.100.200.104",
		"10.100.200.105", "10.100.200.106", "10.100.200.107"}
	out, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) > 16<<10 {
		t.Errorf("server user-data is %d bytes; EC2 accepts at most 16384", len(out))
	}
}

func TestRenderDeterministic(t *testing.T) {
	t.Parallel()
	p := testParams(t, RoleClient)
	a, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Render(p)
	if a != b {
		t.Error("two renders of the same parameters differ; plans would never be empty")
	}
	if strings.Contains(a, "PRIVATE KEY") {
		t.Error("client user-data contains the CA key")
	}
}

// TestRenderNoAPIToken renders both roles and checks neither holds the API
// token and both hold its hash: agents check tokens against the hash.
func TestRenderNoAPIToken(t *testing.T) {
	t.Parallel()
	for _, role := range []string{RoleServer, RoleClient} {
		p, token := testParamsToken(t, role)
		out, err := Render(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, token) {
			t.Errorf("%s user-data contains the API token", role)
		}
		if strings.Contains(out, "path: /etc/flotilla/api.token") {
			t.Errorf("%s user-data still writes api.token", role)
		}
		if !strings.Contains(out, "path: /etc/flotilla/api-token.sha256") || !strings.Contains(out, pki.TokenHash(token)) {
			t.Errorf("%s user-data lacks the API token hash", role)
		}
	}
}

func TestRenderRejects(t *testing.T) {
	t.Parallel()
	base := testParams(t, RoleServer)
	tests := []struct {
		name string
		edit func(p *Params)
		want string
	}{
		{"role", func(p *Params) { p.Role = "voter" }, `role "voter" must be server or client`},
		{"no servers", func(p *Params) { p.ServerAddresses = nil }, "no server addresses"},
		{"bad server", func(p *Params) { p.ServerAddresses = []string{"10.0.0.1\nruncmd: [reboot]"} }, "server address"},
		{"pod cidr", func(p *Params) { p.PodCIDR = "10.244.0.0" }, "pod CIDR"},
		{"port", func(p *Params) { p.APIPort = 0 }, "API port 0"},
		{"server without key", func(p *Params) { p.CAKeyPEM = "" }, "the CA key is empty"},
		{"url", func(p *Params) { p.AgentURL = "https://x\nruncmd: [reboot]" }, "line break"},
		{"plain http url", func(p *Params) { p.AgentURL = "http://releases.example.com/flotilla-agent" }, "is not an https URL"},
		{"url without checksum", func(p *Params) { p.AgentSHA256 = "" }, "an agent URL needs the agent's SHA-256"},
		{"short checksum", func(p *Params) { p.AgentSHA256 = "abc" }, `the agent checksum "abc" is not a SHA-256`},
		{"upper-case checksum", func(p *Params) { p.AgentSHA256 = strings.ToUpper(testAgentSHA256) }, "is not a SHA-256"},
		{"no token hash", func(p *Params) { p.APITokenHash = "" }, "the API token hash is not a SHA-256"},
		{"token instead of hash", func(p *Params) { p.APITokenHash = "0123456789abcdef0123456789abcdef" }, "the API token hash is not a SHA-256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			tt.edit(&p)
			_, err := Render(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestBootstrapScriptShellcheck(t *testing.T) {
	t.Parallel()
	shellcheck := requireTool(t, "shellcheck", "shellcheck")
	if b, err := exec.Command(shellcheck, "bootstrap-node.sh").CombinedOutput(); err != nil {
		t.Errorf("shellcheck bootstrap-node.sh: %v\n%s", err, b)
	}
}

// fakeAgent is a flotilla-agent stand-in that writes its arguments, one per
// line, to the file named by $FAKE_AGENT_OUT, and prints fakeAgentMarker.
const fakeAgent = "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$FAKE_AGENT_OUT\"\necho " + fakeAgentMarker + "\n"

const fakeAgentMarker = "fake-flotilla-agent-ran"

// staleAgent is what an older release left at FLOTILLA_AGENT_BIN.
const staleAgent = "#!/bin/sh\necho stale-agent-ran\nexit 3\n"

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// agentServer serves body over HTTPS on 127.0.0.1 and returns its URL and a
// CA bundle file curl trusts it with (CURL_CA_BUNDLE).
func agentServer(t *testing.T, body string) (url, caBundle string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	caBundle = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caBundle, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL + "/releases/flotilla-agent", caBundle
}

// TestBootstrapScript runs bootstrap-node.sh in the foreground with a fake
// agent and checks the command line it runs: the contract with the agent's
// flags and with the acceptance lab. Downloads come from an HTTPS server
// and must match FLOTILLA_AGENT_SHA256 before anything is installed.
func TestBootstrapScript(t *testing.T) {
	t.Parallel()
	bash := requireTool(t, "bash", "bash")
	type tc struct {
		name    string
		envFile string            // contents of CONFIG/env; "" for none
		env     map[string]string // on top of the common environment
		// installed is FLOTILLA_AGENT_BIN before the run; "" for none.
		installed string
		// serve is the binary served over HTTPS at FLOTILLA_AGENT_URL
		// ("" for no server); FLOTILLA_AGENT_SHA256 is its checksum unless
		// env sets it.
		serve string
		// want is the agent's command line; nil for a failing run.
		want    func(conf, data string) []string
		wantErr string
		// wantBin is FLOTILLA_AGENT_BIN after the run ("" for none).
		wantBin string
	}
	serverArgs := func(conf, data string) []string {
		return []string{"--node-name", "n1", "--data-dir", data, "--advertise-addr", "10.0.1.10",
			"--api-addr", "10.0.1.10:7400", "--ca-file", conf + "/ca.pem", "--ca-key-file", conf + "/ca-key.pem",
			"--gossip-key-file", conf + "/gossip.key", "--join-token-file", conf + "/join.token",
			"--api-token-hash-file", conf + "/api-token.sha256",
			"--retry-join", "10.0.1.10", "--retry-join", "10.0.1.11", "--retry-join", "10.0.1.12",
			"--server", "--bootstrap-expect", "3", "--cluster-pod-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/16"}
	}
	envFile := func(role string) string {
		p := testParams(t, role)
		p.AgentURL, p.AgentSHA256 = "", ""
		out, err := Render(p)
		if err != nil {
			t.Fatal(err)
		}
		// The env file as cloud-init writes it: the block under its path.
		_, rest, _ := strings.Cut(out, "path: /etc/flotilla/env\n")
		_, rest, _ = strings.Cut(rest, "content: |\n")
		rest, _, _ = strings.Cut(rest, "  - path:")
		return strings.ReplaceAll("\n"+rest, "\n      ", "\n")[1:]
	}
	const mismatch = "checksum mismatch for https://127.0.0.1:"
	tests := []tc{
		{name: "server from env file", envFile: envFile(RoleServer), installed: fakeAgent, want: serverArgs, wantBin: fakeAgent},
		{
			name:      "client from env file, with extra args",
			envFile:   envFile(RoleClient),
			installed: fakeAgent,
			env:       map[string]string{"FLOTILLA_EXTRA_ARGS": "--log-level debug  --mtu 1400"},
			want: func(conf, data string) []string {
				return []string{"--node-name", "n1", "--data-dir", data, "--advertise-addr", "10.0.1.10",
					"--api-addr", "10.0.1.10:7400", "--ca-file", conf + "/ca.pem",
					"--gossip-key-file", conf + "/gossip.key", "--join-token-file", conf + "/join.token",
					"--api-token-hash-file", conf + "/api-token.sha256",
					"--retry-join", "10.0.1.10", "--retry-join", "10.0.1.11", "--retry-join", "10.0.1.12",
					"--log-level", "debug", "--mtu", "1400"}
			},
			wantBin: fakeAgent,
		},
		{
			// The lab passes everything in the environment, without a file.
			name: "environment only",
			env: map[string]string{"FLOTILLA_ROLE": "server", "FLOTILLA_RETRY_JOIN": "10.0.1.10 10.0.1.11 10.0.1.12",
				"FLOTILLA_BOOTSTRAP_EXPECT": "3", "FLOTILLA_CLUSTER_POD_CIDR": "10.244.0.0/16", "FLOTILLA_API_PORT": "7400"},
			installed: fakeAgent,
			want:      serverArgs,
			wantBin:   fakeAgent,
		},
		{
			name:      "environment wins over the file",
			envFile:   envFile(RoleClient),
			installed: fakeAgent,
			env:       map[string]string{"FLOTILLA_ROLE": "server", "FLOTILLA_API_PORT": "8400", "FLOTILLA_BOOTSTRAP_EXPECT": "1"},
			want: func(conf, data string) []string {
				a := serverArgs(conf, data)
				a[7] = "10.0.1.10:8400"
				a[len(a)-5] = "1"
				return a
			},
			wantBin: fakeAgent,
		},
		{name: "download the agent", envFile: envFile(RoleServer), serve: fakeAgent, want: serverArgs, wantBin: fakeAgent},
		{
			name:    "download with an upper-case checksum",
			envFile: envFile(RoleServer), serve: fakeAgent,
			env:  map[string]string{"FLOTILLA_AGENT_SHA256": strings.ToUpper(sha256Hex(fakeAgent))},
			want: serverArgs, wantBin: fakeAgent,
		},
		{
			// A binary of an older release is replaced by the checked one.
			name:    "stale binary is downloaded again",
			envFile: envFile(RoleServer), installed: staleAgent, serve: fakeAgent,
			want: serverArgs, wantBin: fakeAgent,
		},
		{
			name:    "checksum mismatch installs nothing",
			envFile: envFile(RoleServer), serve: "#!/bin/sh\necho tampered\n",
			env: map[string]string{"FLOTILLA_AGENT_SHA256": sha256Hex(fakeAgent)},
			wantErr: mismatch + `\d+/releases/flotilla-agent: expected ` + sha256Hex(fakeAgent) + `, got ` +
				sha256Hex("#!/bin/sh\necho tampered\n") + `; the binary was not installed \(check agent_sha256 on flotilla_cluster\)`,
		},
		{
			name:    "checksum mismatch keeps the stale binary and does not run it",
			envFile: envFile(RoleServer), installed: staleAgent, serve: "#!/bin/sh\necho tampered\n",
			env:     map[string]string{"FLOTILLA_AGENT_SHA256": sha256Hex(fakeAgent)},
			wantErr: mismatch, wantBin: staleAgent,
		},
		{
			name:    "URL without checksum",
			envFile: envFile(RoleServer), serve: fakeAgent,
			env:     map[string]string{"FLOTILLA_AGENT_SHA256": ""},
			wantErr: `FLOTILLA_AGENT_URL is set but FLOTILLA_AGENT_SHA256 is empty; refusing to download a binary that cannot be checked`,
		},
		{
			name:    "URL without checksum, agent installed",
			envFile: envFile(RoleServer), installed: fakeAgent,
			env:     map[string]string{"FLOTILLA_AGENT_URL": "https://releases.example.com/flotilla-agent"},
			wantErr: `FLOTILLA_AGENT_SHA256 is empty`, wantBin: fakeAgent,
		},
		{
			name:    "plain http URL",
			envFile: envFile(RoleServer),
			env: map[string]string{"FLOTILLA_AGENT_URL": "http://releases.example.com/flotilla-agent",
				"FLOTILLA_AGENT_SHA256": sha256Hex(fakeAgent)},
			wantErr: `FLOTILLA_AGENT_URL 'http://releases.example.com/flotilla-agent' is not an https URL`,
		},
		{
			name:    "bad checksum",
			envFile: envFile(RoleServer), installed: fakeAgent,
			env:     map[string]string{"FLOTILLA_AGENT_SHA256": "abc"},
			wantErr: `FLOTILLA_AGENT_SHA256 'abc' is not a SHA-256 \(64 hex digits\)`, wantBin: fakeAgent,
		},
		{
			name:    "stale binary and no URL",
			envFile: envFile(RoleServer), installed: staleAgent,
			env:     map[string]string{"FLOTILLA_AGENT_SHA256": sha256Hex(fakeAgent)},
			wantErr: `has SHA-256 ` + sha256Hex(staleAgent) + `, not FLOTILLA_AGENT_SHA256 ` + sha256Hex(fakeAgent) + `, and FLOTILLA_AGENT_URL is empty`,
			wantBin: staleAgent,
		},
		{name: "no role", env: map[string]string{"FLOTILLA_RETRY_JOIN": "10.0.1.10"}, installed: fakeAgent,
			wantErr: "FLOTILLA_ROLE is ''; set it to server or client", wantBin: fakeAgent},
		{
			name:    "no agent and no URL",
			envFile: envFile(RoleServer),
			wantErr: "does not exist and FLOTILLA_AGENT_URL is empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			conf, data := filepath.Join(dir, "etc"), filepath.Join(dir, "data")
			binDir := filepath.Join(dir, "bin")
			agentBin, out := filepath.Join(binDir, "flotilla-agent"), filepath.Join(dir, "args")
			for _, d := range []string{conf, binDir} {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			files := map[string]string{"ca.pem": "x\n", "ca-key.pem": "x\n", "gossip.key": "x\n", "join.token": "x\n",
				"api-token.sha256": pki.TokenHash("t") + "\n"}
			for f, content := range files {
				if err := os.WriteFile(filepath.Join(conf, f), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.envFile != "" {
				if err := os.WriteFile(filepath.Join(conf, "env"), []byte(tt.envFile), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.installed != "" {
				if err := os.WriteFile(agentBin, []byte(tt.installed), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			env := map[string]string{
				"PATH":                    os.Getenv("PATH"),
				"FLOTILLA_CONFIG_DIR":     conf,
				"FLOTILLA_DATA_DIR":       data,
				"FLOTILLA_AGENT_BIN":      agentBin,
				"FLOTILLA_NODE_NAME":      "n1",
				"FLOTILLA_ADVERTISE_ADDR": "10.0.1.10",
				"FLOTILLA_FOREGROUND":     "1",
				"FLOTILLA_SKIP_INSTALL":   "1",
				"FAKE_AGENT_OUT":          out,
			}
			if tt.serve != "" {
				requireTool(t, "curl", "curl")
				url, caBundle := agentServer(t, tt.serve)
				env["FLOTILLA_AGENT_URL"] = url
				env["FLOTILLA_AGENT_SHA256"] = sha256Hex(tt.serve)
				env["CURL_CA_BUNDLE"] = caBundle
			}
			for k, v := range tt.env {
				env[k] = v
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bash, "bootstrap-node.sh")
			for k, v := range env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()

			// What is installed afterwards, and nothing half-downloaded.
			gotBin, _ := os.ReadFile(agentBin)
			if string(gotBin) != tt.wantBin {
				t.Errorf("%s after the run:\n%q\nwant\n%q", agentBin, gotBin, tt.wantBin)
			}
			if ents, _ := os.ReadDir(binDir); len(ents) > 1 || (len(ents) == 1 && tt.wantBin == "") {
				t.Errorf("files left in %s: %v", binDir, ents)
			}
			if tt.wantErr != "" {
				if err == nil || !regexp.MustCompile(`(?m)^flotilla-bootstrap: error: .*`+tt.wantErr).MatchString(stderr.String()) {
					t.Fatalf("err = %v, stderr:\n%s\nwant an error line matching %q", err, stderr.String(), tt.wantErr)
				}
				if stdout.Len() > 0 {
					t.Errorf("a binary ran: %q", stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("bootstrap-node.sh: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stdout.String(), fakeAgentMarker) {
				t.Errorf("stdout %q lacks the fake agent's marker", stdout.String())
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("the agent did not run: %v\n%s", err, stderr.String())
			}
			got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if want := tt.want(conf, data); !reflect.DeepEqual(got, want) {
				t.Errorf("agent arguments:\n got %q\nwant %q\nstderr:\n%s", got, want, stderr.String())
			}
			if fi, err := os.Stat(data); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("data dir: %v, %v; want mode 0700", fi, err)
			}
		})
	}
}

// TestBootstrapScriptAgentFlags runs the script with the real flotilla-agent
// and -h appended: the agent parses every flag the script passes before it
// stops at -h, so an unknown or renamed flag fails here rather than on a VM.
func TestBootstrapScriptAgentFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flotilla-agent")
	}
	t.Parallel()
	dir := t.TempDir()
	agentBin := filepath.Join(dir, "flotilla-agent")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", agentBin, "../../agent/cmd/flotilla-agent").CombinedOutput(); err != nil {
		t.Fatalf("build flotilla-agent: %v\n%s", err, out)
	}
	conf := filepath.Join(dir, "etc")
	if err := os.MkdirAll(conf, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"ca.pem": "x\n", "ca-key.pem": "x\n", "gossip.key": "x\n", "join.token": "x\n",
		"api-token.sha256": pki.TokenHash("t") + "\n"}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(conf, f), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, role := range []string{RoleServer, RoleClient} {
		cmd := exec.CommandContext(ctx, "bash", "bootstrap-node.sh")
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"),
			"FLOTILLA_ROLE=" + role,
			"FLOTILLA_RETRY_JOIN=10.0.1.10 10.0.1.11 10.0.1.12",
			"FLOTILLA_CONFIG_DIR=" + conf,
			"FLOTILLA_DATA_DIR=" + filepath.Join(dir, "data"),
			"FLOTILLA_AGENT_BIN=" + agentBin,
			"FLOTILLA_NODE_NAME=n1",
			"FLOTILLA_ADVERTISE_ADDR=10.0.1.10",
			"FLOTILLA_FOREGROUND=1",
			"FLOTILLA_SKIP_INSTALL=1",
			"FLOTILLA_EXTRA_ARGS=-h",
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: the agent rejects the script's command line: %v\n%s", role, err, out)
		}
	}
}
