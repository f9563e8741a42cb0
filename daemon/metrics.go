package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

// Pool is an address pool as the metrics count it (ipam.Pool).
type Pool interface {
	Contains(netip.Addr) bool
	Size() uint64
	String() string
}

// Metrics are lbd's Prometheus metrics, in a registry of their own, and the
// health state behind /healthz. The daemon records every sync in them (a
// cron pass with [Metrics.ObserveSync]); [Metrics.Serve] serves them with
// the process and Go runtime collectors; [Metrics.WriteTextfile] writes
// them for node_exporter. The metric names are lbd's interface to its
// dashboards and alerts (hack/monitoring): they do not change.
type Metrics struct {
	// Pools are the address pools, for lbd_pool_addresses.
	Pools []Pool
	// Version is lbd's version for lbd_build_info{version}; empty:
	// "unknown". Set it, like Pools, before the first pass and Serve.
	Version string

	reg             *prometheus.Registry // lbd_* families: served and written
	runtime         *prometheus.Registry // process_* and go_*: served only
	revision        string
	inDaemon        atomic.Bool // set by New: the watch families are the daemon's
	text            textfile
	syncDuration    prometheus.Histogram
	phaseDuration   *prometheus.HistogramVec
	haMaster        prometheus.Gauge
	runtimeChanges  prometheus.Counter
	workers         prometheus.Gauge
	syncs           *prometheus.CounterVec
	lastSuccess     prometheus.Gauge
	discoveryErrors *prometheus.CounterVec
	applyErrors     *prometheus.CounterVec
	services        *prometheus.GaugeVec
	endpoints       prometheus.Gauge
	haproxyReloads  prometheus.Counter
	watchUp         prometheus.Gauge
	watchRestarts   prometheus.Counter
	poolAddresses   *prometheus.GaugeVec
	pending         prometheus.Gauge
	health          *health
}

// NewMetrics registers lbd's metrics, lbd_build_info and the process and
// Go collectors. /healthz fails when no sync has succeeded within window
// (lbd run uses three resync periods).
func NewMetrics(window time.Duration, now func() time.Time) *Metrics {
	m := &Metrics{
		reg:      prometheus.NewRegistry(),
		runtime:  prometheus.NewRegistry(),
		revision: vcsRevision(),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lbd_sync_duration_seconds",
			Help:    "Duration of one sync (lock, discover, plan, apply, store), whatever its result.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbd_syncs_total",
			Help: "Syncs by result: ok (changes applied), noop, refused (max-delete guard), error.",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lbd_last_success_timestamp_seconds",
			Help: "Unix time of the end of the last successful sync; 0 before the first.",
		}),
		discoveryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbd_discovery_errors_total",
			Help: "Syncs whose discovery (SSH to the master, kubectl, parsing) failed.",
		}, []string{"backend"}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lbd_apply_errors_total",
			Help: "Syncs whose backend failed to check (drift) or program the data plane; the previous state kept serving.",
		}, []string{"backend"}),
		services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lbd_services",
			Help: "Services by their state in the backend (programmed, unexposed, skipped, rejected, held, unroutable), as of the last successful sync.",
		}, []string{"state"}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lbd_endpoints",
			Help: "Ready endpoints of the exposed services, summed over their ports, as of the last successful sync.",
		}),
		haproxyReloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lbd_haproxy_reloads_total",
			Help: "haproxy backend: reloads that took up new service files.",
		}),
		watchUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lbd_watch_up",
			Help: "1 while the kubectl watch over SSH delivers events, 0 while it reconnects (or with --watch=false).",
		}),
		watchRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lbd_watch_restarts_total",
			Help: "Times the kubectl watch over SSH ended or broke and was started again.",
		}),
		poolAddresses: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lbd_pool_addresses",
			Help: "Addresses of each --pool by state: used (served, a shared address once) or free, as of the last successful sync.",
		}, []string{"pool", "state"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lbd_services_pending",
			Help: "LoadBalancer services waiting for an address (pools exhausted), as of the last successful sync.",
		}),
		health: &health{window: window, now: now},
	}
	m.phaseDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "lbd_sync_phase_seconds",
		Help:    "Duration of each phase of a sync: discover, parse, store-read, verify (drift check), plan, route-check, prepare, apply, commit, after. discover and parse run alongside store-read and verify, so the phases of a sync may add up to more than its duration.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"phase"})
	m.haMaster = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lbd_ha_master",
		Help: "--ha=keepalived: 1 while this LB is the VRRP master (it writes service status), 0 otherwise.",
	})
	m.runtimeChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lbd_haproxy_runtime_changes_total",
		Help: "haproxy backend: passes applied through the runtime API (server slots) without a reload.",
	})
	m.workers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lbd_haproxy_workers",
		Help: "haproxy backend: workers alive after the last pass (show proc on the master socket); more than 1 lingers after reloads.",
	})
	m.reg.MustRegister(m.phaseDuration, m.haMaster, m.runtimeChanges, m.workers, buildInfo{m})
	m.runtime.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	m.reg.MustRegister(m.syncDuration, m.syncs, m.lastSuccess, m.discoveryErrors, m.applyErrors,
		m.services, m.endpoints, m.haproxyReloads, m.watchUp, m.watchRestarts, m.poolAddresses, m.pending)
	return m
}

