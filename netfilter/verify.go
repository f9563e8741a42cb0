package netfilter

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
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
	return parseSave(out), nil
}

// parseSave parses iptables-save output; tables other than nat and filter
// are ignored.
func parseSave(out []byte) *saved {
	s := &saved{}
	var cur *savedTable
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "*nat"):
			cur = &s.nat
		case strings.HasPrefix(l, "*filter"):
			cur = &s.filter
		case strings.HasPrefix(l, "*"):
			cur = nil
		case cur == nil:
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			cur.order = append(cur.order, name)
			if cur.rules == nil {
				cur.rules = map[string][]string{}
			}
			if _, ok := cur.rules[name]; !ok {
				cur.rules[name] = nil
			}
		case strings.HasPrefix(l, "-A "):
			name, _, _ := strings.Cut(l[3:], " ")
			cur.rules[name] = append(cur.rules[name], l)
		}
	}
	return s
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
	want := Render(applied, b.opts)
	owner := map[string]string{}
	for i := range applied {
		for _, p := range applied[i].Ports {
			owner[ServicePortChain(p.Key(&applied[i]))] = p.Key(&applied[i])
		}
	}
	var diffs []string
	for _, t := range []struct {
		name string
		want []Chain
		have *savedTable
	}{{"nat", want.NAT, &cur.nat}, {"filter", want.Filter, &cur.filter}} {
		expected := map[string]bool{}
		for _, c := range t.want {
			expected[c.Name] = true
			label := c.Name
			if k := owner[c.Name]; k != "" {
				label += " (" + k + ")"
			}
			got, ok := t.have.rules[c.Name]
			switch {
			case !ok:
				diffs = append(diffs, fmt.Sprintf("%s chain %s is missing", t.name, label))
			case c.Name == ServicesChain || c.Name == FilterChain || strings.HasPrefix(c.Name, NetChainPrefix):
				for _, l := range minus(c.Rules, got) {
					diffs = append(diffs, fmt.Sprintf("%s chain %s: missing rule %q", t.name, label, l))
				}
				for _, l := range minus(got, c.Rules) {
					diffs = append(diffs, fmt.Sprintf("%s chain %s: unexpected rule %q", t.name, label, l))
				}
			case !slices.Equal(c.Rules, got):
				diffs = append(diffs, fmt.Sprintf("%s chain %s: has %d rules, want %d (%s)", t.name, label, len(got), len(c.Rules), firstDiff(c.Rules, got)))
			}
		}
		for _, c := range t.have.chainNames() {
			if !expected[c] {
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
