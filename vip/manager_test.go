package vip

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

// fakeLink is an interface's address entries, with failures to inject.
type fakeLink struct {
	entries   []netip.Prefix
	failAdd   map[netip.Addr]error
	failDel   map[netip.Addr]error
	failList  error
	failAnn   error
	added     []netip.Prefix
	deleted   []netip.Prefix
	announced [][]netip.Addr
	slept     []time.Duration
}

func (f *fakeLink) manager() *Manager {
	m := New("eth0", slog.New(slog.DiscardHandler))
	m.list = func(iface string) ([]netip.Prefix, error) {
		if f.failList != nil {
			return nil, f.failList
		}
		return slices.Clone(f.entries), nil
	}
	m.add = func(iface string, p netip.Prefix) error {
		if err := f.failAdd[p.Addr()]; err != nil {
			return err
		}
		f.added = append(f.added, p)
		f.entries = append(f.entries, p)
		return nil
	}
	m.del = func(iface string, p netip.Prefix) error {
		if err := f.failDel[p.Addr()]; err != nil {
			return err
		}
		i := slices.Index(f.entries, p)
		if i < 0 {
			return unix.EADDRNOTAVAIL
		}
		f.deleted = append(f.deleted, p)
		f.entries = slices.Delete(f.entries, i, i+1)
		return nil
	}
	m.announce = func(iface string, addrs []netip.Addr) error {
		f.announced = append(f.announced, slices.Clone(addrs))
		return f.failAnn
	}
	m.sleep = func(ctx context.Context, d time.Duration) error {
		f.slept = append(f.slept, d)
		return ctx.Err()
	}
	return m
}

