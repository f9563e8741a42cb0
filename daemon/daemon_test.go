package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name string
		rand float64 // what the random source returns
		want []time.Duration
	}{
		{name: "no jitter", rand: 0.5, want: []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}},
		{name: "lowest jitter", rand: 0, want: []time.Duration{800, 1600, 3200, 6400, 12800, 25600, 48000, 48000}},
		{name: "highest jitter", rand: 1, want: []time.Duration{1200, 2400, 4800, 9600, 19200, 38400, 72000, 72000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backoff{min: time.Second, max: time.Minute, jitter: 0.2, rand: func() float64 { return tt.rand }}
			unit := time.Second
			if tt.rand != 0.5 {
				unit = time.Millisecond
			}
			var got []time.Duration
			for range tt.want {
				got = append(got, b.next()/unit)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("waits (-want +got):\n%s", diff)
			}
			b.reset()
			if w := b.next(); w/unit != tt.want[0] {
				t.Errorf("after reset: %v, want %v", w, tt.want[0]*unit)
			}
		})
	}
	t.Run("real randomness stays within +-20%", func(t *testing.T) {
		b := backoff{min: time.Second, max: time.Minute, jitter: 0.2, rand: newTestRand()}
		base := time.Second
		seen := map[bool]int{}
		for i := range 1000 {
			if i%8 == 0 {
				b.reset()
				base = time.Second
			}
			w := b.next()
			lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)
			if w < lo || w > hi {
				t.Fatalf("wait %d = %v outside [%v, %v]", i, w, lo, hi)
			}
			seen[w > base]++
			base = min(2*base, time.Minute)
		}
		if seen[true] < 300 || seen[false] < 300 {
			t.Errorf("jitter is lopsided: %v above/below the base", seen)
		}
	})
}

// newTestRand is a seeded uniform source, so the test is repeatable.
func newTestRand() func() float64 {
	x := uint64(0x9E3779B97F4A7C15)
	return func() float64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return float64(x>>11) / (1 << 53)
	}
}

func TestSchedule(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// step is one thing happening to the schedule at a time (in ms after
	// t0), and what the schedule must say then.
	type step struct {
		at       int
		do       string // "event", "hup", "start", "startfull", "poll", "watch", or "" (just look)
		wantRun  bool
		wantFull bool
		wantWake int // ms after t0; -1: now
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "a burst of changes makes one sync, debounce after the first",
			steps: []step{
				{at: 0, do: "startfull", wantWake: 300_000}, // the first sync; next full resync in 5 min
				{at: 1000, do: "event", wantWake: 1200},
				{at: 1050, do: "event", wantWake: 1200},
				{at: 1190, do: "event", wantWake: 1200},
				{at: 1199, wantWake: 1200},
				{at: 1200, wantRun: true, wantWake: 1200},
				{at: 1201, do: "start", wantWake: 300_000},
				{at: 1300, wantWake: 300_000},
			},
		},
		{
			name: "a change during a sync makes another one",
			steps: []step{
				{at: 0, do: "startfull", wantWake: 300_000},
				{at: 100, do: "event", wantWake: 300},
				{at: 300, do: "start", wantWake: 300_000},
				{at: 350, do: "event", wantWake: 550}, // seen while the sync ran
				{at: 550, wantRun: true, wantWake: 550},
			},
		},
		{
			name: "full resync every period, and at once on SIGHUP",
			steps: []step{
				{at: 0, do: "startfull", wantWake: 300_000},
				{at: 299_999, wantWake: 300_000},
				{at: 300_000, wantRun: true, wantFull: true, wantWake: 300_000},
				{at: 300_001, do: "startfull", wantWake: 600_001},
				{at: 400_000, do: "hup", wantRun: true, wantFull: true, wantWake: -1},
				{at: 400_001, do: "startfull", wantWake: 700_001},
			},
		},
		{
			name: "polling every interval while there is no watch",
			steps: []step{
				{at: 0, do: "poll"},
				{at: 0, do: "startfull", wantWake: 30_000},
				{at: 30_000, wantRun: true, wantWake: 30_000},
				{at: 30_010, do: "start", wantWake: 60_010},
				{at: 40_000, do: "watch", wantWake: 300_000}, // the watch is back: no more polls
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &schedule{debounce: 200 * time.Millisecond, interval: 30 * time.Second, resync: 5 * time.Minute}
			for i, st := range tt.steps {
				now := at(st.at)
				switch st.do {
				case "event":
					s.trigger(now)
				case "hup":
					s.requestFull()
				case "start":
					s.started(now, false)
				case "startfull":
					s.started(now, true)
				case "poll":
					s.polling = true
					continue
				case "watch":
					s.polling = false
				}
				run, full := s.due(now)
				if run != st.wantRun || full != st.wantFull {
					t.Errorf("step %d (%+v): due = %v, full %v; want %v, %v", i, st, run, full, st.wantRun, st.wantFull)
				}
				want := time.Time{}
				if st.wantWake >= 0 {
					want = at(st.wantWake)
				}
				if got := s.wake(); !got.Equal(want) {
					t.Errorf("step %d (%+v): wake = +%v, want +%v", i, st, got.Sub(t0), want.Sub(t0))
				}
			}
		})
	}
}

