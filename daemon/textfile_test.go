package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

// TestMetricsBuildInfo: /metrics carries lbd_build_info with the version
// it was given, and the process and Go collectors.
func TestMetricsBuildInfo(t *testing.T) {
	m := NewMetrics(time.Hour, time.Now)
	m.Version = "v1.2.3"
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`lbd_build_info{goversion="` + runtime.Version() + `",revision="` + m.revision + `",version="v1.2.3"} 1`,
		"go_goroutines ",
		"go_info{",
		"process_start_time_seconds ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	m2 := NewMetrics(time.Hour, time.Now)
	if got := gatherText(t, m2); !strings.Contains(got, `version="unknown"`) {
		t.Errorf("without a Version lbd_build_info says:\n%s", got)
	}
}

// gatherText returns m's lbd_* families as WriteTextfile writes them.
func gatherText(t *testing.T, m *Metrics) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lbd.prom")
	if err := m.WriteTextfile(p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// okResult is a successful pass over one programmed service with two
// ready endpoints.
func okResult() *reconcile.Result {
	svc := lb.Service{Namespace: "default", Name: "web", ExternalIPs: []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, Endpoints: []lb.Endpoint{
			{IP: netip.MustParseAddr("10.0.0.1"), Port: 80, Ready: true}, {IP: netip.MustParseAddr("10.0.0.2"), Port: 80, Ready: true}}}}}
	return &reconcile.Result{Plan: &reconcile.Plan{Desired: []lb.Service{svc}}, Record: lb.SyncRecord{Result: "ok"},
		States: []lb.ServiceState{{Key: "default/web", State: lb.StateProgrammed}}}
}

// series returns the sample lines of text whose name is one of names'
// prefixes, without comments.
func series(text string, names ...string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, n := range names {
			if strings.HasPrefix(l, n) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// TestWriteTextfile: the file holds the lbd_* families only (node_exporter
// has process_* and go_* of its own), with mode 0644 and no temporary file
// left; a cron pass writes no watch families, the daemon does.
func TestWriteTextfile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "lbd.prom")
	m := NewMetrics(time.Hour, time.Now)
	m.Version = "v1"
	m.ObserveSync(20*time.Millisecond, okResult(), nil)
	if err := m.WriteTextfile(p); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only lbd.prom (a temporary file left?)", len(ents))
	}
	b, _ := os.ReadFile(p)
	text := string(b)
	for _, want := range []string{`lbd_build_info{`, `lbd_syncs_total{result="ok"} 1`, `lbd_services{state="programmed"} 1`,
		`lbd_endpoints 2`, `lbd_sync_duration_seconds_count 1`, `lbd_last_success_timestamp_seconds `} {
		if !strings.Contains(text, want) {
			t.Errorf("textfile lacks %q:\n%s", want, text)
		}
	}
	for _, bad := range []string{"go_", "process_", "promhttp_", "lbd_watch_up", "lbd_watch_restarts_total"} {
		if got := series(text, bad); len(got) > 0 {
			t.Errorf("cron textfile carries %s: %q", bad, got)
		}
	}

	// The daemon writes the file after every pass, watch families included.
	d := New(&fakeSyncer{locked: new(bool)}, Options{Metrics: m, Resync: time.Hour, Textfile: p, Log: slog.New(slog.DiscardHandler)})
	if err := d.sync(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	text = string(b)
	if got := series(text, "lbd_watch_up ", "lbd_watch_restarts_total "); len(got) != 2 {
		t.Errorf("daemon textfile watch series = %q, want lbd_watch_up and lbd_watch_restarts_total", got)
	}
	if !strings.Contains(text, `lbd_syncs_total{result="noop"} 1`) {
		t.Errorf("the daemon's pass is not in the textfile:\n%s", text)
	}
}

// TestTextfileAcrossPasses: one process per cron pass, and the file carries
// on. Counters and histograms continue from the file; a failed pass keeps
// the last success's gauges; a daemon that writes after every pass does
// not count a pass twice; an unreadable file starts afresh.
func TestTextfileAcrossPasses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lbd.prom")
	clock := time.Unix(1700000000, 0)
	pass := func(res *reconcile.Result, err error, writes int) string {
		t.Helper()
		m := NewMetrics(time.Hour, func() time.Time { return clock })
		m.ObserveSync(20*time.Millisecond, res, err)
		if err != nil {
			m.discoveryErrors.WithLabelValues("iptables").Inc()
		}
		for range writes {
			if err := m.WriteTextfile(p); err != nil {
				t.Fatal(err)
			}
		}
		clock = clock.Add(time.Minute)
		b, _ := os.ReadFile(p)
		return string(b)
	}
	want := func(text string, lines ...string) {
		t.Helper()
		got := series(text, "lbd_syncs_total", "lbd_last_success", "lbd_services{state=\"programmed\"}", "lbd_endpoints",
			"lbd_discovery_errors_total", "lbd_sync_duration_seconds_count", `lbd_sync_duration_seconds_bucket{le="0.025"}`)
		if diff := cmp.Diff(lines, got); diff != "" {
			t.Errorf("textfile (-want +got):\n%s", diff)
		}
	}
	failed := &reconcile.Result{Record: lb.SyncRecord{Result: "error"}}

	want(pass(okResult(), nil, 1),
		`lbd_endpoints 2`,
		`lbd_last_success_timestamp_seconds 1.7e+09`,
		`lbd_services{state="programmed"} 1`,
		`lbd_sync_duration_seconds_bucket{le="0.025"} 1`,
		`lbd_sync_duration_seconds_count 1`,
		`lbd_syncs_total{result="ok"} 1`)
	want(pass(failed, errors.New("ssh down"), 1),
		`lbd_discovery_errors_total{backend="iptables"} 1`,
		`lbd_endpoints 2`,
		`lbd_last_success_timestamp_seconds 1.7e+09`,
		`lbd_services{state="programmed"} 1`,
		`lbd_sync_duration_seconds_bucket{le="0.025"} 2`,
		`lbd_sync_duration_seconds_count 2`,
		`lbd_syncs_total{result="error"} 1`,
		`lbd_syncs_total{result="ok"} 1`)
	want(pass(okResult(), nil, 3), // written three times by one process: counted once
		`lbd_discovery_errors_total{backend="iptables"} 1`,
		`lbd_endpoints 2`,
		`lbd_last_success_timestamp_seconds 1.70000012e+09`,
		`lbd_services{state="programmed"} 1`,
		`lbd_sync_duration_seconds_bucket{le="0.025"} 3`,
		`lbd_sync_duration_seconds_count 3`,
		`lbd_syncs_total{result="error"} 1`,
		`lbd_syncs_total{result="ok"} 2`)

	if err := os.WriteFile(p, []byte("not { the text format\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want(pass(failed, errors.New("ssh down"), 1),
		`lbd_discovery_errors_total{backend="iptables"} 1`,
		`lbd_endpoints 0`,
		`lbd_last_success_timestamp_seconds 0`,
		`lbd_sync_duration_seconds_bucket{le="0.025"} 1`,
		`lbd_sync_duration_seconds_count 1`,
		`lbd_syncs_total{result="error"} 1`)
}

// TestWriteTextfileError: a directory that does not exist is an error
// naming the file.
func TestWriteTextfileError(t *testing.T) {
	m := NewMetrics(time.Hour, time.Now)
	p := filepath.Join(t.TempDir(), "missing", "lbd.prom")
	err := m.WriteTextfile(p)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("WriteTextfile(%s) = %v, want an error naming the directory", p, err)
	}
}
