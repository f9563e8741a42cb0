package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/reconcile"
	"github.com/lbd/lbd/store"
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

// runDaemon is `lbd run`: sync at once, then after every change the watch
// reports (or every --interval without it), fully every --resync, until
// SIGTERM or SIGINT. It never cleans up: the rules stay in place when it
// stops or fails, so traffic outlives lbd.
func (a *app) runDaemon(ctx context.Context) error {
	c := a.cfg
	switch {
	case c.interval <= 0:
		return fmt.Errorf("--interval %v: must be positive", c.interval)
	case c.resync <= 0:
		return fmt.Errorf("--resync %v: must be positive", c.resync)
	case c.debounce < 0:
		return fmt.Errorf("--debounce %v: must not be negative", c.debounce)
	}
	reopenLog, closeLog, err := a.openLogRotatable()
	if err != nil {
		return err
	}
	defer closeLog()
	// Subscribed first, so that a SIGHUP or SIGUSR1 during set-up is not
	// fatal (their default action ends the process).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	env, err := a.setUp(ctx, false) // the lock is taken per sync
	if err != nil {
		return err
	}
	defer env.close()
	m := newMetrics(3*c.resync, time.Now)
	m.pools = env.pools
	be := &countingBackend{Backend: env.backend, errs: m.applyErrors.WithLabelValues(c.backend), reloads: m.haproxyReloads}
	src := &countingSource{Source: env.source, errs: m.discoveryErrors.WithLabelValues(c.backend)}
	rec := a.newReconciler(env, src, be)

	if c.metricsAddr != "" {
		stop, err := m.serve(c.metricsAddr, func(err error) { a.log.Error("metrics server failed", "addr", c.metricsAddr, "err", err) })
		if err != nil {
			return err
		}
		defer stop()
	}

	d := &daemon{
		log:       a.log,
		debounce:  c.debounce,
		interval:  c.interval,
		resync:    c.resync,
		firstFull: c.full,
		sync: func(ctx context.Context, full bool) error {
			start := time.Now()
			res, err := a.lockedSync(ctx, rec, full)
			m.observeSync(time.Since(start), res, err)
			return err
		},
		notify:    func(state string) { _, _ = sd.SdNotify(false, state) },
		reopenLog: reopenLog,
		signals:   sigs,
		now:       time.Now,
		backoff:   backoff{min: watchBackoffMin, max: watchBackoffMax, jitter: watchJitter, rand: rand.Float64},
		watchUp:   func(up bool) { m.watchUp.Set(map[bool]float64{true: 1}[up]) },
		watchDown: m.watchRestarts.Inc,
	}
	if c.watch {
		d.watch = func(ctx context.Context, event func(string)) error { return env.source.Watch(ctx, 0, event) }
	}
	if wd, err := sd.SdWatchdogEnabled(false); err != nil {
		a.log.Warn("systemd watchdog settings unreadable; no watchdog", "err", err)
	} else {
		d.watchdog = wd
	}
	a.log.Info("lbd run starting", "version", versionString(), "backend", c.backend, "master", c.master,
		"watch", c.watch, "interval", c.interval, "resync", c.resync, "debounce", c.debounce, "metrics", c.metricsAddr)
	d.run(ctx)
	a.log.Info("lbd run stopped; the programmed state stays in place")
	return nil
}

// lockedSync runs one sync under the store's cross-process lock, held for
// the sync only, and logs its outcome.
func (a *app) lockedSync(ctx context.Context, rec *reconcile.Reconciler, full bool) (*reconcile.Result, error) {
	unlock, err := store.Lock(ctx, a.cfg.db, a.cfg.lockWait)
	if err != nil {
		a.log.Error("sync failed", "full", full, "err", err)
		return nil, err
	}
	defer unlock()
	res, err := rec.Sync(ctx, full)
	if err != nil {
		a.log.Error("sync failed", "full", full, "err", err)
		return res, err
	}
	a.logSync(res, full)
	return res, nil
}

// daemon is the loop of lbd run. Every side effect is a field, so tests
// drive it with fakes.
type daemon struct {
	log                        *slog.Logger
	debounce, interval, resync time.Duration
	// firstFull: the first sync checks the data plane for drift (--full).
	firstFull bool
	// sync runs one locked sync; full adds the drift check.
	sync func(ctx context.Context, full bool) error
	// watch blocks while it reports changes through event, and returns
	// why it stopped (nil once ctx ends). nil: poll every interval.
	watch func(ctx context.Context, event func(resource string)) error
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

// run syncs once, tells systemd it is ready, and loops until ctx ends.
func (d *daemon) run(ctx context.Context) {
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
func (d *daemon) syncNow(ctx context.Context, s *schedule, full bool) {
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
func (d *daemon) watchLoop(ctx context.Context, events chan<- time.Time, up *atomic.Bool) {
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
		if errors.Is(err, discovery.ErrWatchEnded) {
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

// schedule decides when the daemon syncs. It is pure: the loop feeds it
// the time, so tests run it without sleeping.
type schedule struct {
	debounce, interval, resync time.Duration
	// polling: no working watch, so sync every interval.
	polling bool
	// pending is the time of the first change not yet synced; zero: none.
	pending time.Time
	// fullDue: a full sync was asked for (SIGHUP).
	fullDue bool
	// nextFull and nextPoll are when the next full resync and the next
	// poll are due.
	nextFull, nextPoll time.Time
}

// trigger notes a change seen at t. A burst of changes makes one sync,
// debounce after the first: later ones do not postpone it.
func (s *schedule) trigger(t time.Time) {
	if s.pending.IsZero() || t.Before(s.pending) {
		s.pending = t
	}
}

// requestFull asks for a full sync now.
func (s *schedule) requestFull() { s.fullDue = true }

// wake returns when the next sync is due; the zero time means now.
func (s *schedule) wake() time.Time {
	if s.fullDue {
		return time.Time{}
	}
	w := s.nextFull
	if !s.pending.IsZero() {
		w = earliest(w, s.pending.Add(s.debounce))
	}
	if s.polling {
		w = earliest(w, s.nextPoll)
	}
	return w
}

// due says whether a sync is due at now, and whether it is a full one.
func (s *schedule) due(now time.Time) (run, full bool) {
	full = s.fullDue || !now.Before(s.nextFull)
	run = full ||
		(!s.pending.IsZero() && !now.Before(s.pending.Add(s.debounce))) ||
		(s.polling && !now.Before(s.nextPoll))
	return run, full
}

// started notes a sync starting at now: it covers every change seen so far.
func (s *schedule) started(now time.Time, full bool) {
	s.pending = time.Time{}
	s.nextPoll = now.Add(s.interval)
	if full {
		s.fullDue = false
		s.nextFull = now.Add(s.resync)
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// backoff is an exponential backoff with jitter: min, doubling up to max,
// each wait multiplied by a random factor in [1-jitter, 1+jitter].
type backoff struct {
	min, max time.Duration
	jitter   float64
	// rand returns a number in [0, 1).
	rand func() float64
	cur  time.Duration
}

// next returns the next wait.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	f := 1 + b.jitter*(2*b.rand()-1)
	return time.Duration(float64(b.cur) * f)
}

// reset starts over at min.
func (b *backoff) reset() { b.cur = 0 }

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
