package api

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestDeploymentValidate(t *testing.T) {
	valid := func() Deployment {
		return Deployment{Namespace: "default", Name: "web", Replicas: 3, Containers: []Container{{
			Name: "app", Image: "127.0.0.1:5000/demo:v1", Ports: []Port{{ContainerPort: 8080}}, CPULimit: 500, MemoryLimit: 64,
		}}}
	}
	tests := []struct {
		name   string
		mutate func(*Deployment)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*Deployment) {}, ""},
		{"upper-case name", func(d *Deployment) { d.Name = "Web" }, "name: "},
		{"long name", func(d *Deployment) { d.Name = strings.Repeat("a", 53) }, "at most 52"},
		{"empty namespace", func(d *Deployment) { d.Namespace = "" }, "namespace: must not be empty"},
		{"negative replicas", func(d *Deployment) { d.Replicas = -1 }, "replicas: "},
		{"no containers", func(d *Deployment) { d.Containers = nil }, "containers: at least one"},
		{"empty image", func(d *Deployment) { d.Containers[0].Image = "" }, "containers[0].image: must not be empty"},
		{"image with space", func(d *Deployment) { d.Containers[0].Image = "demo v1" }, "white space"},
		{"duplicate container", func(d *Deployment) { d.Containers = append(d.Containers, Container{Name: "app", Image: "x"}) }, "containers[1].name"},
		{"port out of range", func(d *Deployment) { d.Containers[0].Ports[0].ContainerPort = 70000 }, "containers[0].ports[0].container_port"},
		{"bad protocol", func(d *Deployment) { d.Containers[0].Ports[0].Protocol = "sctp" }, "protocol"},
		{"port shared across containers", func(d *Deployment) {
			d.Containers = append(d.Containers, Container{Name: "side", Image: "x", Ports: []Port{{ContainerPort: 8080, Protocol: "tcp"}}})
		}, "share one network namespace"},
		{"request above limit", func(d *Deployment) { d.Containers[0].CPURequest = 600 }, "cpu_request"},
		{"tiny memory", func(d *Deployment) { d.Containers[0].MemoryLimit = 1 }, "memory_limit"},
		{"bad env name", func(d *Deployment) { d.Containers[0].Env = map[string]string{"A=B": "c"} }, "env"},
		{"pids limit", func(d *Deployment) { d.Containers[0].PidsLimit = 100 }, ""},
		{"negative pids limit", func(d *Deployment) { d.Containers[0].PidsLimit = -1 }, "containers[0].pids_limit: -1 is out of range"},
		{"huge pids limit", func(d *Deployment) { d.Containers[0].PidsLimit = MaxPidsLimit + 1 }, "containers[0].pids_limit"},
		{"full security", func(d *Deployment) {
			d.Containers[0].Security = &Security{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(0)), ReadOnlyRootFilesystem: true,
				Capabilities: &Capabilities{Add: []string{"NET_BIND_SERVICE", "NET_ADMIN"}, Drop: []string{"ALL"}}}
		}, ""},
		{"empty security", func(d *Deployment) { d.Containers[0].Security = &Security{Capabilities: &Capabilities{}} }, ""},
		{"negative uid", func(d *Deployment) { d.Containers[0].Security = &Security{RunAsUser: ptr(int64(-1))} }, "containers[0].security.run_as_user: -1 is out of range"},
		{"uid beyond runc's", func(d *Deployment) { d.Containers[0].Security = &Security{RunAsGroup: ptr(int64(1 << 31))} }, "containers[0].security.run_as_group: 2147483648 is out of range"},
		{"unknown capability", func(d *Deployment) {
			d.Containers[0].Security = &Security{Capabilities: &Capabilities{Add: []string{"NET_ADMIN", "FLY"}}}
		}, `containers[0].security.capabilities.add[1]: "FLY" is not a Linux capability`},
		{"CAP_ prefix", func(d *Deployment) {
			d.Containers[0].Security = &Security{Capabilities: &Capabilities{Drop: []string{"CAP_NET_RAW"}}}
		}, `containers[0].security.capabilities.drop[0]: "CAP_NET_RAW": write "NET_RAW"`},
		{"lower case", func(d *Deployment) {
			d.Containers[0].Security = &Security{Capabilities: &Capabilities{Drop: []string{"net_raw"}}}
		}, `write "NET_RAW"`},
		{"add ALL", func(d *Deployment) {
			d.Containers[0].Security = &Security{Capabilities: &Capabilities{Add: []string{"ALL"}}}
		}, `containers[0].security.capabilities.add[0]: adding "ALL" would make the container privileged`},
		{"duplicate capability", func(d *Deployment) {
			d.Containers[0].Security = &Security{Capabilities: &Capabilities{Drop: []string{"KILL", "KILL"}}}
		}, `capabilities.drop[1]: "KILL" is listed twice`},
		{"added and dropped", func(d *Deployment) {
			d.Containers[0].Security = &Security{Capabilities: &Capabilities{Add: []string{"KILL"}, Drop: []string{"KILL"}}}
		}, `capabilities.add[0]: "KILL" is also dropped`},
		{"too many capabilities", func(d *Deployment) {
			d.Containers[0].Security = &Security{Capabilities: &Capabilities{Drop: slices.Repeat([]string{"KILL"}, MaxCapabilities+1)}}
		}, "capabilities.drop: 65 entries; at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := valid()
			tt.mutate(&d)
			err := d.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNewClientRejectsBadAddress(t *testing.T) {
	for _, addr := range []string{"ftp://x", "http://"} {
		if _, err := NewClient(&Config{Address: addr}); err == nil {
			t.Errorf("NewClient(%q) accepted it", addr)
		}
	}
	c, err := NewClient(&Config{Address: "127.0.0.1:7400"})
	if err != nil || c.Address() != "http://127.0.0.1:7400" {
		t.Errorf("bare host:port: %v %v", c, err)
	}
}

func TestEffectiveCapabilities(t *testing.T) {
	def := DefaultCapabilities()
	tests := []struct {
		name string
		c    *Capabilities
		want []string
	}{
		{"none asked: Docker's default set", nil, def},
		{"drop one", &Capabilities{Drop: []string{"NET_RAW"}}, slices.DeleteFunc(slices.Clone(def), func(n string) bool { return n == "NET_RAW" })},
		{"drop all, add one", &Capabilities{Drop: []string{"ALL"}, Add: []string{"NET_BIND_SERVICE"}}, []string{"NET_BIND_SERVICE"}},
		{"drop all", &Capabilities{Drop: []string{"ALL"}}, nil},
		{"add beyond", &Capabilities{Add: []string{"SYS_PTRACE", "CHOWN"}}, append(slices.Clone(def), "SYS_PTRACE")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EffectiveCapabilities(tt.c)
			want := slices.Clone(tt.want)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("EffectiveCapabilities = %q, want %q", got, want)
			}
		})
	}
	if len(def) != 14 {
		t.Errorf("Docker's default set has 14 capabilities, not %d", len(def))
	}
	for _, n := range def {
		if !IsCapability(n) {
			t.Errorf("default capability %q is not a known one", n)
		}
	}
	if got := AddedCapabilities(&Capabilities{Add: []string{"CHOWN", "NET_ADMIN", "SYS_PTRACE"}}); !slices.Equal(got, []string{"NET_ADMIN", "SYS_PTRACE"}) {
		t.Errorf("AddedCapabilities = %q; want the two beyond the default set", got)
	}
}

func TestSecurityClone(t *testing.T) {
	s := &Security{RunAsUser: ptr(int64(1)), RunAsGroup: ptr(int64(2)), ReadOnlyRootFilesystem: true,
		Capabilities: &Capabilities{Add: []string{"NET_ADMIN"}, Drop: []string{"ALL"}}}
	c := s.Clone()
	if !reflect.DeepEqual(s, c) {
		t.Fatalf("clone %+v differs from %+v", c, s)
	}
	*c.RunAsUser, *c.RunAsGroup, c.Capabilities.Add[0], c.Capabilities.Drop[0] = 9, 9, "X", "Y"
	if *s.RunAsUser != 1 || *s.RunAsGroup != 2 || s.Capabilities.Add[0] != "NET_ADMIN" || s.Capabilities.Drop[0] != "ALL" {
		t.Errorf("changing the clone changed the original: %+v", s)
	}
	if (*Security)(nil).Clone() != nil {
		t.Error("nil clones to non-nil")
	}
}
