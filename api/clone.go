package api

import (
	"maps"
	"slices"
)

// CloneContainers deep-copies containers, so a copy handed out of the state
// or into a new pod shares no slices or maps with the original.
func CloneContainers(cs []Container) []Container {
	if cs == nil {
		return nil
	}
	out := make([]Container, len(cs))
	for i, c := range cs {
		c.Command = slices.Clone(c.Command)
		c.Args = slices.Clone(c.Args)
		c.Env = maps.Clone(c.Env)
		c.Ports = slices.Clone(c.Ports)
		c.LivenessProbe = c.LivenessProbe.Clone()
		c.ReadinessProbe = c.ReadinessProbe.Clone()
		c.Security = c.Security.Clone()
		out[i] = c
	}
	return out
}

// Clone deep-copies a probe; nil stays nil.
func (p *Probe) Clone() *Probe {
	if p == nil {
		return nil
	}
	c := *p
	if p.HTTPGet != nil {
		h := *p.HTTPGet
		c.HTTPGet = &h
	}
	if p.TCPSocket != nil {
		t := *p.TCPSocket
		c.TCPSocket = &t
	}
	if p.Exec != nil {
		c.Exec = &ExecProbe{Command: slices.Clone(p.Exec.Command)}
	}
	return &c
}

// CloneAntiAffinity deep-copies anti-affinity rules.
func CloneAntiAffinity(rules []AntiAffinity) []AntiAffinity {
	if rules == nil {
		return nil
	}
	out := make([]AntiAffinity, len(rules))
	for i, r := range rules {
		r.Labels = maps.Clone(r.Labels)
		out[i] = r
	}
	return out
}

// Clone deep-copies security settings; nil stays nil.
func (s *Security) Clone() *Security {
	if s == nil {
		return nil
	}
	c := *s
	if s.RunAsUser != nil {
		v := *s.RunAsUser
		c.RunAsUser = &v
	}
	if s.RunAsGroup != nil {
		v := *s.RunAsGroup
		c.RunAsGroup = &v
	}
	if s.Capabilities != nil {
		c.Capabilities = &Capabilities{Add: slices.Clone(s.Capabilities.Add), Drop: slices.Clone(s.Capabilities.Drop)}
	}
	return &c
}
