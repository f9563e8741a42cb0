package ipam

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/lbd/lbd/lb"
)

// Request is one LoadBalancer service lbd manages, as allocation sees it.
type Request struct {
	// Key is the service's "namespace/name"; keys are unique in a call to
	// [Assign].
	Key string
	// Requested are the addresses the service asks for (the annotation
	// lbd.io/load-balancer-ips, or the deprecated spec.loadBalancerIP).
	// When set, the service gets exactly these or none.
	Requested []netip.Addr
	// Share is the annotation lbd.io/allow-shared-ip; "" never shares.
	Share string
	// Ports are the service's ports, for share collisions.
	Ports []PortProto
	// Status are the IPs in status.loadBalancer.ingress now in the cluster,
	// used to recover a service's address when lbd holds none for it.
	Status []netip.Addr
}

// PortProto is one service port as sharing sees it: two services sharing an
// address must not both use the same PortProto.
type PortProto struct {
	Port     uint16
	Protocol lb.Protocol
}

func (p PortProto) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// Origin says how a service came by an address.
type Origin string

// The origins of an allocation.
const (
	// Allocated: lbd chose the address (or recovered it from the
	// service's status).
	Allocated Origin = "allocated"
	// Requested: the service asked for this address.
	Requested Origin = "requested"
)

// Allocation is one address held by one service. Services sharing an
// address each have an Allocation for it.
type Allocation struct {
	Key    string
	Addr   netip.Addr
	Origin Origin
}

// Problem names a service that holds no address and says why.
type Problem struct {
	Key    string
	Reason string
}

// Result is the outcome of [Assign]. Every request's key is in exactly one
// of Allocations (one or more entries), Pending or Rejected.
type Result struct {
	// Allocations is the complete new set, sorted by Key then Addr.
	Allocations []Allocation
	// Pending are services waiting for a free address, sorted by Key.
	Pending []Problem
	// Rejected are services whose request cannot be honoured, sorted by
	// Key.
	Rejected []Problem
}

// For returns the allocations of key, sorted by address; nil if it holds
// none.
func (r Result) For(key string) []Allocation {
	i, _ := slices.BinarySearchFunc(r.Allocations, key, func(a Allocation, k string) int { return strings.Compare(a.Key, k) })
	j := i
	for j < len(r.Allocations) && r.Allocations[j].Key == key {
		j++
	}
	if i == j {
		return nil
	}
	return r.Allocations[i:j:j]
}

// Addrs returns the addresses key holds, sorted; nil if none.
func (r Result) Addrs(key string) []netip.Addr {
	var as []netip.Addr
	for _, a := range r.For(key) {
		as = append(as, a.Addr)
	}
	return as
}

// Problem returns why key holds no address, and whether it is pending (as
// opposed to rejected); ok is false when key is in neither list.
func (r Result) Problem(key string) (reason string, pending, ok bool) {
	find := func(ps []Problem) (string, bool) {
		i, ok := slices.BinarySearchFunc(ps, key, func(p Problem, k string) int { return strings.Compare(p.Key, k) })
		if !ok {
			return "", false
		}
		return ps[i].Reason, true
	}
	if r, ok := find(r.Pending); ok {
		return r, true, true
	}
	if r, ok := find(r.Rejected); ok {
		return r, false, true
	}
	return "", false, false
}

// Usage is one pool's addresses in use and free, for metrics.
type Usage struct {
	Pool       Pool
	Used, Free uint64
}

// Usage counts, per pool in order, the distinct addresses of r.Allocations
// inside it (a shared address counts once) and the rest of its [Pool.Size]
// as free. Excluded addresses inside a pool count as free: the Excluder is
// not consulted.
func (r Result) Usage(pools Pools) []Usage {
	us := make([]Usage, len(pools))
	for i, p := range pools {
		us[i].Pool = p
	}
	var last netip.Addr
	seen := make(map[netip.Addr]bool, len(r.Allocations))
	for _, a := range r.Allocations {
		if a.Addr == last || seen[a.Addr] {
			continue
		}
		last, seen[a.Addr] = a.Addr, true
		for i, p := range pools {
			if p.Contains(a.Addr) {
				us[i].Used++
				break
			}
		}
	}
	for i := range us {
		us[i].Free = us[i].Pool.Size() - min(us[i].Used, us[i].Pool.Size())
	}
	return us
}

