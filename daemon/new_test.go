package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

// fakeSyncer answers every Sync with a noop result, recording whether the
// lock was held.
type fakeSyncer struct {
	locked *bool
	syncs  []bool // whether the lock was held, per sync
}

func (f *fakeSyncer) Sync(_ context.Context, full bool) (*reconcile.Result, error) {
	f.syncs = append(f.syncs, *f.locked)
	return &reconcile.Result{Plan: &reconcile.Plan{}, Record: lb.SyncRecord{Result: "noop"}}, nil
}

// TestNewSyncsUnderLock: the daemon New wires takes the lock for each
// sync and lets it go after, records each sync in the metrics, and counts
// a sync whose lock could not be taken as an error without syncing.
func TestNewSyncsUnderLock(t *testing.T) {
	var locked bool
	var lockErr error
	unlocks := 0
	rec := &fakeSyncer{locked: &locked}
	m := NewMetrics(time.Hour, time.Now)
	d := New(rec, Options{Interval: time.Minute, Resync: time.Hour, Metrics: m, Log: slog.New(slog.DiscardHandler),
		Lock: func(context.Context) (func() error, error) {
			if lockErr != nil {
				return nil, lockErr
			}
			locked = true
			return func() error { locked = false; unlocks++; return nil }, nil
		}})
	ctx := context.Background()
	if err := d.sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	lockErr = errors.New("another lbd holds the lock")
	if err := d.sync(ctx, false); !errors.Is(err, lockErr) {
		t.Errorf("sync without the lock = %v, want %v", err, lockErr)
	}
	if len(rec.syncs) != 1 || !rec.syncs[0] || locked || unlocks != 1 {
		t.Errorf("syncs (lock held) %v, still locked %v, unlocks %d; want [true], false, 1", rec.syncs, locked, unlocks)
	}
	w := httptest.NewRecorder()
	m.handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`lbd_syncs_total{result="noop"} 1`, `lbd_syncs_total{result="error"} 1`} {
		if !strings.Contains(w.Body.String(), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestNewRelistsBeforeFullSyncs: Options.Relist runs before each full sync
// and before no other, so a caching source lists on the resync.
func TestNewRelistsBeforeFullSyncs(t *testing.T) {
	var locked bool
	var order []string
	rec := &recordingSyncer{fakeSyncer: fakeSyncer{locked: &locked}, order: &order}
	d := New(rec, Options{Interval: time.Minute, Resync: time.Hour, Log: slog.New(slog.DiscardHandler),
		Relist: func() { order = append(order, "relist") }})
	ctx := context.Background()
	for _, full := range []bool{true, false, false, true} {
		if err := d.sync(ctx, full); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"relist", "sync full", "sync", "sync", "relist", "sync full"}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// recordingSyncer notes each Sync in order.
type recordingSyncer struct {
	fakeSyncer
	order *[]string
}

func (r *recordingSyncer) Sync(ctx context.Context, full bool) (*reconcile.Result, error) {
	*r.order = append(*r.order, map[bool]string{true: "sync full", false: "sync"}[full])
	return r.fakeSyncer.Sync(ctx, full)
}
