package ipam

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// Pool is one --pool value: the addresses lbd may serve and hand out.
//
// A Pool is written either as a CIDR ("192.168.121.240/28") or as an
// inclusive range "first-last" ("192.168.121.240-192.168.121.250"); a bare
// address is a range of one. For an IPv4 CIDR of /30 or wider the network
// and broadcast addresses are not part of the pool (they are never handed
// out or served); every other form, and every IPv6 CIDR, serves all of its
// addresses. The zero Pool holds no address. Pools are comparable with ==.
type Pool struct {
	// first and last bound the addresses served, inclusive.
	first, last netip.Addr
	// lo and hi bound what the operator wrote (a CIDR's network and
	// broadcast included), for the overlap check.
	lo, hi netip.Addr
	// prefix is the CIDR when the pool was written as one.
	prefix netip.Prefix
}

// ParsePool parses one --pool value (surrounding spaces are ignored). It
// refuses, with an error naming the value and --pool: anything but a CIDR,
// a range or an address; a CIDR with host bits set; a range whose ends are
// of different families or whose first address is after its last; zones;
// IPv4-mapped IPv6 addresses; and a pool lying wholly inside addresses
// that are never served (loopback, link-local, multicast, unspecified).
func ParsePool(s string) (Pool, error) {
	p, err := parsePool(strings.TrimSpace(s))
	if err != nil {
		return Pool{}, fmt.Errorf("--pool %q: %w", s, err)
	}
	return p, nil
}

func parsePool(s string) (Pool, error) {
	var p Pool
	switch {
	case strings.Contains(s, "/"):
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("not a CIDR: %w", err)
		}
		if err := plain(pfx.Addr()); err != nil {
			return p, err
		}
		if pfx.Masked() != pfx {
			return p, fmt.Errorf("host bits are set; the network is %s", pfx.Masked())
		}
		p.prefix = pfx
		p.lo = pfx.Addr()
		p.hi = lastOf(pfx)
		p.first, p.last = p.lo, p.hi
		if pfx.Addr().Is4() && pfx.Bits() <= 30 {
			p.first, p.last = p.lo.Next(), p.hi.Prev()
		}
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		first, err := parseAddr(strings.TrimSpace(a))
		if err != nil {
			return p, fmt.Errorf("first address: %w", err)
		}
		last, err := parseAddr(strings.TrimSpace(b))
		if err != nil {
			return p, fmt.Errorf("last address: %w", err)
		}
		if first.Is4() != last.Is4() {
			return p, fmt.Errorf("%s and %s are of different address families", first, last)
		}
		if first.Compare(last) > 0 {
			return p, fmt.Errorf("first address %s is after last address %s", first, last)
		}
		p.first, p.last, p.lo, p.hi = first, last, first, last
	default:
		a, err := parseAddr(s)
		if err != nil {
			return p, fmt.Errorf("want a CIDR (10.0.0.0/28), a range (10.0.0.1-10.0.0.9) or an address: %w", err)
		}
		p.first, p.last, p.lo, p.hi = a, a, a, a
	}
	// Each never-served kind is one contiguous block per family, so a pool
	// whose two ends share the kind lies wholly inside it.
	if r1, ok := builtin(p.first); ok {
		if r2, _ := builtin(p.last); r2 == r1 {
			return p, fmt.Errorf("holds only addresses that are never served (%s)", r1)
		}
	}
	return p, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, err
	}
	return a, plain(a)
}

// plain refuses the address forms a pool cannot hold.
func plain(a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("%s has a zone; pools take no zones", a)
	case a.Is4In6():
		return fmt.Errorf("%s is an IPv4-mapped IPv6 address; write %s", a, a.Unmap())
	}
	return nil
}

// lastOf returns the highest address of a masked prefix.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// String returns the pool in the form the operator wrote it (CIDR, range
// or address), canonically spelt; ParsePool(p.String()) == p.
func (p Pool) String() string {
	switch {
	case p.prefix.IsValid():
		return p.prefix.String()
	case !p.first.IsValid():
		return ""
	case p.first == p.last:
		return p.first.String()
	}
	return p.first.String() + "-" + p.last.String()
}

// Contains reports whether the pool serves a: a lies between its first and
// last address (so not a CIDR's excluded network or broadcast address) and
// has no zone. Contains does not apply exclusions; see [Pools.Admit].
func (p Pool) Contains(a netip.Addr) bool {
	return p.first.IsValid() && a.Zone() == "" && a.Is4() == p.first.Is4() && !a.Is4In6() &&
		p.first.Compare(a) <= 0 && a.Compare(p.last) <= 0
}

// First is the pool's lowest served address; invalid for the zero Pool.
func (p Pool) First() netip.Addr { return p.first }

// Size returns the number of addresses the pool serves, exclusions not
// subtracted, saturating at math.MaxUint64 (an IPv6 /64 or wider).
func (p Pool) Size() uint64 {
	if !p.first.IsValid() {
		return 0
	}
	a, b := p.first.As16(), p.last.As16()
	ah, al := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	bh, bl := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	dl := bl - al
	dh := bh - ah
	if bl < al {
		dh--
	}
	if dh != 0 || dl == math.MaxUint64 {
		return math.MaxUint64
	}
	return dl + 1
}

