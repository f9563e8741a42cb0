package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Protocol is a transport protocol of a service port.
type Protocol string

// The protocols Kubernetes allows on a service port.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Affinity is a service's session affinity mode.
type Affinity string

// The session affinity modes Kubernetes defines.
const (
	AffinityNone     Affinity = "None"
	AffinityClientIP Affinity = "ClientIP"
)

// DefaultAffinityTimeout is Kubernetes' default ClientIP affinity timeout
// (sessionAffinityConfig.clientIP.timeoutSeconds = 10800).
const DefaultAffinityTimeout = 3 * time.Hour

// Service is one Kubernetes Service with its resolved endpoints, in the
// canonical form produced by [Service.Normalize]: external IPs sorted and
// unique, ports sorted by (port, protocol), endpoints sorted by (IP, port).
// Two services describe the same load-balancer state exactly when
// [Service.Equal] says so.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Type is spec.type: ClusterIP, NodePort, LoadBalancer or ExternalName.
	Type string `json:"type"`
	// ClusterIP is spec.clusterIP; the zero Addr for a headless service.
	ClusterIP netip.Addr `json:"clusterIP,omitzero"`
	// ExternalIPs are the addresses the LB serves. Discovery fills in
	// spec.externalIPs; the reconciler then keeps only those the address
	// pools admit and adds the service's pool allocations.
	ExternalIPs []netip.Addr `json:"externalIPs,omitempty"`
	Ports       []Port       `json:"ports"`
	Affinity    Affinity     `json:"affinity"`
	// AffinityTimeout is only meaningful when Affinity is ClientIP.
	AffinityTimeout time.Duration `json:"affinityTimeout,omitempty"`
	// SourceRanges is spec.loadBalancerSourceRanges, masked, sorted and
	// unique. When not empty, only clients inside one of them reach the
	// service's addresses; every backend drops the others, TCP and UDP.
	SourceRanges []netip.Prefix `json:"sourceRanges,omitempty"`
	// LoadBalancer is set, for a Service of type LoadBalancer only, by
	// discovery: what the Service asks of lbd's address pools. It is not
	// part of the programmed state (see [LoadBalancer]).
	LoadBalancer *LoadBalancer `json:"-"`
}

// Port is one service port and the endpoints that serve it.
type Port struct {
	// Name is the port's name; empty only for a single-port service.
	Name     string   `json:"name,omitempty"`
	Port     uint16   `json:"port"`
	Protocol Protocol `json:"protocol"`
	// TargetPort is spec.ports[].targetPort as written: a number or a
	// named container port. Endpoints carry the resolved number.
	TargetPort string `json:"targetPort"`
	// Endpoints are the pod addresses behind this port, ready or not.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Endpoint is one pod address behind a service port.
type Endpoint struct {
	IP netip.Addr `json:"ip"`
	// Port is the resolved target port on the pod.
	Port uint16 `json:"port"`
	// Ready: the pod passes its readiness probe and takes new traffic.
	Ready bool `json:"ready"`
	// Serving: the pod can serve (may be true while terminating).
	Serving bool `json:"serving"`
	// Terminating: the pod is being deleted.
	Terminating bool `json:"terminating,omitempty"`
}

// Key returns "namespace/name", the identity of a service.
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Exposed reports whether the service has an address the LB serves.
// A service without one is stored but never programmed.
func (s *Service) Exposed() bool { return len(s.ExternalIPs) > 0 }

// String returns "name/protocol" style "80/TCP" for the port, the notes' form.
func (p Port) String() string { return strconv.Itoa(int(p.Port)) + "/" + string(p.Protocol) }

// Key returns "namespace/name:port/protocol", the identity of one service
// port; backends derive their object names (chains, frontends) from it.
func (p Port) Key(s *Service) string { return s.Key() + ":" + p.String() }

// ReadyEndpoints returns the endpoints of p that take new traffic.
func (p Port) ReadyEndpoints() []Endpoint {
	var out []Endpoint
	for _, e := range p.Endpoints {
		if e.Ready {
			out = append(out, e)
		}
	}
	return out
}

// String returns "ip:port", the notes' form of an endpoint.
func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, e.Port).String() }

