package ipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// lab excludes the master's address, which sits inside the test pool
// 10.0.9.8/30.
func lab(a netip.Addr) (string, bool) {
	if a == ip("10.0.9.9") {
		return "the master's address", true
	}
	return "", false
}

func addrs(ss ...string) []netip.Addr {
	var as []netip.Addr
	for _, s := range ss {
		as = append(as, ip(s))
	}
	return as
}

func tcp(ports ...uint16) []PortProto {
	var ps []PortProto
	for _, p := range ports {
		ps = append(ps, PortProto{p, lb.TCP})
	}
	return ps
}

// render gives a Result one line per allocation and problem, for tables.
func render(r Result) []string {
	var out []string
	for _, a := range r.Allocations {
		out = append(out, fmt.Sprintf("%s %s %s", a.Key, a.Addr, a.Origin))
	}
	for _, p := range r.Pending {
		out = append(out, fmt.Sprintf("%s pending: %s", p.Key, p.Reason))
	}
	for _, p := range r.Rejected {
		out = append(out, fmt.Sprintf("%s rejected: %s", p.Key, p.Reason))
	}
	return out
}

func held(key string, addr string, o Origin) Allocation {
	return Allocation{Key: key, Addr: ip(addr), Origin: o}
}

// assignChecked runs Assign and checks what every call must satisfy: the
// same Result for shuffled input, and the same Result again when its
// allocations are fed back as prev.
func assignChecked(t *testing.T, pools Pools, ex Excluder, prev []Allocation, reqs []Request) Result {
	t.Helper()
	got := Assign(pools, ex, prev, reqs)
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		p, r := slices.Clone(prev), slices.Clone(reqs)
		rnd.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
		rnd.Shuffle(len(r), func(i, j int) { r[i], r[j] = r[j], r[i] })
		for i := range r {
			r[i].Requested = slices.Clone(r[i].Requested)
			slices.Reverse(r[i].Requested)
			r[i].Ports = slices.Clone(r[i].Ports)
			slices.Reverse(r[i].Ports)
		}
		if d := cmp.Diff(render(got), render(Assign(pools, ex, p, r))); d != "" {
			t.Fatalf("shuffled input gives another result (-first +shuffled):\n%s", d)
		}
	}
	if d := cmp.Diff(render(got), render(Assign(pools, ex, got.Allocations, reqs))); d != "" {
		t.Fatalf("not stable: feeding the allocations back changes them (-first +second):\n%s", d)
	}
	checkInvariants(t, pools, ex, reqs, got)
	return got
}