func TestHealth(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	m := NewMetrics(15*time.Minute, func() time.Time { return now })
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	ok := &reconcile.Result{Plan: &reconcile.Plan{}, Record: lb.SyncRecord{Result: "noop"}}
	tests := []struct {
		name     string
		advance  time.Duration
		sync     error // the sync that happens at that time; nil with noSync: none
		noSync   bool
		wantCode int
		wantText string
	}{
		{name: "before any sync", noSync: true, wantCode: 503, wantText: "no sync has succeeded yet"},
		{name: "the first sync failed", sync: errors.New("discover: ssh down"), wantCode: 503, wantText: "no sync has succeeded yet"},
		{name: "a sync succeeded", advance: time.Minute, wantCode: 200, wantText: "ok: last successful sync at 2025-01-01T12:01:00Z"},
		{name: "failing, within three resync periods", advance: 15 * time.Minute, sync: errors.New("x"), wantCode: 200},
		{name: "failing, past three resync periods", advance: time.Second, sync: errors.New("x"), wantCode: 503, wantText: "no sync has succeeded for 15m1s"},
		{name: "recovered", advance: time.Second, wantCode: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = now.Add(tt.advance)
			if !tt.noSync {
				res := ok
				if tt.sync != nil {
					res = &reconcile.Result{Record: lb.SyncRecord{Result: "error"}}
				}
				m.ObserveSync(10*time.Millisecond, res, tt.sync)
			}
			code, body := get()
			if code != tt.wantCode || !strings.Contains(body, tt.wantText) {
				t.Errorf("/healthz = %d %q, want %d containing %q", code, body, tt.wantCode, tt.wantText)
			}
		})
	}
}

// fakeSource and fakeBackend fail when told to.
type fakeSource struct{ err error }

func (s *fakeSource) Discover(context.Context) ([]lb.Service, []*lb.InvalidServiceError, error) {
	return nil, nil, s.err
}

// fakeBackend reloads (counts one) on each successful Apply when reloading.
type fakeBackend struct {
	err       error
	reloading bool
	reloads   uint64
}

func (b *fakeBackend) Name() string    { return "fake" }
func (b *fakeBackend) Reloads() uint64 { return b.reloads }
func (b *fakeBackend) Apply(context.Context, []lb.Service, []lb.Change) ([]lb.Skipped, error) {
	if b.err == nil && b.reloading {
		b.reloads++
	}
	return nil, b.err
}

// prefixPool is a Pool of a CIDR's addresses.
type prefixPool netip.Prefix

