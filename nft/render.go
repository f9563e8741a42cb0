package nft

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

// Names of the objects of lbd's table besides the per-service ones.
const (
	// ServicesMap4 and ServicesMap6 are the dispatch verdict maps,
	// "daddr . l4proto . dport : goto <spread or service-port chain>".
	ServicesMap4 = "services4"
	ServicesMap6 = "services6"
	// NoEndpointsSet4 and NoEndpointsSet6 hold the service ports without
	// a ready endpoint, which are rejected.
	NoEndpointsSet4 = "noendpoints4"
	NoEndpointsSet6 = "noendpoints6"
	// NoEndpointsChain rejects them (TCP reset, ICMP port unreachable).
	NoEndpointsChain = "noendpoints"
)

// The shared spread chains and endpoints maps. Every service port
// without ClientIP affinity whose family has n ready endpoints is served
// by the chain SpreadChain(key, n) and the map EndpointsMap(key, n), one
// of SpreadShards for that family and n: the chain's one rule marks the
// packet and DNATs it to "daddr . l4proto . dport . numgen random mod n"
// looked up in the map, whose elements hold each such port's endpoints, "address . protocol . port . index : endpoint
// address . port". A port with source ranges has a chain of its own
// that checks them first and goes to the spread chain.
//
// Why shared: what the kernel pays for in a transaction is per chain and
// per rule (each expression is parsed, each rule's set lookups bound and
// checked, the table revalidated), while map elements are cheap. With a
// chain and a rule per service port, 10,000 ports cost 0.25 s of kernel
// time in a full program; with the shared chains there are at most
// SpreadShards per distinct endpoint count, and a change of endpoints is
// map elements only. One map per chain also keeps each map bound to one
// rule, and the kernel checks an element added to a map against every
// rule bound to it.

// SpreadShards is the number of spread chains, and so of endpoints maps,
// per family and number of endpoints; a port's shard is chosen by the
// hash of its key. Why: the kernel dumps a set's elements in chunks of
// 32 KB, walking the set from its start for each, so reading a map back
// (the drift check, explain) is quadratic in its elements: the drift
// check of 10,000 ports of 10 endpoints took 1.0-1.3 s with one map,
// 0.34-0.56 s with 16.
const SpreadShards = 16

// SpreadChain returns the name of the shared chain that spreads new
// connections over n endpoints for the port with the given key
// (lb.Port.Key, "namespace/name:port/protocol"):
// "spread4-<n>-s<shard>", or "spread6-...".
func SpreadChain(portKey string, n int, v6 bool) string {
	return newSpreadKey(portKey, familyOfV6(v6), n).chain()
}

// EndpointsMap returns the name of the map that SpreadChain's rule
// looks endpoints up in: "endpoints4-<n>-s<shard>", or "endpoints6-...".
func EndpointsMap(portKey string, n int, v6 bool) string {
	return newSpreadKey(portKey, familyOfV6(v6), n).mapName()
}

func familyOfV6(v6 bool) family {
	if v6 {
		return ipv6
	}
	return ipv4
}

// spreadKey names one shared spread chain and its endpoints map.
type spreadKey struct {
	f        family
	n, shard int
}

func newSpreadKey(portKey string, f family, n int) spreadKey {
	h := fnv.New32a()
	h.Write([]byte(portKey))
	return spreadKey{f, n, int(h.Sum32() % SpreadShards)}
}

func (k spreadKey) suffix() string {
	return strconv.Itoa(int(k.f)) + "-" + strconv.Itoa(k.n) + "-s" + strconv.Itoa(k.shard)
}

func (k spreadKey) chain() string   { return "spread" + k.suffix() }
func (k spreadKey) mapName() string { return "endpoints" + k.suffix() }

func (k spreadKey) less(o spreadKey) int {
	if k.f != o.f {
		return int(k.f) - int(o.f)
	}
	if k.n != o.n {
		return k.n - o.n
	}
	return k.shard - o.shard
}

// set is k's endpoints map.
func (k spreadKey) set() Set {
	return Set{Name: k.mapName(), Type: k.f.word()[:2] + "v" + strconv.Itoa(int(k.f)) + "_addr . inet_proto . inet_service . " + endpointsIndexType,
		Data: k.f.word()[:2] + "v" + strconv.Itoa(int(k.f)) + "_addr . inet_service", family: k.f, concat: true}
}