func TestAssign(t *testing.T) {
	type step struct {
		reqs []Request
		want []string
	}
	tests := []struct {
		name  string
		pools []string
		prev  []Allocation
		steps []step
	}{
		{
			name:  "allocate in order, first pool first",
			pools: []string{"10.0.0.0/30", "10.0.1.0/30", "2001:db8::/126"},
			steps: []step{{
				reqs: []Request{{Key: "ns/c"}, {Key: "ns/a"}, {Key: "ns/b"}, {Key: "ns/d"}},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.2 allocated", "ns/c 10.0.1.1 allocated", "ns/d 10.0.1.2 allocated"},
			}},
		},
		{
			name:  "exhaustion leaves pending until an address frees",
			pools: []string{"10.0.0.0/30"},
			steps: []step{{
				reqs: []Request{{Key: "ns/a"}, {Key: "ns/b"}, {Key: "ns/c"}, {Key: "ns/d"}},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.2 allocated",
					"ns/c pending: address pools exhausted (10.0.0.0/30): no free address",
					"ns/d pending: address pools exhausted (10.0.0.0/30): no free address"},
			}, {
				// ns/a deleted: its address goes to the first pending service.
				reqs: []Request{{Key: "ns/b"}, {Key: "ns/c"}, {Key: "ns/d"}},
				want: []string{"ns/b 10.0.0.2 allocated", "ns/c 10.0.0.1 allocated",
					"ns/d pending: address pools exhausted (10.0.0.0/30): no free address"},
			}},
		},
		{
			name: "no pool: pending and rejected say to set --pool",
			steps: []step{{
				reqs: []Request{{Key: "ns/a"}, {Key: "ns/b", Requested: addrs("10.0.0.1")}},
				want: []string{"ns/a pending: no address pool is configured: set --pool",
					"ns/b rejected: no address pool is configured: set --pool"},
			}},
		},
		{
			name:  "freed on removal, then handed out again",
			pools: []string{"10.0.0.0/29"},
			steps: []step{{
				reqs: []Request{{Key: "ns/a"}, {Key: "ns/b"}},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.2 allocated"},
			}, {
				reqs: []Request{{Key: "ns/b"}},
				want: []string{"ns/b 10.0.0.2 allocated"},
			}, {
				reqs: []Request{{Key: "ns/b"}, {Key: "ns/z"}},
				want: []string{"ns/b 10.0.0.2 allocated", "ns/z 10.0.0.1 allocated"},
			}},
		},
		{
			name:  "requested honoured, plain allocation goes around it",
			pools: []string{"10.0.0.0/29", "2001:db8::/120"},
			steps: []step{{
				reqs: []Request{{Key: "ns/b", Requested: addrs("10.0.0.1")}, {Key: "ns/a"},
					{Key: "ns/v", Requested: addrs("2001:db8::7", "10.0.0.6", "10.0.0.6")}},
				want: []string{"ns/a 10.0.0.2 allocated", "ns/b 10.0.0.1 requested",
					"ns/v 10.0.0.6 requested", "ns/v 2001:db8::7 requested"},
			}},
		},
		{
			name:  "requested outside every pool, excluded, network address, or one of two bad",
			pools: []string{"10.0.0.0/29", "10.0.9.8/30"},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/out", Requested: addrs("192.0.2.7")},
					{Key: "ns/master", Requested: addrs("10.0.9.9")},
					{Key: "ns/net", Requested: addrs("10.0.0.0")},
					{Key: "ns/half", Requested: addrs("10.0.0.3", "192.0.2.8")},
					{Key: "ns/plain"},
				},
				want: []string{
					"ns/plain 10.0.0.1 allocated",
					"ns/half rejected: 192.0.2.8 is outside every address pool (--pool 10.0.0.0/29, 10.0.9.8/30)",
					"ns/master rejected: 10.0.9.9 is never served: the master's address",
					"ns/net rejected: 10.0.0.0 is the network or broadcast address of --pool 10.0.0.0/29, which is never served",
					"ns/out rejected: 192.0.2.7 is outside every address pool (--pool 10.0.0.0/29, 10.0.9.8/30)",
				},
			}},
		},
		{
			name:  "requested address taken: the holder from prev keeps it",
			pools: []string{"10.0.0.0/29"},
			prev:  []Allocation{held("ns/z", "10.0.0.1", Allocated)},
			steps: []step{{
				reqs: []Request{{Key: "ns/a", Requested: addrs("10.0.0.1")}, {Key: "ns/z"}},
				want: []string{"ns/z 10.0.0.1 allocated",
					"ns/a rejected: 10.0.0.1 is held by ns/z; to share it, give both the same lbd.io/allow-shared-ip"},
			}, {
				// ns/z deleted: the request is honoured now.
				reqs: []Request{{Key: "ns/a", Requested: addrs("10.0.0.1")}},
				want: []string{"ns/a 10.0.0.1 requested"},
			}},
		},
		{
			name:  "two newcomers request one address: the lower key wins",
			pools: []string{"10.0.0.0/29"},
			steps: []step{{
				reqs: []Request{{Key: "ns/b", Requested: addrs("10.0.0.4")}, {Key: "ns/a", Requested: addrs("10.0.0.4")}},
				want: []string{"ns/a 10.0.0.4 requested",
					"ns/b rejected: 10.0.0.4 is held by ns/a; to share it, give both the same lbd.io/allow-shared-ip"},
			}},
		},
		{
			name:  "precedence among newcomers: request, then status, then plain",
			pools: []string{"10.0.0.0/29"},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a"},
					{Key: "ns/b", Status: addrs("10.0.0.1")},
					{Key: "ns/c", Status: addrs("10.0.0.2")},
					{Key: "ns/d", Requested: addrs("10.0.0.2")},
				},
				want: []string{"ns/a 10.0.0.3 allocated", "ns/b 10.0.0.1 allocated",
					"ns/c 10.0.0.4 allocated", "ns/d 10.0.0.2 requested"},
			}},
		},
		{
			name:  "recovery from status on an empty store; invalid status ignored",
			pools: []string{"10.0.0.0/29", "10.0.9.8/30", "2001:db8::/120"},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a", Status: addrs("10.0.0.5")},
					{Key: "ns/b", Status: addrs("10.0.0.3", "2001:db8::3")},
					{Key: "ns/c", Status: addrs("192.0.2.7")},                // outside: allocate
					{Key: "ns/d", Status: addrs("10.0.9.9")},                 // excluded: allocate
					{Key: "ns/e", Status: addrs("10.0.0.5"), Ports: tcp(80)}, // taken: allocate
				},
				want: []string{"ns/a 10.0.0.5 allocated", "ns/b 10.0.0.3 allocated", "ns/b 2001:db8::3 allocated",
					"ns/c 10.0.0.1 allocated", "ns/d 10.0.0.2 allocated", "ns/e 10.0.0.4 allocated"},
			}},
		},
		{
			name:  "sharing: same key and no common port",
			pools: []string{"10.0.0.0/29"},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a", Share: "web", Ports: tcp(80)},
					{Key: "ns/b", Share: "web", Ports: tcp(443)},
					{Key: "ns/c", Share: "web", Ports: []PortProto{{80, lb.UDP}}},
				},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.1 allocated", "ns/c 10.0.0.1 allocated"},
			}},
		},
		{
			name:  "sharing refused: port collision, other key, one without key",
			pools: []string{"10.0.0.0/29"},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a", Share: "web", Ports: tcp(80, 443)},
					{Key: "ns/b", Share: "web", Ports: tcp(443)},
					{Key: "ns/c", Share: "db", Ports: tcp(5432)},
					{Key: "ns/d", Ports: tcp(22)},
				},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.2 allocated",
					"ns/c 10.0.0.3 allocated", "ns/d 10.0.0.4 allocated"},
			}},
		},
		{
			name:  "requested shared address: honoured or refused with the reason",
			pools: []string{"10.0.0.0/29"},
			prev: []Allocation{held("ns/a", "10.0.0.1", Requested), held("ns/p", "10.0.0.2", Allocated),
				held("ns/q", "10.0.0.3", Allocated)},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a", Requested: addrs("10.0.0.1"), Share: "web", Ports: tcp(80)},
					{Key: "ns/b", Requested: addrs("10.0.0.1"), Share: "web", Ports: tcp(443)},
					{Key: "ns/c", Requested: addrs("10.0.0.1"), Share: "web", Ports: tcp(80)},
					{Key: "ns/d", Requested: addrs("10.0.0.1"), Share: "db", Ports: tcp(5432)},
					{Key: "ns/e", Requested: addrs("10.0.0.1"), Ports: tcp(22)},
					{Key: "ns/f", Requested: addrs("10.0.0.2"), Share: "web", Ports: tcp(22)},
					{Key: "ns/p", Ports: tcp(22)},
					{Key: "ns/q", Ports: tcp(22), Share: "web"},
				},
				want: []string{
					"ns/a 10.0.0.1 requested", "ns/b 10.0.0.1 requested", "ns/p 10.0.0.2 allocated", "ns/q 10.0.0.3 allocated",
					"ns/c rejected: 10.0.0.1 is held by ns/a, ns/b, and these ports are in use there: 80/TCP (ns/a)",
					`ns/d rejected: 10.0.0.1 is held by ns/a, ns/b under lbd.io/allow-shared-ip "web", not "db"`,
					"ns/e rejected: 10.0.0.1 is held by ns/a, ns/b; to share it, give both the same lbd.io/allow-shared-ip",
					"ns/f rejected: 10.0.0.2 is held by ns/p, which does not allow sharing (lbd.io/allow-shared-ip)",
				},
			}},
		},
		{
			name:  "a new sharer joins an address held under its key before taking a free one",
			pools: []string{"10.0.0.0/29"},
			prev:  []Allocation{held("ns/a", "10.0.0.3", Allocated), held("ns/b", "10.0.0.4", Allocated)},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a", Share: "web", Ports: tcp(80)},
					{Key: "ns/b", Share: "web", Ports: tcp(443)},
					{Key: "ns/c", Share: "web", Ports: tcp(443)},  // joins .3
					{Key: "ns/d", Share: "web", Ports: tcp(80)},   // joins .4
					{Key: "ns/e", Share: "web", Ports: tcp(80)},   // both full on 80: fresh .1
					{Key: "ns/f", Share: "web", Ports: tcp(80)},   // fresh .2
					{Key: "ns/g", Share: "web", Ports: tcp(8080)}, // addresses held before go first
				},
				want: []string{"ns/a 10.0.0.3 allocated", "ns/b 10.0.0.4 allocated", "ns/c 10.0.0.3 allocated",
					"ns/d 10.0.0.4 allocated", "ns/e 10.0.0.1 allocated", "ns/f 10.0.0.2 allocated", "ns/g 10.0.0.3 allocated"},
			}},
		},
		{
			name:  "sharing that became invalid: the lower key keeps the address, the other moves",
			pools: []string{"10.0.0.0/29"},
			prev:  []Allocation{held("ns/a", "10.0.0.1", Allocated), held("ns/b", "10.0.0.1", Allocated)},
			steps: []step{{
				reqs: []Request{{Key: "ns/a", Share: "web", Ports: tcp(80)}, {Key: "ns/b", Share: "web", Ports: tcp(443)}},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.1 allocated"},
			}, {
				reqs: []Request{{Key: "ns/a", Share: "web", Ports: tcp(80)}, {Key: "ns/b", Share: "web", Ports: tcp(80)}},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.2 allocated"},
			}},
		},
		{
			name:  "prev no longer valid: pool changed, now excluded, or outside the new request",
			pools: []string{"10.0.0.0/29", "10.0.9.8/30"},
			prev: []Allocation{held("ns/a", "10.0.5.1", Allocated), held("ns/b", "10.0.9.9", Allocated),
				held("ns/c", "10.0.0.1", Allocated), held("ns/d", "10.0.0.2", Requested), held("ns/d", "10.0.0.2", Requested)},
			steps: []step{{
				reqs: []Request{{Key: "ns/a"}, {Key: "ns/b"}, {Key: "ns/c", Requested: addrs("10.0.0.5")}, {Key: "ns/d"}},
				want: []string{"ns/a 10.0.0.1 allocated", "ns/b 10.0.0.3 allocated",
					"ns/c 10.0.0.5 requested", "ns/d 10.0.0.2 allocated"},
			}},
		},
		{
			name:  "a request that grows keeps what it holds; one that cannot grow releases it",
			pools: []string{"10.0.0.0/29", "2001:db8::/120"},
			prev:  []Allocation{held("ns/a", "10.0.0.1", Requested), held("ns/b", "10.0.0.2", Requested), held("ns/z", "2001:db8::2", Allocated)},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a", Requested: addrs("10.0.0.1", "2001:db8::1")},
					{Key: "ns/b", Requested: addrs("10.0.0.2", "2001:db8::2")},
					{Key: "ns/c"},
					{Key: "ns/z"},
				},
				want: []string{"ns/a 10.0.0.1 requested", "ns/a 2001:db8::1 requested", "ns/c 10.0.0.2 allocated",
					"ns/z 2001:db8::2 allocated",
					// ns/b released 10.0.0.2 and ns/c took it: the reason says
					// how things stand now, as the next call would.
					"ns/b rejected: 10.0.0.2 is held by ns/c; to share it, give both the same lbd.io/allow-shared-ip; " +
						"2001:db8::2 is held by ns/z; to share it, give both the same lbd.io/allow-shared-ip"},
			}},
		},
		{
			name:  "a rejected sharer leaves the shared address, and its ports, to the others",
			pools: []string{"10.0.0.0/29"},
			prev:  []Allocation{held("ns/a", "10.0.0.1", Allocated), held("ns/b", "10.0.0.1", Allocated)},
			steps: []step{{
				reqs: []Request{
					{Key: "ns/a", Share: "web", Ports: tcp(80), Requested: addrs("10.0.0.1", "192.0.2.1")},
					{Key: "ns/b", Share: "web", Ports: tcp(443)},
					{Key: "ns/c", Share: "web", Ports: tcp(80)},
				},
				want: []string{"ns/b 10.0.0.1 allocated", "ns/c 10.0.0.1 allocated",
					"ns/a rejected: 10.0.0.1 is held by ns/b, ns/c, and these ports are in use there: 80/TCP (ns/c); " +
						"192.0.2.1 is outside every address pool (--pool 10.0.0.0/29)"},
			}},
		},
		{
			name:  "built-in exclusions inside a pool are never handed out",
			pools: []string{"126.255.255.254-127.0.0.2", "0.0.0.0-0.0.0.1", "223.255.255.255-224.0.0.1", "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff-fe80::1"},
			steps: []step{{
				reqs: []Request{{Key: "a"}, {Key: "b"}, {Key: "c"}, {Key: "d"}, {Key: "e"}, {Key: "f"},
					{Key: "r", Requested: addrs("127.0.0.1")}, {Key: "s", Status: addrs("127.0.0.2")}},
				want: []string{"a 126.255.255.254 allocated", "b 126.255.255.255 allocated", "c 0.0.0.1 allocated",
					"d 223.255.255.255 allocated", "e fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff allocated",
					"f pending: address pools exhausted (126.255.255.254-127.0.0.2, 0.0.0.0-0.0.0.1, 223.255.255.255-224.0.0.1, fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff-fe80::1): no free address",
					"s pending: address pools exhausted (126.255.255.254-127.0.0.2, 0.0.0.0-0.0.0.1, 223.255.255.255-224.0.0.1, fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff-fe80::1): no free address",
					"r rejected: 127.0.0.1 is never served: loopback address"},
			}},
		},
		{
			name:  "a dropped request keeps its address as allocated",
			pools: []string{"10.0.0.0/29"},
			prev:  []Allocation{held("ns/a", "10.0.0.4", Requested)},
			steps: []step{{
				reqs: []Request{{Key: "ns/a"}},
				want: []string{"ns/a 10.0.0.4 allocated"},
			}},
		},
		{
			name:  "a key given twice is rejected, its prev freed",
			pools: []string{"10.0.0.0/29"},
			prev:  []Allocation{held("ns/a", "10.0.0.4", Allocated)},
			steps: []step{{
				reqs: []Request{{Key: "ns/a"}, {Key: "ns/a", Ports: tcp(80)}, {Key: "ns/b"}},
				want: []string{"ns/b 10.0.0.1 allocated", "ns/a rejected: more than one service has the key ns/a"},
			}},
		},
		{
			name:  "the top of the address space ends a pool cleanly",
			pools: []string{"255.255.255.252-255.255.255.255"},
			steps: []step{{
				reqs: []Request{{Key: "a"}, {Key: "b"}, {Key: "c"}, {Key: "d"}},
				want: []string{"a 255.255.255.252 allocated", "b 255.255.255.253 allocated", "c 255.255.255.254 allocated",
					"d pending: address pools exhausted (255.255.255.252-255.255.255.255): no free address"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pools := mustPools(t, tt.pools...)
			prev := tt.prev
			for i, st := range tt.steps {
				got := assignChecked(t, pools, lab, prev, st.reqs)
				if d := cmp.Diff(st.want, render(got)); d != "" {
					t.Errorf("step %d (-want +got):\n%s", i, d)
				}
				prev = got.Allocations
			}
		})
	}
}

