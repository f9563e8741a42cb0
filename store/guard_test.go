package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

func TestDeletions(t *testing.T) {
	ctx := t.Context()
	db, _ := openTemp(t)
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	if err := db.RecordDeletions(ctx, "iptables", []string{"default/a", "default/b"}, t0, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordDeletions(ctx, "haproxy", []string{"default/c"}, t0, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	// b goes again later; a is forgotten once before forgetBefore.
	t1 := t0.Add(5 * time.Minute)
	if err := db.RecordDeletions(ctx, "iptables", []string{"default/b"}, t1, t1.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := db.Deletions(ctx, "iptables", t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]time.Time{"default/b": t1}, got); d != "" {
		t.Errorf("iptables deletions (-want +got):\n%s", d)
	}
	got, err = db.Deletions(ctx, "haproxy", t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("haproxy deletions since after the only one = %v, want none", got)
	}
	if err := db.RecordDeletions(ctx, "iptables", []string{"nokey"}, t1, t0); err == nil {
		t.Error("RecordDeletions of a key without namespace succeeded")
	}
}

func TestStates(t *testing.T) {
	ctx := t.Context()
	db, _ := openTemp(t)
	ip := []lb.ServiceState{
		{Key: "default/b", State: lb.StateSkipped, Reason: "cannot bind 192.168.121.9:80", Spec: "abc"},
		{Key: "default/a", State: lb.StateProgrammed},
	}
	if err := db.SaveStates(ctx, "iptables", ip); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveStates(ctx, "haproxy", []lb.ServiceState{{Key: "x/y", State: lb.StateHeld, Reason: "guard"}}); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveStates(ctx, "iptables", ip); err != nil { // replaces, no duplicate
		t.Fatal(err)
	}
	got, err := db.States(ctx, "iptables")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]lb.ServiceState{ip[1], ip[0]}, got); d != "" {
		t.Errorf("iptables states (-want +got):\n%s", d)
	}
	if got, _ := db.States(ctx, "haproxy"); len(got) != 1 || got[0].Key != "x/y" {
		t.Errorf("haproxy states = %v, want x/y alone", got)
	}
}
