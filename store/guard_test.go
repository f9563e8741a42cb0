package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