// edge reports whether a is the network or broadcast address that an IPv4
// CIDR pool leaves out.
func (p Pool) edge(a netip.Addr) bool {
	return p.prefix.IsValid() && (a == p.lo || a == p.hi) && !p.Contains(a)
}

// Pools is the ordered set of --pool values. Order matters: a new
// allocation takes the lowest free address of the first pool that has one.
type Pools []Pool

// ParsePools parses every --pool value in order. Each spec may itself be a
// comma-separated list, as LBD_POOL is; empty items are skipped, so no
// specs (or only empty ones) give no pools. Pools that overlap, counting a
// CIDR's network and broadcast addresses, are refused naming both.
func ParsePools(specs []string) (Pools, error) {
	var ps Pools
	for _, spec := range specs {
		for item := range strings.SplitSeq(spec, ",") {
			if strings.TrimSpace(item) == "" {
				continue
			}
			p, err := ParsePool(item)
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
	}
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int { return ps[i].lo.Compare(ps[j].lo) })
	for k := 1; k < len(order); k++ {
		i, j := order[k-1], order[k]
		if ps[i].lo.Is4() == ps[j].lo.Is4() && ps[i].hi.Compare(ps[j].lo) >= 0 {
			i, j = min(i, j), max(i, j)
			return nil, fmt.Errorf("--pool %s overlaps --pool %s", ps[i], ps[j])
		}
	}
	return ps, nil
}

// String lists the pools in order, separated by ", ".
func (ps Pools) String() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// Contains reports whether some pool serves a (exclusions not applied).
func (ps Pools) Contains(a netip.Addr) bool {
	_, ok := ps.PoolOf(a)
	return ok
}

// PoolOf returns the first pool that serves a.
func (ps Pools) PoolOf(a netip.Addr) (Pool, bool) {
	for _, p := range ps {
		if p.Contains(a) {
			return p, true
		}
	}
	return Pool{}, false
}

// Excluder says whether an address is never served even inside a pool, and
// why, in a few words naming the thing ("the master's address"). The caller
// builds it from the master's address, the address lbd's own SSH leaves
// from and the pod network. A nil Excluder excludes nothing beyond the
// built-in exclusions. It must be pure and cheap: allocation calls it for
// every address it steps over, and steps over at most 2^17 excluded
// addresses per pool and call before counting that pool as exhausted.
type Excluder func(netip.Addr) (reason string, excluded bool)

// builtin is what ipam itself never serves, whatever the Excluder says.
// Multicast is tested before link-local so that link-local multicast is
// called multicast: each reason is then one contiguous block per family.
func builtin(a netip.Addr) (string, bool) {
	switch {
	case !a.IsValid():
		return "invalid address", true
	case a.IsUnspecified():
		return "unspecified address", true
	case a.IsLoopback():
		return "loopback address", true
	case a.IsMulticast():
		return "multicast address", true
	case a.IsLinkLocalUnicast():
		return "link-local address", true
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "limited broadcast address", true
	}
	return "", false
}

// Admit decides whether a (a spec.externalIPs address) may be served. It
// returns nil when a pool serves a and neither the built-in exclusions
// (loopback, link-local, multicast, unspecified, 255.255.255.255) nor ex
// exclude it; otherwise an error whose text says why, ready to print after
// the service's name. With no pools at all every address is refused with
// "no address pool is configured: set --pool".
func (ps Pools) Admit(a netip.Addr, ex Excluder) error {
	if r := ps.refusal(a, ex); r != "" {
		return &AdmitError{Addr: a, Reason: r}
	}
	return nil
}

// AdmitError is why [Pools.Admit] refused an address; Reason is the whole
// message, Addr the address refused.
type AdmitError struct {
	Addr   netip.Addr
	Reason string
}

func (e *AdmitError) Error() string { return e.Reason }

// noPool is the refusal when no pool is configured.
const noPool = "no address pool is configured: set --pool"

// refusal is Admit's reason, "" when a may be served.
func (ps Pools) refusal(a netip.Addr, ex Excluder) string {
	if len(ps) == 0 {
		return noPool
	}
	if r, ok := builtin(a); ok {
		return fmt.Sprintf("%s is never served: %s", a, r)
	}
	if ex != nil {
		if r, ok := ex(a); ok {
			return fmt.Sprintf("%s is never served: %s", a, r)
		}
	}
	if ps.Contains(a) {
		return ""
	}
	for _, p := range ps {
		if p.edge(a) {
			return fmt.Sprintf("%s is the network or broadcast address of --pool %s, which is never served", a, p)
		}
	}
	return fmt.Sprintf("%s is outside every address pool (--pool %s)", a, ps)
}

// StandIn returns the lowest address that ps admits among the first 16
// of each pool of the family (IPv4 when v4), in pool order, or none. An
// HA pair holds it while it serves nothing of that family: keepalived
// needs an address to run a VRRP instance at all.
func (ps Pools) StandIn(ex Excluder, v4 bool) netip.Addr {
	for _, p := range ps {
		a := p.First()
		if !a.IsValid() || a.Is4() != v4 {
			continue
		}
		for i := 0; i < 16 && p.Contains(a); i, a = i+1, a.Next() {
			if ps.Admit(a, ex) == nil {
				return a
			}
		}
	}
	return netip.Addr{}
}
