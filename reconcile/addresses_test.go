package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lbd/lbd/lb"
)

// pools is a small Addresses double: the addresses in free are the pool,
// handed out in order; the real allocator is ipam's, tested there.
type pools struct{ free []netip.Addr }

func (p pools) Admit(a netip.Addr) error {
	if !slices.Contains(p.free, a) {
		return errors.New(a.String() + " is outside every address pool (--pool)")
	}
	return nil
}

func (p pools) Assign(prev []lb.Allocation, reqs []*lb.Service, reserved map[netip.Addr]string) lb.Assignment {
	var out lb.Assignment
	held := map[netip.Addr]string{}
	for a, k := range reserved {
		held[a] = k
	}
	keep := map[string]netip.Addr{}
	want := map[string]bool{}
	for _, r := range reqs {
		want[r.Key()] = true
	}
	for _, a := range prev {
		if want[a.Key] {
			held[a.Addr], keep[a.Key] = a.Key, a.Addr
		}
	}
	for _, r := range reqs {
		if a, ok := keep[r.Key()]; ok {
			out.Allocations = append(out.Allocations, lb.Allocation{Key: r.Key(), Addr: a, Origin: lb.OriginAllocated})
			continue
		}
		got := false
		for _, a := range p.free {
			if _, taken := held[a]; !taken {
				held[a] = r.Key()
				out.Allocations = append(out.Allocations, lb.Allocation{Key: r.Key(), Addr: a, Origin: lb.OriginAllocated})
				got = true
				break
			}
		}
		if !got {
			out.Pending = append(out.Pending, lb.Skipped{Key: r.Key(), Reason: "pools exhausted"})
		}
	}
	return out
}

// addrStore is the AddressStore half of a store double.
type addrStore struct {
	store
	allocs []lb.Allocation
	owned  []netip.Addr
	report []lb.AddressState
}

func (s *addrStore) Allocations(context.Context) ([]lb.Allocation, error) { return s.allocs, nil }
func (s *addrStore) SaveAllocations(_ context.Context, a []lb.Allocation) error {
	s.allocs = a
	return nil
}
func (s *addrStore) OwnedAddresses(context.Context, string) ([]netip.Addr, error) {
	return s.owned, nil
}
func (s *addrStore) SaveOwnedAddresses(_ context.Context, _ string, o []netip.Addr) error {
	s.owned = o
	return nil
}
func (s *addrStore) SaveAddressReport(_ context.Context, r []lb.AddressState) error {
	s.report = r
	return nil
}

// owner records each Sync's want; it owns exactly what it was last told.
type owner struct{ wants [][]netip.Addr }

func (o *owner) Interface() string { return "eth0" }
func (o *owner) Sync(_ context.Context, want, _ []netip.Addr) ([]netip.Addr, error) {
	o.wants = append(o.wants, slices.Clone(want))
	return want, nil
}

type statusWriter struct{ writes [][]lb.StatusWrite }

func (w *statusWriter) WriteStatus(_ context.Context, ws []lb.StatusWrite) ([]lb.Skipped, error) {
	w.writes = append(w.writes, ws)
	return nil, nil
}

