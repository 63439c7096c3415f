package node

import (
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

func ptr[T any](v T) *T { return &v }

// TestSpecHashStable pins the spec hash of containers that use none of
// the fields added since (pids_limit, security): the hashes were taken
// before those fields existed. A change here replaces every running
// container of every fleet on upgrade.
func TestSpecHashStable(t *testing.T) {
	plain := api.Container{Name: "app", Image: "demo:v1"}
	full := api.Container{Name: "web", Image: "127.0.0.1:5000/demo:v1", Command: []string{"/app"}, Args: []string{"-v"},
		Env: map[string]string{"A": "1", "B": "2"}, Ports: []api.Port{{Name: "http", ContainerPort: 8080, Protocol: "tcp", HostPort: 80}},
		CPURequest: 100, CPULimit: 500, MemoryRequest: 32, MemoryLimit: 64,
		LivenessProbe:  &api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/", Port: 8080}, PeriodSeconds: 5},
		ReadinessProbe: &api.Probe{Exec: &api.ExecProbe{Command: []string{"true"}}}}
	for _, tt := range []struct {
		c    api.Container
		want string
	}{{plain, "a517f3e7f4df9b6c"}, {full, "81fa8ea95c950848"}} {
		if got := specHash(tt.c); got != tt.want {
			t.Errorf("specHash(%s) = %s, want %s as before pids_limit and security existed", tt.c.Name, got, tt.want)
		}
	}
	// Each new setting is part of the spec: changing it replaces the container.
	seen := map[string]string{specHash(plain): "none"}
	for name, mutate := range map[string]func(*api.Container){
		"pids_limit":   func(c *api.Container) { c.PidsLimit = 100 },
		"empty block":  func(c *api.Container) { c.Security = &api.Security{} },
		"run_as_user":  func(c *api.Container) { c.Security = &api.Security{RunAsUser: ptr(int64(0))} },
		"run_as_group": func(c *api.Container) { c.Security = &api.Security{RunAsGroup: ptr(int64(0))} },
		"read-only":    func(c *api.Container) { c.Security = &api.Security{ReadOnlyRootFilesystem: true} },
		"drop": func(c *api.Container) {
			c.Security = &api.Security{Capabilities: &api.Capabilities{Drop: []string{"ALL"}}}
		},
		"add": func(c *api.Container) {
			c.Security = &api.Security{Capabilities: &api.Capabilities{Add: []string{"ALL"}}}
		},
	} {
		c := plain
		mutate(&c)
		h := specHash(c)
		if other, dup := seen[h]; dup {
			t.Errorf("%s hashes as %s does", name, other)
		}
		seen[h] = name
	}
}

// TestReconcilerSandboxSettings: what a container asks of its sandbox, and
// the node's default pids limit, reach the runtime.
func TestReconcilerSandboxSettings(t *testing.T) {
	p := demoPod("web-a")
	p.Containers = append(p.Containers,
		api.Container{Name: "locked", Image: "demo:v1", PidsLimit: 64, Security: &api.Security{
			RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(2000)), ReadOnlyRootFilesystem: true,
			Capabilities: &api.Capabilities{Drop: []string{"ALL"}, Add: []string{"NET_BIND_SERVICE"}},
		}},
		api.Container{Name: "bare", Image: "demo:v1", Security: &api.Security{}})
	f := newFixture(t, p)
	f.step(t)
	if st := f.store.pod(p.ID()).Status; st.Phase != api.PodRunning {
		t.Fatalf("status = %+v, want running", st)
	}
	app, _ := f.rt.Spec(containerID(&p, "app"))
	if app.PidsLimit != DefaultPidsLimit || app.RunAsUser != nil || app.RunAsGroup != nil || app.ReadOnlyRootFS || app.CapAdd != nil || app.CapDrop != nil {
		t.Errorf("app spec = %+v; want the node's pids limit %d and nothing else of the sandbox", app, DefaultPidsLimit)
	}
	locked, _ := f.rt.Spec(containerID(&p, "locked"))
	if locked.PidsLimit != 64 || *locked.RunAsUser != 1000 || *locked.RunAsGroup != 2000 || !locked.ReadOnlyRootFS ||
		!slices.Equal(locked.CapAdd, []string{"NET_BIND_SERVICE"}) || !slices.Equal(locked.CapDrop, []string{"ALL"}) {
		t.Errorf("locked spec = %+v; want what its security block says", locked)
	}
	if bare, _ := f.rt.Spec(containerID(&p, "bare")); bare.PidsLimit != DefaultPidsLimit || bare.RunAsUser != nil || bare.CapAdd != nil {
		t.Errorf("bare spec = %+v; an empty security block changes nothing", bare)
	}

	// A node without a default leaves the pids of containers that set none unbounded.
	q := demoPod("web-b")
	g := newFixtureWith(t, func(_ *fixture, cfg *Config) { cfg.DefaultPidsLimit = 0 }, q)
	g.step(t)
	if s, _ := g.rt.Spec(containerID(&q, "app")); s.PidsLimit != 0 {
		t.Errorf("pids limit %d with no node default", s.PidsLimit)
	}
}

