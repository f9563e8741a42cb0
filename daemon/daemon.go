package daemon

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/lbd/lbd/reconcile"
)

// Reconnect backoff of the watch: 1 s doubling to 60 s, each wait +-20%;
// a watch that lasted watchResetAfter starts over at 1 s.
const (
	watchBackoffMin = time.Second
	watchBackoffMax = time.Minute
	watchJitter     = 0.2
	watchResetAfter = time.Minute
	// stopGrace is how long a sync that SIGTERM interrupts may still run,
	// so that lbd never stops between the backend and the store.
	stopGrace = 10 * time.Second
)

// Syncer is what the daemon drives: one reconcile pass, full or not.
// *reconcile.Reconciler satisfies it.
type Syncer interface {
	Sync(ctx context.Context, full bool) (*reconcile.Result, error)
}

var _ Syncer = (*reconcile.Reconciler)(nil)

// Options configure a Daemon. Debounce, Interval and Resync are checked by
// the caller (they are flags): Interval and Resync positive, Debounce not
// negative.
type Options struct {
	// Debounce is the wait after the first change seen, so that a burst
	// of changes makes one sync.
	Debounce time.Duration
	// Interval is the poll period without a watch, and while the watch
	// reconnects.
	Interval time.Duration
	// Resync is the period of the full sync (with the drift check).
	Resync time.Duration
	// FirstFull: the first sync is a full one.
	FirstFull bool
	// Lock takes the cross-process lock for one sync and returns its
	// release (store.Lock); nil: no lock.
	Lock func(ctx context.Context) (unlock func() error, err error)
	// Watch blocks while it reports changes through event, and returns
	// why it stopped (nil once ctx ends). nil: poll every Interval.
	Watch func(ctx context.Context, event func(resource string)) error
	// Relist is called before every full sync (the first with FirstFull,
	// every Resync, SIGHUP), so that a source answering from what the
	// watch delivered lists the cluster afresh (discovery.Cached.Relist):
	// the full sync is the safety net for the watch too. nil: nothing.
	Relist func()
	// WatchEnded is the error (matched with errors.Is) with which Watch
	// says the master ended the watch, which is no failure
	// (discovery.ErrWatchEnded).
	WatchEnded error
	// ReopenLog reopens the log file (on SIGUSR1); nil: nothing to reopen.
	ReopenLog func() error
	// Signals delivers SIGHUP (full resync) and SIGUSR1 (reopen the log).
	Signals <-chan os.Signal
	// Metrics record every sync and the watch's state; nil: a private
	// set nobody serves.
	Metrics *Metrics
	// Textfile is where the metrics are written for node_exporter's
	// textfile collector after every pass ([Metrics.WriteTextfile]);
	// empty: nowhere.
	Textfile string
	// AfterSync runs after every pass, whatever its outcome, under the
	// pass's lock and before the metrics observe it (keepalived's health
	// file, the HA state metric); nil: nothing.
	AfterSync func(*reconcile.Result, error)
	Log       *slog.Logger
}

// Daemon is the loop of lbd run: sync at once, then after every change the
// watch reports (or every Interval without it), fully every Resync, until
// its context ends. It tells systemd when it is ready, feeds the watchdog,
// and never cleans up: the programmed state stays when it stops. Every
// side effect is a field, so tests drive it with fakes.
type Daemon struct {
	log                        *slog.Logger
	debounce, interval, resync time.Duration
	// firstFull: the first sync checks the data plane for drift (--full).
	firstFull bool
	// sync runs one locked sync; full adds the drift check.
	sync func(ctx context.Context, full bool) error
	// watch blocks while it reports changes through event, and returns
	// why it stopped (nil once ctx ends). nil: poll every interval.
	watch      func(ctx context.Context, event func(resource string)) error
	watchEnded error
	// notify sends a state line to systemd ("READY=1", "WATCHDOG=1").
	notify func(state string)
	// watchdog is systemd's WatchdogSec; 0: off.
	watchdog  time.Duration
	reopenLog func() error
	signals   <-chan os.Signal
	now       func() time.Time
	backoff   backoff
	// watchUp and watchDown report the watch's state to the metrics.
	watchUp   func(up bool)
	watchDown func()
}

// Resync asks the daemon that reads sigs (Options.Signals) for a full
// pass, as a SIGHUP does, unless ctx ends first.
func Resync(ctx context.Context, sigs chan<- os.Signal) {
	select {
	case sigs <- syscall.SIGHUP:
	case <-ctx.Done():
	}
}