// checkInvariants checks what holds for every Result: each request is in
// exactly one of allocations, pending, rejected; every address is servable;
// an address is held by two services only when the sharing rules allow it;
// a service with Requested holds exactly those.
func checkInvariants(t *testing.T, pools Pools, ex Excluder, reqs []Request, r Result) {
	t.Helper()
	byKey := map[string]Request{}
	count := map[string]int{}
	for _, q := range reqs {
		byKey[q.Key] = q
		count[q.Key]++
	}
	where := map[string]int{}
	holders := map[netip.Addr][]string{}
	for _, a := range r.Allocations {
		if where[a.Key] == 0 {
			where[a.Key]++
		}
		if err := pools.Admit(a.Addr, ex); err != nil {
			t.Errorf("%s holds %s: %v", a.Key, a.Addr, err)
		}
		holders[a.Addr] = append(holders[a.Addr], a.Key)
	}
	for _, p := range slices.Concat(r.Pending, r.Rejected) {
		where[p.Key]++
	}
	for k := range byKey {
		if where[k] != 1 {
			t.Errorf("%s is in %d of allocations, pending, rejected", k, where[k])
		}
	}
	for a, ks := range holders {
		if len(ks) < 2 {
			continue
		}
		used := map[PortProto]string{}
		for _, k := range ks {
			q := byKey[k]
			if q.Share == "" || q.Share != byKey[ks[0]].Share {
				t.Errorf("%s is held by %v without a common allow-shared-ip", a, ks)
			}
			for _, p := range q.Ports {
				if o, ok := used[p]; ok && o != k {
					t.Errorf("%s: %s and %s both use %s", a, o, k, p)
				}
				used[p] = k
			}
		}
	}
	for k, q := range byKey {
		if len(q.Requested) > 0 && count[k] == 1 && len(r.For(k)) > 0 {
			want := sortedAddrs(q.Requested)
			if d := cmp.Diff(fmt.Sprint(want), fmt.Sprint(r.Addrs(k))); d != "" {
				t.Errorf("%s holds other addresses than it requested (-want +got):\n%s", k, d)
			}
		}
	}
}

