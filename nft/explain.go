package nft

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

// Explain says how lbd's table serves port p of the applied service s at
// addr: the element of the dispatch map (or of the no-endpoints set) and
// the chains it goes to (the port's own, the spread chain), with the
// endpoints (from the endpoints map, or the affinity rules), affinity and
// source ranges they hold, both as Render makes them of s (Want) and as
// the kernel holds them now (Have, decoded from the rules' netlink
// expressions and the map's elements). Have.Drift lists where the
// element's verdict, the chains' rules, the port's endpoints map elements
// or the base chains differ from Render's. It changes nothing.
func (b *Backend) Explain(ctx context.Context, s *lb.Service, p lb.Port, addr netip.Addr) (lb.Explanation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	addr = addr.Unmap()
	rs := Render([]lb.Service{*s}, b.opts)
	e := lb.Explanation{Backend: b.Name(), Want: explainRendered(rs, p, addr)}
	have, err := b.explainKernel(ctx, rs, p, addr)
	if err != nil {
		return lb.Explanation{}, fmt.Errorf("nft explain %s: %w", p.Key(s), err)
	}
	e.Have = have
	return e, nil
}

// portElement names the element of port p at addr in set.
func portElement(set string, p lb.Port, addr netip.Addr) string {
	return Element{Set: set, Addr: addr, Proto: p.Protocol, Port: p.Port}.key()
}

// explainRendered reads what rs does with port p at addr.
func explainRendered(rs Ruleset, p lb.Port, addr netip.Addr) lb.Live {
	l := lb.Live{Affinity: lb.AffinityNone}
	timeouts := map[string]time.Duration{}
	for _, s := range rs.Sets {
		timeouts[s.Name] = s.Timeout
	}
	chains := map[string]Chain{}
	for _, c := range rs.Chains {
		chains[c.Name] = c
	}
	for _, el := range rs.Elements {
		if el.Addr != addr || el.Proto != p.Protocol || el.Port != p.Port {
			continue
		}
		if el.endpoint() {
			l.Endpoints = append(l.Endpoints, lb.LiveEndpoint{Addr: el.To})
			continue
		}
		l.Objects = append(l.Objects, lb.LiveObject{Kind: "map element", Name: el.key(), Present: true, Detail: el.text()})
		if el.Chain == "" {
			l.Rejects = true
			continue
		}
		for _, c := range chainPath(chains, el.Chain) {
			l.Objects = append(l.Objects, chainObject(c.Name, len(c.Rules)))
			readChain(&l, c.exprs(), timeouts)
		}
	}
	return l
}

// chainPath returns the rendered chains a dispatch element's verdict
// leads through: the port's chain, and the spread chain it may go to.
func chainPath(chains map[string]Chain, start string) []Chain {
	var out []Chain
	for name := start; name != ""; {
		c, ok := chains[name]
		if !ok {
			break
		}
		out = append(out, c)
		name = goesTo(c.exprs(), name)
	}
	return out
}

// exprs returns the expressions of c's rules.
func (c Chain) exprs() [][]expr.Any {
	out := make([][]expr.Any, len(c.Rules))
	for i, r := range c.Rules {
		out[i] = r.exprs
	}
	return out
}

// goesTo returns the chain other than from that rules go to, if any.
func goesTo(rules [][]expr.Any, from string) string {
	for _, r := range rules {
		for _, x := range r {
			if v, ok := x.(*expr.Verdict); ok && v.Chain != "" && v.Chain != from {
				return v.Chain
			}
		}
	}
	return ""
}

// endpointsMaps returns the endpoints maps that rules look up.
func endpointsMaps(rules [][]expr.Any) []string {
	var out []string
	for _, r := range rules {
		for _, x := range r {
			if lk, ok := x.(*expr.Lookup); ok && lk.IsDestRegSet && strings.HasPrefix(lk.SetName, "endpoints") {
				out = append(out, lk.SetName)
			}
		}
	}
	return out
}

func chainObject(name string, rules int) lb.LiveObject {
	return lb.LiveObject{Kind: "chain", Name: name, Present: true, Detail: strconv.Itoa(rules) + " rules"}
}

