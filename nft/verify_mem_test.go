package nft

import (
	"maps"
	"runtime"
	"testing"

	"github.com/lbd/lbd/hack/lab"
)

// TestVerifyElementsLean: Verify reads the sets' elements with one lean
// dump each, which gives exactly what google/nftables' GetSetElements
// gives, for a fraction of the memory: at 2,000 services x 10 endpoints
// the whole drift check allocates 27 MB, 53 MB through GetSetElements;
// the bound is 40.
func TestVerifyElementsLean(t *testing.T) {
	ns := newNetns(t)
	b := nsBackend(t, ns, DefaultOptions())
	desired := bigServices(2000, 10)
	if err := lab.InNS(ns, func() error { _, err := b.Apply(t.Context(), desired, creates(desired)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Run("same elements as GetSetElements", func(t *testing.T) {
		err := lab.InNS(ns, func() error {
			c, err := b.dialRead()
			if err != nil {
				return err
			}
			sets, err := c.GetSets(b.table)
			if err != nil {
				return err
			}
			lean, total := b.setElems, 0
			defer func() { b.setElems = lean }()
			for _, s := range sets {
				for _, verdicts := range []bool{false, true} {
					b.setElems = nil
					want, err := b.elements(c, s, verdicts)
					if err != nil {
						return err
					}
					b.setElems = lean
					got, err := b.elements(c, s, verdicts)
					if err != nil {
						return err
					}
					if !verdicts {
						total += len(got)
					}
					if !maps.Equal(want, got) {
						t.Errorf("%s (verdicts %v): %d elements, want %d as GetSetElements reads them", s.Name, verdicts, len(got), len(want))
					}
				}
			}
			if total < 2000*10 {
				t.Errorf("%d elements in all sets, want at least the 20,000 endpoints", total)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("drift check allocations", func(t *testing.T) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var diffs []string
		if err := lab.InNS(ns, func() (err error) { diffs, err = b.Verify(t.Context(), desired); return err }); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if len(diffs) != 0 {
			t.Fatalf("Verify found drift right after Apply: %v", diffs[:min(3, len(diffs))])
		}
		mb := float64(after.TotalAlloc-before.TotalAlloc) / (1 << 20)
		t.Logf("Verify allocated %.1f MB", mb)
		if mb > 40 {
			t.Errorf("Verify allocated %.1f MB at 2,000 x 10, want at most 40", mb)
		}
	})
}