// spreadChain is k's chain: one rule that marks the packet and DNATs it
// to the endpoint that the map gives for the packet's service port and
// a random index below n.
func (k spreadKey) spreadChain(opts Options) Chain {
	m := opts.mark()
	w := k.f.word()
	return Chain{Name: k.chain(), Rules: []Rule{{
		Text: fmt.Sprintf("meta mark set meta mark | %#08x dnat %s to %s daddr . meta l4proto . th dport . numgen random mod %d map @%s",
			m, w, w, k.n, k.mapName()),
		exprs: slices.Concat(markSet(m), dnatSpread(k.f, uint32(k.n), k.mapName())),
	}}}
}

// Hook makes a chain a base chain.
type Hook struct {
	// Type is "nat" or "filter", Hook the netfilter hook ("prerouting",
	// "input", "forward", "output", "postrouting").
	Type, Hook string
	Priority   int
}

// Chain is one chain of lbd's table with its rules in order.
type Chain struct {
	Name string
	// Hook is nil for a regular chain.
	Hook  *Hook
	Rules []Rule
}

// Rule is one rule: its nft text (what `nft list` would show, give or
// take spelling) and the netlink expressions that implement it. The text
// is the rule's identity: the kernel copy carries a hash of it (see
// [Rule.ID]), which Verify compares.
type Rule struct {
	Text  string
	exprs []expr.Any
}

// ID is the comment the rule carries in the kernel: a hash of its chain
// and text, so that Verify can compare rules without decoding them.
func (r Rule) ID(chain string) string { return "lbd:" + hash(chain+"\x00"+r.Text, 12) }

// Set is a named set or map of lbd's table.
type Set struct {
	Name string
	// Type is the nft type, e.g. "ipv4_addr . inet_proto . inet_service".
	Type string
	// Map: a verdict map ("Type : verdict").
	Map bool
	// Data, when not empty, makes the set a map to values of this nft
	// type, e.g. "ipv4_addr . inet_service".
	Data string
	// Timeout, when not zero, makes the set dynamic (updated from the
	// packet path) with this default element timeout: a ClientIP
	// affinity set.
	Timeout time.Duration
	// Size, when not zero, is the most elements the kernel lets the set
	// hold (see setSize).
	Size   uint32
	family family
	concat bool
}

// setSize is the size lbd gives a set or map of n elements: room for
// twice as many, and at least 1,024.
//
// Why: a set of known size is one hash table made at once, while one
// without grows by rehashing as elements arrive, which took 0.2 s of
// the 0.3 s the kernel spent on a full program of 10,000 services x 10
// endpoints. The size is a limit: a transaction that would overflow a
// set fails whole and changes nothing, and Apply then rewrites the table
// (a full sync), which sizes every set anew.
func setSize(n int) uint32 {
	size := uint32(1024)
	for int(size) < 2*n && size < 1<<31 {
		size <<= 1
	}
	return size
}

// Element is one element of a dispatch map or a no-endpoints set (an
// external address, protocol and port), or of an endpoints map (the
// Index-th endpoint To of that address, protocol and port).
type Element struct {
	Set   string
	Addr  netip.Addr
	Proto lb.Protocol
	Port  uint16
	// Chain is the verdict ("goto Chain") of a dispatch map element;
	// empty in a set and in an endpoints map.
	Chain string
	// Index and To: the endpoint of an endpoints map element.
	Index uint32
	To    netip.AddrPort
}

// endpoint reports whether e is an element of an endpoints map.
func (e Element) endpoint() bool { return e.To.IsValid() }

// key identifies e within its set: what the kernel keys it by.
func (e Element) key() string {
	k := e.Set + " " + netip.AddrPortFrom(e.Addr, e.Port).String() + "/" + string(e.Proto)
	if e.endpoint() {
		k += "#" + strconv.FormatUint(uint64(e.Index), 10)
	}
	return k
}

// sameValue reports whether e and o, of the same key, map to the same.
func (e Element) sameValue(o Element) bool { return e.Chain == o.Chain && e.To == o.To }

func (e Element) text() string {
	s := fmt.Sprintf("%s . %s . %d", e.Addr, strings.ToLower(string(e.Proto)), e.Port)
	switch {
	case e.endpoint():
		s += fmt.Sprintf(" . %#08x : %s . %d", e.Index, e.To.Addr(), e.To.Port())
	case e.Chain != "":
		s += " : goto " + e.Chain
	}
	return s
}

