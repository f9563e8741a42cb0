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
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return fmt.Errorf("no state at %s (run lbd once first, or set --db): %w", a.cfg.DB, err)
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	svcs, err := db.Services(ctx)
	if err != nil {
		return err
	}
	hist, err := db.History(ctx, 1)
	if err != nil {
		return err
	}
	note := a.lastBackend(hist)
	addrs, err := db.AddressReport(ctx)
	if err != nil {
		return err
	}
	states, err := db.States(ctx, a.cfg.Backend)
	if err != nil {
		return err
	}
	st := report.Status{Backend: a.cfg.Backend, Note: note, Services: svcs, Addresses: addrs, States: states}
	if len(hist) > 0 {
		st.Last = &hist[0]
	}
	if o, err := a.haOptions(); err == nil && o != nil && a.cfg.Output != "json" {
		st.HA = &report.HA{Interface: o.Interface, RouterID: o.RouterID, State: keepalived.New(*o, a.log).Describe()}
	}
	return report.WriteStatus(a.stdout, a.cfg.Output, st)
}

// lastBackend makes the backend of the last sync in hist (newest first)
// the one plan and status look at, unless --backend (or LBD_BACKEND) was
// given. It returns the line that says so, or "" when --backend was given
// or no sync is recorded.
func (a *app) lastBackend(hist []lb.SyncRecord) string {
	if a.cfg.Given["backend"] || len(hist) == 0 || hist[0].Backend == "" {
		return ""
	}
	a.cfg.Backend = hist[0].Backend
	return fmt.Sprintf("backend: %s (of the last sync)", a.cfg.Backend)
}

// lastBackendOf is lastBackend for a command that has not opened the
// store yet; no store is no sync.
func (a *app) lastBackendOf(ctx context.Context) (string, error) {
	if a.cfg.Given["backend"] {
		return "", nil
	}
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return "", nil
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return "", err
	}
	defer db.Close()
	hist, err := db.History(ctx, 1)
	if err != nil {
		return "", err
	}
	return a.lastBackend(hist), nil
}
