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

// Clone deep-copies a service.
func (s Service) Clone() Service {
	s.Selector = maps.Clone(s.Selector)
	s.Ports = slices.Clone(s.Ports)
	return s
}

// Clone deep-copies endpoints.
func (e Endpoints) Clone() Endpoints {
	e.Addresses = slices.Clone(e.Addresses)
	for i := range e.Addresses {
		e.Addresses[i].Ports = slices.Clone(e.Addresses[i].Ports)
	}
	return e
}

// Clone deep-copies an ingress, TLS keys included.
func (in Ingress) Clone() Ingress {
	in.Rules = slices.Clone(in.Rules)
	for i := range in.Rules {
		in.Rules[i].Paths = slices.Clone(in.Rules[i].Paths)
	}
	if in.DefaultBackend != nil {
		b := *in.DefaultBackend
		in.DefaultBackend = &b
	}
	in.TLS = slices.Clone(in.TLS)
	for i := range in.TLS {
		in.TLS[i].Hosts = slices.Clone(in.TLS[i].Hosts)
	}
	return in
}