// Ruleset is the whole of lbd's table for a set of services: sets and
// maps, chains (base chains first), the elements of the maps and sets,
// and the services that could not be rendered.
type Ruleset struct {
	Table    string
	Sets     []Set
	Chains   []Chain
	Elements []Element
	Skipped  []lb.Skipped
	// spreads counts the service ports served by each spread chain.
	spreads map[spreadKey]int
}

// Render returns lbd's table for svcs under opts. It is pure: no I/O, and
// the same input gives the same result. Services that are not exposed are
// ignored; IPv4 and IPv6 external IPs are both served, each by the
// endpoints of its own family. opts must pass [Options.Validate].
func Render(svcs []lb.Service, opts Options) Ruleset {
	objs := make([]serviceObjects, 0, len(svcs))
	for i := range svcs {
		objs = append(objs, renderService(&svcs[i], opts))
	}
	return assemble(objs, opts)
}

// assemble joins rendered services and the fixed objects into a Ruleset:
// the fixed sets, then the endpoints maps the services use, then their
// own sets; the fixed chains, then the spread chains, then their own.
// A service claiming an address, protocol and port that an earlier one
// holds is skipped whole.
func assemble(objs []serviceObjects, opts Options) Ruleset {
	rs := Ruleset{Table: opts.table(), spreads: map[spreadKey]int{}}
	// Sized in advance: growing these slices of structs with pointers
	// was a third of the user time of a full program at 10,000 services.
	nSets, nChains, nElems := 0, 0, 0
	for _, o := range objs {
		nSets, nChains, nElems = nSets+len(o.sets), nChains+len(o.chains), nElems+len(o.elements)
	}
	sets := make([]Set, 0, nSets)
	chains := make([]Chain, 0, nChains)
	rs.Elements = make([]Element, 0, nElems)
	owner := make(map[string]string, len(objs))
	for _, o := range objs {
		if o.skipped != nil {
			rs.Skipped = append(rs.Skipped, *o.skipped)
			continue
		}
		if k, other := o.conflict(owner); other != "" {
			rs.Skipped = append(rs.Skipped, lb.Skipped{Key: o.key, Reason: k + " is already served by " + other})
			continue
		}
		for _, e := range o.elements {
			if !e.endpoint() {
				owner[e.key()[len(e.Set)+1:]] = o.key
			}
		}
		for _, k := range o.spreads {
			rs.spreads[k]++
		}
		sets = append(sets, o.sets...)
		chains = append(chains, o.chains...)
		rs.Elements = append(rs.Elements, o.elements...)
	}
	keys := slices.SortedFunc(maps.Keys(rs.spreads), spreadKey.less)
	rs.Sets = dispatchSets()
	rs.Chains = fixedChains(opts)
	for _, k := range keys {
		rs.Sets = append(rs.Sets, k.set())
		rs.Chains = append(rs.Chains, k.spreadChain(opts))
	}
	count := map[string]int{}
	for _, e := range rs.Elements {
		count[e.Set]++
	}
	for i := range rs.Sets {
		rs.Sets[i].Size = setSize(count[rs.Sets[i].Name])
	}
	rs.Sets = append(rs.Sets, sets...) // affinity sets: the packet path fills them
	rs.Chains = append(rs.Chains, chains...)
	return rs
}

// dispatchSets are the dispatch maps and the no-endpoints sets.
func dispatchSets() []Set {
	t4, t6 := "ipv4_addr . inet_proto . inet_service", "ipv6_addr . inet_proto . inet_service"
	return []Set{
		{Name: ServicesMap4, Type: t4, Map: true, family: ipv4, concat: true},
		{Name: ServicesMap6, Type: t6, Map: true, family: ipv6, concat: true},
		{Name: NoEndpointsSet4, Type: t4, family: ipv4, concat: true},
		{Name: NoEndpointsSet6, Type: t6, family: ipv6, concat: true},
	}
}

