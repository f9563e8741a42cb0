package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

// TestLogSyncCapsChangeLines: a pass with more than 100 changes logs the
// counts and the first ten, not one line per service.
func TestLogSyncCapsChangeLines(t *testing.T) {
	for _, n := range []int{3, 150} {
		var buf bytes.Buffer
		p := &reconcile.Plan{}
		for i := range n {
			s := &lb.Service{Namespace: "default", Name: fmt.Sprintf("s%d", i)}
			p.Changes = append(p.Changes, lb.Change{Kind: lb.Create, New: s})
		}
		LogSync(slog.New(slog.NewTextHandler(&buf, nil)), &reconcile.Result{Plan: p, Record: lb.SyncRecord{Result: "ok", Created: n}}, false)
		got := strings.Count(buf.String(), `msg="service create"`)
		want := n
		if n > maxChangeLines {
			want = changeSample
			if !strings.Contains(buf.String(), "changes=150") {
				t.Errorf("no count line:\n%s", buf.String())
			}
		}
		if got != want {
			t.Errorf("%d changes: %d lines, want %d", n, got, want)
		}
	}
}

// TestPhasesLoggedAndMeasured: the sync line carries every phase's time,
// and lbd_sync_phase_seconds has a series per phase.
func TestPhasesLoggedAndMeasured(t *testing.T) {
	res := &reconcile.Result{Plan: &reconcile.Plan{}, Record: lb.SyncRecord{Result: "ok"},
		Phases: []reconcile.Phase{{Name: "discover", Duration: 120 * time.Millisecond}, {Name: "parse", Duration: 5 * time.Millisecond}, {Name: "apply", Duration: time.Second}}}
	var buf bytes.Buffer
	LogSync(slog.New(slog.NewTextHandler(&buf, nil)), res, false)
	if !strings.Contains(buf.String(), `phases="discover=120ms parse=5ms apply=1s"`) {
		t.Errorf("sync line lacks the phases:\n%s", buf.String())
	}
	m := NewMetrics(time.Hour, time.Now)
	m.ObserveSync(time.Second, res, nil)
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, ph := range []string{"discover", "parse", "apply"} {
		if want := `lbd_sync_phase_seconds_count{phase="` + ph + `"} 1`; !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