// New returns the daemon that drives rec as o says. It reads systemd's
// watchdog setting from the environment.
func New(rec Syncer, o Options) *Daemon {
	rec = withAfter(rec, o.AfterSync)
	m := o.Metrics
	if m == nil {
		m = NewMetrics(3*o.Resync, time.Now)
	}
	m.inDaemon.Store(true)
	lock := o.Lock
	if lock == nil {
		lock = func(context.Context) (func() error, error) { return func() error { return nil }, nil }
	}
	reopen := o.ReopenLog
	if reopen == nil {
		reopen = func() error { return nil }
	}
	d := &Daemon{
		log:        o.Log,
		debounce:   o.Debounce,
		interval:   o.Interval,
		resync:     o.Resync,
		firstFull:  o.FirstFull,
		watch:      o.Watch,
		watchEnded: o.WatchEnded,
		notify:     func(state string) { _, _ = sd.SdNotify(false, state) },
		reopenLog:  reopen,
		signals:    o.Signals,
		now:        time.Now,
		backoff:    backoff{min: watchBackoffMin, max: watchBackoffMax, jitter: watchJitter, rand: rand.Float64},
		watchUp:    func(up bool) { m.watchUp.Set(map[bool]float64{true: 1}[up]) },
		watchDown:  m.watchRestarts.Inc,
	}
	d.sync = func(ctx context.Context, full bool) error {
		if full && o.Relist != nil {
			o.Relist()
		}
		start := time.Now()
		res, err := lockedSync(ctx, d.log, lock, rec, full)
		m.ObserveSync(time.Since(start), res, err)
		if o.Textfile != "" {
			if werr := m.WriteTextfile(o.Textfile); werr != nil {
				d.log.Warn("metrics textfile not written", "err", werr)
			}
		}
		return err
	}
	if wd, err := sd.SdWatchdogEnabled(false); err != nil {
		d.log.Warn("systemd watchdog settings unreadable; no watchdog", "err", err)
	} else {
		d.watchdog = wd
	}
	return d
}