// fixedChains are the base chains and the reject chain.
//
//	nat-prerouting, nat-output: dispatch by verdict map to the
//	    service-port chains (output too, so the LB itself can reach a
//	    service)
//	nat-postrouting: masquerade marked packets, clearing the mark
//	filter-input, filter-forward, filter-output: reject new connections
//	    to service ports without ready endpoints; forward also accepts
//	    lbd's traffic
func fixedChains(opts Options) []Chain {
	m := opts.mark()
	dispatch := func(f family, set string) Rule {
		return Rule{
			Text:  f.word() + " daddr . meta l4proto . th dport vmap @" + set,
			exprs: append(serviceKey(f), lookup(set, true)),
		}
	}
	// Only a connection's first packet still carries the service
	// address that the reject matches, so established packets skip the
	// lookups (as kube-proxy's nftables mode does).
	jumpReject := Rule{Text: "ct state new jump " + NoEndpointsChain, exprs: append(ctStateNew(), verdict(expr.VerdictJump, NoEndpointsChain))}
	var post []Rule
	if opts.Masquerade {
		// Clearing the bit keeps a packet that is routed again from
		// being masqueraded twice.
		post = []Rule{{
			// Not fully-random: a random source port lands on tuples
			// the pod still holds in TIME_WAIT and stalls new
			// connections for a second (see netfilter's doc).
			Text:  fmt.Sprintf("meta mark & %#08x == %#08x meta mark set meta mark & %#08x masquerade", m, m, ^m),
			exprs: slices.Concat(markIs(m, true), markClear(m), []expr.Any{&expr.Masq{}}),
		}}
	}
	reject := func(f family, set string) []Rule {
		key := f.word() + " daddr . meta l4proto . th dport @" + set
		return []Rule{{
			Text:  "meta l4proto tcp " + key + " reject with tcp reset",
			exprs: slices.Concat(l4protoIs(unix.IPPROTO_TCP), serviceKey(f), []expr.Any{lookup(set, false), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}),
		}, {
			Text:  key + " reject with icmpx port-unreachable",
			exprs: slices.Concat(serviceKey(f), []expr.Any{lookup(set, false), &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}),
		}}
	}
	return []Chain{
		{Name: "nat-prerouting", Hook: &Hook{"nat", "prerouting", -100}, Rules: []Rule{dispatch(ipv4, ServicesMap4), dispatch(ipv6, ServicesMap6)}},
		{Name: "nat-output", Hook: &Hook{"nat", "output", -100}, Rules: []Rule{dispatch(ipv4, ServicesMap4), dispatch(ipv6, ServicesMap6)}},
		{Name: "nat-postrouting", Hook: &Hook{"nat", "postrouting", 100}, Rules: post},
		{Name: "filter-input", Hook: &Hook{"filter", "input", 0}, Rules: []Rule{jumpReject}},
		{Name: "filter-forward", Hook: &Hook{"filter", "forward", 0}, Rules: []Rule{
			jumpReject,
			// The first packet by its mark (set in the service-port
			// chain, cleared only in postrouting), the rest of a DNATed
			// connection, both ways, by conntrack.
			{Text: fmt.Sprintf("meta mark & %#08x == %#08x accept", m, m), exprs: append(markIs(m, true), verdict(expr.VerdictAccept, ""))},
			{Text: "ct status dnat ct state established,related accept", exprs: append(ctDNATEstablished(), verdict(expr.VerdictAccept, ""))},
		}},
		{Name: "filter-output", Hook: &Hook{"filter", "output", 0}, Rules: []Rule{jumpReject}},
		{Name: NoEndpointsChain, Rules: slices.Concat(reject(ipv4, NoEndpointsSet4), reject(ipv6, NoEndpointsSet6))},
	}
}

// serviceObjects is one service's share of a Ruleset.
type serviceObjects struct {
	key      string
	chains   []Chain
	sets     []Set
	elements []Element
	// spreads are the spread chains the service's ports go to, one
	// per port and family.
	spreads []spreadKey
	// skipped is set when the service cannot be programmed at all.
	skipped *lb.Skipped
}

// conflict returns the first element key of o that owner gives to
// another service, and that service.
func (o *serviceObjects) conflict(owner map[string]string) (string, string) {
	for _, e := range o.elements {
		if e.endpoint() {
			continue
		}
		k := e.key()[len(e.Set)+1:]
		if other, ok := owner[k]; ok && other != o.key {
			return k, other
		}
	}
	return "", ""
}

