package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lbd/lbd/lb"
)

// deletionsSQL is schema step 4: the deletions the max-delete guard let
// through, so that services lost over several passes count against one
// budget.
const deletionsSQL = `
-- deletions are the exposed services a backend stopped serving (deleted,
-- unexposed or left without a ready endpoint), with the time of the pass
-- that let them go. One row per service: a later deletion moves its time.
CREATE TABLE deletions (
	backend   TEXT NOT NULL,
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	at        TEXT NOT NULL, -- RFC 3339 with nanoseconds, UTC
	PRIMARY KEY (backend, namespace, name)
) WITHOUT ROWID;
`

// Deletions returns the services backend stopped serving at or after
// since, as namespace/name with the time of each.
func (db *DB) Deletions(ctx context.Context, backend string, since time.Time) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := scanAll(ctx, db.sql, `SELECT namespace, name, at FROM deletions WHERE backend = ? AND at >= ?`, func(r *sql.Rows) error {
		var ns, name, at string
		if err := r.Scan(&ns, &name, &at); err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return fmt.Errorf("deletion of %s/%s: %w", ns, name, err)
		}
		out[ns+"/"+name] = t
		return nil
	}, backend, since.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return nil, fmt.Errorf("store: deletions of %s: %w", backend, err)
	}
	return out, nil
}

// RecordDeletions records that backend stopped serving keys
// (namespace/name) at at, and forgets the deletions before forgetBefore,
// in one transaction.
func (db *DB) RecordDeletions(ctx context.Context, backend string, keys []string, at, forgetBefore time.Time) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM deletions WHERE backend = ? AND at < ?`,
			backend, forgetBefore.UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("forget: %w", err)
		}
		for _, k := range keys {
			ns, name, err := splitKey(k)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO deletions (backend, namespace, name, at) VALUES (?, ?, ?, ?)
				ON CONFLICT (backend, namespace, name) DO UPDATE SET at = excluded.at`,
				backend, ns, name, at.UTC().Format(time.RFC3339Nano)); err != nil {
				return fmt.Errorf("insert %s: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: record deletions of %s: %w", backend, err)
	}
	return nil
}

// statesSQL is schema step 5: what each backend made of each service.
const statesSQL = `
-- service_states are the last pass's state of every service per backend:
-- programmed, unexposed, skipped, rejected, held or unroutable, with the
-- reason and a hash of the desired spec it was reached with.
CREATE TABLE service_states (
	backend   TEXT NOT NULL,
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	state     TEXT NOT NULL,
	reason    TEXT NOT NULL,
	spec      TEXT NOT NULL,
	PRIMARY KEY (backend, namespace, name)
) WITHOUT ROWID;
`

// States returns backend's service states of the last pass, sorted by
// service.
func (db *DB) States(ctx context.Context, backend string) ([]lb.ServiceState, error) {
	var out []lb.ServiceState
	err := scanAll(ctx, db.sql, `SELECT namespace, name, state, reason, spec FROM service_states WHERE backend = ? ORDER BY namespace, name`, func(r *sql.Rows) error {
		var ns, name string
		var st lb.ServiceState
		if err := r.Scan(&ns, &name, &st.State, &st.Reason, &st.Spec); err != nil {
			return err
		}
		st.Key = ns + "/" + name
		out = append(out, st)
		return nil
	}, backend)
	if err != nil {
		return nil, fmt.Errorf("store: states of %s: %w", backend, err)
	}
	return out, nil
}

// SaveStates replaces backend's service states.
func (db *DB) SaveStates(ctx context.Context, backend string, states []lb.ServiceState) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM service_states WHERE backend = ?`, backend); err != nil {
			return err
		}
		ins := &batchInsert{tx: tx, table: "service_states", cols: []string{"backend", "namespace", "name", "state", "reason", "spec"}}
		defer ins.close()
		for _, st := range states {
			ns, name, err := splitKey(st.Key)
			if err != nil {
				return err
			}
			if err := ins.add(ctx, backend, ns, name, st.State, st.Reason, st.Spec); err != nil {
				return fmt.Errorf("state of %s: %w", st.Key, err)
			}
		}
		return ins.flush(ctx)
	})
	if err != nil {
		return fmt.Errorf("store: save states of %s: %w", backend, err)
	}
	return nil
}
