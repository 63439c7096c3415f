package api

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
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
func ValidateName(s string) error { return ValidateDNSLabelLen(s, MaxNameLen) }

// Validate checks a deployment as a user submitted it. The error names each
// offending field by its path, e.g. "containers[0].image: must not be empty".
func (d *Deployment) Validate() error {
	if err := d.ValidateFields(); err != nil {
		return err
	}
	return checkEncodedSize("deployment", d, MaxSpecBytes)
}

// ValidateFields is Validate without the bound on the encoded size, for
// who knows the size already (the state machine has the log entry's).
func (d *Deployment) ValidateFields() error {
	var errs []error
	field := fieldErrors(&errs)
	field("namespace", ValidateName(d.Namespace))
	field("name", ValidateName(d.Name))
	if d.Replicas < 0 || d.Replicas > MaxReplicas {
		field("replicas", fmt.Errorf("%d is out of range 0..%d", d.Replicas, MaxReplicas))
	}
	field("labels", ValidateLabels(d.Labels))
	validateContainers(d.Containers, field)
	field("node_selector", ValidateLabels(d.NodeSelector))
	switch d.Placement {
	case "", PlacementSpread, PlacementBinPack:
	default:
		field("placement", fmt.Errorf("%q must be %q or %q", d.Placement, PlacementSpread, PlacementBinPack))
	}
	validateAntiAffinity(d.AntiAffinity, field)
	if d.MinReadySeconds != nil && (*d.MinReadySeconds < 0 || *d.MinReadySeconds > MaxProbeSeconds) {
		field("min_ready_seconds", fmt.Errorf("%d is out of range 0..%d", *d.MinReadySeconds, MaxProbeSeconds))
	}
	return errors.Join(errs...)
}

// validateAntiAffinity checks anti-affinity rules, as a deployment and
// each of its pods carry them.
func validateAntiAffinity(rules []AntiAffinity, field func(string, error)) {
	if len(rules) > MaxAntiAffinity {
		field("anti_affinity", fmt.Errorf("%d rules; at most %d are allowed", len(rules), MaxAntiAffinity))
	}
	for i, r := range rules {
		p := fmt.Sprintf("anti_affinity[%d]", i)
		if len(r.Labels) == 0 {
			field(p+".labels", errors.New("at least one label is required: the rule selects pods by them"))
		}
		field(p+".labels", ValidateLabels(r.Labels))
		if r.Topology != "" && r.Topology != "node" && (len(r.Topology) > MaxLabelLen || !labelRE.MatchString(r.Topology)) {
			field(p+".topology", fmt.Errorf("%q must be \"node\" or a node label key such as \"zone\"", r.Topology))
		}
	}
}

// validateProbe checks a probe at path (e.g. "containers[0].liveness_probe").
func validateProbe(path string, pr *Probe, liveness bool, field func(string, error)) {
	if pr == nil {
		return
	}
	n := 0
	if pr.HTTPGet != nil {
		n++
		if pr.HTTPGet.Port < 1 || pr.HTTPGet.Port > 65535 {
			field(path+".http_get.port", fmt.Errorf("%d is out of range 1..65535", pr.HTTPGet.Port))
		}
		switch p := pr.HTTPGet.Path; {
		case len(p) > MaxProbePathLen:
			field(path+".http_get.path", fmt.Errorf("is %d characters; at most %d are allowed", len(p), MaxProbePathLen))
		case p != "" && !strings.HasPrefix(p, "/"):
			field(path+".http_get.path", fmt.Errorf("%q must start with /", p))
		case strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			field(path+".http_get.path", fmt.Errorf("%q must not contain white space or control characters", p))
		}
	}
	if pr.TCPSocket != nil {
		n++
		if pr.TCPSocket.Port < 1 || pr.TCPSocket.Port > 65535 {
			field(path+".tcp_socket.port", fmt.Errorf("%d is out of range 1..65535", pr.TCPSocket.Port))
		}
	}
	if pr.Exec != nil {
		n++
		switch c := pr.Exec.Command; {
		case len(c) == 0:
			field(path+".exec.command", errors.New("must not be empty"))
		case len(c) > MaxArgs:
			field(path+".exec.command", fmt.Errorf("%d entries; at most %d are allowed", len(c), MaxArgs))
		default:
			for j, a := range c {
				if len(a) > MaxArgLen || strings.ContainsRune(a, 0) {
					field(fmt.Sprintf("%s.exec.command[%d]", path, j), fmt.Errorf("must be at most %d bytes without NUL", MaxArgLen))
				}
			}
		}
	}
	if n != 1 {
		field(path, fmt.Errorf("exactly one of http_get, tcp_socket and exec must be set, not %d", n))
	}
	for _, t := range []struct {
		name   string
		v, min int
		max    int
	}{
		{"initial_delay_seconds", pr.InitialDelaySeconds, 0, MaxProbeSeconds},
		{"period_seconds", pr.PeriodSeconds, 0, MaxProbeSeconds},
		{"timeout_seconds", pr.TimeoutSeconds, 0, MaxProbeSeconds},
		{"success_threshold", pr.SuccessThreshold, 0, MaxProbeThreshold},
		{"failure_threshold", pr.FailureThreshold, 0, MaxProbeThreshold},
	} {
		if t.v < t.min || t.v > t.max {
			field(path+"."+t.name, fmt.Errorf("%d is out of range %d..%d", t.v, t.min, t.max))
		}
	}
	if liveness && pr.SuccessThreshold > 1 {
		field(path+".success_threshold", fmt.Errorf("%d: a liveness probe's must be 1, as in Kubernetes", pr.SuccessThreshold))
	}
}