// TestAssignProperties drives random churn through small pools, checking
// the invariants, determinism and stability after every round.
func TestAssignProperties(t *testing.T) {
	pools := mustPools(t, "10.0.0.0/29", "10.0.9.8/30", "2001:db8::/126")
	cand := addrs("10.0.0.1", "10.0.0.2", "10.0.0.6", "10.0.0.7", "10.0.9.9", "10.0.9.10", "2001:db8::1", "192.0.2.1")
	shares := []string{"", "", "web", "db"}
	rnd := rand.New(rand.NewPCG(7, 9))
	random := func(key string) Request {
		q := Request{Key: key, Share: shares[rnd.IntN(len(shares))]}
		for range rnd.IntN(3) {
			q.Ports = append(q.Ports, PortProto{uint16(80 + rnd.IntN(3)), []lb.Protocol{lb.TCP, lb.UDP}[rnd.IntN(2)]})
		}
		switch rnd.IntN(6) {
		case 0:
			q.Requested = []netip.Addr{cand[rnd.IntN(len(cand))]}
		case 1:
			q.Requested = []netip.Addr{cand[rnd.IntN(len(cand))], cand[rnd.IntN(len(cand))]}
		case 2:
			q.Status = []netip.Addr{cand[rnd.IntN(len(cand))]}
		}
		return q
	}
	for run := range 40 {
		reqs := map[string]Request{}
		var prev []Allocation
		for round := range 15 {
			for range 3 {
				k := fmt.Sprintf("ns/s%02d", rnd.IntN(16))
				if rnd.IntN(4) == 0 {
					delete(reqs, k)
				} else {
					reqs[k] = random(k)
				}
			}
			list := make([]Request, 0, len(reqs))
			for _, q := range reqs {
				list = append(list, q)
			}
			t.Run(fmt.Sprintf("run%d/round%d", run, round), func(t *testing.T) {
				prev = assignChecked(t, pools, lab, prev, list).Allocations
			})
		}
	}
}

