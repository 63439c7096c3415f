package api

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Service is a stable virtual address in front of the pods its selector
// matches, as a Kubernetes Service: every node load balances connections to
// ClusterIP:Port (and, for type node_port, to any node's address on
// NodePort) over the service's ready endpoints.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Selector is the labels a pod must carry (all of them) to be an
	// endpoint. Empty selects no pod.
	Selector map[string]string `json:"selector"`
	Ports    []ServicePort     `json:"ports"`
	// Type is ServiceClusterIP (default) or ServiceNodePort.
	Type string `json:"type,omitempty"`
	// SessionAffinity is AffinityNone (default) or AffinityClientIP.
	SessionAffinity string `json:"session_affinity,omitempty"`
	// ClusterIP is the virtual IP: asked for, or, when empty, assigned from
	// the cluster's service range when the service is created. It never
	// changes afterwards.
	ClusterIP string `json:"cluster_ip,omitempty"`

	CreateIndex uint64 `json:"create_index,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
}

// Service types and session affinities.
const (
	ServiceClusterIP = "cluster_ip"
	ServiceNodePort  = "node_port"
	AffinityNone     = "none"
	AffinityClientIP = "client_ip"
)

// ServicePort is one port of a service.
type ServicePort struct {
	// Name tells the ports apart; required when there are several. It names
	// the SRV record _<name>._<protocol>.<service>.<namespace>.svc.<domain>.
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol,omitempty"` // "tcp" (default) or "udp"
	Port     int    `json:"port"`
	// TargetPort is the pods' port: a number, or the name of a container
	// port. Empty means Port.
	TargetPort string `json:"target_port,omitempty"`
	// NodePort, for a node_port service: asked for, or assigned from the
	// cluster's node port range when 0.
	NodePort int `json:"node_port,omitempty"`
}

// Proto returns the port's protocol, "tcp" when unset.
func (p ServicePort) Proto() string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}

// Target returns the target port as a number, or 0 and the port name.
func (p ServicePort) Target() (int, string) {
	if p.TargetPort == "" {
		return p.Port, ""
	}
	if n, err := strconv.Atoi(p.TargetPort); err == nil {
		return n, ""
	}
	return 0, p.TargetPort
}

// ID returns "namespace/name".
func (s *Service) ID() string { return s.Namespace + "/" + s.Name }

// Selects reports whether the service's selector matches labels.
func (s *Service) Selects(labels map[string]string) bool {
	if len(s.Selector) == 0 {
		return false
	}
	for k, v := range s.Selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// Endpoints are the pods a service's selector matches, ready or not, with
// the port each service port reaches on it. The servers keep them in step
// with the pods; nobody writes them.
type Endpoints struct {
	Namespace string `json:"namespace"`
	// Name is the service's.
	Name      string            `json:"name"`
	Addresses []EndpointAddress `json:"addresses,omitempty"`

	ModifyIndex uint64 `json:"modify_index,omitempty"`
}

// EndpointAddress is one pod of a service.
type EndpointAddress struct {
	Pod  string `json:"pod"`
	Node string `json:"node"`
	IP   string `json:"ip"`
	// Ready is whether connections may go to it: the pod is running, ready
	// (its readiness probe passes, or it has run min_ready_seconds), and
	// not stopping.
	Ready bool `json:"ready"`
	// Ports are the pod's ports, one per service port it has (a named
	// target port the pod lacks is left out).
	Ports []EndpointPort `json:"ports,omitempty"`
}

// EndpointPort is the pod's port for the service port Name.
type EndpointPort struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Port     int    `json:"port"`
}

// Bounds of a service.
const (
	MaxServicePorts = 64
	// MaxEndpoints bounds the pods one service's endpoints list.
	MaxEndpoints = 4096
	// MaxServices bounds the services of a cluster: each is a chain in
	// every node's iptables (10,000 program in under 2 s) and DNS names.
	MaxServices = 20000
	// DefaultNodePortMin and DefaultNodePortMax are the node port range when
	// the cluster sets none (Kubernetes' default).
	DefaultNodePortMin = 30000
	DefaultNodePortMax = 32767
)

// Validate checks a service as a user submitted it, naming each offending
// field by its path.
func (s *Service) Validate() error {
	if err := s.ValidateFields(); err != nil {
		return err
	}
	return checkEncodedSize("service", s, MaxSpecBytes)
}

