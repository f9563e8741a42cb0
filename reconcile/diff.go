package reconcile

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/lbd/lbd/lb"
)

// Diff compares the applied services with the desired ones and returns one
// change per service that differs, sorted by namespace/name. Both inputs
// must be normalized; neither is modified. A service that is only in
// applied is deleted, one only in desired is created, one in both that is
// not Equal is updated, with What saying in words what changed.
func Diff(applied, desired []lb.Service) []lb.Change {
	old := make(map[string]*lb.Service, len(applied))
	for i := range applied {
		old[applied[i].Key()] = &applied[i]
	}
	var changes []lb.Change
	for i := range desired {
		n := &desired[i]
		o, ok := old[n.Key()]
		delete(old, n.Key())
		switch {
		case !ok:
			changes = append(changes, lb.Change{Kind: lb.Create, New: n, What: describe(n)})
		case !o.Equal(n):
			changes = append(changes, lb.Change{Kind: lb.Update, Old: o, New: n, What: differences(o, n)})
		}
	}
	for _, o := range old {
		changes = append(changes, lb.Change{Kind: lb.Delete, Old: o, What: describe(o)})
	}
	slices.SortFunc(changes, func(a, b lb.Change) int { return strings.Compare(a.Key(), b.Key()) })
	return changes
}

// describe summarizes a whole service for a create or delete.
func describe(s *lb.Service) []string {
	ext := s.ExternalIPsString()
	if ext == "" {
		ext = "none (not exposed)"
	}
	eps := s.EndpointsString()
	if eps == "" {
		eps = "none ready"
	}
	out := []string{"external " + ext, "ports " + s.PortsString(), "endpoints " + eps}
	if len(s.SourceRanges) > 0 {
		out = append(out, "source ranges "+rangesString(s.SourceRanges))
	}
	return out
}

// rangesString joins prefixes with commas.
func rangesString(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// differences lists, in words, every field in which o and n differ.
func differences(o, n *lb.Service) []string {
	var out []string
	if o.Type != n.Type {
		out = append(out, fmt.Sprintf("type %s -> %s", o.Type, n.Type))
	}
	if o.ClusterIP != n.ClusterIP {
		out = append(out, fmt.Sprintf("cluster IP %s -> %s", addrOrNone(o.ClusterIP), addrOrNone(n.ClusterIP)))
	}
	if d := setDiff(o.ExternalIPs, n.ExternalIPs, netip.Addr.String); d != "" {
		out = append(out, "external IPs "+d)
	}
	if d := setDiff(o.SourceRanges, n.SourceRanges, netip.Prefix.String); d != "" {
		out = append(out, "source ranges "+d)
	}
	if o.Affinity != n.Affinity || o.AffinityTimeout != n.AffinityTimeout {
		out = append(out, fmt.Sprintf("affinity %s -> %s", affinity(o), affinity(n)))
	}
	oldPorts := map[string]lb.Port{}
	for _, p := range o.Ports {
		oldPorts[p.String()] = p
	}
	for _, p := range n.Ports {
		op, ok := oldPorts[p.String()]
		delete(oldPorts, p.String())
		if !ok {
			out = append(out, "port +"+p.String())
			continue
		}
		if op.Name != p.Name || op.TargetPort != p.TargetPort {
			out = append(out, fmt.Sprintf("port %s: name %q target %s -> name %q target %s", p, op.Name, op.TargetPort, p.Name, p.TargetPort))
		}
		if d := setDiff(op.Endpoints, p.Endpoints, endpointState); d != "" {
			out = append(out, fmt.Sprintf("endpoints of %s %s", p, d))
		}
	}
	for _, p := range o.Ports {
		if _, gone := oldPorts[p.String()]; gone {
			out = append(out, "port -"+p.String())
		}
	}
	return out
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "None"
	}
	return a.String()
}

func affinity(s *lb.Service) string {
	if s.Affinity == lb.AffinityClientIP {
		return fmt.Sprintf("ClientIP/%s", s.AffinityTimeout)
	}
	return string(s.Affinity)
}

// endpointState names an endpoint with its readiness, so a readiness flip
// shows as "-10.0.0.1:80 +10.0.0.1:80(not ready)".
func endpointState(e lb.Endpoint) string {
	var flags []string
	if !e.Ready {
		flags = append(flags, "not ready")
	}
	if e.Serving && !e.Ready {
		flags = append(flags, "serving")
	}
	if e.Terminating {
		flags = append(flags, "terminating")
	}
	if len(flags) == 0 {
		return e.String()
	}
	return e.String() + "(" + strings.Join(flags, ",") + ")"
}

// setDiff renders the elements removed from and added to a list as
// "-a -b +c", or "" when the lists hold the same elements.
func setDiff[T any](old, new []T, name func(T) string) string {
	before := map[string]bool{}
	for _, x := range old {
		before[name(x)] = true
	}
	var parts []string
	after := map[string]bool{}
	for _, x := range new {
		k := name(x)
		after[k] = true
		if !before[k] {
			parts = append(parts, "+"+k)
		}
	}
	var gone []string
	for _, x := range old {
		if k := name(x); !after[k] {
			gone = append(gone, "-"+k)
		}
	}
	return strings.Join(append(gone, parts...), " ")
}
