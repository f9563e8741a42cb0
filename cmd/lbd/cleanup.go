package main

import (
	"context"

	"github.com/lbd/lbd/reconcile"
	"github.com/lbd/lbd/store"
	"github.com/lbd/lbd/vip"
)

// cleanup removes everything lbd programmed in the chosen backend and the
// addresses it added to --vip-interface (reconcile.Cleanup).
func (a *app) cleanup(ctx context.Context) error {
	if _, err := a.openLog(a.cfg.LogFile); err != nil {
		return err
	}
	unlock, err := store.Lock(ctx, a.cfg.DB, a.cfg.LockWait)
	if err != nil {
		return err
	}
	defer unlock()
	be, err := a.newBackend()
	if err != nil {
		return err
	}
	var db *store.DB
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	open := func() (reconcile.CleanupStore, error) {
		db, err = store.Open(ctx, a.cfg.DB)
		return db, err
	}
	var owner reconcile.AddressOwner
	if a.cfg.VIPInterface != "" {
		owner = vip.New(a.cfg.VIPInterface, a.log)
	}
	if err := reconcile.Cleanup(ctx, be, open, owner); err != nil {
		return err
	}
	a.log.Info("cleanup done", "backend", be.Name())
	return nil
}
