package ipam

import (
	"net/netip"

	"github.com/lbd/lbd/lb"
)

// Allocator is the pools as lbd's reconciler uses them: Admit for
// spec.externalIPs, Assign for LoadBalancer services, in lb's types.
type Allocator struct {
	Pools Pools
	// Exclude names addresses never served besides the built-in ones
	// (nil: none). It is consulted on every call, so it may follow
	// state that changes, such as the SSH connection's addresses.
	Exclude Excluder
}

// Admit returns nil when a, an address from spec.externalIPs, is inside a
// pool and not excluded (see [Pools.Admit]).
func (al *Allocator) Admit(a netip.Addr) error { return al.Pools.Admit(a, al.Exclude) }

// Assign runs [Assign] for the LoadBalancer services in reqs. reserved
// are addresses in use as externalIPs of the named services: they are
// excluded, so no pool allocation lands on them.
func (al *Allocator) Assign(prev []lb.Allocation, reqs []*lb.Service, reserved map[netip.Addr]string) lb.Assignment {
	ex := func(a netip.Addr) (string, bool) {
		if k, ok := reserved[a]; ok {
			return "in use as an externalIP of " + k, true
		}
		if al.Exclude != nil {
			return al.Exclude(a)
		}
		return "", false
	}
	in := make([]Allocation, len(prev))
	for i, p := range prev {
		in[i] = Allocation{Key: p.Key, Addr: p.Addr, Origin: Origin(p.Origin)}
	}
	rs := make([]Request, 0, len(reqs))
	for _, s := range reqs {
		r := Request{Key: s.Key()}
		if l := s.LoadBalancer; l != nil {
			r.Requested, r.Share, r.Status = l.Requested, l.Share, l.Ingress
		}
		for _, p := range s.Ports {
			r.Ports = append(r.Ports, PortProto{Port: p.Port, Protocol: p.Protocol})
		}
		rs = append(rs, r)
	}
	res := Assign(al.Pools, ex, in, rs)
	var out lb.Assignment
	for _, a := range res.Allocations {
		out.Allocations = append(out.Allocations, lb.Allocation{Key: a.Key, Addr: a.Addr, Origin: string(a.Origin)})
	}
	for _, p := range res.Pending {
		out.Pending = append(out.Pending, lb.Skipped{Key: p.Key, Reason: p.Reason})
	}
	for _, p := range res.Rejected {
		out.Rejected = append(out.Rejected, lb.Skipped{Key: p.Key, Reason: p.Reason})
	}
	return out
}