func (p prefixPool) Contains(a netip.Addr) bool { return netip.Prefix(p).Contains(a) }
func (p prefixPool) Size() uint64 {
	return 1 << (netip.Prefix(p).Addr().BitLen() - netip.Prefix(p).Bits())
}
func (p prefixPool) String() string { return netip.Prefix(p).String() }

// TestMetricsPools: addresses used and free per pool (a shared address
// once) and the pending services come from the pass's address report.
func TestMetricsPools(t *testing.T) {
	m := NewMetrics(time.Hour, time.Now)
	m.Pools = []Pool{prefixPool(netip.MustParsePrefix("192.168.121.240/29")), prefixPool(netip.MustParsePrefix("10.0.0.0/31"))}
	a := netip.MustParseAddr
	m.observeAddresses([]lb.AddressState{
		{Key: "a/one", Addr: a("192.168.121.241"), State: lb.AddressServed},
		{Key: "a/two", Addr: a("192.168.121.241"), State: lb.AddressServed},
		{Key: "a/three", Addr: a("192.168.121.242"), State: lb.AddressServed},
		{Key: "a/bad", Addr: a("192.168.121.243"), State: lb.AddressRejected},
		{Key: "a/wait", State: lb.AddressPending},
	})
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`lbd_pool_addresses{pool="192.168.121.240/29",state="used"} 2`,
		`lbd_pool_addresses{pool="192.168.121.240/29",state="free"} 6`, // 8 in the fake pool, 2 used,
		`lbd_pool_addresses{pool="10.0.0.0/31",state="free"} 2`,
		`lbd_services_pending 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestMetricsCountErrors(t *testing.T) {
	m := NewMetrics(time.Hour, time.Now)
	src := m.CountSource(&fakeSource{}, "haproxy").(*countingSource)
	be := m.CountBackend(&fakeBackend{}, "haproxy").(*countingBackend)
	ctx := context.Background()

	src.Source.(*fakeSource).err = errors.New("ssh down")
	src.Discover(ctx)
	src.Discover(ctx)
	src.Source.(*fakeSource).err = nil
	src.Discover(ctx)
	be.Backend.(*fakeBackend).err = errors.New("haproxy -c failed")
	be.Apply(ctx, nil, nil)
	be.Backend.(*fakeBackend).err = nil
	be.Apply(ctx, nil, nil) // no reload
	be.Backend.(*fakeBackend).reloading = true
	be.Apply(ctx, nil, nil)                // one reload
	be.Backend.(*fakeBackend).reloads += 5 // reloads outside an Apply are not this sync's
	if drift, err := be.Verify(ctx, nil); drift != nil || err != nil {
		t.Errorf("Verify of a backend without one = %v, %v", drift, err)
	}

	svc := lb.Service{Namespace: "default", Name: "web", ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.201")},
		Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, Endpoints: []lb.Endpoint{{IP: netip.MustParseAddr("10.246.82.2"), Port: 80, Ready: true}, {IP: netip.MustParseAddr("10.246.82.6"), Port: 80}}}}}
	internal := lb.Service{Namespace: "default", Name: "db", Ports: svc.Ports}
	m.ObserveSync(30*time.Millisecond, &reconcile.Result{Plan: &reconcile.Plan{Desired: []lb.Service{svc, internal}}, Record: lb.SyncRecord{Result: "ok"},
		States: []lb.ServiceState{{Key: "default/db", State: lb.StateUnexposed}, {Key: "default/web", State: lb.StateProgrammed}, {Key: "default/x", State: lb.StateSkipped, Reason: "cannot bind"}}}, nil)
	m.ObserveSync(2*time.Second, &reconcile.Result{Record: lb.SyncRecord{Result: "error"}}, errors.New("discover: ssh down"))

	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`lbd_discovery_errors_total{backend="haproxy"} 2`,
		`lbd_apply_errors_total{backend="haproxy"} 1`,
		`lbd_haproxy_reloads_total 1`,
		`lbd_services{state="programmed"} 1`,
		`lbd_services{state="unexposed"} 1`,
		`lbd_services{state="skipped"} 1`,
		`lbd_services{state="held"} 0`,
		`lbd_endpoints 1`,
		`lbd_syncs_total{result="ok"} 1`,
		`lbd_syncs_total{result="error"} 1`,
		`lbd_sync_duration_seconds_count 2`,
		`lbd_sync_duration_seconds_bucket{le="0.05"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// daemonProbe records what a daemon under test does.
type daemonProbe struct {
	mu      sync.Mutex
	syncs   []bool // full flag of each sync
	notes   []string
	reopens int
}

func (p *daemonProbe) snapshot() (syncs []bool, notes []string, reopens int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]bool(nil), p.syncs...), append([]string(nil), p.notes...), p.reopens
}

