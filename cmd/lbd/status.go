package main

import (
	"context"
	"fmt"
	"os"

	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/report"
	"github.com/lbd/lbd/store"
)

// status prints the stored mapping with the notes' columns (the
// ServiceToEndPointsMapping view) and each service's state in the
// backend, the services that are not programmed with the reason, and the
// last sync.
func (a *app) status(ctx context.Context) error {
	db, last, note, err := a.openState(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	svcs, err := db.Services(ctx)
	if err != nil {
		return err
	}
	addrs, err := db.AddressReport(ctx)
	if err != nil {
		return err
	}
	states, err := db.States(ctx, a.cfg.Backend)
	if err != nil {
		return err
	}
	st := report.Status{Backend: a.cfg.Backend, Note: note, Services: svcs, Addresses: addrs, States: states, Last: last}
	if o, err := a.haOptions(); err == nil && o != nil && a.cfg.Output != "json" {
		st.HA = &report.HA{Interface: o.Interface, RouterID: o.RouterID, State: keepalived.New(*o, a.log).Describe()}
	}
	return report.WriteStatus(a.stdout, a.cfg.Output, st)
}

// openState opens the store that status and explain read and makes the
// backend of its last sync the one they look at, unless --backend was
// given (cli.Config.UseLastBackend). It returns the store, the last sync
// (nil without one) and the line that names the backend, or "".
func (a *app) openState(ctx context.Context) (_ *store.DB, last *lb.SyncRecord, note string, err error) {
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return nil, nil, "", fmt.Errorf("no state at %s (run lbd once first, or set --db): %w", a.cfg.DB, err)
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return nil, nil, "", err
	}
	hist, err := db.History(ctx, 1)
	if err != nil {
		db.Close()
		return nil, nil, "", err
	}
	if len(hist) > 0 {
		last = &hist[0]
		note = a.cfg.UseLastBackend(last.Backend)
	}
	return db, last, note, nil
}

// lastBackendOf is openState's choice of backend for plan, which has not
// opened the store: no store is no sync.
func (a *app) lastBackendOf(ctx context.Context) (string, error) {
	if _, err := os.Stat(a.cfg.DB); err != nil || a.cfg.Given["backend"] {
		return "", nil
	}
	db, _, note, err := a.openState(ctx)
	if err != nil {
		return "", err
	}
	db.Close()
	return note, nil
}