// TestReconcilerRefusesSandboxItDoesNotAllow: capabilities beyond Docker's
// default set run only on nodes that allow them, and settings the API
// would refuse never reach the runtime; the pod fails with why.
func TestReconcilerRefusesSandboxItDoesNotAllow(t *testing.T) {
	withCaps := func(add ...string) api.Pod {
		p := demoPod("web-a")
		p.Containers[0].Security = &api.Security{Capabilities: &api.Capabilities{Add: add}}
		return p
	}
	tests := []struct {
		name    string
		pod     api.Pod
		allowed []string
		want    string // "" means it runs
	}{
		{"default capability", withCaps("CHOWN"), nil, ""},
		{"dropped then added back", func() api.Pod {
			p := withCaps("KILL")
			p.Containers[0].Security.Capabilities.Drop = []string{"ALL"}
			return p
		}(), nil, ""},
		{"beyond the default", withCaps("SYS_ADMIN", "NET_ADMIN"), nil,
			"container app adds capabilities SYS_ADMIN, NET_ADMIN, which node n1 does not allow (beyond Docker's default set it allows none)"},
		{"allowed by the node", withCaps("NET_ADMIN"), []string{"NET_ADMIN"}, ""},
		{"partly allowed", withCaps("NET_ADMIN", "SYS_MODULE"), []string{"NET_ADMIN"},
			"adds capabilities SYS_MODULE, which node n1 does not allow (beyond Docker's default set it allows NET_ADMIN)"},
		{"ALL from the state", withCaps("ALL"), []string{"SYS_ADMIN"}, `container app: security: capabilities.add[0]: adding "ALL"`},
		{"unknown from the state", withCaps("CAP_SYS_ADMIN"), []string{"SYS_ADMIN"}, `write "SYS_ADMIN"`},
		{"uid from the state", func() api.Pod {
			p := demoPod("web-a")
			p.Containers[0].Security = &api.Security{RunAsUser: ptr(int64(-5))}
			return p
		}(), nil, "container app: security: run_as_user: -5 is out of range"},
		{"pids limit from the state", func() api.Pod {
			p := demoPod("web-a")
			p.Containers[0].PidsLimit = -1
			return p
		}(), nil, "container app: pids_limit -1 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, func(_ *fixture, cfg *Config) { cfg.AllowedCapabilities = tt.allowed }, tt.pod)
			f.step(t)
			st := f.store.pod(tt.pod.ID()).Status
			cs, _ := f.rt.List(f.ctx)
			if tt.want == "" {
				if st.Phase != api.PodRunning || len(cs) != 1 {
					t.Fatalf("status = %+v with %d containers, want it running", st, len(cs))
				}
				return
			}
			if st.Phase != api.PodFailed || st.Reason != api.ReasonCreateError || !strings.Contains(st.Message, tt.want) {
				t.Errorf("status = %+v, want failed with %q", st, tt.want)
			}
			if len(cs) != 0 {
				t.Errorf("%d containers created for a refused pod", len(cs))
			}
			if atts, _ := f.net.List(f.ctx); len(atts) != 0 {
				t.Errorf("a network was set up for a refused pod: %+v", atts)
			}
		})
	}
}