// ObserveSync records one sync that took took and ended with res and err
// (res may be nil when the lock could not be taken). The daemon calls it
// after every pass; a cron pass calls it once.
func (m *Metrics) ObserveSync(took time.Duration, res *reconcile.Result, err error) {
	m.syncDuration.Observe(took.Seconds())
	if res != nil {
		for _, ph := range res.Phases {
			m.phaseDuration.WithLabelValues(ph.Name).Observe(ph.Duration.Seconds())
		}
	}
	result := "error"
	if res != nil && res.Record.Result != "" {
		result = res.Record.Result
	}
	if err == nil {
		m.syncs.WithLabelValues(result).Inc()
		end := m.health.success()
		m.lastSuccess.Set(float64(end.UnixNano()) / 1e9)
		_, eps := exposed(res.Plan.Desired)
		m.observeStates(res.States)
		m.endpoints.Set(float64(eps))
		m.observeAddresses(res.Plan.Addresses)
		return
	}
	m.syncs.WithLabelValues(result).Inc()
}

// observeStates sets lbd_services{state} from a pass's service states;
// every state has a series, 0 when no service is in it.
func (m *Metrics) observeStates(states []lb.ServiceState) {
	n := map[string]int{}
	for _, st := range states {
		n[st.State]++
	}
	for _, s := range lb.ServiceStates {
		m.services.WithLabelValues(s).Set(float64(n[s]))
	}
}

// observeAddresses sets the pool and pending gauges from a pass's
// address report.
func (m *Metrics) observeAddresses(report []lb.AddressState) {
	used := make([]map[netip.Addr]bool, len(m.Pools))
	pending := 0
	for _, st := range report {
		switch st.State {
		case lb.AddressPending:
			if !st.Addr.IsValid() {
				pending++
			}
		case lb.AddressServed:
			for i, p := range m.Pools {
				if p.Contains(st.Addr) {
					if used[i] == nil {
						used[i] = map[netip.Addr]bool{}
					}
					used[i][st.Addr] = true
					break
				}
			}
		}
	}
	for i, p := range m.Pools {
		n := uint64(len(used[i]))
		m.poolAddresses.WithLabelValues(p.String(), "used").Set(float64(n))
		m.poolAddresses.WithLabelValues(p.String(), "free").Set(float64(p.Size() - min(n, p.Size())))
	}
	m.pending.Set(float64(pending))
}

// buildInfoDesc describes lbd_build_info.
var buildInfoDesc = prometheus.NewDesc("lbd_build_info",
	"Always 1; its labels say which lbd runs: version (stamped at build time), goversion, revision (the VCS commit, when the build recorded it).",
	[]string{"version", "goversion", "revision"}, nil)

// buildInfo collects lbd_build_info from its Metrics' Version.
type buildInfo struct{ m *Metrics }

// Describe sends lbd_build_info's description.
func (b buildInfo) Describe(ch chan<- *prometheus.Desc) { ch <- buildInfoDesc }

// Collect sends lbd_build_info 1.
func (b buildInfo) Collect(ch chan<- prometheus.Metric) {
	v := b.m.Version
	if v == "" {
		v = "unknown"
	}
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1, v, runtime.Version(), b.m.revision)
}

// vcsRevision returns the commit the binary was built from, with
// "-dirty" when the tree was modified, or "unknown".
func vcsRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case dirty:
		return rev + "-dirty"
	}
	return rev
}

// exposed counts the exposed services and their ready endpoints.
func exposed(svcs []lb.Service) (services, endpoints int) {
	for i := range svcs {
		if !svcs[i].Exposed() {
			continue
		}
		services++
		for _, p := range svcs[i].Ports {
			endpoints += len(p.ReadyEndpoints())
		}
	}
	return services, endpoints
}

// health answers /healthz: healthy while a sync has succeeded within the
// window (lbd run uses three resync periods), unhealthy before the first
// success and after a window without one.
type health struct {
	window time.Duration
	now    func() time.Time
	mu     sync.Mutex
	last   time.Time
}

// success records a successful sync now and returns the time.
func (h *health) success() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = h.now()
	return h.last
}

// succeeded reports whether a sync has succeeded in this process.
func (h *health) succeeded() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.last.IsZero()
}

// check returns nil when healthy, otherwise why not.
func (h *health) check() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last.IsZero() {
		return fmt.Errorf("no sync has succeeded yet")
	}
	if ago := h.now().Sub(h.last); ago > h.window {
		return fmt.Errorf("no sync has succeeded for %v (last at %s; limit %v)", ago.Round(time.Second), h.last.Format(time.RFC3339), h.window)
	}
	return nil
}