// maxExcludedScan bounds how many excluded addresses one Assign steps over
// in one pool while looking for a free one; past it the pool counts as
// exhausted for this call. Without the bound an IPv6 pool lying inside an
// excluded network would be scanned for ever. 2^17 lets a whole excluded
// /16 (a pod network inside a pool) be stepped over, in about 15 ms.
const maxExcludedScan = 1 << 17

// Assign computes the complete new set of allocations from the pools, the
// exclusions, the previous allocations and every LoadBalancer service lbd
// manages now. It is pure and deterministic: the same inputs, in any order,
// give the same Result. Feeding Result.Allocations back as prev with
// nothing else changed gives the same Result.
//
// An address is valid for a service when a pool serves it, neither the
// built-in exclusions nor ex exclude it (see [Pools.Admit]), and it is free
// or shareable: two services hold one address only when both carry the
// same non-empty Share and no (port, protocol) of one is used by the other.
//
// The steps, each going through services in Key order:
//
//  1. Keep. A prev allocation whose key is not in reqs is freed. A service
//     keeps each prev address that is still valid and, if it has
//     Requested, still requested; a holder from prev wins over newcomers.
//  2. Requests. A service with Requested gets all its missing requested
//     addresses (origin Requested) or, if any is invalid, none: it is
//     Rejected with the reasons and releases what it kept. Services that
//     already hold some of their requested addresses go first.
//  3. Recovery. A service holding nothing and requesting nothing takes
//     back every valid address of its Status (origin Allocated), so a
//     rebuilt LB with an empty store, or a backup LB, hands out the same
//     addresses. Invalid Status addresses are ignored.
//  4. Allocation. A service still holding nothing gets one address: with a
//     Share, one already held under that Share whose ports permit (those
//     held before this step, lowest first, then those it hands out, in
//     order); otherwise, or failing that, the lowest free address of the
//     first pool that has one. With none left it is Pending, and it gets
//     an address on the first later Assign where one is free.
//
// A Requested service is all-or-nothing; the rare case where its release
// in step 2 would have let another holder's request succeed settles on the
// next call.
func Assign(pools Pools, ex Excluder, prev []Allocation, reqs []Request) Result {
	s := newState(pools, ex)
	svcs, dup := normalize(reqs)
	for _, k := range dup {
		s.rejected[k] = []problem{{reason: "more than one service has the key " + k}}
	}

	// 1. Keep.
	prev = slices.Clone(prev)
	slices.SortFunc(prev, func(a, b Allocation) int {
		return cmp.Or(strings.Compare(a.Key, b.Key), a.Addr.Compare(b.Addr))
	})
	for _, sv := range svcs {
		i, _ := slices.BinarySearchFunc(prev, sv.Key, func(a Allocation, k string) int { return strings.Compare(a.Key, k) })
		for ; i < len(prev) && prev[i].Key == sv.Key; i++ {
			a := prev[i].Addr
			if i > 0 && prev[i-1].Key == sv.Key && prev[i-1].Addr == a {
				continue // a duplicate in prev
			}
			origin := Allocated
			if len(sv.Requested) > 0 {
				if _, ok := slices.BinarySearchFunc(sv.Requested, a, netip.Addr.Compare); !ok {
					continue // the request changed: re-evaluate
				}
				origin = Requested
			}
			if s.refusal(a) == "" && s.fits(a, sv) {
				s.take(a, sv, origin)
			}
		}
	}

	// 2. Requests: holders with part of their request first, then
	// newcomers.
	var partial, fresh []*service
	for _, sv := range svcs {
		switch {
		case len(sv.Requested) == 0 || len(sv.held) == len(sv.Requested):
		case len(sv.held) > 0:
			partial = append(partial, sv)
		default:
			fresh = append(fresh, sv)
		}
	}
	for _, sv := range slices.Concat(partial, fresh) {
		var probs []problem
		var missing []netip.Addr
		for _, a := range sv.Requested {
			if slices.Contains(sv.addrs(), a) {
				continue
			}
			if r := s.refusal(a); r != "" {
				probs = append(probs, problem{addr: a, reason: r})
			} else if !s.fits(a, sv) {
				probs = append(probs, problem{addr: a, reason: s.conflict(a, sv)})
			}
			missing = append(missing, a)
		}
		if len(probs) > 0 {
			s.release(sv)
			s.rejected[sv.Key] = probs
			sv.done = true
			continue
		}
		for _, a := range missing {
			s.take(a, sv, Requested)
		}
	}

	// 3. Recovery from status.
	for _, sv := range svcs {
		if sv.done || len(sv.Requested) > 0 || len(sv.held) > 0 {
			continue
		}
		for _, a := range sv.Status {
			if s.refusal(a) == "" && s.fits(a, sv) {
				s.take(a, sv, Allocated)
			}
		}
	}

	// 4. Allocation.
	exhausted := noPool
	if len(pools) > 0 {
		exhausted = fmt.Sprintf("address pools exhausted (%s): no free address", pools)
	}
	s.groupShares()
	for _, sv := range svcs {
		if sv.done || len(sv.Requested) > 0 || len(sv.held) > 0 {
			continue
		}
		if a, ok := s.join(sv); ok {
			s.take(a, sv, Allocated)
			continue
		}
		a, ok := s.next()
		if !ok {
			s.pending = append(s.pending, Problem{Key: sv.Key, Reason: exhausted})
			continue
		}
		s.take(a, sv, Allocated)
		if sv.Share != "" {
			s.groups[sv.Share] = append(s.groups[sv.Share], a)
		}
	}
	return s.result(svcs)
}

