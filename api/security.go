package api

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CapabilityAll in Capabilities.Drop drops every capability.
const CapabilityAll = "ALL"

// capabilities are the Linux capabilities by number (capability.h, up to
// CAP_CHECKPOINT_RESTORE of Linux 5.9), without the CAP_ prefix.
var capabilities = [...]string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// KnownCapabilities returns every Linux capability name this API knows, in the
// kernel's order (by number), without the CAP_ prefix.
func KnownCapabilities() []string { return slices.Clone(capabilities[:]) }

// IsCapability reports whether name is a Linux capability as the API
// spells it: upper case, without the CAP_ prefix.
func IsCapability(name string) bool { return slices.Contains(capabilities[:], name) }

// DefaultCapabilities returns the capabilities every container has unless
// it drops them: Docker's default set, which containerd's default spec
// also has.
func DefaultCapabilities() []string {
	return []string{
		"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
		"SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
	}
}

// EffectiveCapabilities returns the capabilities a container with c runs
// with: DefaultCapabilities without c.Drop (none of them if it holds
// CapabilityAll), with c.Add, in the kernel's order. c may be nil.
func EffectiveCapabilities(c *Capabilities) []string {
	set := map[string]bool{}
	if c == nil || !slices.Contains(c.Drop, CapabilityAll) {
		for _, n := range DefaultCapabilities() {
			set[n] = true
		}
	}
	if c != nil {
		for _, n := range c.Drop {
			delete(set, n)
		}
		for _, n := range c.Add {
			set[n] = true
		}
	}
	var out []string
	for _, n := range capabilities {
		if set[n] {
			out = append(out, n)
		}
	}
	return out
}

// AddedCapabilities returns the capabilities c adds beyond
// DefaultCapabilities: what a node must allow. c may be nil.
func AddedCapabilities(c *Capabilities) []string {
	if c == nil {
		return nil
	}
	def := DefaultCapabilities()
	var out []string
	for _, n := range c.Add {
		if !slices.Contains(def, n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Validate checks a container's security settings; errors name the field
// relative to the security block, e.g. "capabilities.add[0]: ...". Nodes
// and runtimes check again what they take from the replicated state.
func (s *Security) Validate() error {
	var errs []error
	validateSecurity("", s, fieldErrors(&errs))
	return errors.Join(errs...)
}

// validateSecurity checks s, naming fields under prefix (e.g.
// "containers[0].security.", or "").
func validateSecurity(prefix string, s *Security, field func(string, error)) {
	if s == nil {
		return
	}
	for _, id := range []struct {
		name string
		v    *int64
	}{{"run_as_user", s.RunAsUser}, {"run_as_group", s.RunAsGroup}} {
		if id.v != nil && (*id.v < 0 || *id.v > MaxUserID) {
			field(prefix+id.name, fmt.Errorf("%d is out of range 0..%d", *id.v, MaxUserID))
		}
	}
	if s.Capabilities == nil {
		return
	}
	c := s.Capabilities
	check := func(name string, list []string, allowAll bool) {
		p := prefix + "capabilities." + name
		if len(list) > MaxCapabilities {
			field(p, fmt.Errorf("%d entries; at most %d are allowed", len(list), MaxCapabilities))
			return
		}
		seen := map[string]bool{}
		for i, n := range list {
			ip := fmt.Sprintf("%s[%d]", p, i)
			field(ip, ValidateCapability(n, allowAll))
			if seen[n] {
				field(ip, fmt.Errorf("%q is listed twice", n))
			}
			seen[n] = true
		}
	}
	check("add", c.Add, false)
	check("drop", c.Drop, true)
	for i, n := range c.Add {
		if slices.Contains(c.Drop, n) {
			field(fmt.Sprintf("%scapabilities.add[%d]", prefix, i), fmt.Errorf("%q is also dropped; name it in one list only", n))
		}
	}
}

// ValidateCapability checks one capability name of a container's add
// (allowAll false) or drop (allowAll true) list.
func ValidateCapability(name string, allowAll bool) error {
	switch {
	case name == CapabilityAll && allowAll:
		return nil
	case name == CapabilityAll:
		return errors.New(`adding "ALL" would make the container privileged; add the capabilities it needs by name`)
	case IsCapability(name):
		return nil
	case IsCapability(strings.TrimPrefix(strings.ToUpper(name), "CAP_")):
		return fmt.Errorf("%.40q: write %q (upper case, without the CAP_ prefix)", name, strings.TrimPrefix(strings.ToUpper(name), "CAP_"))
	default:
		return fmt.Errorf("%.40q is not a Linux capability (e.g. NET_ADMIN, SYS_PTRACE; upper case, without the CAP_ prefix)", name)
	}
}
