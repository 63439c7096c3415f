package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/agent/pki"
	cloudinit "github.com/flotilla-io/flotilla/templates/cloud-init"
)

// render returns the user-data flotilla_cluster renders for a role.
func render(t *testing.T, role string) string {
	t.Helper()
	caPEM, keyPEM, err := pki.NewCA("labboot-test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cloudinit.Render(cloudinit.Params{
		ClusterName: "lab", Role: role, ServerAddresses: []string{"10.97.1.1"},
		PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16", APIPort: 7400,
		CACertPEM: string(caPEM), CAKeyPEM: string(keyPEM), GossipKey: "Z29zc2lw", JoinToken: "join",
		APITokenHash: pki.TokenHash("token"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWriteFiles boots nothing: it checks that the rendered user-data of
// both roles lands in the node's directory as cloud-init would write it.
func TestWriteFiles(t *testing.T) {
	t.Parallel()
	for _, role := range []string{cloudinit.RoleServer, cloudinit.RoleClient} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ud, err := parse(render(t, role))
			if err != nil {
				t.Fatal(err)
			}
			m := newMapper(dir)
			if err := ud.writeFiles(m); err != nil {
				t.Fatal(err)
			}
			want := map[string]os.FileMode{
				"etc/ca.pem": 0o644, "etc/gossip.key": 0o600, "etc/join.token": 0o600,
				"etc/api-token.sha256": 0o600, "etc/env": 0o644, "lib/bootstrap-node.sh": 0o755,
			}
			if role == cloudinit.RoleServer {
				want["etc/ca-key.pem"] = 0o600
			}
			got := map[string]os.FileMode{}
			err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				fi, err := d.Info()
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(dir, p)
				got[rel] = fi.Mode().Perm()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("files and modes:\n got %v\nwant %v", got, want)
			}
			b, err := os.ReadFile(filepath.Join(dir, "etc/api-token.sha256"))
			if err != nil || string(b) != pki.TokenHash("token")+"\n" {
				t.Errorf("api-token.sha256 = %q, %v", b, err)
			}
			b, err = os.ReadFile(filepath.Join(dir, "lib/bootstrap-node.sh"))
			if err != nil || string(b) != cloudinit.BootstrapScript() {
				t.Errorf("bootstrap-node.sh differs from the embedded script (%v)", err)
			}
			argv, err := ud.command(m)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{filepath.Join(dir, "lib/bootstrap-node.sh")}; !reflect.DeepEqual(argv, want) {
				t.Errorf("command = %q, want %q", argv, want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	base := render(t, cloudinit.RoleClient)
	for _, tt := range []struct {
		name, userData, want string
	}{
		{"not cloud-config", strings.TrimPrefix(base, "#cloud-config\n"), "does not start with #cloud-config"},
		{"unknown module", base + "packages: [curl]\n", "field packages not found"},
	} {
		if _, err := parse(tt.userData); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	m := newMapper(t.TempDir())
	ud := &userData{WriteFiles: []writeFile{{Path: "/etc/passwd", Permissions: "0644"}}}
	if err := ud.writeFiles(m); err == nil || !strings.Contains(err.Error(), "does not map it") {
		t.Errorf("a file outside the mapped directories: err = %v", err)
	}
	if _, err := (&userData{RunCmd: [][]string{{"a"}, {"b"}}}).command(m); err == nil {
		t.Error("two runcmd commands: no error")
	}
}