func addrs(ss ...string) []netip.Addr {
	out := []netip.Addr{}
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var errBoom = errors.New("boom")

func TestSync(t *testing.T) {
	tests := []struct {
		name        string
		entries     []string // on the interface before Sync
		want, owned []string
		failAdd     []string
		failDel     []string
		failAnn     error

		wantOwned   []string
		wantEntries []string // on the interface after Sync
		wantAdded   []string // prefixes added, in order
		wantDeleted []string // prefixes deleted, in order
		wantAnn     []string // addresses announced (every round)
		wantErrs    []string // substrings, one per failure; nil: no error
	}{
		{
			name:        "empty interface gets every wanted address as a host address",
			entries:     []string{"192.168.121.201/24"},
			want:        []string{"192.168.121.50", "2001:db8:121::50"},
			wantOwned:   []string{"192.168.121.50", "2001:db8:121::50"},
			wantEntries: []string{"192.168.121.201/24", "192.168.121.50/32", "2001:db8:121::50/128"},
			wantAdded:   []string{"192.168.121.50/32", "2001:db8:121::50/128"},
			wantAnn:     []string{"192.168.121.50", "2001:db8:121::50"},
		},
		{
			name:        "owned and present stays owned, nothing done, nothing announced",
			entries:     []string{"192.168.121.50/32"},
			want:        []string{"192.168.121.50"},
			owned:       []string{"192.168.121.50"},
			wantOwned:   []string{"192.168.121.50"},
			wantEntries: []string{"192.168.121.50/32"},
		},
		{
			name:        "wanted address put there by hand is left alone and not owned",
			entries:     []string{"192.168.121.60/32", "192.168.121.61/24"},
			want:        []string{"192.168.121.60", "192.168.121.61"},
			wantOwned:   []string{},
			wantEntries: []string{"192.168.121.60/32", "192.168.121.61/24"},
		},
		{
			name:        "hand-placed address not wanted survives",
			entries:     []string{"192.168.121.60/32", "192.168.121.50/32"},
			want:        []string{},
			owned:       []string{"192.168.121.50"},
			wantOwned:   []string{},
			wantEntries: []string{"192.168.121.60/32"},
			wantDeleted: []string{"192.168.121.50/32"},
		},
		{
			name:        "owned, unwanted address is removed, and only it",
			entries:     []string{"192.168.121.201/24", "192.168.121.50/32", "192.168.121.51/32", "2001:db8:121::50/128"},
			want:        []string{"192.168.121.51", "2001:db8:121::50"},
			owned:       []string{"192.168.121.50", "192.168.121.51", "2001:db8:121::50"},
			wantOwned:   []string{"192.168.121.51", "2001:db8:121::50"},
			wantEntries: []string{"192.168.121.201/24", "192.168.121.51/32", "2001:db8:121::50/128"},
			wantDeleted: []string{"192.168.121.50/32"},
		},
		{
			name:        "owned address removed by hand drops out without error",
			entries:     []string{"192.168.121.51/32"},
			want:        []string{"192.168.121.51"},
			owned:       []string{"192.168.121.50", "192.168.121.51"},
			wantOwned:   []string{"192.168.121.51"},
			wantEntries: []string{"192.168.121.51/32"},
		},
		{
			name:        "owned, wanted address removed by hand is added again and announced",
			entries:     []string{},
			want:        []string{"192.168.121.50"},
			owned:       []string{"192.168.121.50"},
			wantOwned:   []string{"192.168.121.50"},
			wantEntries: []string{"192.168.121.50/32"},
			wantAdded:   []string{"192.168.121.50/32"},
			wantAnn:     []string{"192.168.121.50"},
		},
		{
			name:        "owned address now held by hand with another prefix is neither removed nor owned",
			entries:     []string{"192.168.121.50/24", "192.168.121.52/24"},
			want:        []string{"192.168.121.50"},
			owned:       []string{"192.168.121.50", "192.168.121.52"},
			wantOwned:   []string{},
			wantEntries: []string{"192.168.121.50/24", "192.168.121.52/24"},
		},
		{
			name:        "mapped and duplicate inputs are one address",
			entries:     []string{},
			want:        []string{"::ffff:192.168.121.50", "192.168.121.50"},
			wantOwned:   []string{"192.168.121.50"},
			wantEntries: []string{"192.168.121.50/32"},
			wantAdded:   []string{"192.168.121.50/32"},
			wantAnn:     []string{"192.168.121.50"},
		},
		{
			name:        "partial failure: failed add is not owned, failed remove stays owned, the rest goes on",
			entries:     []string{"192.168.121.50/32", "192.168.121.51/32"},
			want:        []string{"192.168.121.60", "192.168.121.61"},
			owned:       []string{"192.168.121.50", "192.168.121.51"},
			failAdd:     []string{"192.168.121.60"},
			failDel:     []string{"192.168.121.50"},
			wantOwned:   []string{"192.168.121.50", "192.168.121.61"},
			wantEntries: []string{"192.168.121.50/32", "192.168.121.61/32"},
			wantAdded:   []string{"192.168.121.61/32"},
			wantDeleted: []string{"192.168.121.51/32"},
			wantAnn:     []string{"192.168.121.61"},
			wantErrs: []string{
				"vip 192.168.121.60 on eth0: add: boom",
				"vip 192.168.121.50 on eth0: remove: boom",
			},
		},
		{
			name:        "failed announcement: the address is on the interface, so it is owned, and named",
			entries:     []string{},
			want:        []string{"2001:db8:121::50"},
			failAnn:     errBoom,
			wantOwned:   []string{"2001:db8:121::50"},
			wantEntries: []string{"2001:db8:121::50/128"},
			wantAdded:   []string{"2001:db8:121::50/128"},
			wantAnn:     []string{"2001:db8:121::50"},
			wantErrs:    []string{"vip 2001:db8:121::50 on eth0: announce: boom"},
		},
		{
			name:        "invalid address is named, the others go on",
			entries:     []string{},
			want:        []string{"", "192.168.121.50"},
			wantOwned:   []string{"192.168.121.50"},
			wantEntries: []string{"192.168.121.50/32"},
			wantAdded:   []string{"192.168.121.50/32"},
			wantAnn:     []string{"192.168.121.50"},
			wantErrs:    []string{"vip invalid IP on eth0: check: invalid address"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeLink{entries: prefixes(tt.entries...), failAdd: map[netip.Addr]error{}, failDel: map[netip.Addr]error{}, failAnn: tt.failAnn}
			for _, a := range tt.failAdd {
				f.failAdd[netip.MustParseAddr(a)] = errBoom
			}
			for _, a := range tt.failDel {
				f.failDel[netip.MustParseAddr(a)] = errBoom
			}
			var want []netip.Addr
			for _, s := range tt.want {
				a, _ := netip.ParseAddr(s) // "" is the invalid address
				want = append(want, a)
			}
			got, err := f.manager().Sync(context.Background(), want, addrs(tt.owned...))

			if d := cmp.Diff(addrs(tt.wantOwned...), got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("nowOwned (-want +got):\n%s", d)
			}
			sortP := cmpopts.SortSlices(func(a, b netip.Prefix) bool { return a.String() < b.String() })
			if d := cmp.Diff(prefixes(tt.wantEntries...), f.entries, cmpopts.EquateComparable(netip.Prefix{}), sortP, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("interface after Sync (-want +got):\n%s", d)
			}
			if d := cmp.Diff(prefixes(tt.wantAdded...), f.added, cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("added (-want +got):\n%s", d)
			}
			if d := cmp.Diff(prefixes(tt.wantDeleted...), f.deleted, cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("deleted (-want +got):\n%s", d)
			}
			var wantAnn [][]netip.Addr
			if len(tt.wantAnn) > 0 {
				for range Rounds {
					wantAnn = append(wantAnn, addrs(tt.wantAnn...))
				}
			}
			if d := cmp.Diff(wantAnn, f.announced, cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("announced rounds (-want +got):\n%s", d)
			}
			checkErrs(t, err, tt.wantErrs)
		})
	}
}

// checkErrs asserts that err joins exactly one *AddrError or error per
// wanted substring.
func checkErrs(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("err = nil, want %q", want)
	}
	lines := strings.Split(err.Error(), "\n")
	if d := cmp.Diff(want, lines, cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
		t.Errorf("error lines (-want +got):\n%s", d)
	}
	var ae *AddrError
	if !errors.As(err, &ae) {
		t.Errorf("err %v holds no *AddrError", err)
	}
}

