package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Bounds on everything the API and the agents accept. Every value that
// reaches the raft log passes them, on the agent that takes the request and
// again on the leader, so no client can grow the log, the snapshot or the
// memory of every replica without limit.
//
// The state machine checks them again when it applies an entry, so a
// limit may only ever grow from one version to the next: tightening one
// would make agents of two versions skip different entries during a
// rolling upgrade, and change what an old log replays to.
const (
	// MaxSpecBytes bounds a deployment or pod as encoded (JSON).
	MaxSpecBytes  = 256 << 10
	MaxContainers = 16
	MaxPorts      = 64
	MaxEnv        = 256
	// MaxArgs bounds command and args together; MaxArgLen each of them,
	// and each environment value.
	MaxArgs     = 256
	MaxArgLen   = 8 << 10
	MaxImageLen = 512
	// MaxResource bounds CPU (millicores) and memory (MiB) numbers.
	MaxResource = 1 << 40
	MaxLabels   = 64
	// MaxLabelLen bounds label keys and values (Kubernetes' label name and
	// value limit).
	MaxLabelLen = 63
	// MaxMessageLen bounds a status reason or message; MaxLogLines and
	// MaxLogLineLen the last log lines of a container.
	MaxMessageLen = 2 << 10
	MaxLogLines   = 20
	MaxLogLineLen = 512
	MaxVersionLen = 64
	// MaxAntiAffinity bounds a deployment's anti-affinity rules.
	MaxAntiAffinity = 16
	// MaxProbeSeconds bounds probe timings and min_ready_seconds (an hour);
	// MaxProbeThreshold probe thresholds; MaxProbePathLen an HTTP probe's path.
	MaxProbeSeconds   = 3600
	MaxProbeThreshold = 100
	MaxProbePathLen   = 1024
	// MaxPodsPerNode bounds the pods one node may report on at once.
	MaxPodsPerNode = 1024
	// MaxPidsLimit bounds a container's pids limit: the kernel's own
	// bound on PIDs (PID_MAX_LIMIT on 64-bit).
	MaxPidsLimit = 1 << 22
	// MaxUserID bounds run_as_user and run_as_group: runc refuses larger
	// IDs (and containerd follows it).
	MaxUserID = 1<<31 - 1
	// MaxCapabilities bounds each of a container's capability lists.
	MaxCapabilities = 64
)

var labelRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)

// ValidateDNSLabelLen checks s is a DNS label (lower-case letters, digits
// and '-', starting and ending with a letter or digit) of at most max bytes.
func ValidateDNSLabelLen(s string, max int) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > max {
		return fmt.Errorf("%q is %d characters; at most %d are allowed", s, len(s), max)
	}
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%q must be lower-case letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return nil
}

// ValidateNodeName checks a node name: a DNS label of at most 63
// characters. It is also the common name of the node's certificate.
func ValidateNodeName(s string) error { return ValidateDNSLabelLen(s, 63) }

// ValidateLabels checks a label map: at most MaxLabels entries, keys and
// values of at most MaxLabelLen characters of letters, digits, '-', '_'
// and '.', keys not empty.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels; at most %d are allowed", len(labels), MaxLabels)
	}
	var errs []error
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelLen || !labelRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("key %q must be 1 to %d letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k, MaxLabelLen))
		}
		if len(v) > MaxLabelLen || !labelRE.MatchString(v) {
			errs = append(errs, fmt.Errorf("value %q of %q must be at most %d letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v, k, MaxLabelLen))
		}
	}
	return errors.Join(errs...)
}

// checkEncodedSize bounds v's JSON encoding, which is about what it takes
// in the raft log and in memory.
func checkEncodedSize(what string, v any, max int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s does not encode: %w", what, err)
	}
	if len(b) > max {
		return fmt.Errorf("the %s is %d bytes encoded; at most %d are allowed", what, len(b), max)
	}
	return nil
}

// Validate checks a node record as an agent registers it.
func (n *Node) Validate() error {
	var errs []error
	field := fieldErrors(&errs)
	field("name", ValidateNodeName(n.Name))
	if a, err := netip.ParseAddr(n.Address); err != nil || !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		field("address", fmt.Errorf("%q is not a unicast IP address", n.Address))
	}
	if n.PodCIDR != "" {
		if _, err := netip.ParsePrefix(n.PodCIDR); err != nil {
			field("pod_cidr", err)
		}
	}
	if n.CPUMillis < 0 || n.CPUMillis > MaxResource {
		field("cpu_millis", fmt.Errorf("%d is out of range", n.CPUMillis))
	}
	if n.MemoryMiB < 0 || n.MemoryMiB > MaxResource {
		field("memory_mib", fmt.Errorf("%d is out of range", n.MemoryMiB))
	}
	field("labels", ValidateLabels(n.Labels))
	switch n.Status {
	case "", NodeReady, NodeDown, NodeLeft:
	default:
		field("status", fmt.Errorf("%q is not one of %q, %q, %q", n.Status, NodeReady, NodeDown, NodeLeft))
	}
	for _, r := range []struct {
		name string
		v    int64
	}{{"reserved_cpu_millis", n.ReservedCPUMillis}, {"reserved_memory_mib", n.ReservedMemoryMiB}} {
		if r.v < 0 || r.v > MaxResource {
			field(r.name, fmt.Errorf("%d is out of range", r.v))
		}
	}
	if len(n.Version) > MaxVersionLen || strings.ContainsFunc(n.Version, isControl) {
		field("version", fmt.Errorf("must be at most %d printable characters", MaxVersionLen))
	}
	if len(n.Conditions) > MaxNodeConditions {
		field("conditions", fmt.Errorf("%d conditions; at most %d", len(n.Conditions), MaxNodeConditions))
	}
	seen := map[string]bool{}
	for i, c := range n.Conditions {
		p := fmt.Sprintf("conditions[%d]", i)
		switch c.Type {
		case NodeConditionRuntimeUnhealthy, NodeConditionDiskPressure:
		default:
			field(p+".type", fmt.Errorf("%q is not one of %q, %q", TruncateText(c.Type, 64), NodeConditionRuntimeUnhealthy, NodeConditionDiskPressure))
		}
		if seen[c.Type] {
			field(p+".type", fmt.Errorf("%q appears twice", c.Type))
		}
		seen[c.Type] = true
		field(p+".message", checkText(c.Message, MaxMessageLen))
	}
	return errors.Join(errs...)
}

