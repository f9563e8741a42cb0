package nft

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

// Verify compares lbd's table in the kernel with what Render makes of
// applied and returns one line per difference: a missing table, chain or
// set, a chain whose rules differ (rules are compared by the hash of
// their text that each carries as its comment), an unexpected chain or
// set, a missing or unexpected map element, or a map element with
// another verdict or endpoint. When it finds any,
// the next Apply rewrites the whole table, which repairs them. It reads
// one dump per chain plus a few; it changes nothing.
func (b *Backend) Verify(ctx context.Context, applied []lb.Service) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	diffs, err := b.verify(ctx, Render(applied, b.opts))
	if len(diffs) > 0 {
		b.dirty = true
	}
	return diffs, err
}

func (b *Backend) verify(ctx context.Context, want Ruleset) ([]string, error) {
	c, err := b.dialRead()
	if err != nil {
		return nil, fmt.Errorf("nft verify: %w", err)
	}
	name := "table inet " + b.opts.Table
	b.calls.Add(1)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nft verify: list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == b.opts.Table }) {
		return []string{name + " is missing"}, nil
	}
	var diffs []string
	b.calls.Add(1)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nft verify: list chains: %w", err)
	}
	have := map[string]bool{}
	for _, ch := range chains {
		if ch.Table.Name == b.opts.Table {
			have[ch.Name] = true
		}
	}
	var all map[string][]string
	if b.ruleIDs != nil {
		b.calls.Add(1)
		if all, err = b.ruleIDs(b.opts.Table); err != nil {
			return nil, fmt.Errorf("nft verify: %w", err)
		}
	}
	expected := map[string]bool{}
	for _, ch := range want.Chains {
		expected[ch.Name] = true
		if !have[ch.Name] {
			diffs = append(diffs, fmt.Sprintf("%s: chain %s is missing", name, ch.Name))
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("nft verify: %w", err)
		}
		got := all[ch.Name]
		if all == nil {
			b.calls.Add(1)
			rules, err := c.GetRules(b.table, &nftables.Chain{Name: ch.Name, Table: b.table})
			if err != nil {
				return nil, fmt.Errorf("nft verify: rules of chain %s: %w", ch.Name, err)
			}
			for _, r := range rules {
				id, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				got = append(got, id)
			}
		}
		var ids []string
		for _, r := range ch.Rules {
			ids = append(ids, r.ID(ch.Name))
		}
		if !slices.Equal(ids, got) {
			diffs = append(diffs, fmt.Sprintf("%s: chain %s has %d rules, want %d (%s)", name, ch.Name, len(got), len(ids), firstDiff(ch, got)))
		}
	}
	for _, ch := range chains {
		if ch.Table.Name == b.opts.Table && !expected[ch.Name] {
			diffs = append(diffs, fmt.Sprintf("%s: chain %s is not lbd's current state (stale)", name, ch.Name))
		}
	}
	b.calls.Add(1)
	sets, err := c.GetSets(b.table)
	if err != nil {
		return nil, fmt.Errorf("nft verify: list sets: %w", err)
	}
	haveSets := map[string]*nftables.Set{}
	for _, s := range sets {
		haveSets[s.Name] = s
	}
	wantSets := map[string]bool{}
	for _, s := range want.Sets {
		wantSets[s.Name] = true
		if haveSets[s.Name] == nil {
			diffs = append(diffs, fmt.Sprintf("%s: set %s is missing", name, s.Name))
		}
	}
	for _, s := range sets {
		if !wantSets[s.Name] {
			diffs = append(diffs, fmt.Sprintf("%s: set %s is not lbd's current state (stale)", name, s.Name))
		}
	}
	bySet := map[string][]int{}
	for i, e := range want.Elements {
		bySet[e.Set] = append(bySet[e.Set], i)
	}
	for _, want1 := range want.Sets {
		setName := want1.Name
		s := haveSets[setName]
		if s == nil || want1.Timeout > 0 {
			// Missing (said above), or an affinity set, which the
			// packet path fills.
			continue
		}
		b.calls.Add(1)
		got, err := b.elements(c, s, want1.Map)
		if err != nil {
			return nil, fmt.Errorf("nft verify: elements of %s: %w", setName, err)
		}
		for _, i := range bySet[setName] {
			e := want.Elements[i]
			el := nfElement(e)
			k := string(el.Key)
			v, ok := got[k]
			switch {
			case ok && e.endpoint() && v != string(el.Val):
				diffs = append(diffs, fmt.Sprintf("%s: %s element %s maps to %x", name, setName, e.text(), v))
			case !ok:
				diffs = append(diffs, fmt.Sprintf("%s: %s lacks element %s", name, setName, e.text()))
			case !e.endpoint() && v != e.Chain:
				diffs = append(diffs, fmt.Sprintf("%s: %s element %s goes to %q", name, setName, e.text(), v))
			}
			delete(got, k)
		}
		if len(got) > 0 {
			diffs = append(diffs, fmt.Sprintf("%s: %s has %d unexpected elements", name, setName, len(got)))
		}
	}
	return diffs, nil
}

// elements reads the elements of s by key, each with its data (empty in
// a set) or, with verdicts, the chain of its verdict: in one lean dump
// with setElems, else through c's GetSetElements.
func (b *Backend) elements(c conn, s *nftables.Set, verdicts bool) (map[string]string, error) {
	if b.setElems != nil {
		return b.setElems(b.opts.Table, s.Name, verdicts)
	}
	elems, err := c.GetSetElements(s)
	if err != nil {
		return nil, err
	}
	got := make(map[string]string, len(elems))
	for _, e := range elems {
		v := string(e.Val)
		switch {
		case e.VerdictData != nil:
			v = e.VerdictData.Chain
		case verdicts:
			v = verdictChain(e.Val)
		}
		got[string(e.Key)] = v
	}
	return got, nil
}

// firstDiff describes the first rule where ch and the kernel's rule
// comments got part.
func firstDiff(ch Chain, got []string) string {
	for i := range max(len(ch.Rules), len(got)) {
		switch {
		case i >= len(got):
			return fmt.Sprintf("missing %q", ch.Rules[i].Text)
		case i >= len(ch.Rules):
			return fmt.Sprintf("extra rule %d", i+1)
		case ch.Rules[i].ID(ch.Name) != got[i]:
			return fmt.Sprintf("rule %d differs, want %q", i+1, ch.Rules[i].Text)
		}
	}
	return "same rules"
}

// verdictChain returns the chain of a verdict map element's data as
// google/nftables v0.3.0 reads it: the attributes of NFTA_DATA_VERDICT
// undecoded (it fills no VerdictData).
func verdictChain(data []byte) string {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			return ad.String()
		}
	}
	return ""
}