// Once is one pass outside the loop, as lbd sync (cron) runs it, under
// the lock its caller holds: rec's sync and o.AfterSync; with o.Metrics
// the pass observed and, with o.Textfile, written there; then LogSync of
// a successful pass. Only AfterSync, Metrics, Textfile and Log are used.
func Once(ctx context.Context, rec Syncer, full bool, o Options) (*reconcile.Result, error) {
	start := time.Now()
	res, err := withAfter(rec, o.AfterSync).Sync(ctx, full)
	if m := o.Metrics; m != nil {
		m.ObserveSync(time.Since(start), res, err)
		if o.Textfile != "" {
			if werr := m.WriteTextfile(o.Textfile); werr != nil {
				o.Log.Warn("--metrics-textfile not written", "err", werr)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	LogSync(o.Log, res, full)
	return res, nil
}

// afterSyncer runs after once each pass, whatever its outcome.
type afterSyncer struct {
	Syncer
	after func(*reconcile.Result, error)
}

// Sync runs the pass, then the hook.
func (h afterSyncer) Sync(ctx context.Context, full bool) (*reconcile.Result, error) {
	res, err := h.Syncer.Sync(ctx, full)
	h.after(res, err)
	return res, err
}

// withAfter is rec with after run after each of its passes; rec itself
// without one.
func withAfter(rec Syncer, after func(*reconcile.Result, error)) Syncer {
	if after == nil {
		return rec
	}
	return afterSyncer{rec, after}
}

// lockedSync runs one sync under lock, held for the sync only, and logs
// its outcome.
func lockedSync(ctx context.Context, log *slog.Logger, lock func(context.Context) (func() error, error), rec Syncer, full bool) (*reconcile.Result, error) {
	unlock, err := lock(ctx)
	if err != nil {
		log.Error("sync failed", "full", full, "err", err)
		return nil, err
	}
	defer unlock()
	res, err := rec.Sync(ctx, full)
	if err != nil {
		log.Error("sync failed", "full", full, "err", err)
		return res, err
	}
	LogSync(log, res, full)
	return res, nil
}

// Above maxChangeLines changes, a sync logs only changeSample of them.
const (
	maxChangeLines = 100
	changeSample   = 10
)

// LogSync logs the outcome of a successful sync and its changes: one
// "sync done" line, then a line per change (only the first few of a big
// pass).
func LogSync(log *slog.Logger, res *reconcile.Result, full bool) {
	r := res.Record
	log.Info("sync done", "backend", r.Backend, "result", r.Result, "full", full, "services", r.Services,
		"created", r.Created, "updated", r.Updated, "deleted", r.Deleted, "skipped", r.Skipped,
		"rejected", len(res.Plan.Rejected), "duration", r.Duration, "phases", phasesString(res.Phases))
	changes := res.Plan.Changes
	if len(changes) > maxChangeLines {
		// A big pass (a first sync of a large cluster) logs counts and
		// the first few, not a line per service.
		log.Info("many changes; logging the first few", "changes", len(changes), "logged", changeSample)
		changes = changes[:changeSample]
	}
	for _, c := range changes {
		log.Info("service "+string(c.Kind), "service", c.Key(), "what", strings.Join(c.What, "; "))
	}
}

// phasesString renders a pass's phases as "discover=120ms parse=5ms ...".
func phasesString(ps []reconcile.Phase) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Name + "=" + p.Duration.Round(time.Microsecond).String()
	}
	return strings.Join(parts, " ")
}

// Run syncs once, tells systemd it is ready, and loops until ctx ends.
func (d *Daemon) Run(ctx context.Context) {
	// The watch starts before the first sync, so that no change between
	// the two is missed: every change after the watch's initial listing
	// is an event, and the listing's own lines trigger a sync after it.
	events := make(chan time.Time, 1)
	var watchUp atomic.Bool
	var wg sync.WaitGroup
	if d.watch != nil {
		wctx, stop := context.WithCancel(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.watchLoop(wctx, events, &watchUp)
		}()
		defer func() {
			stop()
			wg.Wait()
		}()
	} else {
		d.watchUp(false)
	}

	s := &schedule{debounce: d.debounce, interval: d.interval, resync: d.resync}
	d.syncNow(ctx, s, d.firstFull)
	// Ready once the first sync was tried, failed or not: the daemon is up
	// and the last applied state is serving.
	d.notify("READY=1")

	var wdog <-chan time.Time
	if d.watchdog > 0 {
		t := time.NewTicker(d.watchdog / 2)
		defer t.Stop()
		wdog = t.C
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.polling = d.watch == nil || !watchUp.Load()
		now := d.now()
		timer.Reset(max(s.wake().Sub(now), 0))
		select {
		case <-ctx.Done():
			d.notify("STOPPING=1")
			return
		case t := <-events:
			s.trigger(t)
		case sig := <-d.signals:
			switch sig {
			case syscall.SIGHUP:
				d.log.Info("SIGHUP: full resync")
				s.requestFull()
			case syscall.SIGUSR1:
				if err := d.reopenLog(); err != nil {
					d.log.Error("SIGUSR1: reopen the log file", "err", err)
				} else {
					d.log.Info("SIGUSR1: log file reopened")
				}
			}
		case <-wdog:
			d.notify("WATCHDOG=1")
		case <-timer.C:
		}
		if run, full := s.due(d.now()); run {
			d.syncNow(ctx, s, full)
		}
	}
}

// syncNow runs one sync. Once started it is allowed stopGrace to finish
// after ctx ends, so that SIGTERM does not cut it between the backend and
// the store.
func (d *Daemon) syncNow(ctx context.Context, s *schedule, full bool) {
	s.started(d.now(), full)
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, cancel) })
	defer stop()
	if err := d.sync(sctx, full); err != nil {
		d.notify("STATUS=last sync failed: " + firstLine(err.Error()))
		return
	}
	d.notify("STATUS=last sync ok at " + d.now().Format(time.RFC3339))
}

// watchLoop runs the watch until ctx ends, restarting it after a backoff
// whenever it stops. Every event, and every stop, is sent on events (the
// time it happened) for the loop to schedule a sync; up says whether the
// watch currently delivers.
func (d *Daemon) watchLoop(ctx context.Context, events chan<- time.Time, up *atomic.Bool) {
	send := func() {
		select {
		case events <- d.now():
		default: // an earlier event is pending: that one counts
		}
	}
	for {
		start := d.now()
		var seen atomic.Bool
		err := d.watch(ctx, func(string) {
			if !seen.Swap(true) {
				up.Store(true)
				d.watchUp(true)
				d.log.Info("watching the master for changes")
			}
			send()
		})
		up.Store(false)
		d.watchUp(false)
		if ctx.Err() != nil {
			return
		}
		d.watchDown()
		send() // look at once: the watch may have missed something
		if seen.Load() && d.now().Sub(start) >= watchResetAfter {
			d.backoff.reset()
		}
		wait := d.backoff.next()
		if d.watchEnded != nil && errors.Is(err, d.watchEnded) {
			d.log.Info("watch ended by the master; restarting", "in", wait.Round(time.Millisecond))
		} else {
			d.log.Warn("watch failed; the last applied state keeps serving; retrying", "in", wait.Round(time.Millisecond), "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
