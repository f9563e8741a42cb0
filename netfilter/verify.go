package netfilter

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/lbd/lbd/lb"
)

// saved is what iptables-save printed for the tables lbd uses.
type saved struct {
	nat, filter savedTable
}

// savedTable holds every chain of one table, in order, with its rules.
type savedTable struct {
	order []string
	rules map[string][]string
}

// table returns the saved table by name ("nat" or "filter").
func (s *saved) table(name string) *savedTable {
	if name == "nat" {
		return &s.nat
	}
	return &s.filter
}

// chainNames returns the chains lbd owns (by prefix), in save order.
func (t *savedTable) chainNames() []string {
	var out []string
	for _, c := range t.order {
		if strings.HasPrefix(c, ChainPrefix) {
			out = append(out, c)
		}
	}
	return out
}

// save reads the nat and filter tables with one iptables-save call.
func (b *Backend) save(ctx context.Context) (*saved, error) {
	b.commands.Add(1)
	out, err := b.run(ctx, nil, b.opts.binary()+"-save")
	if err != nil {
		return nil, fmt.Errorf("netfilter save: %w", err)
	}
	s, err := parseSave(out)
	if err != nil {
		return nil, fmt.Errorf("netfilter save: %w", err)
	}
	return s, nil
}

// parseSave parses iptables-save output; tables other than nat and filter
// are skipped. It is total: any input gives a result or an error, never a
// panic, and a line may be of any length (the output is already in memory,
// so no scanner buffer can cut it short). Output that iptables-save would
// not print is an error naming the line: a table not ended by COMMIT (the
// output was cut short), a rule of a chain the table did not declare, a
// chain declared twice, or a line that is none of these.
func parseSave(out []byte) (*saved, error) {
	s := &saved{}
	var (
		cur     *savedTable // the table being read; nil in a skipped one
		table   string      // the table being read, "" between tables
		lineNum int
	)
	bad := func(format string, a ...any) (*saved, error) {
		return nil, fmt.Errorf("iptables-save output line %d: %s", lineNum, fmt.Sprintf(format, a...))
	}
	// One copy of the output: every chain name and rule is a substring of
	// it, not an allocation of its own (120,000 rules at 10,000 services).
	for l := range strings.Lines(string(out)) {
		lineNum++
		l = strings.TrimSuffix(l, "\n")
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "*"):
			if table != "" {
				return bad("table %s starts inside table %s", quoteLine(l[1:]), table)
			}
			table = quoteLine(l[1:])
			switch l[1:] {
			case "nat":
				cur = &s.nat
			case "filter":
				cur = &s.filter
			default:
				cur = nil
			}
			if cur != nil && cur.rules == nil {
				cur.rules = map[string][]string{}
			}
		case l == "COMMIT":
			if table == "" {
				return bad("COMMIT outside a table")
			}
			table, cur = "", nil
		case table == "":
			return bad("unexpected %s outside a table", quoteLine(l))
		case cur == nil:
			// A line of a table lbd does not read.
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			if name == "" {
				return bad("chain without a name")
			}
			if _, ok := cur.rules[name]; ok {
				return bad("chain %s declared twice", quoteLine(name))
			}
			cur.order = append(cur.order, name)
			cur.rules[name] = nil
		case strings.HasPrefix(l, "-A "):
			name, _, _ := strings.Cut(l[3:], " ")
			if name == "" {
				return bad("rule without a chain name")
			}
			if _, ok := cur.rules[name]; !ok {
				return bad("rule of undeclared chain %s", quoteLine(name))
			}
			cur.rules[name] = append(cur.rules[name], l)
		default:
			return bad("unexpected %s", quoteLine(l))
		}
	}
	if table != "" {
		return nil, fmt.Errorf("iptables-save output: table %s is not ended by COMMIT (output cut short?)", table)
	}
	return s, nil
}

// quoteLine quotes text of iptables-save output for an error message,
// shortened to 80 bytes.
func quoteLine(l string) string {
	if len(l) > 80 {
		return strconv.Quote(l[:80]) + "..."
	}
	return strconv.Quote(l)
}

