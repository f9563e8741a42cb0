package main

import (
	"context"
	"fmt"

	"github.com/lbd/lbd/store"
	"github.com/lbd/lbd/vip"
)

// cleanup removes everything lbd programmed in the chosen backend and
// forgets that backend's applied state, so the next sync starts afresh.
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
	if err := be.Cleanup(ctx); err != nil {
		return fmt.Errorf("cleanup %s: %w", be.Name(), err)
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.ForgetApplied(ctx, be.Name()); err != nil {
		return err
	}
	// The addresses lbd added to --vip-interface come off too, and only
	// those.
	if a.cfg.VIPInterface != "" {
		owned, err := db.OwnedAddresses(ctx, a.cfg.VIPInterface)
		if err != nil {
			return err
		}
		left, serr := vip.New(a.cfg.VIPInterface, a.log).Sync(ctx, nil, owned)
		if err := db.SaveOwnedAddresses(ctx, a.cfg.VIPInterface, left); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("cleanup addresses on %s: %w", a.cfg.VIPInterface, serr)
		}
	}
	a.log.Info("cleanup done", "backend", be.Name())
	return nil
}
