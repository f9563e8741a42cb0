package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Live is what a data plane does with a new connection to one service
// port at one of its addresses, and the objects that carry it. A backend
// fills one in twice for `lbd explain`: from its pure render of the
// applied service (what should be) and from the kernel or haproxy (what
// is), with the same reader, so that [Explanation.Diff] compares like
// with like.
type Live struct {
	// Objects are the backend objects that carry the port (a jump, a
	// chain, a map element, a haproxy frontend), present or not.
	Objects []LiveObject `json:"objects"`
	// Endpoints are where new connections go, in the backend's order.
	Endpoints []LiveEndpoint `json:"endpoints"`
	// Rejects: new connections are refused at once (no ready endpoint).
	Rejects bool `json:"rejects,omitempty"`
	// Affinity and AffinityTimeout are the affinity the data plane
	// enforces; a zero timeout with AffinityClientIP means the backend
	// enforces none (haproxy's source hashing) and is not compared.
	Affinity        Affinity      `json:"affinity"`
	AffinityTimeout time.Duration `json:"affinityTimeout,omitempty"`
	// SourceRanges are the client ranges let through; empty lets every
	// client through.
	SourceRanges []netip.Prefix `json:"sourceRanges,omitempty"`
	// Drift lists, in the backend's words, where the objects differ from
	// what lbd renders of the applied service; empty when they match.
	// Only the live side fills it in.
	Drift []string `json:"drift,omitempty"`
}

// LiveObject is one backend object that carries a service port.
type LiveObject struct {
	// Kind is what it is: "jump", "chain", "map element", "frontend", ...
	Kind string `json:"kind"`
	// Name names it where an operator looks for it, e.g. "nat LBD-SERVICES".
	Name    string `json:"name"`
	Present bool   `json:"present"`
	// Detail is the object itself where short (a rule, an element), or
	// why it could not be read.
	Detail string `json:"detail,omitempty"`
}

// LiveEndpoint is one endpoint a data plane sends new connections to.
type LiveEndpoint struct {
	Addr netip.AddrPort `json:"addr"`
	// State is what the backend knows of it: "" for the kernel backends,
	// haproxy's health ("UP", "DOWN", "MAINT", ...) when its runtime API
	// answered.
	State string `json:"state,omitempty"`
}

// Explanation is one backend's account of one service port at one
// address: Want from its render of the applied service, Have read live.
type Explanation struct {
	Backend string `json:"backend"`
	Want    Live   `json:"want"`
	Have    Live   `json:"have"`
}

// Matches reports whether the data plane holds what the applied state
// says: Diff is empty.
func (e Explanation) Matches() bool { return len(e.Diff()) == 0 }

// Diff returns one line per difference between Want and Have: objects
// missing, endpoints missing or extra, a different affinity, other source
// ranges, a reject where traffic should flow or the other way round, then
// the backend's own drift lines. It is pure; endpoint order is not
// compared (a backend may spread in any order).
func (e Explanation) Diff() []string {
	w, h := e.Want, e.Have
	var out []string
	present := map[string]bool{}
	for _, o := range h.Objects {
		present[o.Kind+" "+o.Name] = o.Present
	}
	for _, o := range w.Objects {
		if !present[o.Kind+" "+o.Name] {
			out = append(out, fmt.Sprintf("%s %s is missing", o.Kind, o.Name))
		}
	}
	wantEP, haveEP := endpointSet(w.Endpoints), endpointSet(h.Endpoints)
	for _, ep := range w.Endpoints {
		if !haveEP[ep.Addr] {
			out = append(out, fmt.Sprintf("endpoint %s is not programmed", ep.Addr))
		}
	}
	for _, ep := range h.Endpoints {
		if !wantEP[ep.Addr] {
			out = append(out, fmt.Sprintf("endpoint %s is programmed but not in the applied state", ep.Addr))
		}
	}
	switch {
	case w.Rejects && !h.Rejects:
		out = append(out, "new connections should be refused (no ready endpoint), but are not")
	case !w.Rejects && h.Rejects:
		out = append(out, "new connections are refused, but the service has ready endpoints")
	}
	if w.Affinity != h.Affinity {
		out = append(out, fmt.Sprintf("affinity is %s, want %s", orNone(h.Affinity), orNone(w.Affinity)))
	} else if w.Affinity == AffinityClientIP && h.AffinityTimeout != 0 && w.AffinityTimeout != h.AffinityTimeout {
		out = append(out, fmt.Sprintf("affinity timeout is %s, want %s", h.AffinityTimeout, w.AffinityTimeout))
	}
	if !slices.Equal(w.SourceRanges, h.SourceRanges) {
		out = append(out, fmt.Sprintf("source ranges are %v, want %v", h.SourceRanges, w.SourceRanges))
	}
	return append(out, h.Drift...)
}

func endpointSet(eps []LiveEndpoint) map[netip.AddrPort]bool {
	m := make(map[netip.AddrPort]bool, len(eps))
	for _, e := range eps {
		m[e.Addr] = true
	}
	return m
}

func orNone(a Affinity) Affinity {
	if a == "" {
		return AffinityNone
	}
	return a
}

// Serving returns the ports of the services in svcs that serve addr at
// port, with their service, in the order of svcs. An empty proto matches
// every protocol (a DNS service has 53/TCP and 53/UDP). An IPv4-mapped
// address matches its IPv4 form.
func Serving(svcs []Service, addr netip.Addr, port uint16, proto Protocol) []ServedPort {
	addr = addr.Unmap()
	var out []ServedPort
	for i := range svcs {
		s := &svcs[i]
		if !slices.ContainsFunc(s.ExternalIPs, func(a netip.Addr) bool { return a.Unmap() == addr }) {
			continue
		}
		for _, p := range s.Ports {
			if p.Port == port && (proto == "" || p.Protocol == proto) {
				out = append(out, ServedPort{Service: s, Port: p})
			}
		}
	}
	return out
}

// ServedPort is one port of a service, as [Serving] finds it.
type ServedPort struct {
	Service *Service
	Port    Port
}