// ServeHTTP answers 200 "ok ..." or 503 with the reason.
func (h *health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := h.check(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "unhealthy: %v\n", err)
		return
	}
	h.mu.Lock()
	last := h.last
	h.mu.Unlock()
	fmt.Fprintf(w, "ok: last successful sync at %s\n", last.Format(time.RFC3339))
}

// handler serves /metrics and /healthz.
func (m *Metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{m.reg, m.runtime}, promhttp.HandlerOpts{Registry: m.runtime}))
	mux.Handle("/healthz", m.health)
	return mux
}

// Serve listens on addr and serves /metrics and /healthz until the
// returned function is called. onErr hears of a server that fails later;
// the error of a failed listen is net.Listen's.
func (m *Metrics) Serve(addr string, onErr func(error)) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err // net.Listen names the address
	}
	srv := &http.Server{Handler: m.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
			onErr(err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

// CountSource returns src, counting its failed discoveries in
// lbd_discovery_errors_total{backend}.
func (m *Metrics) CountSource(src reconcile.Source, backend string) reconcile.Source {
	return &countingSource{Source: src, errs: m.discoveryErrors.WithLabelValues(backend)}
}

// CountBackend returns be, counting its failed applies and drift checks
// in lbd_apply_errors_total{backend}, and its reloads, when it counts them
// (Reloads() uint64: haproxy), in lbd_haproxy_reloads_total. The result is
// a reconcile.Verifier whether be is one or not (without, Verify finds
// nothing).
func (m *Metrics) CountBackend(be reconcile.Backend, backend string) reconcile.Backend {
	return &countingBackend{Backend: be, errs: m.applyErrors.WithLabelValues(backend), reloads: m.haproxyReloads, runtime: m.runtimeChanges, workers: m.workers}
}

// countingSource counts failed discoveries for the metrics.
type countingSource struct {
	reconcile.Source
	errs prometheus.Counter
}

// SetHAMaster sets lbd_ha_master.
func (m *Metrics) SetHAMaster(master bool) {
	v := 0.0
	if master {
		v = 1
	}
	m.haMaster.Set(v)
}

// LastParse passes the wrapped source's parse time through, so that a
// pass reports it as a phase of its own.
func (s *countingSource) LastParse() time.Duration {
	if pt, ok := s.Source.(reconcile.ParseTimer); ok {
		return pt.LastParse()
	}
	return 0
}

// Discover passes through and counts an error.
func (s *countingSource) Discover(ctx context.Context) ([]lb.Service, []*lb.InvalidServiceError, error) {
	svcs, invalid, err := s.Source.Discover(ctx)
	if err != nil {
		s.errs.Inc()
	}
	return svcs, invalid, err
}

// countingBackend counts failed applies and drift checks, and the
// backend's reloads when it counts them (haproxy), for the metrics. It is a
// reconcile.Verifier when the backend it wraps is one.
type countingBackend struct {
	reconcile.Backend
	errs    prometheus.Counter
	reloads prometheus.Counter
	runtime prometheus.Counter
	workers prometheus.Gauge
}

// reloadCounter is implemented by backends that reload a daemon.
type reloadCounter interface{ Reloads() uint64 }

// runtimeCounter is implemented by backends that also change a running
// daemon without a reload, and count its workers (haproxy).
type runtimeCounter interface {
	Stats() (reloads, runtimeChanges uint64)
	Workers(ctx context.Context) (int, error)
}

// Apply passes through, counting an error or the reloads it caused.
func (b *countingBackend) Apply(ctx context.Context, desired []lb.Service, changes []lb.Change) ([]lb.Skipped, error) {
	rc, counts := b.Backend.(reloadCounter)
	var before uint64
	if counts {
		before = rc.Reloads()
	}
	rt, runs := b.Backend.(runtimeCounter)
	var rtBefore uint64
	if runs {
		_, rtBefore = rt.Stats()
	}
	skipped, err := b.Backend.Apply(ctx, desired, changes)
	if err != nil {
		b.errs.Inc()
	}
	if counts && b.reloads != nil {
		b.reloads.Add(float64(rc.Reloads() - before))
	}
	if runs && b.runtime != nil {
		_, after := rt.Stats()
		b.runtime.Add(float64(after - rtBefore))
		if n, werr := rt.Workers(ctx); werr == nil && b.workers != nil {
			b.workers.Set(float64(n))
		}
	}
	return skipped, err
}

// Verify passes through to the wrapped backend's Verify, if any, counting
// an error.
func (b *countingBackend) Verify(ctx context.Context, applied []lb.Service) ([]string, error) {
	v, ok := b.Backend.(reconcile.Verifier)
	if !ok {
		return nil, nil
	}
	drift, err := v.Verify(ctx, applied)
	if err != nil {
		b.errs.Inc()
	}
	return drift, err
}
