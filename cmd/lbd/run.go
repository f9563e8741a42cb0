package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lbd/lbd/daemon"
	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/reconcile"
	"github.com/lbd/lbd/store"
)

// runDaemon is `lbd run`: it wires the daemon (cli checked its flags) and
// runs it until SIGTERM or SIGINT. It never cleans up: the rules stay in
// place when it stops or fails, so traffic outlives lbd.
func (a *app) runDaemon(ctx context.Context) error {
	c := a.cfg
	reopenLog, err := a.openLog(c.LogFile)
	if err != nil {
		return err
	}
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
	m := newMetrics(env, 3*c.Resync)
	// With the watch, syncs answer from the objects it delivered and list
	// only on the full resync (or when the watch broke).
	var src reconcile.Source = env.source
	cached := discovery.NewCached(env.source)
	if c.Watch {
		src = cached
	}
	rec := a.newReconciler(env, m.CountSource(src, c.Backend), m.CountBackend(env.backend, c.Backend))
	if c.MetricsAddr != "" {
		stop, err := m.Serve(c.MetricsAddr, func(err error) { a.log.Error("metrics server failed", "addr", c.MetricsAddr, "err", err) })
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer stop()
	}
	o := daemon.Options{Debounce: c.Debounce, Interval: c.Interval, Resync: c.Resync, FirstFull: c.Full,
		Lock:       func(ctx context.Context) (func() error, error) { return store.Lock(ctx, c.DB, c.LockWait) },
		WatchEnded: discovery.ErrWatchEnded, ReopenLog: reopenLog, Signals: sigs, Metrics: m, Textfile: c.MetricsFile,
		AfterSync: env.afterPass(m), Log: a.log}
	if c.Watch {
		o.Watch = func(ctx context.Context, event func(string)) error { return cached.Watch(ctx, 0, event) }
		o.Relist = cached.Relist
	}
	if env.ha != nil { // a new master passes at once (SIGHUP), to allocate and write status
		go env.ha.Watch(ctx, 100*time.Millisecond, func(master bool) {
			if m.SetHAMaster(master); master {
				daemon.Resync(ctx, sigs)
			}
		})
	}
	d := daemon.New(rec, o)
	a.log.Info("lbd run starting", "version", versionString(), "backend", c.Backend, "master", c.Master,
		"watch", c.Watch, "interval", c.Interval, "resync", c.Resync, "debounce", c.Debounce, "metrics", c.MetricsAddr)
	d.Run(ctx)
	a.log.Info("lbd run stopped; the programmed state stays in place")
	return nil
}

// newMetrics returns the metrics of lbd's passes over env's pools, with
// lbd's version; /healthz wants a success within window.
func newMetrics(env *env, window time.Duration) *daemon.Metrics {
	m := daemon.NewMetrics(window, time.Now)
	m.Version = versionString()
	for _, p := range env.pools {
		m.Pools = append(m.Pools, p)
	}
	return m
}
