package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"github.com/flotilla-io/flotilla/api"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runArgs runs a command line and returns its exit code and output. None
// of the command lines here may reach agent.Run: tests run as root.
func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunRefusesBadCommandLines(t *testing.T) {
	t.Setenv("FLOTILLA_TOKEN", "")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // substrings of stderr
	}{
		{"subcommand after the flags", []string{"--data-dir", "/tmp/x", "cleanup"}, 2,
			[]string{`unexpected argument "cleanup" after the flags`, "flotilla-agent cleanup --data-dir /tmp/x"}},
		{"subcommand after the flags, more after it", []string{"--data-dir=/var/lib/my agent", "cleanup", "--purge"}, 2,
			[]string{`unexpected argument "cleanup"`, "flotilla-agent cleanup '--data-dir=/var/lib/my agent' --purge"}},
		{"stray word after the flags", []string{"--dev", "now"}, 2,
			[]string{`flotilla-agent: unexpected argument "now"; only flags follow`}},
		{"stray word after cleanup's flags", []string{"cleanup", "--purge", "all"}, 2,
			[]string{`flotilla-agent cleanup: unexpected argument "all"`}},
		{"unknown subcommand", []string{"destroy", "--dev"}, 2,
			[]string{`unknown command "destroy"`, "cleanup, remove-node, cordon, uncordon, drain, version"}},
		{"--token", []string{"--dev", "--token", "s3cret"}, 2,
			[]string{"--token is no longer accepted", "FLOTILLA_TOKEN", "--token-file"}},
		{"--token=", []string{"--token=s3cret", "--dev"}, 2, []string{"--token is no longer accepted"}},
		{"-token", []string{"cleanup", "-token", "s3cret"}, 2, []string{"--token is no longer accepted"}},
		{"--token for remove-node", []string{"remove-node", "n2", "--token", "s3cret"}, 2, []string{"--token is no longer accepted"}},
		// --token-file is fine; the stray argument is what stops this one.
		{"--token-file kept", []string{"--token-file", "/etc/flotilla/api.token", "stray"}, 2, []string{`unexpected argument "stray"`}},
		{"unknown flag", []string{"--tokens", "x"}, 2, []string{"flag provided but not defined: -tokens"}},
		{"log format", []string{"--dev", "--log-format", "yaml"}, 2, []string{`--log-format: "yaml" is not text or json`}},
		{"version with an argument", []string{"version", "--short"}, 2, []string{"unexpected argument"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runArgs(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	if code, out, _ := runArgs(t, "version"); code != 0 || !strings.HasPrefix(out, "flotilla-agent ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	code, _, stderr := runArgs(t, "-h")
	if code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	for _, want := range []string{"remove-node NAME", "-api-token-hash-file", "-raft-multiplier", "-pod-deny-cidr", "-token-file"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("-h lacks %q", want)
		}
	}
	if strings.Contains(stderr, "\n  -token string") {
		t.Errorf("-h still lists --token:\n%s", stderr)
	}
	if strings.Contains(stderr, "legacy-client-raft") {
		t.Errorf("-h lists the hidden benchmark flag --legacy-client-raft:\n%s", stderr)
	}
	if code, _, stderr := runArgs(t, "remove-node", "-h"); code != 0 || !strings.Contains(stderr, "Needs no root") {
		t.Errorf("remove-node -h: exit %d\n%s", code, stderr)
	}
}

func TestDenyFlag(t *testing.T) {
	tests := []struct {
		values []string
		want   []string
	}{
		{nil, []string{"169.254.169.254/32"}},
		{[]string{"10.96.0.0/12"}, []string{"169.254.169.254/32", "10.96.0.0/12"}},
		{[]string{"none"}, []string{}},
		{[]string{"none", "10.96.0.0/12"}, []string{"10.96.0.0/12"}},
		{[]string{"10.96.0.0/12", "none"}, []string{}},
	}
	for _, tt := range tests {
		list := []string{"169.254.169.254/32"}
		f := denyFlag{&list}
		for _, v := range tt.values {
			if err := f.Set(v); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Join(list, ",") != strings.Join(tt.want, ",") || list == nil {
			t.Errorf("--pod-deny-cidr %q gives %q, want %q", tt.values, list, tt.want)
		}
	}
	if (denyFlag{}).String() != "" {
		t.Error("zero denyFlag String")
	}
}

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"10485760": 10 << 20, "10Mi": 10 << 20, "10MiB": 10 << 20, "512Ki": 512 << 10, "1Gi": 1 << 30, "4096B": 4096} {
		var n int64
		if err := (sizeFlag{&n}).Set(in); err != nil || n != want {
			t.Errorf("%s: %d, %v; want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"", "10M", "10MB", "ten", "-1", "2000Gi"} {
		var n int64
		if err := (sizeFlag{&n}).Set(in); err == nil {
			t.Errorf("%q was accepted as %d", in, n)
		}
	}
	n := int64(10 << 20)
	if s := (sizeFlag{&n}).String(); s != "10Mi" {
		t.Errorf("String = %q, want 10Mi (the default shown in -h)", s)
	}
}

func TestCapsFlag(t *testing.T) {
	var list []string
	f := capsFlag{&list}
	for _, v := range []string{"NET_ADMIN", "SYS_PTRACE, SYS_NICE", ""} {
		if err := f.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.String(); got != "NET_ADMIN,SYS_PTRACE,SYS_NICE" {
		t.Errorf("--allow-capability values give %q", got)
	}
	if (capsFlag{}).String() != "" {
		t.Error("zero capsFlag String")
	}
}

// fakeFleet answers DELETE /v1/nodes/{name} as the agent does: 204, 404 or
// 403, for the token "tok".
func fakeFleet(t *testing.T, tlsServer bool) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"missing or wrong token"}`))
			return
		}
		if r.Method == http.MethodPut && r.URL.Path == "/v1/nodes/n2/schedule" {
			var s api.NodeSchedule
			if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			_ = json.NewEncoder(w).Encode(api.Node{Name: "n2", Unschedulable: s.Unschedulable || s.Draining, Draining: s.Draining})
			return
		}
		switch r.URL.Path {
		case "/v1/deployments":
			_, _ = w.Write([]byte(`[{"namespace":"default","name":"web"}]`))
			return
		case "/v1/namespaces/default/pods":
			_, _ = w.Write([]byte(`[{"namespace":"default","name":"web-1","node":"n3"}]`))
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, "/v1/nodes/")
		switch {
		case r.Method != http.MethodDelete || !ok:
			w.WriteHeader(http.StatusNotFound)
		case name == "n2":
			w.WriteHeader(http.StatusNoContent)
		case name == "n1":
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"node n1 is the last server"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"node ` + name + ` not found"}`))
		}
	})
	var ts *httptest.Server
	if tlsServer {
		ts = httptest.NewTLSServer(h)
	} else {
		ts = httptest.NewServer(h)
	}
	t.Cleanup(ts.Close)
	return ts
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestScheduleNode(t *testing.T) {
	plain := fakeFleet(t, false)
	t.Setenv("FLOTILLA_ADDR", plain.URL)
	t.Setenv("FLOTILLA_TOKEN", "tok")
	for _, tt := range []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"cordon", "n2"}, 0, "node n2 cordoned"},
		{[]string{"uncordon", "n2"}, 0, "node n2 uncordoned"},
		{[]string{"drain", "n2"}, 0, "node n2 drained"},
		{[]string{"drain", "n9"}, 1, `no node "n9"`},
		{[]string{"cordon"}, 2, "which node?"},
		{[]string{"drain", "n2", "--token", "x"}, 2, "--token is no longer accepted"},
	} {
		code, out, stderr := runArgs(t, tt.args...)
		if code != tt.wantCode || !strings.Contains(out+stderr, tt.want) {
			t.Errorf("%v: exit %d, want %d with %q; stdout %q stderr %q", tt.args, code, tt.wantCode, tt.want, out, stderr)
		}
	}
}

