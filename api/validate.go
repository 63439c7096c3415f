package api

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// NameRE is the DNS-1123 label that names namespaces, deployments and
// containers: pod names become hostnames and DNS names, so they must be valid ones.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// MaxNameLen bounds names so a pod name (deployment + "-" + 10 characters)
// stays a valid 63-character DNS label.
const MaxNameLen = 52

// MaxReplicas bounds replicas of one deployment.
const MaxReplicas = 1000

// ValidateName reports whether s can name a namespace, deployment or container.
func ValidateName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%q is %d characters; at most %d are allowed", s, len(s), MaxNameLen)
	}
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%q must be lower-case letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return nil
}

// Validate checks a deployment as a user submitted it. The error names each
// offending field by its path, e.g. "containers[0].image: must not be empty".
func (d *Deployment) Validate() error {
	var errs []error
	field := func(path string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	field("namespace", ValidateName(d.Namespace))
	field("name", ValidateName(d.Name))
	if d.Replicas < 0 || d.Replicas > MaxReplicas {
		field("replicas", fmt.Errorf("%d is out of range 0..%d", d.Replicas, MaxReplicas))
	}
	if len(d.Containers) == 0 {
		field("containers", errors.New("at least one container is required"))
	}
	names := map[string]bool{}
	ports := map[string]string{}
	for i, c := range d.Containers {
		p := fmt.Sprintf("containers[%d]", i)
		field(p+".name", ValidateName(c.Name))
		if names[c.Name] {
			field(p+".name", fmt.Errorf("%q is used by another container of this deployment", c.Name))
		}
		names[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			field(p+".image", errors.New("must not be empty"))
		} else if strings.ContainsAny(c.Image, " \t\n") {
			field(p+".image", fmt.Errorf("%q must not contain white space", c.Image))
		}
		for k := range c.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				field(p+".env", fmt.Errorf("variable name %q is invalid", k))
			}
		}
		for j, port := range c.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", p, j)
			if port.ContainerPort < 1 || port.ContainerPort > 65535 {
				field(pp+".container_port", fmt.Errorf("%d is out of range 1..65535", port.ContainerPort))
			}
			proto := port.Protocol
			if proto == "" {
				proto = "tcp"
			}
			if proto != "tcp" && proto != "udp" {
				field(pp+".protocol", fmt.Errorf("%q must be tcp or udp", port.Protocol))
			}
			key := fmt.Sprintf("%d/%s", port.ContainerPort, proto)
			if other, dup := ports[key]; dup {
				field(pp+".container_port", fmt.Errorf("%s is also declared by %s; containers of a pod share one network namespace", key, other))
			}
			ports[key] = pp
		}
		for _, r := range []struct {
			name string
			v    int64
		}{{"cpu_request", c.CPURequest}, {"cpu_limit", c.CPULimit}, {"memory_request", c.MemoryRequest}, {"memory_limit", c.MemoryLimit}} {
			if r.v < 0 {
				field(p+"."+r.name, fmt.Errorf("%d must not be negative", r.v))
			}
		}
		if c.CPULimit > 0 && c.CPURequest > c.CPULimit {
			field(p+".cpu_request", fmt.Errorf("%dm exceeds cpu_limit %dm", c.CPURequest, c.CPULimit))
		}
		if c.MemoryLimit > 0 && c.MemoryRequest > c.MemoryLimit {
			field(p+".memory_request", fmt.Errorf("%d MiB exceeds memory_limit %d MiB", c.MemoryRequest, c.MemoryLimit))
		}
		if c.MemoryLimit > 0 && c.MemoryLimit < 4 {
			field(p+".memory_limit", fmt.Errorf("%d MiB is too small to start a container; use at least 4", c.MemoryLimit))
		}
	}
	return errors.Join(errs...)
}
