package nft

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
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
	// "daddr . l4proto . dport : goto <service-port chain>".
	ServicesMap4 = "services4"
	ServicesMap6 = "services6"
	// NoEndpointsSet4 and NoEndpointsSet6 hold the service ports without
	// a ready endpoint, which are rejected.
	NoEndpointsSet4 = "noendpoints4"
	NoEndpointsSet6 = "noendpoints6"
	// NoEndpointsChain rejects them (TCP reset, ICMP port unreachable).
	NoEndpointsChain = "noendpoints"
	// EndpointsMaps maps, "endpoints4-00" to "endpoints4-7f" and
	// "endpoints6-00" to "endpoints6-7f", hold the endpoints of every
	// service port without affinity, "chain id . index : address .
	// port", where the chain's spread rule looks up "id . numgen random
	// mod n". A chain's map is chosen by its id (see [EndpointsMap]).
	//
	// Why shards: the kernel checks every element of a map against
	// every rule that looks it up, once when either is added, so one
	// map for 10,000 services of 10 endpoints costs 10^9 checks (17 s);
	// 128 maps cost 1/128 of that, while each lookup of a map by name
	// walks the table's list of sets, which 256 sets keep short.
	EndpointsMaps = 128
)

// EndpointsMap returns the name of the endpoints map of a service-port
// chain of the given family.
func EndpointsMap(chain string, v6 bool) string { return endpointsMap(chainID(chain), v6) }

var endpointsMapNames = func() (names [2][EndpointsMaps]string) {
	for i := range EndpointsMaps {
		names[0][i] = fmt.Sprintf("endpoints4-%02x", i)
		names[1][i] = fmt.Sprintf("endpoints6-%02x", i)
	}
	return names
}()

func endpointsMap(id [2]uint32, v6 bool) string {
	f := 0
	if v6 {
		f = 1
	}
	return endpointsMapNames[f][id[0]%EndpointsMaps]
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
	family  family
	concat  bool
}

// Element is one element of a dispatch map or a no-endpoints set (an
// external address, protocol and port), or of an endpoints map (the
// Index-th endpoint To of the service-port chain Chain).
type Element struct {
	Set   string
	Addr  netip.Addr
	Proto lb.Protocol
	Port  uint16
	// Chain is the verdict ("goto Chain") of a dispatch map element;
	// empty in a set. In an endpoints map, the chain whose endpoint
	// this is.
	Chain string
	// Index and To: the endpoint of an endpoints map element.
	Index uint32
	To    netip.AddrPort
	// id is chainID(Chain) in an endpoints map element.
	id [2]uint32
}

// endpoint reports whether e is an element of an endpoints map.
func (e Element) endpoint() bool { return e.To.IsValid() }

// key identifies e within its set: what the kernel keys it by.
func (e Element) key() string {
	if e.endpoint() {
		return e.Set + " " + e.Chain + "#" + strconv.FormatUint(uint64(e.Index), 10)
	}
	return e.Set + " " + netip.AddrPortFrom(e.Addr, e.Port).String() + "/" + string(e.Proto)
}

// sameValue reports whether e and o, of the same key, map to the same.
func (e Element) sameValue(o Element) bool { return e.Chain == o.Chain && e.To == o.To }