// service is a normalized request and what it holds during Assign.
type service struct {
	Request
	sig  string // Ports, canonically, for the share-join cursors (Share set only)
	held []Allocation
	done bool // rejected
}

func (sv *service) addrs() []netip.Addr {
	as := make([]netip.Addr, len(sv.held))
	for i, h := range sv.held {
		as[i] = h.Addr
	}
	return as
}

// normalize sorts the requests by key, their address and port lists sorted
// and unique; keys given more than once are returned apart, sorted.
func normalize(reqs []Request) ([]*service, []string) {
	svcs := make([]*service, 0, len(reqs))
	for _, r := range reqs {
		r.Requested = sortedAddrs(r.Requested)
		r.Status = sortedAddrs(r.Status)
		r.Ports = slices.Clone(r.Ports)
		slices.SortFunc(r.Ports, func(a, b PortProto) int {
			return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(string(a.Protocol), string(b.Protocol)))
		})
		r.Ports = slices.Compact(r.Ports)
		var sig []byte
		if r.Share != "" {
			for _, p := range r.Ports {
				sig = strconv.AppendUint(sig, uint64(p.Port), 10)
				sig = append(append(append(sig, '/'), p.Protocol...), ',')
			}
		}
		svcs = append(svcs, &service{Request: r, sig: string(sig)})
	}
	slices.SortFunc(svcs, func(a, b *service) int { return strings.Compare(a.Key, b.Key) })
	var dup []string
	out := svcs[:0]
	for i := 0; i < len(svcs); {
		j := i + 1
		for j < len(svcs) && svcs[j].Key == svcs[i].Key {
			j++
		}
		if j-i > 1 {
			dup = append(dup, svcs[i].Key)
		} else {
			out = append(out, svcs[i])
		}
		i = j
	}
	return out, dup
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	as = slices.Clone(as)
	slices.SortFunc(as, netip.Addr.Compare)
	return slices.Compact(as)
}

