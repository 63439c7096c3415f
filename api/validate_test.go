package api

import (
	"strings"
	"testing"
)

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