// waitUntil polls cond for up to 5 s; the daemon runs on real time, so
// only what must eventually happen is asserted, never how fast.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDaemonLoop drives the real loop with a fake watch, sync and systemd:
// READY after the first sync, changes trigger syncs, SIGHUP a full one,
// SIGUSR1 a reopen, a failing watch restarts with backoff and falls back to
// polling, the watchdog is fed, and cancel stops it.
func TestDaemonLoop(t *testing.T) {
	p := &daemonProbe{}
	events := make(chan func(string), 1) // the fake watch's event callback, once it runs
	watchErr := make(chan error)
	signals := make(chan os.Signal, 1)
	var watchCalls int
	var mu sync.Mutex
	d := &Daemon{
		log:       slog.New(slog.DiscardHandler),
		debounce:  10 * time.Millisecond,
		interval:  time.Hour,
		resync:    time.Hour,
		firstFull: true,
		sync: func(ctx context.Context, full bool) error {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.syncs = append(p.syncs, full)
			if len(p.syncs) == 1 {
				return errors.New("first sync fails")
			}
			return nil
		},
		watch: func(ctx context.Context, event func(string)) error {
			mu.Lock()
			watchCalls++
			mu.Unlock()
			events <- event
			select {
			case <-ctx.Done():
				return nil
			case err := <-watchErr:
				return err
			}
		},
		notify: func(s string) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.notes = append(p.notes, s)
		},
		watchdog:  20 * time.Millisecond,
		reopenLog: func() error { p.mu.Lock(); p.reopens++; p.mu.Unlock(); return nil },
		signals:   signals,
		now:       time.Now,
		backoff:   backoff{min: time.Millisecond, max: 4 * time.Millisecond, jitter: 0.2, rand: newTestRand()},
		watchUp:   func(bool) {},
		watchDown: func() {},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()

	// The watch starts; the first sync runs (full, and fails); READY follows.
	event := <-events
	waitUntil(t, "READY", func() bool { _, n, _ := p.snapshot(); return contains(n, "READY=1") })
	syncs, notes, _ := p.snapshot()
	if len(syncs) != 1 || !syncs[0] {
		t.Fatalf("syncs before READY = %v, want one full", syncs)
	}
	if !contains(notes, "STATUS=last sync failed: first sync fails") {
		t.Errorf("notes %q lack the failure status", notes)
	}

	// Events from the watch make a partial sync.
	event("services")
	event("services")
	waitUntil(t, "a sync after events", func() bool { s, _, _ := p.snapshot(); return len(s) >= 2 })
	if s, _, _ := p.snapshot(); s[1] {
		t.Errorf("event-triggered sync was full")
	}

	// SIGHUP: a full sync. SIGUSR1: the log file is reopened.
	n, _, _ := p.snapshot()
	signals <- syscall.SIGHUP
	waitUntil(t, "a full sync after SIGHUP", func() bool { s, _, _ := p.snapshot(); return len(s) > len(n) && s[len(s)-1] })
	signals <- syscall.SIGUSR1
	waitUntil(t, "a reopen after SIGUSR1", func() bool { _, _, r := p.snapshot(); return r == 1 })

	// The watch breaks: it is restarted, and a sync looks at once.
	n, _, _ = p.snapshot()
	watchErr <- errors.New("connection lost")
	<-events // the watch runs again
	waitUntil(t, "a sync after the watch broke", func() bool { s, _, _ := p.snapshot(); return len(s) > len(n) })
	mu.Lock()
	if watchCalls != 2 {
		t.Errorf("watch ran %d times, want 2", watchCalls)
	}
	mu.Unlock()

	// The watchdog is fed from the loop.
	waitUntil(t, "WATCHDOG=1", func() bool { _, n, _ := p.snapshot(); return contains(n, "WATCHDOG=1") })

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not stop on cancel")
	}
	if _, n, _ := p.snapshot(); n[len(n)-1] != "STOPPING=1" {
		t.Errorf("last notification %q, want STOPPING=1", n[len(n)-1])
	}
}