func (e Element) text() string {
	if e.endpoint() {
		id := e.id
		return fmt.Sprintf("%#08x . %#08x . %d : %s . %d", id[0], id[1], e.Index, e.To.Addr(), e.To.Port())
	}
	s := fmt.Sprintf("%s . %s . %d", e.Addr, strings.ToLower(string(e.Proto)), e.Port)
	if e.Chain != "" {
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

// assemble joins rendered services and the fixed objects into a Ruleset.
// A service claiming an address, protocol and port that an earlier one
// holds is skipped whole, and so is one whose chain id (see
// [EndpointsMap]) an earlier chain has, which 64 bits make unlikely
// (about 10^-11 at 10,000 chains) but not impossible.
func assemble(objs []serviceObjects, opts Options) Ruleset {
	rs := Ruleset{Table: opts.table(), Sets: fixedSets(), Chains: fixedChains(opts)}
	// Sized in advance: growing these slices of structs with pointers
	// was a third of the user time of a full program at 10,000 services.
	nSets, nChains, nElems := len(rs.Sets), len(rs.Chains), 0
	for _, o := range objs {
		nSets, nChains, nElems = nSets+len(o.sets), nChains+len(o.chains), nElems+len(o.elements)
	}
	rs.Sets = slices.Grow(rs.Sets, nSets-len(rs.Sets))
	rs.Chains = slices.Grow(rs.Chains, nChains-len(rs.Chains))
	rs.Elements = make([]Element, 0, nElems)
	owner := make(map[string]string, len(objs))
	ids := make(map[[2]uint32]string, nChains)
	for _, o := range objs {
		if o.skipped != nil {
			rs.Skipped = append(rs.Skipped, *o.skipped)
			continue
		}
		if k, other := o.conflict(owner); other != "" {
			rs.Skipped = append(rs.Skipped, lb.Skipped{Key: o.key, Reason: k + " is already served by " + other})
			continue
		}
		chainIDs := o.chainIDs()
		if ch, other := o.idConflict(ids, chainIDs); other != "" {
			rs.Skipped = append(rs.Skipped, lb.Skipped{Key: o.key, Reason: "chain " + ch + " has the endpoints map id of chain " + other})
			continue
		}
		for _, e := range o.elements {
			if !e.endpoint() {
				owner[e.key()[len(e.Set)+1:]] = o.key
			}
		}
		for i, c := range o.chains {
			ids[chainIDs[i]] = c.Name
		}
		rs.Sets = append(rs.Sets, o.sets...)
		rs.Chains = append(rs.Chains, o.chains...)
		rs.Elements = append(rs.Elements, o.elements...)
	}
	return rs
}

func fixedSets() []Set {
	return append(dispatchSets(), endpointsMaps()...)
}

// endpointsMaps are the shards of the endpoints maps, IPv4 then IPv6.
func endpointsMaps() []Set {
	var out []Set
	for _, f := range []family{ipv4, ipv6} {
		for i := range EndpointsMaps {
			out = append(out, Set{Name: fmt.Sprintf("endpoints%d-%02x", f, i), Type: endpointsKeyType,
				Data: f.word()[:2] + "v" + strconv.Itoa(int(f)) + "_addr . inet_service", family: f, concat: true})
		}
	}
	return out
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

// idConflict returns the first chain of o whose id ids gives to another
// chain, and that chain.
func (o *serviceObjects) idConflict(ids map[[2]uint32]string, chainIDs [][2]uint32) (string, string) {
	for i, c := range o.chains {
		if other, ok := ids[chainIDs[i]]; ok && other != c.Name {
			return c.Name, other
		}
	}
	return "", ""
}

// chainIDs returns the id of each chain of o.
func (o *serviceObjects) chainIDs() [][2]uint32 {
	out := make([][2]uint32, len(o.chains))
	for i, c := range o.chains {
		out[i] = chainID(c.Name)
	}
	return out
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
		n += len(p.Endpoints) + len(s.ExternalIPs)
	}
	o.elements = make([]Element, 0, n)
	for _, p := range s.Ports {
		if protoNumber(p.Protocol) == 0 {
			o.skipped = &lb.Skipped{Key: s.Key(), Reason: fmt.Sprintf("port %s: protocol %q is not TCP, UDP or SCTP", p, p.Protocol)}
			return serviceObjects{key: s.Key(), skipped: o.skipped}
		}
		key := p.Key(s)
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
				chain = ServicePortChain(key, f == ipv6)
				set = ServicesMap4
				if f == ipv6 {
					set = ServicesMap6
				}
				var c Chain
				var sets []Set
				c, sets, o.elements = portChain(chain, f, eps, s, opts, o.elements)
				o.chains = append(o.chains, c)
				o.sets = append(o.sets, sets...)
			}
			for _, ip := range vips {
				o.elements = append(o.elements, Element{Set: set, Addr: ip, Proto: p.Protocol, Port: p.Port, Chain: chain})
			}
		}
	}
	return o
}