// Normalize puts s in canonical form (see [Service]) in place.
func (s *Service) Normalize() {
	slices.SortFunc(s.ExternalIPs, netip.Addr.Compare)
	s.ExternalIPs = slices.Compact(s.ExternalIPs)
	slices.SortFunc(s.Ports, func(a, b Port) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	for i := range s.Ports {
		eps := s.Ports[i].Endpoints
		slices.SortFunc(eps, func(a, b Endpoint) int {
			return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port))
		})
		s.Ports[i].Endpoints = slices.CompactFunc(eps, func(a, b Endpoint) bool {
			return a.IP == b.IP && a.Port == b.Port
		})
	}
	for i, r := range s.SourceRanges {
		s.SourceRanges[i] = r.Masked()
	}
	slices.SortFunc(s.SourceRanges, comparePrefix)
	s.SourceRanges = slices.Compact(s.SourceRanges)
	if len(s.SourceRanges) == 0 {
		s.SourceRanges = nil
	}
	if s.Affinity == "" {
		s.Affinity = AffinityNone
	}
	if s.Affinity != AffinityClientIP {
		s.AffinityTimeout = 0
	}
}

// Equal reports whether a and b describe the same programmed state. Both
// must be normalized. The LoadBalancer request is not compared: it is an
// input of address assignment, whose result is in ExternalIPs.
func (s *Service) Equal(o *Service) bool {
	return s.Namespace == o.Namespace && s.Name == o.Name && s.Type == o.Type &&
		s.ClusterIP == o.ClusterIP && slices.Equal(s.ExternalIPs, o.ExternalIPs) &&
		s.Affinity == o.Affinity && s.AffinityTimeout == o.AffinityTimeout &&
		slices.Equal(s.SourceRanges, o.SourceRanges) &&
		slices.EqualFunc(s.Ports, o.Ports, func(a, b Port) bool {
			return a.Name == b.Name && a.Port == b.Port && a.Protocol == b.Protocol &&
				a.TargetPort == b.TargetPort && slices.Equal(a.Endpoints, b.Endpoints)
		})
}

// Clone returns a deep copy of s.
func (s *Service) Clone() *Service {
	c := *s
	c.ExternalIPs = slices.Clone(s.ExternalIPs)
	c.SourceRanges = slices.Clone(s.SourceRanges)
	c.LoadBalancer = s.LoadBalancer.Clone()
	c.Ports = slices.Clone(s.Ports)
	for i := range c.Ports {
		c.Ports[i].Endpoints = slices.Clone(s.Ports[i].Endpoints)
	}
	return &c
}

// comparePrefix orders prefixes by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// SortServices sorts services by namespace, then name.
func SortServices(svcs []Service) {
	slices.SortFunc(svcs, func(a, b Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
}

// PortsString returns the ports in the notes' form: "80/TCP,443/TCP".
func (s *Service) PortsString() string {
	parts := make([]string, len(s.Ports))
	for i, p := range s.Ports {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// ExternalIPsString returns the external IPs joined by commas.
func (s *Service) ExternalIPsString() string { return AddrsString(s.ExternalIPs) }

// EndpointsString returns the ready endpoints of every port in the notes'
// form, "10.246.82.2:80,10.246.82.6:80", without repeats.
func (s *Service) EndpointsString() string {
	var parts []string
	seen := map[string]bool{}
	for _, p := range s.Ports {
		for _, e := range p.ReadyEndpoints() {
			if k := e.String(); !seen[k] {
				seen[k] = true
				parts = append(parts, k)
			}
		}
	}
	return strings.Join(parts, ",")
}

// GoString is for test failure messages.
func (s *Service) GoString() string { return fmt.Sprintf("lb.Service{%s}", s.Key()) }