// Verify compares the kernel's rules with what Render makes of applied
// (one iptables-save call) and returns one line per difference: a missing,
// changed or unexpected lbd chain, or a missing jump from a built-in chain.
// When it finds any, the next Apply rewrites every chain, which repairs
// them. The order of LBD-SERVICES and LBD-FILTER rules is not compared
// (their matches do not overlap, and partial syncs append).
func (b *Backend) Verify(ctx context.Context, applied []lb.Service) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, err := b.save(ctx)
	if err != nil {
		return nil, err
	}
	owner := map[string]string{}
	for i := range applied {
		for _, p := range applied[i].Ports {
			owner[ServicePortChain(p.Key(&applied[i]))] = p.Key(&applied[i])
		}
	}
	// The service-port chains are rendered and compared one service at a
	// time, so that the whole rendered ruleset (as large again as the
	// saved one) is never held; assemble then makes the shared chains of
	// what is left. The differences come in Render's order all the same.
	rs := make([]serviceRules, 0, len(applied))
	var portDiffs []string
	portChains := map[string]bool{}
	for i := range applied {
		r := renderService(&applied[i], b.opts)
		if r.skipped != nil {
			r.chains = nil // assemble leaves the service out, as Render does
		}
		for _, c := range r.chains {
			portChains[c.Name] = true
			portDiffs = append(portDiffs, chainDiffs("nat", c, owner, &cur.nat)...)
		}
		r.chains = nil
		rs = append(rs, r)
	}
	want := assemble(rs, b.opts)
	var diffs []string
	for _, t := range []struct {
		name string
		want []Chain
		have *savedTable
	}{{"nat", want.NAT, &cur.nat}, {"filter", want.Filter, &cur.filter}} {
		expected := map[string]bool{}
		for i, c := range t.want {
			expected[c.Name] = true
			diffs = append(diffs, chainDiffs(t.name, c, owner, t.have)...)
			// Render puts the service-port chains after LBD-SERVICES and
			// LBD-POSTROUTING.
			if t.name == "nat" && i == 1 {
				diffs = append(diffs, portDiffs...)
			}
		}
		for _, c := range t.have.chainNames() {
			if !expected[c] && (t.name != "nat" || !portChains[c]) {
				diffs = append(diffs, fmt.Sprintf("%s chain %s is not lbd's current state (stale)", t.name, c))
			}
		}
		for _, j := range jumps {
			if j.table == t.name && !slices.Contains(t.have.rules[j.chain], j.line()) {
				diffs = append(diffs, fmt.Sprintf("%s %s: jump to %s is missing", t.name, j.chain, j.target))
			}
		}
	}
	if len(diffs) > 0 {
		b.dirty = true
	}
	return diffs, nil
}

// chainDiffs compares the rendered chain c of table with the saved one
// and returns a line per difference; owner names the service of a
// service-port chain.
func chainDiffs(table string, c Chain, owner map[string]string, have *savedTable) []string {
	label := c.Name
	if k := owner[c.Name]; k != "" {
		label += " (" + k + ")"
	}
	got, ok := have.rules[c.Name]
	var diffs []string
	switch {
	case !ok:
		diffs = append(diffs, fmt.Sprintf("%s chain %s is missing", table, label))
	case c.Name == ServicesChain || c.Name == FilterChain || strings.HasPrefix(c.Name, NetChainPrefix):
		for _, l := range without(c.Rules, got) {
			diffs = append(diffs, fmt.Sprintf("%s chain %s: missing rule %q", table, label, l))
		}
		for _, l := range without(got, c.Rules) {
			diffs = append(diffs, fmt.Sprintf("%s chain %s: unexpected rule %q", table, label, l))
		}
	case !slices.Equal(c.Rules, got):
		diffs = append(diffs, fmt.Sprintf("%s chain %s: has %d rules, want %d (%s)", table, label, len(got), len(c.Rules), firstDiff(c.Rules, got)))
	}
	return diffs
}

// without returns the lines of a that are not in b, in a's order. Unlike
// minus it takes time linear in both (LBD-SERVICES holds a rule per
// external IP and port).
func without(a, b []string) []string {
	in := make(map[string]struct{}, len(b))
	for _, l := range b {
		in[l] = struct{}{}
	}
	var out []string
	for _, l := range a {
		if _, ok := in[l]; !ok {
			out = append(out, l)
		}
	}
	return out
}

func firstDiff(want, got []string) string {
	for i := range max(len(want), len(got)) {
		switch {
		case i >= len(got):
			return fmt.Sprintf("missing %q", want[i])
		case i >= len(want):
			return fmt.Sprintf("extra %q", got[i])
		case want[i] != got[i]:
			return fmt.Sprintf("rule %d is %q, want %q", i+1, got[i], want[i])
		}
	}
	return "same rules"
}
