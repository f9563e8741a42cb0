package nft

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
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
// the service-port chain it goes to, with the endpoints, affinity and
// source ranges those rules hold, both as Render makes them of s (Want)
// and as the kernel holds them now (Have, decoded from the rules' netlink
// expressions). Have.Drift lists where the element's verdict, the chain's
// rules or the base chains differ from Render's. It changes nothing.
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
	for _, el := range rs.Elements {
		if el.Addr != addr || el.Proto != p.Protocol || el.Port != p.Port {
			continue
		}
		l.Objects = append(l.Objects, lb.LiveObject{Kind: "map element", Name: el.key(), Present: true, Detail: el.text()})
		if el.Chain == "" {
			l.Rejects = true
			continue
		}
		for _, c := range rs.Chains {
			if c.Name == el.Chain {
				l.Objects = append(l.Objects, chainObject(c.Name, len(c.Rules)))
				var rules [][]expr.Any
				for _, r := range c.Rules {
					rules = append(rules, r.exprs)
				}
				readChain(&l, rules, timeouts)
			}
		}
	}
	return l
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
	var want *Chain
	for _, el := range rs.Elements {
		if el.Addr == addr && el.Proto == p.Protocol && el.Port == p.Port && el.Chain != "" {
			if goTo != "" && goTo != el.Chain {
				l.Drift = append(l.Drift, fmt.Sprintf("element %s goes to chain %s, want %s", Element{Addr: addr, Proto: p.Protocol, Port: p.Port}.text(), goTo, el.Chain))
			}
			for i := range rs.Chains {
				if rs.Chains[i].Name == el.Chain {
					want = &rs.Chains[i]
				}
			}
		}
	}
	if goTo == "" && want != nil {
		goTo = want.Name
	}
	// The fixed chains dispatch and reject for every service; the port's
	// own chain is the one the element goes to.
	check := fixedChains(b.opts)
	if want != nil {
		check = append(check, *want)
	}
	for _, ch := range check {
		if !haveChain[ch.Name] {
			l.Drift = append(l.Drift, fmt.Sprintf("table inet %s: chain %s is missing", b.opts.Table, ch.Name))
			continue
		}
		if err := ctx.Err(); err != nil {
			return l, err
		}
		rules, err := c.GetRules(b.table, &nftables.Chain{Name: ch.Name, Table: b.table})
		if err != nil {
			return l, fmt.Errorf("rules of chain %s: %w", ch.Name, err)
		}
		var ids []string
		var exprs [][]expr.Any
		for _, r := range rules {
			id, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			ids = append(ids, id)
			exprs = append(exprs, r.Exprs)
		}
		var wantIDs []string
		for _, r := range ch.Rules {
			wantIDs = append(wantIDs, r.ID(ch.Name))
		}
		if !slices.Equal(ids, wantIDs) {
			l.Drift = append(l.Drift, fmt.Sprintf("table inet %s: chain %s has %d rules, want %d (%s)", b.opts.Table, ch.Name, len(ids), len(wantIDs), firstDiff(ch, ids)))
		}
		if ch.Name == goTo {
			l.Objects = append(l.Objects, chainObject(ch.Name, len(rules)))
			readChain(&l, exprs, timeouts)
		}
	}
	if goTo != "" && (want == nil || goTo != want.Name) && haveChain[goTo] {
		// The element goes somewhere Render does not: say what is there.
		rules, err := c.GetRules(b.table, &nftables.Chain{Name: goTo, Table: b.table})
		if err != nil {
			return l, fmt.Errorf("rules of chain %s: %w", goTo, err)
		}
		var exprs [][]expr.Any
		for _, r := range rules {
			exprs = append(exprs, r.Exprs)
		}
		l.Objects = append(l.Objects, chainObject(goTo, len(rules)))
		readChain(&l, exprs, timeouts)
	}
	return l, nil
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
