package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/reconcile"
)

// syncFunc is a Syncer.
type syncFunc func(ctx context.Context, full bool) (*reconcile.Result, error)

func (f syncFunc) Sync(ctx context.Context, full bool) (*reconcile.Result, error) {
	return f(ctx, full)
}

// TestOnce: one pass runs the hook with its outcome before the metrics
// observe it, writes the textfile, and logs only a successful pass.
func TestOnce(t *testing.T) {
	for _, tt := range []struct {
		name string
		res  *reconcile.Result
		err  error
	}{
		{"ok", okResult(), nil},
		{"failed", nil, errors.New("discover: down")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var order []string
			var log bytes.Buffer
			m := NewMetrics(time.Hour, time.Now)
			path := filepath.Join(t.TempDir(), "lbd.prom")
			rec := syncFunc(func(_ context.Context, full bool) (*reconcile.Result, error) {
				order = append(order, "sync")
				if !full {
					t.Error("the pass is not full")
				}
				return tt.res, tt.err
			})
			o := Options{Metrics: m, Textfile: path, Log: slog.New(slog.NewTextHandler(&log, nil)),
				AfterSync: func(res *reconcile.Result, err error) {
					order = append(order, "after")
					if res != tt.res || err != tt.err {
						t.Errorf("hook got %v, %v", res, err)
					}
					if _, err := os.Stat(path); err == nil {
						t.Error("the textfile is written before the hook")
					}
				}}
			res, err := Once(t.Context(), rec, true, o)
			if res != tt.res || !errors.Is(err, tt.err) {
				t.Errorf("Once = %v, %v", res, err)
			}
			if strings.Join(order, ",") != "sync,after" {
				t.Errorf("order %v", order)
			}
			b, _ := os.ReadFile(path)
			if !strings.Contains(string(b), "lbd_syncs_total") {
				t.Errorf("textfile:\n%s", b)
			}
			if ok := strings.Contains(log.String(), "sync done"); ok != (tt.err == nil) {
				t.Errorf("log:\n%s", log.String())
			}
		})
	}
}

// TestAfterSyncInTheLoop: the daemon runs AfterSync after its passes.
func TestAfterSyncInTheLoop(t *testing.T) {
	done := make(chan error, 1)
	rec := syncFunc(func(context.Context, bool) (*reconcile.Result, error) { return okResult(), nil })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	d := New(rec, Options{Interval: time.Hour, Resync: time.Hour, Log: slog.New(slog.DiscardHandler),
		AfterSync: func(_ *reconcile.Result, err error) {
			select {
			case done <- err:
			default:
			}
		}})
	d.notify = func(string) {}
	go d.Run(ctx)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("hook got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon's first pass ran no hook")
	}
}