// explainKernel reads the kernel's table for port p at addr; rs is what
// Render makes of the service, to compare with.
func (b *Backend) explainKernel(ctx context.Context, rs Ruleset, p lb.Port, addr netip.Addr) (lb.Live, error) {
	l := lb.Live{Affinity: lb.AffinityNone}
	c, err := b.dialRead()
	if err != nil {
		return l, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return l, fmt.Errorf("list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == b.opts.Table }) {
		l.Drift = append(l.Drift, "table inet "+b.opts.Table+" is missing")
		return l, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return l, fmt.Errorf("list chains: %w", err)
	}
	haveChain := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == b.opts.Table {
			haveChain[ch.Name] = true
		}
	}
	sets, err := c.GetSets(b.table)
	if err != nil {
		return l, fmt.Errorf("list sets: %w", err)
	}
	timeouts := map[string]time.Duration{}
	for _, s := range sets {
		timeouts[s.Name] = s.Timeout
	}
	f := familyOf(addr)
	names := []string{ServicesMap4, NoEndpointsSet4}
	if f == ipv6 {
		names = []string{ServicesMap6, NoEndpointsSet6}
	}
	key := serviceKeyBytes(addr, p.Protocol, p.Port)
	goTo := ""
	for _, s := range sets {
		if !slices.Contains(names, s.Name) {
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return l, fmt.Errorf("elements of %s: %w", s.Name, err)
		}
		for _, el := range elems {
			if !bytes.Equal(el.Key, key) {
				continue
			}
			o := lb.LiveObject{Kind: "map element", Name: portElement(s.Name, p, addr), Present: true}
			o.Detail = Element{Set: s.Name, Addr: addr, Proto: p.Protocol, Port: p.Port}.text()
			if s.IsMap {
				goTo = elementChain(el)
				o.Detail += " : goto " + goTo
			} else {
				l.Rejects = true
			}
			l.Objects = append(l.Objects, o)
		}
	}
	var want []Chain // the port's chain, and the spread chain it may go to
	rendered := map[string]Chain{}
	for _, ch := range rs.Chains {
		rendered[ch.Name] = ch
	}
	var wantEps []Element
	for _, el := range rs.Elements {
		if el.Addr != addr || el.Proto != p.Protocol || el.Port != p.Port {
			continue
		}
		if el.endpoint() {
			wantEps = append(wantEps, el)
			continue
		}
		if el.Chain == "" {
			continue
		}
		if goTo != "" && goTo != el.Chain {
			l.Drift = append(l.Drift, fmt.Sprintf("element %s goes to chain %s, want %s", Element{Addr: addr, Proto: p.Protocol, Port: p.Port}.text(), goTo, el.Chain))
		}
		want = append(want, chainPath(rendered, el.Chain)...)
	}
	if goTo == "" && len(want) > 0 {
		goTo = want[0].Name
	}
	// The kernel's rules by chain, read once each.
	type kernelChain struct {
		ids   []string
		exprs [][]expr.Any
	}
	read := map[string]kernelChain{}
	rulesOf := func(name string) (kernelChain, error) {
		if k, ok := read[name]; ok {
			return k, nil
		}
		if err := ctx.Err(); err != nil {
			return kernelChain{}, err
		}
		rules, err := c.GetRules(b.table, &nftables.Chain{Name: name, Table: b.table})
		if err != nil {
			return kernelChain{}, fmt.Errorf("rules of chain %s: %w", name, err)
		}
		var k kernelChain
		for _, r := range rules {
			id, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			k.ids = append(k.ids, id)
			k.exprs = append(k.exprs, r.Exprs)
		}
		read[name] = k
		return k, nil
	}
	// The fixed chains dispatch and reject for every service; the port's
	// own chains are the ones the element goes to.
	for _, ch := range append(fixedChains(b.opts), want...) {
		if !haveChain[ch.Name] {
			l.Drift = append(l.Drift, fmt.Sprintf("table inet %s: chain %s is missing", b.opts.Table, ch.Name))
			continue
		}
		k, err := rulesOf(ch.Name)
		if err != nil {
			return l, err
		}
		var wantIDs []string
		for _, r := range ch.Rules {
			wantIDs = append(wantIDs, r.ID(ch.Name))
		}
		if !slices.Equal(k.ids, wantIDs) {
			l.Drift = append(l.Drift, fmt.Sprintf("table inet %s: chain %s has %d rules, want %d (%s)", b.opts.Table, ch.Name, len(k.ids), len(wantIDs), firstDiff(ch, k.ids)))
		}
	}
	// What the kernel's element goes to: its chain, the chain that one
	// goes to, and the endpoints their rules look up.
	var epMaps []string
	for name, hops := goTo, 0; name != "" && haveChain[name] && hops < 2; hops++ {
		k, err := rulesOf(name)
		if err != nil {
			return l, err
		}
		l.Objects = append(l.Objects, chainObject(name, len(k.ids)))
		readChain(&l, k.exprs, timeouts)
		epMaps = append(epMaps, endpointsMaps(k.exprs)...)
		name = goesTo(k.exprs, name)
	}
	haveEps := map[string]bool{}
	for _, s := range sets {
		if !slices.Contains(epMaps, s.Name) {
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return l, fmt.Errorf("elements of %s: %w", s.Name, err)
		}
		n := len(key)
		var found []Element
		for _, el := range elems {
			if len(el.Key) != n+4 || !bytes.Equal(el.Key[:n], key) {
				continue
			}
			to, ok := decodeEndpoint(el.Val, f)
			if !ok {
				l.Drift = append(l.Drift, fmt.Sprintf("%s: element of %s with a malformed endpoint %x", s.Name, Element{Addr: addr, Proto: p.Protocol, Port: p.Port}.text(), el.Val))
				continue
			}
			found = append(found, Element{Set: s.Name, Addr: addr, Proto: p.Protocol, Port: p.Port, Index: binary.NativeEndian.Uint32(el.Key[n:]), To: to})
		}
		slices.SortFunc(found, func(a, b Element) int { return int(a.Index) - int(b.Index) })
		for _, e := range found {
			l.Endpoints = append(l.Endpoints, lb.LiveEndpoint{Addr: e.To})
			haveEps[e.text()] = true
		}
	}
	// Each index the spread draws must find its endpoint: the kernel's
	// elements for the port, index by index, are the rendered ones.
	for _, e := range wantEps {
		if !haveEps[e.text()] {
			l.Drift = append(l.Drift, fmt.Sprintf("table inet %s: %s lacks element %s", b.opts.Table, e.Set, e.text()))
		}
		delete(haveEps, e.text())
	}
	for _, t := range slices.Sorted(maps.Keys(haveEps)) {
		l.Drift = append(l.Drift, fmt.Sprintf("table inet %s: unexpected endpoints element %s", b.opts.Table, t))
	}
	return l, nil
}