func TestRemoveNode(t *testing.T) {
	plain := fakeFleet(t, false)
	secure := fakeFleet(t, true)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw}))
	caFile := writeFile(t, "ca.pem", caPEM)
	tokenFile := writeFile(t, "api.token", "tok\n")
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, "addr"), []byte(plain.URL+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		addr, tok  string // $FLOTILLA_ADDR, $FLOTILLA_TOKEN
		args       []string
		wantCode   int
		wantOut    string
		wantStderr []string
	}{
		{name: "removed", addr: plain.URL, tok: "tok", args: []string{"n2"}, wantCode: 0,
			wantOut: "node n2 removed from the fleet; its certificates are revoked"},
		{name: "name after the flags, token from a file", addr: plain.URL, args: []string{"--token-file", tokenFile, "n2"}, wantCode: 0},
		{name: "address from the local agent's data dir", tok: "tok", args: []string{"n2", "--data-dir", dataDir}, wantCode: 0},
		{name: "https with the cluster CA", addr: secure.URL, tok: "tok", args: []string{"n2", "--ca-file", caFile}, wantCode: 0},
		{name: "https without the CA", addr: secure.URL, tok: "tok", args: []string{"n2"}, wantCode: 1,
			wantStderr: []string{"certificate", "pass it with --ca-file"}},
		{name: "no such node", addr: plain.URL, tok: "tok", args: []string{"n9"}, wantCode: 1,
			wantStderr: []string{`no node "n9" in the fleet`, "node n9 not found"}},
		{name: "refused", addr: plain.URL, tok: "tok", args: []string{"n1"}, wantCode: 1,
			wantStderr: []string{"refused to remove n1", "node n1 is the last server"}},
		{name: "wrong token", addr: plain.URL, tok: "nope", args: []string{"n2"}, wantCode: 1, wantStderr: []string{"HTTP 401"}},
		{name: "no token", addr: plain.URL, args: []string{"n2"}, wantCode: 2, wantStderr: []string{"no API token: set FLOTILLA_TOKEN or pass --token-file"}},
		{name: "no address", tok: "tok", args: []string{"n2", "--data-dir", t.TempDir()}, wantCode: 2, wantStderr: []string{"no agent address: set FLOTILLA_ADDR"}},
		{name: "no name", addr: plain.URL, tok: "tok", args: nil, wantCode: 2, wantStderr: []string{"which node?"}},
		{name: "two names", addr: plain.URL, tok: "tok", args: []string{"n2", "n3"}, wantCode: 2, wantStderr: []string{`unexpected argument "n3"`}},
		{name: "not a node name", addr: plain.URL, tok: "tok", args: []string{"../n2"}, wantCode: 2, wantStderr: []string{"node name:"}},
		{name: "missing token file", addr: plain.URL, args: []string{"n2", "--token-file", "/nonexistent"}, wantCode: 2, wantStderr: []string{"--token-file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("FLOTILLA_ADDR", tt.addr)
			t.Setenv("FLOTILLA_TOKEN", tt.tok)
			code, out, stderr := runArgs(t, append([]string{"remove-node"}, tt.args...)...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q; stderr:\n%s", code, tt.wantCode, out, stderr)
			}
			if tt.wantOut != "" && !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out, tt.wantOut)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}