// TestDaemonPolls: with no watch, the daemon syncs every interval.
func TestDaemonPolls(t *testing.T) {
	p := &daemonProbe{}
	d := &Daemon{
		log: slog.New(slog.DiscardHandler), debounce: time.Millisecond, interval: 20 * time.Millisecond, resync: time.Hour,
		sync: func(context.Context, bool) error {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.syncs = append(p.syncs, false)
			return nil
		},
		notify: func(string) {}, reopenLog: func() error { return nil }, now: time.Now,
		watchUp: func(bool) {}, watchDown: func() {},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	waitUntil(t, "three polls", func() bool { s, _, _ := p.snapshot(); return len(s) >= 3 })
}

// errWatchEnded stands for discovery.ErrWatchEnded.
var errWatchEnded = errors.New("watch ended by the master")

// TestWatchEndedIsNotAFailure: the watch loop restarts a watch the master
// ended, logging it as information, not as a failure.
func TestWatchEndedIsNotAFailure(t *testing.T) {
	var logs lockedBuf
	calls := make(chan struct{}, 4)
	d := &Daemon{
		log:        slog.New(slog.NewTextHandler(&logs, nil)),
		now:        time.Now,
		watchEnded: errWatchEnded,
		backoff:    backoff{min: time.Millisecond, max: time.Millisecond, rand: func() float64 { return .5 }},
		watch: func(ctx context.Context, event func(string)) error {
			calls <- struct{}{}
			return fmt.Errorf("x: %w", errWatchEnded)
		},
		watchUp: func(bool) {}, watchDown: func() {},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var up atomic.Bool
	go d.watchLoop(ctx, make(chan time.Time, 1), &up)
	<-calls
	<-calls
	cancel()
	if s := logs.String(); !strings.Contains(s, "level=INFO msg=\"watch ended by the master; restarting\"") || strings.Contains(s, "WARN") {
		t.Errorf("logs:\n%s", s)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// runtimeBackend is a haproxy-like backend that changes servers at
// runtime and reports its workers.
type runtimeBackend struct {
	fakeBackend
	runtime uint64
	workers int
}

func (b *runtimeBackend) Apply(ctx context.Context, d []lb.Service, c []lb.Change) ([]lb.Skipped, error) {
	b.runtime++
	return nil, nil
}
func (b *runtimeBackend) Stats() (uint64, uint64)              { return b.reloads, b.runtime }
func (b *runtimeBackend) Workers(context.Context) (int, error) { return b.workers, nil }

// TestMetricsRuntimeChanges: runtime changes and workers alive reach
// lbd_haproxy_runtime_changes_total and lbd_haproxy_workers.
func TestMetricsRuntimeChanges(t *testing.T) {
	m := NewMetrics(time.Hour, time.Now)
	rb := &runtimeBackend{workers: 1}
	be := m.CountBackend(rb, "haproxy")
	for range 3 {
		be.Apply(t.Context(), nil, nil)
	}
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{"lbd_haproxy_runtime_changes_total 3", "lbd_haproxy_workers 1"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