func TestSyncListFailureChangesNothing(t *testing.T) {
	f := &fakeLink{failList: errBoom}
	got, err := f.manager().Sync(context.Background(), addrs("192.168.121.60"), addrs("192.168.121.50"))
	if !errors.Is(err, errBoom) {
		t.Fatalf("err = %v, want it to wrap %v", err, errBoom)
	}
	if d := cmp.Diff(addrs("192.168.121.50"), got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Errorf("nowOwned (-want +got):\n%s", d)
	}
	if len(f.added)+len(f.deleted)+len(f.announced) != 0 {
		t.Errorf("changes made although the interface could not be read: added %v deleted %v announced %v", f.added, f.deleted, f.announced)
	}
}

func TestAnnounceRounds(t *testing.T) {
	t.Run("rounds, interval apart, every address in each", func(t *testing.T) {
		f := &fakeLink{}
		if err := f.manager().Announce(context.Background(), addrs("2001:db8::1", "10.0.0.1", "10.0.0.1")...); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([][]netip.Addr{addrs("10.0.0.1", "2001:db8::1"), addrs("10.0.0.1", "2001:db8::1"), addrs("10.0.0.1", "2001:db8::1")}, f.announced, cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Errorf("rounds (-want +got):\n%s", d)
		}
		if d := cmp.Diff([]time.Duration{Interval, Interval}, f.slept); d != "" {
			t.Errorf("sleeps (-want +got):\n%s", d)
		}
	})
	t.Run("one good round is enough", func(t *testing.T) {
		f := &fakeLink{}
		m := f.manager()
		n := 0
		m.announce = func(string, []netip.Addr) error {
			n++
			if n < Rounds {
				return errBoom
			}
			return nil
		}
		if err := m.Announce(context.Background(), addrs("10.0.0.1")...); err != nil {
			t.Errorf("err = %v, want nil after a good last round", err)
		}
	})
	t.Run("canceled context cuts the rounds short and says so", func(t *testing.T) {
		f := &fakeLink{}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := f.manager().Announce(ctx, addrs("10.0.0.1")...)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if len(f.announced) != 1 {
			t.Errorf("%d rounds sent, want 1 before the cut", len(f.announced))
		}
	})
}