func TestResultLookups(t *testing.T) {
	pools := mustPools(t, "10.0.0.0/30", "10.0.1.0/29", "2001:db8::/64")
	r := Assign(pools, nil, nil, []Request{
		{Key: "a", Share: "x", Ports: tcp(80)}, {Key: "b", Share: "x", Ports: tcp(81)},
		{Key: "c", Requested: addrs("10.0.1.1", "2001:db8::1")}, {Key: "d"}, {Key: "e"},
		{Key: "f", Requested: addrs("192.0.2.1")},
	})
	if got := fmt.Sprint(r.Addrs("c")); got != "[10.0.1.1 2001:db8::1]" {
		t.Errorf("Addrs(c) = %v", got)
	}
	if got := r.For("zz"); got != nil {
		t.Errorf("For(zz) = %v", got)
	}
	if reason, pending, ok := r.Problem("f"); !ok || pending || reason == "" {
		t.Errorf("Problem(f) = %q, %v, %v", reason, pending, ok)
	}
	if _, _, ok := r.Problem("a"); ok {
		t.Error("Problem(a) found a problem for an allocated service")
	}
	type use struct {
		Pool       string
		Used, Free uint64
	}
	var got []use
	for _, u := range r.Usage(pools) {
		got = append(got, use{u.Pool.String(), u.Used, u.Free})
	}
	// a and b share 10.0.0.1 (counted once), d takes 10.0.0.2, e 10.0.1.2.
	want := []use{{"10.0.0.0/30", 2, 0}, {"10.0.1.0/29", 2, 4}, {"2001:db8::/64", 1, 1<<64 - 2}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Usage (-want +got):\n%s", d)
	}
}

