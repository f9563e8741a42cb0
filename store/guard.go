package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
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