// holding is the services holding one address.
type holding struct {
	share string   // the holders' Share; "" means one holder, no sharing
	keys  []string // holders, in the order they took it
	// ports are the holders' ports, kept only when the address is shared
	// (an unshared address takes no one else, whatever the ports).
	ports []portUse
}

type portUse struct {
	PortProto
	key string
}

// user returns the holder using p, "" if none.
func (h *holding) user(p PortProto) string {
	for _, u := range h.ports {
		if u.PortProto == p {
			return u.key
		}
	}
	return ""
}

// problem is one reason a request failed; a conflict's reason is
// re-rendered against the final holders so that it reads the same on the
// next call.
type problem struct {
	addr   netip.Addr
	reason string
}

type state struct {
	pools    Pools
	ex       Excluder
	held     map[netip.Addr]*holding
	rejected map[string][]problem
	pending  []Problem
	// groups lists, per Share, the addresses held under it: the ones held
	// before step 4 sorted, then the ones step 4 adds, in order.
	groups map[string][]netip.Addr
	// joinAt is, per Share and port signature, the index in groups before
	// which no address can take that signature: holdings only grow in
	// step 4, so an address that once refused a signature always will.
	joinAt map[string]map[string]int
	// cursor is, per pool, the address below which every address is held
	// or excluded; scanned counts the excluded addresses stepped over.
	cursor  []netip.Addr
	scanned []int
}

func newState(pools Pools, ex Excluder) *state {
	s := &state{
		pools:    pools,
		ex:       ex,
		held:     map[netip.Addr]*holding{},
		rejected: map[string][]problem{},
		joinAt:   map[string]map[string]int{},
		cursor:   make([]netip.Addr, len(pools)),
		scanned:  make([]int, len(pools)),
	}
	for i, p := range pools {
		s.cursor[i] = p.first
	}
	return s
}

func (s *state) refusal(a netip.Addr) string { return s.pools.refusal(a, s.ex) }

// excluded is refusal's fast half for an address known to be in a pool:
// next asks it of every address it steps over, so it formats nothing.
func (s *state) excluded(a netip.Addr) bool {
	if _, ok := builtin(a); ok {
		return true
	}
	if s.ex != nil {
		_, ok := s.ex(a)
		return ok
	}
	return false
}

// fits reports whether sv may take a: it is free, or shared under sv's
// Share with none of sv's ports.
func (s *state) fits(a netip.Addr, sv *service) bool {
	h := s.held[a]
	if h == nil {
		return true
	}
	if h.share == "" || h.share != sv.Share {
		return false
	}
	for _, p := range sv.Ports {
		if h.user(p) != "" {
			return false
		}
	}
	return true
}

// conflict says why sv may not take a, which is held.
func (s *state) conflict(a netip.Addr, sv *service) string {
	h := s.held[a]
	keys := slices.Sorted(slices.Values(h.keys))
	by := fmt.Sprintf("%s is held by %s", a, strings.Join(keys, ", "))
	switch {
	case sv.Share == "":
		return by + "; to share it, give both the same lbd.io/allow-shared-ip"
	case h.share == "":
		return by + ", which does not allow sharing (lbd.io/allow-shared-ip)"
	case h.share != sv.Share:
		return fmt.Sprintf("%s under lbd.io/allow-shared-ip %q, not %q", by, h.share, sv.Share)
	}
	var clash []string
	for _, p := range sv.Ports {
		if k := h.user(p); k != "" {
			clash = append(clash, p.String()+" ("+k+")")
		}
	}
	return by + ", and these ports are in use there: " + strings.Join(clash, ", ")
}

