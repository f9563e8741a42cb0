package store

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lbd/lbd/lb"
)

// TestAddresses: allocations, owned addresses and the address report
// round-trip through a real SQLite file, survive a reopen, and each save
// replaces the previous set.
func TestAddresses(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "lbd.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	allocs := []lb.Allocation{
		{Key: "default/web", Addr: a("192.168.121.240"), Origin: lb.OriginAllocated},
		{Key: "shop/lb", Addr: a("192.168.121.241"), Origin: lb.OriginRequested},
		{Key: "shop/lb", Addr: a("2001:db8::41"), Origin: lb.OriginRequested},
	}
	if err := db.SaveAllocations(ctx, allocs); err != nil {
		t.Fatal(err)
	}
	owned := []netip.Addr{a("192.168.121.241"), a("192.168.121.240")}
	if err := db.SaveOwnedAddresses(ctx, "eth0", owned); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveOwnedAddresses(ctx, "eth1", []netip.Addr{a("10.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	report := []lb.AddressState{
		{Key: "default/pending", Origin: lb.OriginAllocated, State: lb.AddressPending, Reason: "pools exhausted"},
		{Key: "default/web", Addr: a("192.168.121.240"), Origin: lb.OriginAllocated, State: lb.AddressServed},
	}
	if err := db.SaveAddressReport(ctx, report); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	eq := cmpopts.EquateComparable(netip.Addr{})
	gotAllocs, err := db.Allocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(allocs, gotAllocs, eq); d != "" {
		t.Errorf("allocations (-want +got):\n%s", d)
	}
	gotOwned, err := db.OwnedAddresses(ctx, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]netip.Addr{a("192.168.121.240"), a("192.168.121.241")}, gotOwned, eq); d != "" {
		t.Errorf("owned on eth0 (-want +got):\n%s", d)
	}
	gotReport, err := db.AddressReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(report, gotReport, eq); d != "" {
		t.Errorf("report (-want +got):\n%s", d)
	}
	// A save replaces; an empty save empties.
	if err := db.SaveAllocations(ctx, allocs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveOwnedAddresses(ctx, "eth0", nil); err != nil {
		t.Fatal(err)
	}
	gotAllocs, _ = db.Allocations(ctx)
	gotOwned, _ = db.OwnedAddresses(ctx, "eth0")
	other, _ := db.OwnedAddresses(ctx, "eth1")
	if len(gotAllocs) != 1 || len(gotOwned) != 0 || len(other) != 1 {
		t.Errorf("after replace: allocations %v, eth0 %v, eth1 %v", gotAllocs, gotOwned, other)
	}
	// A bad key is refused, and the previous set stays.
	if err := db.SaveAllocations(ctx, []lb.Allocation{{Key: "nokey", Addr: a("10.0.0.2"), Origin: lb.OriginAllocated}}); err == nil {
		t.Error("a key without namespace was saved")
	}
	if gotAllocs, _ = db.Allocations(ctx); len(gotAllocs) != 1 {
		t.Errorf("a refused save changed the allocations: %v", gotAllocs)
	}
}
