package containerd

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/errdefs"
)

func TestNormalizeRef(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nginx", "docker.io/library/nginx:latest"},
		{"demo:v1", "docker.io/library/demo:v1"},
		{"someone/demo:v1", "docker.io/someone/demo:v1"},
		{"flotilla.local/demo", "flotilla.local/demo:latest"},
		{"127.0.0.1:5000/demo:v1", "127.0.0.1:5000/demo:v1"},
		{"localhost:5000/a/b:c", "localhost:5000/a/b:c"},
	}
	for _, tt := range tests {
		got, err := normalizeRef(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("normalizeRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := normalizeRef("Demo:v1"); err == nil {
		t.Error("normalizeRef accepted an invalid reference")
	}
}

func TestPullError(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want []string
		is   error
	}{
		{"not found", fmt.Errorf("resolve: %w", errdefs.ErrNotFound), []string{`"demo:v2"`, "not found in registry 127.0.0.1:5000", "check the image name"}, errdefs.ErrNotFound},
		{"unreachable", fmt.Errorf("failed to do request: %w", refused), []string{`"demo:v2"`, "unreachable", "insecure_registries"}, syscall.ECONNREFUSED},
		{"https to http", errors.New(`http: server gave HTTP response to HTTPS client`), []string{"plain HTTP", "insecure_registries"}, nil},
		{"other", errors.New("boom"), []string{`"demo:v2"`, "127.0.0.1:5000", "boom"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pullError("demo:v2", "127.0.0.1:5000", tt.err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !errors.Is(err, tt.err) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("error %q does not wrap the cause", err)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no address", func(c *Config) { c.Address = "" }, "Address"},
		{"no namespace", func(c *Config) { c.Namespace = "" }, "Namespace"},
		{"relative cgroup", func(c *Config) { c.CgroupParent = "flotilla" }, "CgroupParent"},
		{"relative runc root", func(c *Config) { c.RuncRoot = "runc" }, "RuncRoot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			_, err := c.withDefaults()
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("withDefaults() = %v, want error containing %q", err, tt.want)
			}
		})
	}
	c := DefaultConfig()
	c.InsecureRegistries = []string{"http://reg.local:5000/", ""}
	c, _ = c.withDefaults()
	if len(c.InsecureRegistries) != 1 || c.InsecureRegistries[0] != "reg.local:5000" {
		t.Errorf("InsecureRegistries = %q, want [reg.local:5000]", c.InsecureRegistries)
	}
}

func TestCPUShares(t *testing.T) {
	for _, tt := range []struct {
		millis int64
		want   uint64
	}{{1, 2}, {250, 256}, {1000, 1024}, {2500, 2560}} {
		if got := cpuShares(tt.millis); got != tt.want {
			t.Errorf("cpuShares(%d) = %d, want %d", tt.millis, got, tt.want)
		}
	}
}
