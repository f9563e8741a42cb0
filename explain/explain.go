package explain

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/lbd/lbd/lb"
)

// Backend is what explain needs of a backend: its render of one applied
// service port and what its data plane holds for it.
type Backend interface {
	Explain(ctx context.Context, s *lb.Service, p lb.Port, addr netip.Addr) (lb.Explanation, error)
}

// Target is what lbd explain is asked about. An empty Proto matches every
// protocol of the port.
type Target struct {
	Addr  netip.Addr
	Port  uint16
	Proto lb.Protocol
}

// String is ADDRESS:PORT/PROTO, or ADDRESS:PORT without a protocol.
func (t Target) String() string {
	return strings.TrimSuffix(netip.AddrPortFrom(t.Addr, t.Port).String()+"/"+string(t.Proto), "/")
}

// ParseTarget parses ADDRESS:PORT[/PROTO] ("[v6]:PORT" for IPv6; an
// IPv4-mapped address becomes IPv4). The protocol is TCP, UDP or SCTP in
// any case; the port is not 0.
func ParseTarget(s string) (Target, error) {
	hostPort, proto, _ := strings.Cut(s, "/")
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil {
		return Target{}, fmt.Errorf("explain %q: want ADDRESS:PORT[/PROTO]: %w", s, err)
	}
	p := lb.Protocol(strings.ToUpper(proto))
	switch p {
	case "", lb.TCP, lb.UDP, lb.SCTP:
	default:
		return Target{}, fmt.Errorf("explain %q: protocol %q: want TCP, UDP or SCTP", s, proto)
	}
	if ap.Port() == 0 {
		return Target{}, fmt.Errorf("explain %q: port 0", s)
	}
	return Target{ap.Addr().Unmap(), ap.Port(), p}, nil
}

// Port is one service port's part of the answer.
type Port struct {
	Service   string         `json:"service"`
	Port      lb.Port        `json:"port"`
	State     string         `json:"state,omitempty"`
	Reason    string         `json:"reason,omitempty"`
	Endpoints []Endpoint     `json:"endpoints"`
	Affinity  lb.Affinity    `json:"affinity"`
	Timeout   string         `json:"affinityTimeout,omitempty"`
	Ranges    []netip.Prefix `json:"sourceRanges,omitempty"`
	Backend   lb.Explanation `json:"dataPlane"`
	Diff      []string       `json:"diff,omitempty"`
	Matches   bool           `json:"matches"`
}

// Endpoint is one endpoint of the store with what the data plane and the
// route check say of it.
type Endpoint struct {
	lb.Endpoint
	Programmed bool   `json:"programmed"`
	Health     string `json:"health,omitempty"`
	Route      string `json:"route"`
	RouteOK    bool   `json:"routeOK"`
}

// Ports asks be about every port in served (lb.Serving of the applied
// services) and returns the answer in that order, with each service's
// state from states and each endpoint's route from route (a
// hostcheck.RouteCheck's CheckIP). The first error of be ends it.
func Ports(ctx context.Context, served []lb.ServedPort, states []lb.ServiceState, addr netip.Addr, be Backend, route func(netip.Addr) (string, bool)) ([]Port, error) {
	var out []Port
	for _, sp := range served {
		s, p := sp.Service, sp.Port
		e, err := be.Explain(ctx, s, p, addr)
		if err != nil {
			return nil, err
		}
		x := Port{Service: s.Key(), Port: p, Affinity: s.Affinity, Ranges: s.SourceRanges, Backend: e}
		if s.Affinity == lb.AffinityClientIP {
			x.Timeout = s.AffinityTimeout.String()
		}
		for _, st := range states {
			if st.Key == s.Key() {
				x.State, x.Reason = st.State, st.Reason
			}
		}
		for _, ep := range p.Endpoints {
			xe := Endpoint{Endpoint: ep}
			for _, h := range e.Have.Endpoints {
				if h.Addr == netip.AddrPortFrom(ep.IP.Unmap(), ep.Port) {
					xe.Programmed, xe.Health = true, h.State
				}
			}
			xe.Route, xe.RouteOK = route(ep.IP)
			x.Endpoints = append(x.Endpoints, xe)
		}
		x.Diff = e.Diff()
		x.Matches = len(x.Diff) == 0
		out = append(out, x)
	}
	return out, nil
}

// Differs reports whether the data plane of any port differs from the
// applied state: lbd explain then exits 2.
func Differs(ports []Port) bool {
	for _, p := range ports {
		if !p.Matches {
			return true
		}
	}
	return false
}