// decodeEndpoint reads an endpoints map element's data: the address of
// family f, then the port (padded to 4 bytes).
func decodeEndpoint(v []byte, f family) (netip.AddrPort, bool) {
	n := int(f.addrLen())
	if len(v) != n+4 {
		return netip.AddrPort{}, false
	}
	a, ok := netip.AddrFromSlice(v[:n])
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(v[n:])), ok
}

// elementChain decodes the chain of a verdict map element: the library
// hands the verdict over undecoded, as the attributes nested in
// NFTA_DATA_VERDICT (code, then chain).
func elementChain(el nftables.SetElement) string {
	if el.VerdictData != nil {
		return el.VerdictData.Chain
	}
	ad, err := netlink.NewAttributeDecoder(el.Val)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			return string(bytes.TrimRight(ad.Bytes(), "\x00"))
		}
	}
	return ""
}

// readChain reads the endpoints, affinity and source ranges of a
// service-port chain from its rules' expressions, the rendered ones or
// the kernel's: DNAT targets from the immediates the NAT statement reads,
// ClientIP affinity from the dynamic-set updates (the timeout is the
// set's), source ranges from a masked saddr compared for equality.
func readChain(l *lb.Live, rules [][]expr.Any, timeouts map[string]time.Duration) {
	seen := map[netip.AddrPort]bool{}
	for _, r := range rules {
		imm := map[uint32][]byte{}
		saddr, masked := false, -1
		for _, x := range r {
			switch x := x.(type) {
			case *expr.Payload:
				saddr = x.Base == expr.PayloadBaseNetworkHeader &&
					((x.Offset == 12 && x.Len == 4) || (x.Offset == 8 && x.Len == 16))
				masked = -1
			case *expr.Meta:
				saddr = false
			case *expr.Bitwise:
				if saddr {
					masked = 0
					for _, b := range x.Mask {
						masked += bits.OnesCount8(b)
					}
				}
			case *expr.Cmp:
				if saddr && masked >= 0 && x.Op == expr.CmpOpEq {
					if a, ok := netip.AddrFromSlice(x.Data); ok {
						l.SourceRanges = append(l.SourceRanges, netip.PrefixFrom(a, masked))
					}
				}
				saddr = false
			case *expr.Dynset:
				l.Affinity = lb.AffinityClientIP
				l.AffinityTimeout = timeouts[x.SetName]
			case *expr.Immediate:
				imm[x.Register] = x.Data
			case *expr.NAT:
				a, ok := netip.AddrFromSlice(imm[x.RegAddrMin])
				port := imm[x.RegProtoMin]
				if x.Type != expr.NATTypeDestNAT || !ok || len(port) < 2 {
					continue
				}
				ap := netip.AddrPortFrom(a, binary.BigEndian.Uint16(port))
				if !seen[ap] {
					seen[ap] = true
					l.Endpoints = append(l.Endpoints, lb.LiveEndpoint{Addr: ap})
				}
			}
		}
	}
}