func (s *state) take(a netip.Addr, sv *service, origin Origin) {
	h := s.held[a]
	if h == nil {
		h = &holding{share: sv.Share}
		s.held[a] = h
	}
	h.keys = append(h.keys, sv.Key)
	if h.share != "" {
		for _, p := range sv.Ports {
			h.ports = append(h.ports, portUse{p, sv.Key})
		}
	}
	sv.held = append(sv.held, Allocation{Key: sv.Key, Addr: a, Origin: origin})
}

func (s *state) release(sv *service) {
	for _, al := range sv.held {
		h := s.held[al.Addr]
		h.keys = slices.DeleteFunc(h.keys, func(k string) bool { return k == sv.Key })
		if len(h.keys) == 0 {
			delete(s.held, al.Addr)
			continue
		}
		h.ports = slices.DeleteFunc(h.ports, func(u portUse) bool { return u.key == sv.Key })
	}
	sv.held = nil
}

// groupShares indexes the shared holdings before step 4.
func (s *state) groupShares() {
	s.groups = map[string][]netip.Addr{}
	for a, h := range s.held {
		if h.share != "" {
			s.groups[h.share] = append(s.groups[h.share], a)
		}
	}
	for _, g := range s.groups {
		slices.SortFunc(g, netip.Addr.Compare)
	}
}

// join finds the first address held under sv's Share that sv's ports fit.
func (s *state) join(sv *service) (netip.Addr, bool) {
	if sv.Share == "" {
		return netip.Addr{}, false
	}
	g := s.groups[sv.Share]
	at := s.joinAt[sv.Share]
	if at == nil {
		at = map[string]int{}
		s.joinAt[sv.Share] = at
	}
	i := at[sv.sig]
	for ; i < len(g); i++ {
		if s.fits(g[i], sv) {
			break
		}
	}
	at[sv.sig] = i
	if i < len(g) {
		return g[i], true
	}
	return netip.Addr{}, false
}

// next returns the lowest free, valid address of the first pool that has
// one.
func (s *state) next() (netip.Addr, bool) {
	for i, p := range s.pools {
		for a := s.cursor[i]; a.IsValid() && a.Compare(p.last) <= 0; a = a.Next() {
			s.cursor[i] = a
			if s.held[a] != nil {
				continue
			}
			if s.excluded(a) {
				if s.scanned[i]++; s.scanned[i] > maxExcludedScan {
					s.cursor[i] = netip.Addr{}
					break
				}
				continue
			}
			return a, true
		}
		s.cursor[i] = netip.Addr{} // exhausted (Next past the top is invalid too)
	}
	return netip.Addr{}, false
}

func (s *state) result(svcs []*service) Result {
	r := Result{Allocations: make([]Allocation, 0, len(svcs)), Pending: s.pending}
	for _, sv := range svcs {
		n := len(r.Allocations)
		r.Allocations = append(r.Allocations, sv.held...)
		if len(sv.held) > 1 {
			slices.SortFunc(r.Allocations[n:], func(a, b Allocation) int { return a.Addr.Compare(b.Addr) })
		}
	}
	if len(r.Allocations) == 0 {
		r.Allocations = nil
	}
	// Reasons are rendered against the final holdings, which are what the
	// next call sees first: so they read the same on that call.
	for _, k := range slices.Sorted(maps.Keys(s.rejected)) {
		var reasons []string
		if i, ok := slices.BinarySearchFunc(svcs, k, func(sv *service, k string) int { return strings.Compare(sv.Key, k) }); ok {
			sv := svcs[i]
			for _, a := range sv.Requested {
				if r := s.refusal(a); r != "" {
					reasons = append(reasons, r)
				} else if !s.fits(a, sv) {
					reasons = append(reasons, s.conflict(a, sv))
				}
			}
		}
		if len(reasons) == 0 {
			for _, p := range s.rejected[k] {
				reasons = append(reasons, p.reason)
			}
		}
		r.Rejected = append(r.Rejected, Problem{Key: k, Reason: strings.Join(reasons, "; ")})
	}
	return r
}