// renderService renders one service. A nil or unexposed service renders
// to nothing.
func renderService(s *lb.Service, opts Options) serviceObjects {
	if s == nil || !s.Exposed() {
		return serviceObjects{}
	}
	o := serviceObjects{key: s.Key()}
	n := 0
	for _, p := range s.Ports {
		n += (len(p.Endpoints) + 1) * len(s.ExternalIPs)
	}
	o.elements = make([]Element, 0, n)
	for _, p := range s.Ports {
		if protoNumber(p.Protocol) == 0 {
			o.skipped = &lb.Skipped{Key: s.Key(), Reason: fmt.Sprintf("port %s: protocol %q is not TCP, UDP or SCTP", p, p.Protocol)}
			return serviceObjects{key: s.Key(), skipped: o.skipped}
		}
		for _, f := range []family{ipv4, ipv6} {
			var vips []netip.Addr
			for _, ip := range s.ExternalIPs {
				if familyOf(ip) == f {
					vips = append(vips, ip.Unmap())
				}
			}
			if len(vips) == 0 {
				continue
			}
			var eps []lb.Endpoint
			for _, e := range p.ReadyEndpoints() {
				if familyOf(e.IP) == f {
					e.IP = e.IP.Unmap()
					eps = append(eps, e)
				}
			}
			set, chain := NoEndpointsSet4, ""
			if f == ipv6 {
				set = NoEndpointsSet6
			}
			if len(eps) > 0 {
				set = ServicesMap4
				if f == ipv6 {
					set = ServicesMap6
				}
				chain = o.renderPort(s, p, f, vips, eps, opts)
			}
			for _, ip := range vips {
				o.elements = append(o.elements, Element{Set: set, Addr: ip, Proto: p.Protocol, Port: p.Port, Chain: chain})
			}
		}
	}
	return o
}

// renderPort adds to o what serves port p of s in family f, at vips, over
// its ready endpoints eps, and returns the chain the dispatch map goes
// to.
//
// Without ClientIP affinity that is the port's shard of the shared
// spread chains of len(eps) endpoints, the port's endpoints going into
// its map at each of vips. With source ranges the port has a chain of
// its own first, which sends the clients inside a range on to the
// spread chain and drops the others (a service with ranges of the other
// family only drops every client of this one).
//
// With ClientIP affinity the port has a chain of its own: one rule per
// endpoint that sends a known client back, then rule i of n DNATs with
// probability 1/(n-i) and records the client, the last one always, so
// each endpoint gets 1/n. Source ranges are checked first, by rules that
// mark the clients inside a range; the unmarked are dropped.
func (o *serviceObjects) renderPort(s *lb.Service, p lb.Port, f family, vips []netip.Addr, eps []lb.Endpoint, opts Options) string {
	var ranges []netip.Prefix
	for _, r := range s.SourceRanges {
		if familyOf(r.Addr()) == f {
			ranges = append(ranges, r)
		}
	}
	if s.Affinity == lb.AffinityClientIP {
		own := ServicePortChain(p.Key(s), f == ipv6)
		c, sets := affinityChain(own, f, eps, s, ranges, opts)
		o.chains = append(o.chains, c)
		o.sets = append(o.sets, sets...)
		return own
	}
	k := newSpreadKey(p.Key(s), f, len(eps))
	o.spreads = append(o.spreads, k)
	for _, ip := range vips {
		for i, e := range eps {
			o.elements = append(o.elements, Element{Set: k.mapName(), Addr: ip, Proto: p.Protocol, Port: p.Port,
				Index: uint32(i), To: netip.AddrPortFrom(e.IP, e.Port)})
		}
	}
	if len(s.SourceRanges) == 0 {
		return k.chain()
	}
	own := ServicePortChain(p.Key(s), f == ipv6)
	c := Chain{Name: own}
	for _, r := range ranges {
		c.Rules = append(c.Rules, Rule{
			Text:  f.word() + " saddr " + r.String() + " goto " + k.chain(),
			exprs: append(saddrIn(f, r), verdict(expr.VerdictGoto, k.chain())),
		})
	}
	c.Rules = append(c.Rules, Rule{Text: "drop", exprs: []expr.Any{verdict(expr.VerdictDrop, "")}})
	o.chains = append(o.chains, c)
	return own
}