// ValidateFields is Validate without the bound on the encoded size.
func (s *Service) ValidateFields() error {
	var errs []error
	field := fieldErrors(&errs)
	field("namespace", ValidateName(s.Namespace))
	field("name", ValidateName(s.Name))
	if len(s.Selector) == 0 {
		field("selector", errors.New("must name at least one label; a service with an empty selector would select no pod"))
	}
	field("selector", ValidateLabels(s.Selector))
	switch s.Type {
	case "", ServiceClusterIP, ServiceNodePort:
	default:
		field("type", fmt.Errorf("%q must be %q or %q", s.Type, ServiceClusterIP, ServiceNodePort))
	}
	switch s.SessionAffinity {
	case "", AffinityNone, AffinityClientIP:
	default:
		field("session_affinity", fmt.Errorf("%q must be %q or %q", s.SessionAffinity, AffinityNone, AffinityClientIP))
	}
	if s.ClusterIP != "" {
		if a, err := netip.ParseAddr(s.ClusterIP); err != nil || !a.Is4() {
			field("cluster_ip", fmt.Errorf("%q is not an IPv4 address", TruncateText(s.ClusterIP, 60)))
		}
	}
	if len(s.Ports) == 0 {
		field("ports", errors.New("must have at least one port"))
	}
	if len(s.Ports) > MaxServicePorts {
		field("ports", fmt.Errorf("%d ports; at most %d are allowed", len(s.Ports), MaxServicePorts))
	}
	names := map[string]bool{}
	used := map[string]bool{}
	for i, p := range s.Ports {
		path := fmt.Sprintf("ports[%d]", i)
		if p.Name != "" {
			field(path+".name", ValidateDNSLabelLen(p.Name, 15))
			if names[p.Name] {
				field(path+".name", fmt.Errorf("%q is used by another port of the service", p.Name))
			}
			names[p.Name] = true
		} else if len(s.Ports) > 1 {
			field(path+".name", errors.New("must be set when a service has several ports"))
		}
		switch p.Protocol {
		case "", "tcp", "udp":
		default:
			field(path+".protocol", fmt.Errorf("%q must be \"tcp\" or \"udp\"", TruncateText(p.Protocol, 20)))
		}
		if p.Port < 1 || p.Port > 65535 {
			field(path+".port", fmt.Errorf("%d is out of range 1..65535", p.Port))
		}
		k := p.Proto() + "/" + strconv.Itoa(p.Port)
		if used[k] {
			field(path+".port", fmt.Errorf("%s is used by another port of the service", k))
		}
		used[k] = true
		if p.TargetPort != "" {
			if n, name := p.Target(); name != "" {
				field(path+".target_port", ValidateDNSLabelLen(name, 15))
				if strings.Trim(name, "0123456789") == "" {
					field(path+".target_port", fmt.Errorf("%q is neither a port number nor a name", name))
				}
			} else if n < 1 || n > 65535 {
				field(path+".target_port", fmt.Errorf("%d is out of range 1..65535", n))
			}
		}
		if p.NodePort != 0 {
			if s.Type != ServiceNodePort {
				field(path+".node_port", fmt.Errorf("is only for type %q", ServiceNodePort))
			} else if p.NodePort < 1 || p.NodePort > 65535 {
				field(path+".node_port", fmt.Errorf("%d is out of range 1..65535", p.NodePort))
			}
		}
	}
	return errors.Join(errs...)
}

// ValidateFields checks endpoints as the servers derive them, for the agents
// that receive them.
func (e *Endpoints) ValidateFields() error {
	var errs []error
	field := fieldErrors(&errs)
	field("namespace", ValidateName(e.Namespace))
	field("name", ValidateName(e.Name))
	if len(e.Addresses) > MaxEndpoints {
		field("addresses", fmt.Errorf("%d addresses; at most %d are allowed", len(e.Addresses), MaxEndpoints))
	}
	for i, a := range e.Addresses {
		path := fmt.Sprintf("addresses[%d]", i)
		if a.IP != "" {
			if ip, err := netip.ParseAddr(a.IP); err != nil || !ip.Is4() {
				field(path+".ip", fmt.Errorf("%q is not an IPv4 address", TruncateText(a.IP, 60)))
			}
		}
		if len(a.Ports) > MaxServicePorts {
			field(path+".ports", fmt.Errorf("%d ports; at most %d", len(a.Ports), MaxServicePorts))
		}
		for j, p := range a.Ports {
			if p.Port < 1 || p.Port > 65535 {
				field(fmt.Sprintf("%s.ports[%d].port", path, j), fmt.Errorf("%d is out of range 1..65535", p.Port))
			}
		}
	}
	return errors.Join(errs...)
}

// ParseNodePortRange parses "30000-32767".
func ParseNodePortRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		lo, err = strconv.Atoi(a)
		if err == nil {
			hi, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("node port range %q must be two ports such as 30000-32767", TruncateText(s, 40))
	}
	return lo, hi, nil
}