// fieldErrors returns a func that records err under path, if err is not nil.
func fieldErrors(errs *[]error) func(path string, err error) {
	return func(path string, err error) {
		switch {
		case err == nil:
		case path == "":
			*errs = append(*errs, err)
		default:
			*errs = append(*errs, fmt.Errorf("%s: %w", path, err))
		}
	}
}

// validateContainers checks a pod template's containers, as a deployment
// and each of its pods carry them.
func validateContainers(cs []Container, field func(string, error)) {
	if len(cs) == 0 {
		field("containers", errors.New("at least one container is required"))
	}
	if len(cs) > MaxContainers {
		field("containers", fmt.Errorf("%d containers; at most %d are allowed", len(cs), MaxContainers))
		return
	}
	names := map[string]bool{}
	ports := map[string]string{}
	for i, c := range cs {
		p := fmt.Sprintf("containers[%d]", i)
		field(p+".name", ValidateName(c.Name))
		if names[c.Name] {
			field(p+".name", fmt.Errorf("%q is used by another container of this deployment", c.Name))
		}
		names[c.Name] = true
		switch {
		case strings.TrimSpace(c.Image) == "":
			field(p+".image", errors.New("must not be empty"))
		case len(c.Image) > MaxImageLen:
			field(p+".image", fmt.Errorf("is %d characters; at most %d are allowed", len(c.Image), MaxImageLen))
		case strings.ContainsFunc(c.Image, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			field(p+".image", fmt.Errorf("%q must not contain white space or control characters", c.Image))
		}
		if n := len(c.Command) + len(c.Args); n > MaxArgs {
			field(p+".args", fmt.Errorf("command and args have %d entries; at most %d are allowed", n, MaxArgs))
		}
		for j, a := range append(slices.Clone(c.Command), c.Args...) {
			if len(a) > MaxArgLen || strings.ContainsRune(a, 0) {
				field(fmt.Sprintf("%s.args[%d]", p, j), fmt.Errorf("must be at most %d bytes without NUL", MaxArgLen))
			}
		}
		if len(c.Env) > MaxEnv {
			field(p+".env", fmt.Errorf("%d variables; at most %d are allowed", len(c.Env), MaxEnv))
		}
		for k, v := range c.Env {
			if k == "" || len(k) > MaxLabelLen*4 || strings.ContainsAny(k, "=\x00") {
				field(p+".env", fmt.Errorf("variable name %q is invalid", k))
			}
			if len(v) > MaxArgLen || strings.ContainsRune(v, 0) {
				field(p+".env", fmt.Errorf("the value of %q must be at most %d bytes without NUL", k, MaxArgLen))
			}
		}
		if len(c.Ports) > MaxPorts {
			field(p+".ports", fmt.Errorf("%d ports; at most %d are allowed", len(c.Ports), MaxPorts))
		}
		for j, port := range c.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", p, j)
			if port.Name != "" {
				field(pp+".name", ValidateDNSLabelLen(port.Name, 15))
			}
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
			if port.HostPort != 0 {
				if port.HostPort < 1 || port.HostPort > 65535 {
					field(pp+".host_port", fmt.Errorf("%d is out of range 1..65535", port.HostPort))
				}
				hkey := fmt.Sprintf("host %d/%s", port.HostPort, proto)
				if other, dup := ports[hkey]; dup {
					field(pp+".host_port", fmt.Errorf("%d/%s is also declared by %s", port.HostPort, proto, other))
				}
				ports[hkey] = pp
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
			if r.v < 0 || r.v > MaxResource {
				field(p+"."+r.name, fmt.Errorf("%d is out of range 0..%d", r.v, MaxResource))
			}
		}
		validateProbe(p+".liveness_probe", c.LivenessProbe, true, field)
		validateProbe(p+".readiness_probe", c.ReadinessProbe, false, field)
		if c.CPULimit > 0 && c.CPURequest > c.CPULimit {
			field(p+".cpu_request", fmt.Errorf("%dm exceeds cpu_limit %dm", c.CPURequest, c.CPULimit))
		}
		if c.MemoryLimit > 0 && c.MemoryRequest > c.MemoryLimit {
			field(p+".memory_request", fmt.Errorf("%d MiB exceeds memory_limit %d MiB", c.MemoryRequest, c.MemoryLimit))
		}
		if c.MemoryLimit > 0 && c.MemoryLimit < 4 {
			field(p+".memory_limit", fmt.Errorf("%d MiB is too small to start a container; use at least 4", c.MemoryLimit))
		}
		if c.PidsLimit < 0 || c.PidsLimit > MaxPidsLimit {
			field(p+".pids_limit", fmt.Errorf("%d is out of range 0..%d (0: the node's default)", c.PidsLimit, MaxPidsLimit))
		}
		validateSecurity(p+".security.", c.Security, field)
	}
}

// ValidateDNSLabel reports whether s is a DNS label of at most 63
// characters (lower-case letters, digits and '-', starting and ending with
// a letter or digit): a pod name, which is a hostname and part of host paths.
func ValidateDNSLabel(s string) error { return ValidateDNSLabelLen(s, 63) }
