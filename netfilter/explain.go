package netfilter

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lbd/lbd/lb"
)

// Explain says how the kernel serves port p of the applied service s at
// addr: the jump in LBD-SERVICES, the service-port chain (or the reject
// in LBD-FILTER when no endpoint is ready) and what they do, both as
// Render makes them of s (Want) and as one iptables-save reads them now
// (Have). Have.Drift lists the rules of this port that differ from
// Render's, and the built-in chains' jumps that are missing. It changes
// nothing.
func (b *Backend) Explain(ctx context.Context, s *lb.Service, p lb.Port, addr netip.Addr) (lb.Explanation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, err := b.save(ctx)
	if err != nil {
		return lb.Explanation{}, fmt.Errorf("explain %s: %w", p.Key(s), err)
	}
	rs := Render([]lb.Service{*s}, b.opts)
	want := &saved{nat: tableOf(rs.NAT), filter: tableOf(rs.Filter)}
	e := lb.Explanation{
		Backend: "iptables",
		Want:    describePort(want, s, p, addr),
		Have:    describePort(cur, s, p, addr),
	}
	e.Have.Drift = portDrift(want, cur, s, p, addr)
	return e, nil
}

// tableOf makes rendered chains look like a saved table.
func tableOf(chains []Chain) savedTable {
	t := savedTable{rules: map[string][]string{}}
	for _, c := range chains {
		t.order = append(t.order, c.Name)
		t.rules[c.Name] = c.Rules
	}
	return t
}

// portMatch is the start of every rule lbd writes for port p at addr, in
// LBD-SERVICES and LBD-FILTER, up to the comment.
func portMatch(chain string, p lb.Port, addr netip.Addr) string {
	proto := strings.ToLower(string(p.Protocol))
	return fmt.Sprintf("-A %s -d %s/32 -p %s -m %s --dport %d ", chain, addr.Unmap(), proto, proto, p.Port)
}

// describePort reads what t does with port p at addr.
func describePort(t *saved, s *lb.Service, p lb.Port, addr netip.Addr) lb.Live {
	l := lb.Live{Affinity: lb.AffinityNone}
	chain := ServicePortChain(p.Key(s))
	// LBD-SERVICES jumps to the chain of addr's /24, which jumps to the
	// service-port chain.
	dispatch := NetChain(addr)
	netJump := lb.LiveObject{Kind: "jump", Name: "nat " + ServicesChain + " -> " + dispatch}
	for _, r := range t.nat.rules[ServicesChain] {
		if strings.HasSuffix(r, " -j "+dispatch) {
			netJump.Present, netJump.Detail = true, r
		}
	}
	jump := lb.LiveObject{Kind: "jump", Name: "nat " + dispatch + " -> " + chain}
	for _, r := range t.nat.rules[dispatch] {
		if strings.HasPrefix(r, portMatch(dispatch, p, addr)) && strings.HasSuffix(r, " -j "+chain) {
			jump.Present, jump.Detail = true, r
		}
	}
	for _, r := range t.filter.rules[FilterChain] {
		if strings.HasPrefix(r, portMatch(FilterChain, p, addr)) && strings.Contains(r, " -j REJECT") {
			l.Rejects = true
			l.Objects = append(l.Objects, lb.LiveObject{Kind: "reject", Name: "filter " + FilterChain, Present: true, Detail: r})
		}
	}
	rules, ok := t.nat.rules[chain]
	if !jump.Present && !ok {
		return l
	}
	l.Objects = append(l.Objects, netJump, jump,
		lb.LiveObject{Kind: "chain", Name: "nat " + chain, Present: ok, Detail: strconv.Itoa(len(rules)) + " rules"})
	seen := map[netip.AddrPort]bool{}
	for _, r := range rules {
		f := strings.Fields(r)
		if src := flagValue(f, "-s"); src != "" && flagValue(f, "-j") == "MARK" {
			if pr, err := netip.ParsePrefix(src); err == nil {
				l.SourceRanges = append(l.SourceRanges, pr)
			}
		}
		if secs := flagValue(f, "--seconds"); secs != "" {
			l.Affinity = lb.AffinityClientIP
			if n, err := strconv.Atoi(secs); err == nil {
				l.AffinityTimeout = time.Duration(n) * time.Second
			}
		}
		if to := flagValue(f, "--to-destination"); to != "" {
			if ap, err := netip.ParseAddrPort(to); err == nil && !seen[ap] {
				seen[ap] = true
				l.Endpoints = append(l.Endpoints, lb.LiveEndpoint{Addr: ap})
			}
		}
	}
	return l
}

// flagValue returns the word after the first flag in f, or "".
func flagValue(f []string, flag string) string {
	if i := slices.Index(f, flag); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	return ""
}

// portDrift compares the rules of port p at addr in have with want's, and
// checks the built-in chains' jumps that every service needs.
func portDrift(want, have *saved, s *lb.Service, p lb.Port, addr netip.Addr) []string {
	var out []string
	for _, t := range []struct {
		name       string
		want, have *savedTable
		chain      string
	}{{"nat", &want.nat, &have.nat, NetChain(addr)}, {"filter", &want.filter, &have.filter, FilterChain}} {
		m := portMatch(t.chain, p, addr)
		mine := func(rs []string) []string {
			var out []string
			for _, r := range rs {
				if strings.HasPrefix(r, m) {
					out = append(out, r)
				}
			}
			return out
		}
		w, h := mine(t.want.rules[t.chain]), mine(t.have.rules[t.chain])
		for _, r := range without(w, h) {
			out = append(out, fmt.Sprintf("%s %s: missing rule %q", t.name, t.chain, r))
		}
		for _, r := range without(h, w) {
			out = append(out, fmt.Sprintf("%s %s: unexpected rule %q", t.name, t.chain, r))
		}
	}
	if d := NetChain(addr); len(want.nat.rules[d]) > 0 {
		jump := "-A " + ServicesChain + " -d " + netOf(addr).String() + " -j " + d
		if slices.Contains(want.nat.rules[ServicesChain], jump) && !slices.Contains(have.nat.rules[ServicesChain], jump) {
			out = append(out, fmt.Sprintf("nat %s: missing rule %q", ServicesChain, jump))
		}
	}
	chain := ServicePortChain(p.Key(s))
	if w, ok := want.nat.rules[chain]; ok {
		h, there := have.nat.rules[chain]
		switch {
		case !there:
			out = append(out, fmt.Sprintf("nat chain %s is missing", chain))
		case !slices.Equal(w, h):
			out = append(out, fmt.Sprintf("nat chain %s: has %d rules, want %d (%s)", chain, len(h), len(w), firstDiff(w, h)))
		}
	}
	for _, j := range jumps {
		if j.target != PostroutingChain && j.target != ForwardChain && !slices.Contains(have.table(j.table).rules[j.chain], j.line()) {
			out = append(out, fmt.Sprintf("%s %s: jump to %s is missing", j.table, j.chain, j.target))
		}
	}
	return out
}