func lbSvc(ns, name string, l lb.LoadBalancer, eps ...string) lb.Service {
	s := svc(ns, name, "", eps...)
	s.Type = "LoadBalancer"
	s.LoadBalancer = &l
	return s
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

var cmpAddr = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// TestSyncAddresses: the pools decide what is served. An externalIP
// outside them is not served and named, the others go on; LoadBalancer
// services of lbd's class get pool addresses, on the interface and in
// their status (written once, not again when it is right); services of
// another class are left alone; a pool that runs out leaves the extra
// service pending until an address frees.
func TestSyncAddresses(t *testing.T) {
	pool := pools{free: addrs("192.168.121.240", "192.168.121.241")}
	st := &addrStore{}
	own := &owner{}
	sw := &statusWriter{}
	src := &source{svcs: []lb.Service{
		svc("default", "notes", "192.168.121.240", "10.246.0.1"), // inside the pool
		svc("default", "attack", "10.245.1.10", "10.246.0.2"),    // the master: outside
		lbSvc("default", "web", lb.LoadBalancer{UID: "u1", ResourceVersion: "1"}, "10.246.0.3"),
		lbSvc("default", "other", lb.LoadBalancer{Class: "example.com/other"}, "10.246.0.4"),
		lbSvc("default", "late", lb.LoadBalancer{UID: "u3", ResourceVersion: "1"}, "10.246.0.5"),
	}}
	r := New(src, &backend{}, st, nil, Options{Addresses: pool, LBClass: lb.DefaultLoadBalancerClass, Owner: own, Status: sw, IPMode: "VIP", MaxDelete: 1})
	res, err := r.Sync(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	served := map[string][]netip.Addr{}
	for _, s := range st.applied {
		served[s.Key()] = s.ExternalIPs
	}
	wantServed := map[string][]netip.Addr{
		"default/notes": addrs("192.168.121.240"),
		"default/web":   addrs("192.168.121.241"),
	}
	for k := range served {
		if len(served[k]) == 0 {
			delete(served, k)
		}
	}
	if d := cmp.Diff(wantServed, served, cmpAddr); d != "" {
		t.Errorf("served (-want +got):\n%s", d)
	}
	wantReport := []lb.AddressState{
		{Key: "default/attack", Addr: netip.MustParseAddr("10.245.1.10"), Origin: lb.OriginExternalIP, State: lb.AddressRejected, Reason: "10.245.1.10 is outside every address pool (--pool)"},
		{Key: "default/late", Origin: lb.OriginAllocated, State: lb.AddressPending, Reason: "pools exhausted"},
		{Key: "default/notes", Addr: netip.MustParseAddr("192.168.121.240"), Origin: lb.OriginExternalIP, State: lb.AddressServed},
		{Key: "default/web", Addr: netip.MustParseAddr("192.168.121.241"), Origin: lb.OriginAllocated, State: lb.AddressServed},
	}
	if d := cmp.Diff(wantReport, st.report, cmpAddr); d != "" {
		t.Errorf("address report (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantReport, res.Plan.Addresses, cmpAddr); d != "" {
		t.Errorf("plan's addresses (-want +got):\n%s", d)
	}
	wantWrites := [][]lb.StatusWrite{{{Namespace: "default", Name: "web", UID: "u1", ResourceVersion: "1", Ingress: addrs("192.168.121.241"), IPMode: "VIP"}}}
	if d := cmp.Diff(wantWrites, sw.writes, cmpAddr); d != "" {
		t.Errorf("status writes (-want +got):\n%s", d)
	}
	if d := cmp.Diff([][]netip.Addr{addrs("192.168.121.240", "192.168.121.241"), addrs("192.168.121.240", "192.168.121.241")}, own.wants, cmpAddr); d != "" {
		t.Errorf("owned address syncs (-want +got):\n%s", d)
	}
	if len(st.allocs) != 1 || st.allocs[0].Key != "default/web" {
		t.Errorf("stored allocations %v", st.allocs)
	}

	// The cluster now shows web's address: nothing is written again.
	// web is deleted and other's class changes to lbd's: late gets the
	// freed address, and the status of both is written.
	src.svcs[2].LoadBalancer.Ingress = addrs("192.168.121.241")
	sw.writes = nil
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if len(sw.writes) != 0 {
		t.Errorf("a right status was written again: %v", sw.writes)
	}
	// The same address with the ipMode of another backend (haproxy's
	// Proxy) is rewritten once; with the right one it is left alone.
	src.svcs[2].LoadBalancer.IPMode = "Proxy"
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	wantWrites = [][]lb.StatusWrite{{{Namespace: "default", Name: "web", UID: "u1", ResourceVersion: "1", Ingress: addrs("192.168.121.241"), IPMode: "VIP"}}}
	if d := cmp.Diff(wantWrites, sw.writes, cmpAddr); d != "" {
		t.Errorf("with a stale ipMode (-want +got):\n%s", d)
	}
	src.svcs[2].LoadBalancer.IPMode = "VIP"
	sw.writes = nil
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if len(sw.writes) != 0 {
		t.Errorf("a right ipMode was written again: %v", sw.writes)
	}
	src.svcs = slices.Delete(src.svcs, 2, 3)
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	wantWrites = [][]lb.StatusWrite{{{Namespace: "default", Name: "late", UID: "u3", ResourceVersion: "1", Ingress: addrs("192.168.121.241"), IPMode: "VIP"}}}
	if d := cmp.Diff(wantWrites, sw.writes, cmpAddr); d != "" {
		t.Errorf("after web went (-want +got):\n%s", d)
	}
	// late moves to another class: lbd clears the status it wrote, and
	// the address comes off the interface.
	src.svcs[3].LoadBalancer = &lb.LoadBalancer{Class: "example.com/other", UID: "u3", ResourceVersion: "2", Ingress: addrs("192.168.121.241")}
	sw.writes = nil
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	wantWrites = [][]lb.StatusWrite{{{Namespace: "default", Name: "late", UID: "u3", ResourceVersion: "2", IPMode: "VIP"}}}
	if d := cmp.Diff(wantWrites, sw.writes, cmpAddr); d != "" {
		t.Errorf("after the class change (-want +got):\n%s", d)
	}
	if last := own.wants[len(own.wants)-1]; !slices.Equal(last, addrs("192.168.121.240")) {
		t.Errorf("owned after the class change: %v", last)
	}
}

// TestNoPoolServesNothing: without pools every exposed address is
// rejected with the hint to set --pool.
func TestNoPoolServesNothing(t *testing.T) {
	st := &addrStore{}
	src := &source{svcs: []lb.Service{svc("default", "notes", "192.168.121.201", "10.246.0.1")}}
	none := noPools{}
	r := New(src, &backend{}, st, nil, Options{Addresses: none})
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if len(st.applied) != 1 || st.applied[0].Exposed() {
		t.Errorf("applied %v, want notes stored but not exposed", st.applied)
	}
	if len(st.report) != 1 || st.report[0].State != lb.AddressRejected || st.report[0].Reason != "no address pool is configured: set --pool" {
		t.Errorf("report %v", st.report)
	}
}

type noPools struct{}

func (noPools) Admit(netip.Addr) error {
	return errors.New("no address pool is configured: set --pool")
}
func (noPools) Assign([]lb.Allocation, []*lb.Service, map[netip.Addr]string) lb.Assignment {
	return lb.Assignment{}
}

// TestFollowerServesTheMastersAddresses: a backup LB serves exactly what
// the services' status shows, gives nothing out itself and writes no
// status; once it is master, it allocates for the one that waited and
// writes only that, so a failover writes nothing that was not true.
func TestFollowerServesTheMastersAddresses(t *testing.T) {
	backup := true
	st := &addrStore{}
	sw := &statusWriter{}
	src := &source{svcs: []lb.Service{
		lbSvc("default", "web", lb.LoadBalancer{UID: "u1", ResourceVersion: "1", Ingress: addrs("192.168.121.242")}, "10.246.0.3"),
		lbSvc("default", "late", lb.LoadBalancer{UID: "u2", ResourceVersion: "1"}, "10.246.0.4"),
	}}
	r := New(src, &backend{}, st, nil, Options{Addresses: pools{free: addrs("192.168.121.240", "192.168.121.241", "192.168.121.242")},
		Status: sw, MaxDelete: 1, Follower: func() bool { return backup }})
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	served := map[string][]netip.Addr{}
	for _, s := range st.applied {
		served[s.Key()] = s.ExternalIPs
	}
	if !slices.Equal(served["default/web"], addrs("192.168.121.242")) || len(served["default/late"]) != 0 {
		t.Errorf("backup serves %v, want web on the master's .242 and late nowhere", served)
	}
	if len(sw.writes) != 0 {
		t.Errorf("the backup wrote status: %v", sw.writes)
	}
	backup = false
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	want := [][]lb.StatusWrite{{{Namespace: "default", Name: "late", UID: "u2", ResourceVersion: "1", Ingress: addrs("192.168.121.240"), IPMode: ""}}}
	if d := cmp.Diff(want, sw.writes, cmpAddr); d != "" {
		t.Errorf("status writes after becoming master (-want +got):\n%s", d)
	}
}
