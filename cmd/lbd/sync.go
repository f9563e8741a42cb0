package main

import (
	"context"
	"fmt"
	"time"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/daemon"
	"github.com/lbd/lbd/reconcile"
	"github.com/lbd/lbd/report"
)

// sync runs one pass: lock, discover, plan, apply, store. It is what cron
// runs, and lbd apply.
func (a *app) sync(ctx context.Context) (*reconcile.Result, error) {
	if _, err := a.openLog(a.cfg.LogFile); err != nil {
		return nil, err
	}
	env, err := a.setUp(ctx, true)
	if err != nil {
		return nil, err
	}
	defer env.close()

	rec, o := env.reconciler, daemon.Options{Log: a.log}
	if a.cfg.MetricsFile != "" {
		o.Metrics, o.Textfile = newMetrics(env, time.Hour), a.cfg.MetricsFile
		rec = a.newReconciler(env, o.Metrics.CountSource(env.source, a.cfg.Backend), o.Metrics.CountBackend(env.backend, a.cfg.Backend))
	}
	o.AfterSync = env.afterPass(o.Metrics)
	return daemon.Once(ctx, rec, a.cfg.Full, o)
}

// plan prints what a sync would do and changes nothing. It exits 0 when
// nothing would change, 2 when changes are pending, 3 when nothing is
// pending but the guard holds deletions back, and 1 on error.
func (a *app) plan(ctx context.Context) int {
	if _, err := a.openLog(""); err != nil {
		return a.exit(err)
	}
	note, err := a.lastBackendOf(ctx)
	if err != nil {
		return a.exit(err)
	}
	env, err := a.setUp(ctx, false)
	if err != nil {
		return a.exit(err)
	}
	defer env.close()
	p, err := env.reconciler.Plan(ctx)
	if err != nil {
		return a.exit(err)
	}
	if note != "" && a.cfg.Output != "json" {
		fmt.Fprintln(a.stdout, note)
	}
	if err := report.WritePlan(a.stdout, a.cfg.Output, report.Plan{Backend: a.cfg.Backend, Changes: p.Changes, Unchanged: p.Unchanged,
		Rejected: p.Rejected, Unroutable: p.Unroutable, Skipped: p.Skipped, Held: p.Held, Addresses: p.Addresses,
		Allocations: p.Allocations, StatusWrites: p.StatusWrites}); err != nil {
		return a.exit(err)
	}
	return cli.PlanExit(len(p.Changes), len(p.Held))
}