// affinityChain renders the chain of a service port with ClientIP
// affinity (see renderPort) and its affinity sets.
func affinityChain(name string, f family, eps []lb.Endpoint, s *lb.Service, ranges []netip.Prefix, opts Options) (Chain, []Set) {
	c := Chain{Name: name}
	m := opts.mark()
	mark := Rule{Text: fmt.Sprintf("meta mark set meta mark | %#08x", m), exprs: markSet(m)}
	if len(s.SourceRanges) > 0 {
		for _, r := range ranges {
			c.Rules = append(c.Rules, Rule{
				Text:  f.word() + " saddr " + r.String() + " " + mark.Text,
				exprs: append(saddrIn(f, r), markSet(m)...),
			})
		}
		c.Rules = append(c.Rules, Rule{
			Text:  fmt.Sprintf("meta mark & %#08x == 0x000000 drop", m),
			exprs: append(markIs(m, false), verdict(expr.VerdictDrop, "")),
		})
	} else {
		c.Rules = append(c.Rules, mark)
	}
	var sets []Set
	timeout := s.AffinityTimeout
	if timeout <= 0 {
		timeout = lb.DefaultAffinityTimeout
	}
	setName := func(e lb.Endpoint) string {
		// A set per endpoint, not per position, so a client keeps its
		// endpoint when others come and go; the timeout is part of the
		// name because a set's timeout cannot change.
		return "aff-" + hash(name+" "+e.String()+" "+timeout.String(), 16)
	}
	typ := "ipv4_addr"
	if f == ipv6 {
		typ = "ipv6_addr"
	}
	dnat := func(e lb.Endpoint) string {
		return "dnat " + f.word() + " to " + netip.AddrPortFrom(e.IP, e.Port).String()
	}
	for _, e := range eps {
		set := setName(e)
		sets = append(sets, Set{Name: set, Type: typ, Timeout: timeout, family: f})
		c.Rules = append(c.Rules, Rule{
			Text:  fmt.Sprintf("%s saddr @%s update @%s { %s saddr } %s", f.word(), set, set, f.word(), dnat(e)),
			exprs: append(affinityHit(f, set), dnatTo(e)...),
		})
	}
	n := len(eps)
	for i, e := range eps {
		var text []string
		var ex []expr.Any
		if i < n-1 {
			text = append(text, fmt.Sprintf("numgen random mod %d == 0", n-i))
			ex = append(ex, numgenIs(uint32(n-i))...)
		}
		set := setName(e)
		text = append(text, fmt.Sprintf("update @%s { %s saddr }", set, f.word()), dnat(e))
		ex = append(ex, affinityRecord(f, set)...)
		ex = append(ex, dnatTo(e)...)
		c.Rules = append(c.Rules, Rule{Text: strings.Join(text, " "), exprs: ex})
	}
	return c, sets
}

// endpointsIndexType is the nft type of an endpoint's index in the
// endpoints maps' keys: 32 bits in host order, as numgen writes it.
const endpointsIndexType = "mark"

// ServicePortChain returns the name of the chain of the service port with
// the given key (lb.Port.Key, "namespace/name:port/protocol"): "svc-" and
// the first 16 characters of the base32 SHA-256 of the key, the same hash
// as the iptables backend's LBD- chain; "svc6-" for the IPv6 chain.
func ServicePortChain(key string, v6 bool) string {
	if v6 {
		return "svc6-" + hash(key, 16)
	}
	return "svc-" + hash(key, 16)
}

func hash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:n]
}

// Text returns rs in nft's syntax (each rule's kernel comment left out):
// the readable form the golden tests compare. It is close to what `nft
// list` prints, not a script for `nft -f`, whose type checks refuse a few
// forms the kernel takes (a numgen index keyed as a mark, a DNAT port
// without a protocol match).
func (rs Ruleset) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", rs.Table)
	elems := map[string][]string{}
	for _, e := range rs.Elements {
		elems[e.Set] = append(elems[e.Set], e.text())
	}
	for _, s := range rs.Sets {
		kind, typ := "set", s.Type
		switch {
		case s.Map:
			kind, typ = "map", s.Type+" : verdict"
		case s.Data != "":
			kind, typ = "map", s.Type+" : "+s.Data
		}
		fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n", kind, s.Name, typ)
		if s.Timeout > 0 {
			fmt.Fprintf(&b, "\t\tflags dynamic,timeout\n\t\ttimeout %ds\n", int64(s.Timeout.Seconds()))
		}
		if s.Size > 0 {
			fmt.Fprintf(&b, "\t\tsize %d\n", s.Size)
		}
		if es := elems[s.Name]; len(es) > 0 {
			b.WriteString("\t\telements = {\n")
			for _, e := range es {
				fmt.Fprintf(&b, "\t\t\t%s,\n", e)
			}
			b.WriteString("\t\t}\n")
		}
		b.WriteString("\t}\n")
	}
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if h := c.Hook; h != nil {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy accept;\n", h.Type, h.Hook, h.Priority)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.Text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