// portChain renders the chain of one service port and family with ready
// endpoints, its affinity sets and its endpoints map elements: the
// source-range check, the mark, then the spread. Without affinity the
// spread is one rule, "dnat to <chain id> . numgen random mod n map
// @endpoints4", the map holding the chain's n endpoints (one endpoint:
// a plain dnat). With ClientIP affinity it is one rule per endpoint that
// sends a known client back, then rule i of n DNATs with probability
// 1/(n-i) and records the client, the last one always, so each endpoint
// gets 1/n.
//
// Why one rule: the kernel's cost of a transaction grows with the rules
// and expressions of the whole table (it parses each expression, and
// every commit walks all the table's rules to validate them), while map
// elements are cheap and their changes need no validation.
// The elements are appended to elems.
func portChain(name string, f family, eps []lb.Endpoint, s *lb.Service, opts Options, elems []Element) (Chain, []Set, []Element) {
	c := Chain{Name: name}
	m := opts.mark()
	mark := Rule{Text: fmt.Sprintf("meta mark set meta mark | %#08x", m), exprs: markSet(m)}
	var ranges []netip.Prefix
	for _, r := range s.SourceRanges {
		if familyOf(r.Addr()) == f {
			ranges = append(ranges, r)
		}
	}
	if len(s.SourceRanges) > 0 {
		// Only clients inside a range get the mark; the others are
		// dropped. A service with ranges of the other family only
		// drops every client of this one.
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
	if s.Affinity != lb.AffinityClientIP {
		spread := spreadRule(name, f, eps)
		if len(s.SourceRanges) == 0 {
			// One rule marks and DNATs: a rule costs the kernel more
			// than its expressions do.
			c.Rules = c.Rules[:0]
			spread = Rule{Text: mark.Text + " " + spread.Text, exprs: slices.Concat(mark.exprs, spread.exprs)}
		}
		c.Rules = append(c.Rules, spread)
		if len(eps) == 1 {
			return c, nil, elems
		}
		id := chainID(name)
		set := endpointsMap(id, f == ipv6)
		for i, e := range eps {
			elems = append(elems, Element{Set: set, Chain: name, Index: uint32(i), To: netip.AddrPortFrom(e.IP, e.Port), id: id})
		}
		return c, nil, elems
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
	return c, sets, elems
}

// spreadRule is the DNAT of a chain without affinity: to the only
// endpoint, or through the endpoints map.
func spreadRule(chain string, f family, eps []lb.Endpoint) Rule {
	if len(eps) == 1 {
		e := eps[0]
		return Rule{Text: "dnat " + f.word() + " to " + netip.AddrPortFrom(e.IP, e.Port).String(), exprs: dnatTo(e)}
	}
	id := chainID(chain)
	set := endpointsMap(id, f == ipv6)
	return Rule{
		Text:  fmt.Sprintf("dnat %s to %#08x . %#08x . numgen random mod %d map @%s", f.word(), id[0], id[1], len(eps), set),
		exprs: dnatSpread(f, id, uint32(len(eps)), set),
	}
}

// endpointsKeyType is the key of the endpoints maps: the chain id, two
// 32-bit words, and the endpoint's index.
const endpointsKeyType = "mark . mark . mark"

// chainID is the id of a service-port chain in the endpoints maps: the
// first 64 bits of the SHA-256 of its name, as two host-order words.
func chainID(chain string) [2]uint32 {
	sum := sha256.Sum256([]byte(chain))
	return [2]uint32{binary.BigEndian.Uint32(sum[0:4]), binary.BigEndian.Uint32(sum[4:8])}
}

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

// Text returns rs in nft's syntax, as `nft -f` would take it (each rule's
// kernel comment left out): the readable form the golden tests compare.
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