// Validate checks a pod as the scheduler places it: names that become host
// paths and network namespace names on its node, and its containers.
func (p *Pod) Validate() error {
	if err := p.ValidateFields(); err != nil {
		return err
	}
	if err := checkEncodedSize("pod", p, MaxSpecBytes); err != nil {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// ValidateFields is Validate without the bound on the encoded size.
func (p *Pod) ValidateFields() error {
	var errs []error
	field := fieldErrors(&errs)
	field("namespace", ValidateName(p.Namespace))
	field("name", ValidateDNSLabelLen(p.Name, 63))
	if p.Deployment != "" {
		field("deployment", ValidateName(p.Deployment))
	}
	field("node", ValidateNodeName(p.Node))
	field("labels", ValidateLabels(p.Labels))
	validateContainers(p.Containers, field)
	validateAntiAffinity(p.AntiAffinity, field)
	if p.MinReadySeconds < 0 || p.MinReadySeconds > MaxProbeSeconds {
		field("min_ready_seconds", fmt.Errorf("%d is out of range 0..%d", p.MinReadySeconds, MaxProbeSeconds))
	}
	field("stop_reason", checkText(p.StopReason, 128))
	field("status", p.Status.Validate())
	if len(errs) > 0 {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, errors.Join(errs...))
	}
	return nil
}

// Validate bounds what a node reports of a pod.
func (s *PodStatus) Validate() error {
	var errs []error
	field := fieldErrors(&errs)
	switch s.Phase {
	case "", PodPending, PodRunning, PodFailed, PodTerminating:
	default:
		field("phase", fmt.Errorf("%q is not a pod phase", s.Phase))
	}
	if s.IP != "" {
		if _, err := netip.ParseAddr(s.IP); err != nil {
			field("ip", err)
		}
	}
	field("reason", checkText(s.Reason, 128))
	field("message", checkText(s.Message, MaxMessageLen))
	if len(s.Containers) > MaxContainers {
		field("containers", fmt.Errorf("%d container statuses; at most %d", len(s.Containers), MaxContainers))
	}
	for i, c := range s.Containers {
		p := fmt.Sprintf("containers[%d]", i)
		field(p+".name", ValidateName(c.Name))
		field(p+".reason", checkText(c.Reason, 128))
		field(p+".message", checkText(c.Message, MaxMessageLen))
		field(p+".last_exit_reason", checkText(c.LastExitReason, 128))
		if len(c.LastLog) > MaxLogLines {
			field(p+".last_log", fmt.Errorf("%d lines; at most %d", len(c.LastLog), MaxLogLines))
		}
		for _, l := range c.LastLog {
			if len(l) > MaxLogLineLen {
				field(p+".last_log", fmt.Errorf("a line of %d bytes; at most %d", len(l), MaxLogLineLen))
				break
			}
		}
		if c.RestartCount < 0 {
			field(p+".restart_count", errors.New("must not be negative"))
		}
	}
	validateEvents(s.Events, field)
	return errors.Join(errs...)
}

func checkText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("is %d bytes; at most %d are allowed", len(s), max)
	}
	return nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// TruncateText shortens s to at most max bytes on a rune boundary, for
// messages a node builds from what a container printed.
func TruncateText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && max < len(s) && (s[max]&0xC0) == 0x80 {
		max--
	}
	return s[:max]
}

// Bound shortens what a node observed to the limits Validate checks, so a
// container that prints long lines or fails with a long message cannot make
// its node's status reports invalid.
func (s *PodStatus) Bound() {
	s.Reason = TruncateText(s.Reason, 128)
	s.Message = TruncateText(s.Message, MaxMessageLen)
	for i := range s.Containers {
		c := &s.Containers[i]
		c.Reason = TruncateText(c.Reason, 128)
		c.Message = TruncateText(c.Message, MaxMessageLen)
		c.LastExitReason = TruncateText(c.LastExitReason, 128)
		if len(c.LastLog) > MaxLogLines {
			c.LastLog = c.LastLog[len(c.LastLog)-MaxLogLines:]
		}
		for j, l := range c.LastLog {
			c.LastLog[j] = TruncateText(l, MaxLogLineLen)
		}
	}
	if len(s.Events) > MaxEvents {
		s.Events = s.Events[len(s.Events)-MaxEvents:]
	}
	for i := range s.Events {
		boundEvent(&s.Events[i])
	}
}