// TestAssignScanBound: an IPv6 pool wholly excluded by the caller ends the
// scan instead of stepping through 2^64 addresses.
func TestAssignScanBound(t *testing.T) {
	pools := mustPools(t, "2001:db8::/64", "10.0.0.0/30")
	pod := func(a netip.Addr) (string, bool) { return "the pod network", a.Is6() }
	r := Assign(pools, pod, nil, []Request{{Key: "a"}, {Key: "b"}})
	want := []string{"a 10.0.0.1 allocated", "b 10.0.0.2 allocated"}
	if d := cmp.Diff(want, render(r)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}

	// A whole excluded /16 at the start of a pool is stepped over.
	pools = mustPools(t, "10.0.0.0/15")
	podNet := netip.MustParsePrefix("10.0.0.0/16")
	pod = func(a netip.Addr) (string, bool) { return "the pod network", podNet.Contains(a) }
	r = Assign(pools, pod, nil, []Request{{Key: "a"}})
	want = []string{"a 10.1.0.0 allocated"}
	if d := cmp.Diff(want, render(r)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// BenchmarkAssign: 10,000 services over a /16, half of them with an
// allocation from before, half new.
func BenchmarkAssign(b *testing.B) {
	pools := mustPools(b, "10.0.0.0/16")
	reqs := make([]Request, 10000)
	for i := range reqs {
		reqs[i] = Request{Key: fmt.Sprintf("ns%d/svc%d", i%50, i), Ports: tcp(80, 443)}
		if i%10 == 0 {
			reqs[i].Share = "shared"
			reqs[i].Ports = tcp(uint16(8000 + i%7))
		}
	}
	prev := Assign(pools, nil, nil, reqs[:5000]).Allocations
	b.ReportAllocs()
	for b.Loop() {
		r := Assign(pools, lab, prev, reqs)
		if len(r.Pending)+len(r.Rejected) != 0 {
			b.Fatal(r.Pending, r.Rejected)
		}
	}
}
