package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

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
