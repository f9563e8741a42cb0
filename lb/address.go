package lb

import (
	"net/netip"
	"slices"
	"strings"
)

// Annotations lbd reads on a Service of type LoadBalancer.
const (
	// AnnotationLoadBalancerIPs asks for specific addresses, comma-separated
	// (at most one per family), in place of the deprecated
	// spec.loadBalancerIP.
	AnnotationLoadBalancerIPs = "lbd.io/load-balancer-ips"
	// AnnotationAllowSharedIP lets services that carry the same value share
	// one address, as long as their ports do not collide.
	AnnotationAllowSharedIP = "lbd.io/allow-shared-ip"
)

// DefaultLoadBalancerClass is the spec.loadBalancerClass lbd answers to
// besides an empty one (--lb-class).
const DefaultLoadBalancerClass = "lbd.io/lbd"

// LoadBalancer is what a Service of type LoadBalancer asks of lbd, as
// discovery read it. It is an input of address assignment, not state that
// a backend programs: Equal, the store's applied state and the backends
// ignore it.
type LoadBalancer struct {
	// Class is spec.loadBalancerClass; empty when unset.
	Class string
	// Requested are the addresses asked for by AnnotationLoadBalancerIPs,
	// or else by spec.loadBalancerIP; empty means any address of a pool.
	Requested []netip.Addr
	// Share is the AnnotationAllowSharedIP value; empty never shares.
	Share string
	// Ingress are the IPs in status.loadBalancer.ingress now.
	Ingress []netip.Addr
	// IPMode is the ipMode those entries show when they all show the
	// same one ("VIP", "Proxy"); "mixed" when they differ; empty when
	// none shows one (a cluster without the field drops it).
	IPMode string
	// UID and ResourceVersion identify the object this was read from; a
	// status write is conditional on them, so it never lands on a newer
	// or re-created Service.
	UID, ResourceVersion string
}

// Clone returns a deep copy of l; nil stays nil.
func (l *LoadBalancer) Clone() *LoadBalancer {
	if l == nil {
		return nil
	}
	c := *l
	c.Requested = slices.Clone(l.Requested)
	c.Ingress = slices.Clone(l.Ingress)
	return &c
}

// Where an address that lbd serves comes from.
const (
	OriginExternalIP = "externalIP" // spec.externalIPs
	OriginAllocated  = "allocated"  // given from a pool
	OriginRequested  = "requested"  // asked for by annotation or spec.loadBalancerIP
)

// The states of an address in an AddressState.
const (
	AddressServed   = "served"
	AddressPending  = "pending"
	AddressRejected = "rejected"
)

// Allocation is one pool address held by a LoadBalancer service.
type Allocation struct {
	// Key is the service's "namespace/name".
	Key  string
	Addr netip.Addr
	// Origin is OriginAllocated or OriginRequested.
	Origin string
}

// AddressState is one line of lbd's address report: an address of a
// service, where it came from and what lbd does with it. A pending service
// has no address yet: Addr is the zero Addr.
type AddressState struct {
	Key    string
	Addr   netip.Addr
	Origin string
	// State is AddressServed, AddressPending or AddressRejected; Reason
	// says why for the last two.
	State  string
	Reason string
}

// StatusWrite sets status.loadBalancer.ingress of one Service: Ingress
// empty clears it.
type StatusWrite struct {
	Namespace, Name string
	// UID and ResourceVersion are those the decision was made from.
	UID, ResourceVersion string
	Ingress              []netip.Addr
	// IPMode is "VIP" or "Proxy" (status.loadBalancer.ingress[].ipMode).
	IPMode string
}

// Key returns "namespace/name".
func (w StatusWrite) Key() string { return w.Namespace + "/" + w.Name }

// Assignment is the outcome of giving LoadBalancer services their pool
// addresses.
type Assignment struct {
	// Allocations is the complete new set of pool allocations.
	Allocations []Allocation
	// Pending services wait for a free address; Rejected ones asked for
	// an address they cannot have. Both are served without a pool
	// address until that changes.
	Pending, Rejected []Skipped
}

// AddrsString joins addresses with commas.
func AddrsString(as []netip.Addr) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, ",")
}
