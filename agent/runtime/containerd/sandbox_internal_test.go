package containerd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// sandboxSpec builds the OCI spec sandboxOpts make of containerd's
// default spec, with root (an image's root file system: the user options
// read its /etc/passwd and /etc/group) as the spec's root path.
func sandboxSpec(t *testing.T, root string, cs runtime.ContainerSpec) (*oci.Spec, error) {
	t.Helper()
	opts, err := sandboxOpts(cs, false)
	if err != nil {
		return nil, err
	}
	ctx := namespaces.WithNamespace(context.Background(), "flotilla-test")
	var s oci.Spec
	// No client and no snapshot: the options read the root path instead.
	err = oci.ApplyOpts(ctx, nil, &containers.Container{ID: "c1"}, &s,
		append([]oci.SpecOpts{oci.WithDefaultSpec(), oci.WithRootFSPath(root)}, opts...)...)
	return &s, err
}

// imageRoot writes a root file system with a user app (1000:1000) who is
// also in group extra (2000).
func imageRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// allowed reports whether the seccomp profile lets a syscall through, with
// whatever arguments.
func allowed(sc *specs.LinuxSeccomp, name string) bool {
	for _, r := range sc.Syscalls {
		if r.Action == specs.ActAllow && slices.Contains(r.Names, name) {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

func capNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "CAP_" + n
	}
	return out
}

// TestSandboxSpec checks the spec every container gets, and what each
// security setting changes of it.
func TestSandboxSpec(t *testing.T) {
	root := imageRoot(t)
	dockerCaps := capNames(api.DefaultCapabilities())

	t.Run("defaults", func(t *testing.T) {
		s, err := sandboxSpec(t, root, runtime.ContainerSpec{ID: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		p := s.Process
		if !p.NoNewPrivileges {
			t.Error("no-new-privileges is off")
		}
		for name, set := range map[string][]string{"bounding": p.Capabilities.Bounding, "effective": p.Capabilities.Effective, "permitted": p.Capabilities.Permitted} {
			if !sameSet(set, dockerCaps) {
				t.Errorf("%s capabilities = %q, want Docker's default set %q", name, set, dockerCaps)
			}
		}
		if len(p.Capabilities.Inheritable) > 0 || len(p.Capabilities.Ambient) > 0 {
			t.Errorf("inheritable %q, ambient %q: want none", p.Capabilities.Inheritable, p.Capabilities.Ambient)
		}
		sc := s.Linux.Seccomp
		if sc == nil || sc.DefaultAction != specs.ActErrno {
			t.Fatalf("seccomp = %+v, want Docker's default profile (deny by default)", sc)
		}
		for _, sys := range []string{"read", "write", "clone", "execve"} {
			if !allowed(sc, sys) {
				t.Errorf("seccomp refuses %s", sys)
			}
		}
		// Those need capabilities the container lacks, or no container may make.
		for _, sys := range []string{"init_module", "finit_module", "delete_module", "kexec_load", "unshare", "mount", "setns", "bpf", "reboot", "open_by_handle_at"} {
			if allowed(sc, sys) {
				t.Errorf("seccomp allows %s", sys)
			}
		}
		if p.ApparmorProfile != "" {
			t.Errorf("AppArmor profile %q without AppArmor on the host", p.ApparmorProfile)
		}
		// containerd's defaults, which the sandbox keeps.
		for _, m := range []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
			"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"} {
			if !slices.Contains(s.Linux.MaskedPaths, m) {
				t.Errorf("%s is not masked (masked: %q)", m, s.Linux.MaskedPaths)
			}
		}
		for _, m := range []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"} {
			if !slices.Contains(s.Linux.ReadonlyPaths, m) {
				t.Errorf("%s is not read-only (read-only: %q)", m, s.Linux.ReadonlyPaths)
			}
		}
		// Nothing of the host: new namespaces, no bind mounts, no devices.
		var nss []specs.LinuxNamespaceType
		for _, ns := range s.Linux.Namespaces {
			nss = append(nss, ns.Type)
			if ns.Path != "" {
				t.Errorf("namespace %s joins %s", ns.Type, ns.Path)
			}
		}
		for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.NetworkNamespace} {
			if !slices.Contains(nss, want) {
				t.Errorf("no %s namespace of its own (namespaces: %v)", want, nss)
			}
		}
		for _, m := range s.Mounts {
			if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
				t.Errorf("bind mount %+v", m)
			}
		}
		if len(s.Linux.Devices) > 0 {
			t.Errorf("devices %+v", s.Linux.Devices)
		}
		if d := s.Linux.Resources.Devices; len(d) == 0 || d[0].Allow || d[0].Access != "rwm" {
			t.Errorf("device cgroup %+v does not start by denying all", d)
		}
		if s.Root.Readonly || p.User.UID != 0 || s.Linux.Resources.Pids != nil {
			t.Errorf("read-only root %v, uid %d, pids %+v: want the image's (none set)", s.Root.Readonly, p.User.UID, s.Linux.Resources.Pids)
		}
	})

	t.Run("settings", func(t *testing.T) {
		tests := []struct {
			name  string
			spec  runtime.ContainerSpec
			check func(t *testing.T, s *oci.Spec)
		}{
			{"run as a user of the image", runtime.ContainerSpec{RunAsUser: ptr(int64(1000))}, func(t *testing.T, s *oci.Spec) {
				if u := s.Process.User; u.UID != 1000 || u.GID != 1000 || !sameSet(u.AdditionalGids, []uint32{1000, 2000}) {
					t.Errorf("user = %+v, want 1000:1000 with group 2000 from the image's /etc/group", u)
				}
			}},
			{"run as a uid the image does not know", runtime.ContainerSpec{RunAsUser: ptr(int64(4242))}, func(t *testing.T, s *oci.Spec) {
				if u := s.Process.User; u.UID != 4242 || u.GID != 0 || !sameSet(u.AdditionalGids, []uint32{0}) {
					t.Errorf("user = %+v, want 4242:0", u)
				}
			}},
			{"user and group", runtime.ContainerSpec{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(3000))}, func(t *testing.T, s *oci.Spec) {
				if u := s.Process.User; u.UID != 1000 || u.GID != 3000 || !sameSet(u.AdditionalGids, []uint32{2000, 3000}) {
					t.Errorf("user = %+v, want 1000:3000 with 2000, without the image's primary group 1000", u)
				}
			}},
			{"group only", runtime.ContainerSpec{RunAsGroup: ptr(int64(3000))}, func(t *testing.T, s *oci.Spec) {
				if u := s.Process.User; u.UID != 0 || u.GID != 3000 || !sameSet(u.AdditionalGids, []uint32{3000}) {
					t.Errorf("user = %+v, want the image's uid 0 with group 3000 only", u)
				}
			}},
			{"read-only root", runtime.ContainerSpec{ReadOnlyRootFS: true}, func(t *testing.T, s *oci.Spec) {
				if !s.Root.Readonly {
					t.Error("root is writable")
				}
			}},
			{"pids limit", runtime.ContainerSpec{PidsLimit: 100}, func(t *testing.T, s *oci.Spec) {
				if p := s.Linux.Resources.Pids; p == nil || p.Limit != 100 {
					t.Errorf("pids = %+v, want a limit of 100", p)
				}
			}},
			{"drop all, add one", runtime.ContainerSpec{CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"}}, func(t *testing.T, s *oci.Spec) {
				c := s.Process.Capabilities
				if want := []string{"CAP_NET_BIND_SERVICE"}; !slices.Equal(c.Bounding, want) || !slices.Equal(c.Effective, want) || !slices.Equal(c.Permitted, want) {
					t.Errorf("capabilities = %+v, want only NET_BIND_SERVICE", c)
				}
				if s.Linux.Seccomp == nil {
					t.Error("no seccomp profile")
				}
			}},
			{"drop one", runtime.ContainerSpec{CapDrop: []string{"NET_RAW"}}, func(t *testing.T, s *oci.Spec) {
				c := s.Process.Capabilities
				if slices.Contains(c.Bounding, "CAP_NET_RAW") || len(c.Bounding) != len(dockerCaps)-1 {
					t.Errorf("bounding = %q, want the default set without NET_RAW", c.Bounding)
				}
			}},
			{"add one: seccomp follows", runtime.ContainerSpec{CapAdd: []string{"SYS_MODULE"}}, func(t *testing.T, s *oci.Spec) {
				if !slices.Contains(s.Process.Capabilities.Effective, "CAP_SYS_MODULE") || !allowed(s.Linux.Seccomp, "init_module") {
					t.Errorf("with SYS_MODULE added: capabilities %q, init_module allowed %v; want both",
						s.Process.Capabilities.Effective, allowed(s.Linux.Seccomp, "init_module"))
				}
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s, err := sandboxSpec(t, root, tt.spec)
				if err != nil {
					t.Fatal(err)
				}
				if !s.Process.NoNewPrivileges || s.Linux.Seccomp == nil {
					t.Error("a setting turned no-new-privileges or seccomp off")
				}
				tt.check(t, s)
			})
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			spec runtime.ContainerSpec
			want string
		}{
			{"unknown capability", runtime.ContainerSpec{CapAdd: []string{"GOD_MODE"}}, `capabilities.add[0]: "GOD_MODE" is not a Linux capability`},
			{"CAP_ prefix", runtime.ContainerSpec{CapDrop: []string{"CAP_KILL"}}, `write "KILL"`},
			{"add ALL", runtime.ContainerSpec{CapAdd: []string{"ALL"}}, "privileged"},
			{"negative uid", runtime.ContainerSpec{RunAsUser: ptr(int64(-1))}, "run_as_user: -1 is out of range"},
			{"gid beyond runc's", runtime.ContainerSpec{RunAsGroup: ptr(int64(1 << 32))}, "run_as_group"},
			{"negative pids limit", runtime.ContainerSpec{PidsLimit: -1}, "pids limit -1 is out of range"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := sandboxSpec(t, root, tt.spec)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.want)
				}
			})
		}
	})
}

func sameSet[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
