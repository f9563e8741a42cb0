package ipam

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lbd/lbd/lb"
)

// TestAllocator: the reconciler's view of the pools. An address in use as
// an externalIP is never allocated; requests, sharing keys, ports and the
// status come from the service's LoadBalancer request.
func TestAllocator(t *testing.T) {
	pools, err := ParsePools([]string{"192.168.121.240-192.168.121.242"})
	if err != nil {
		t.Fatal(err)
	}
	master := netip.MustParseAddr("192.168.121.242")
	al := &Allocator{Pools: pools, Exclude: func(a netip.Addr) (string, bool) { return "the master", a == master }}
	port := func(n uint16) []lb.Port { return []lb.Port{{Port: n, Protocol: lb.TCP}} }
	reqs := []*lb.Service{
		{Namespace: "a", Name: "one", Ports: port(80), LoadBalancer: &lb.LoadBalancer{Share: "k"}},
		{Namespace: "a", Name: "two", Ports: port(443), LoadBalancer: &lb.LoadBalancer{Share: "k"}},
		{Namespace: "b", Name: "asks", Ports: port(80), LoadBalancer: &lb.LoadBalancer{Requested: []netip.Addr{master}}},
		{Namespace: "c", Name: "late", Ports: port(80), LoadBalancer: &lb.LoadBalancer{}},
	}
	got := al.Assign(nil, reqs, map[netip.Addr]string{netip.MustParseAddr("192.168.121.240"): "default/notes"})
	want := lb.Assignment{
		Allocations: []lb.Allocation{
			{Key: "a/one", Addr: netip.MustParseAddr("192.168.121.241"), Origin: lb.OriginAllocated},
			{Key: "a/two", Addr: netip.MustParseAddr("192.168.121.241"), Origin: lb.OriginAllocated},
		},
		Pending: []lb.Skipped{{Key: "c/late", Reason: "address pools exhausted (192.168.121.240-192.168.121.242): no free address"}},
	}
	if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}), cmpopts.IgnoreFields(lb.Assignment{}, "Rejected")); d != "" {
		t.Errorf("Assign (-want +got):\n%s", d)
	}
	if len(got.Rejected) != 1 || got.Rejected[0].Key != "b/asks" {
		t.Errorf("rejected %v, want b/asks (it asks for the master)", got.Rejected)
	}
	if err := al.Admit(master); err == nil {
		t.Error("the master's address was admitted as an externalIP")
	}
	if err := al.Admit(netip.MustParseAddr("192.168.121.240")); err != nil {
		t.Errorf("Admit inside the pool: %v", err)
	}
}
