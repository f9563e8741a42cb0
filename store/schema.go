package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one step of the schema. Step i (0-based) takes a database
// from user_version i to i+1 inside one transaction. Steps are only ever
// appended: a released step never changes.
type migration struct {
	name string
	up   func(ctx context.Context, tx *sql.Tx) error
}

// migrations is the schema's history, oldest first. Its length is the
// schema version this lbd writes.
var migrations = []migration{
	{name: "mapping tables and the ServiceToEndPointsMapping view", up: migrateMapping},
	{name: "applied state and sync history", up: execAll(appliedAndHistorySQL)},
	{name: "pool allocations, owned addresses and the address report", up: execAll(addressesSQL)},
	{name: "deletions let through by the max-delete guard", up: execAll(deletionsSQL)},
	{name: "service states per backend", up: execAll(statesSQL)},
	{name: "a digest per mapped service, for commits that write only what changed", up: execAll(digestSQL)},
}

// SchemaVersion is the schema version this lbd creates and understands:
// the number of migrations.
const SchemaVersion = 6

// legacyTable is where a hand-made ServiceToEndPointsMapping table from the
// notes is kept, rows intact, when its name is taken over by the view.
const legacyTable = "legacy_ServiceToEndPointsMapping"

// mappingSQL creates the normalized mapping: what lbd discovered and last
// committed. Every child table orders its rows by an ordinal, the position
// in the normalized lb.Service, so loading back is lossless and the view
// lists values in lb's canonical order.
const mappingSQL = `
CREATE TABLE services (
	id                 INTEGER PRIMARY KEY,
	namespace          TEXT    NOT NULL,
	name               TEXT    NOT NULL,
	type               TEXT    NOT NULL,
	cluster_ip         TEXT    NOT NULL, -- '' for a headless service
	affinity           TEXT    NOT NULL,
	affinity_timeout_s INTEGER NOT NULL CHECK (affinity_timeout_s >= 0),
	exposed            INTEGER NOT NULL CHECK (exposed IN (0, 1)),
	UNIQUE (namespace, name)
);

CREATE TABLE service_ips (
	service_id INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
	ip         TEXT    NOT NULL,
	ordinal    INTEGER NOT NULL,
	PRIMARY KEY (service_id, ordinal)
) WITHOUT ROWID;

CREATE TABLE ports (
	id          INTEGER PRIMARY KEY,
	service_id  INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
	ordinal     INTEGER NOT NULL,
	name        TEXT    NOT NULL,
	port        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
	protocol    TEXT    NOT NULL CHECK (protocol IN ('TCP', 'UDP', 'SCTP')),
	target_port TEXT    NOT NULL,
	UNIQUE (service_id, ordinal),
	UNIQUE (service_id, port, protocol)
);

CREATE TABLE endpoints (
	port_id     INTEGER NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
	ordinal     INTEGER NOT NULL,
	ip          TEXT    NOT NULL,
	port        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
	ready       INTEGER NOT NULL CHECK (ready IN (0, 1)),
	serving     INTEGER NOT NULL CHECK (serving IN (0, 1)),
	terminating INTEGER NOT NULL CHECK (terminating IN (0, 1)),
	PRIMARY KEY (port_id, ordinal)
) WITHOUT ROWID;

-- The notes' table, as a view with the notes' columns and value forms:
-- Ports "80/TCP,443/TCP", EndPoints the ready "ip:port" list without
-- repeats, '' where there is nothing. group_concat follows the order of an
-- ordered subquery; group_concat(... ORDER BY ...) would need SQLite 3.44
-- and Debian 12's sqlite3 is 3.40. An endpoint serving several ports is
-- listed where it first appears (ports in order, then endpoints in order),
-- as lb.Service.EndpointsString does.
CREATE VIEW ServiceToEndPointsMapping AS
SELECT
	s.name       AS ServiceName,
	s.namespace  AS NameSpace,
	s.cluster_ip AS ClusterIP,
	ifnull((SELECT group_concat(ip, ',') FROM
		(SELECT ip FROM service_ips WHERE service_id = s.id ORDER BY ordinal)), '') AS ExternalIP,
	ifnull((SELECT group_concat(port || '/' || protocol, ',') FROM
		(SELECT port, protocol FROM ports WHERE service_id = s.id ORDER BY ordinal)), '') AS Ports,
	ifnull((SELECT group_concat(addr, ',') FROM
		(SELECT CASE WHEN instr(e.ip, ':') > 0 THEN '[' || e.ip || ']' ELSE e.ip END || ':' || e.port AS addr,
			min(p.ordinal * 4294967296 + e.ordinal) AS first
		FROM ports p JOIN endpoints e ON e.port_id = p.id
		WHERE p.service_id = s.id AND e.ready = 1
		GROUP BY addr
		ORDER BY first)), '') AS EndPoints
FROM services s
ORDER BY s.namespace, s.name;
`

const appliedAndHistorySQL = `
-- applied holds each backend's last programmed services as lb.Service JSON:
-- the reconciler compares it with what it discovers, so it must round-trip
-- exactly, whatever the mapping tables look like.
CREATE TABLE applied (
	backend   TEXT NOT NULL,
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	spec      TEXT NOT NULL,
	PRIMARY KEY (backend, namespace, name)
);

CREATE TABLE sync_history (
	id          INTEGER PRIMARY KEY,
	started     TEXT    NOT NULL, -- RFC 3339 with nanoseconds, UTC
	duration_ms INTEGER NOT NULL,
	backend     TEXT    NOT NULL,
	result      TEXT    NOT NULL,
	services    INTEGER NOT NULL,
	created     INTEGER NOT NULL,
	updated     INTEGER NOT NULL,
	deleted     INTEGER NOT NULL,
	skipped     INTEGER NOT NULL,
	error       TEXT    NOT NULL
);
`

// migrateMapping creates the mapping tables and the view. A database made
// by hand per the notes already holds a ServiceToEndPointsMapping table;
// it is renamed to legacyTable first so its rows survive.
func migrateMapping(ctx context.Context, tx *sql.Tx) error {
	var kind, name string
	err := tx.QueryRowContext(ctx,
		`SELECT type, name FROM sqlite_master WHERE name = 'ServiceToEndPointsMapping' COLLATE NOCASE`,
	).Scan(&kind, &name)
	switch {
	case err == sql.ErrNoRows:
	case err != nil:
		return fmt.Errorf("look for the notes' table: %w", err)
	case kind == "table":
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`ALTER TABLE "%s" RENAME TO %s`, name, legacyTable)); err != nil {
			return fmt.Errorf("keep the notes' table as %s: %w", legacyTable, err)
		}
	default:
		return fmt.Errorf("unexpected %s named %s in a database without lbd schema", kind, name)
	}
	return execAll(mappingSQL)(ctx, tx)
}

// execAll returns a step that runs script, a list of statements.
func execAll(script string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, script)
		return err
	}
}

// migrate brings the schema to len(steps), one transaction per step. Each
// transaction re-reads the version, so two processes opening the same old
// file at once apply every step exactly once.
func (db *DB) migrate(ctx context.Context, steps []migration) error {
	for {
		done := false
		err := db.inTx(ctx, func(tx *sql.Tx) error {
			var v int
			if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
				return fmt.Errorf("read schema version: %w", err)
			}
			if v > len(steps) {
				return fmt.Errorf("schema version %d, this lbd knows versions up to %d; use a newer lbd: %w",
					v, len(steps), ErrSchemaTooNew)
			}
			if v == len(steps) {
				done = true
				return nil
			}
			if err := steps[v].up(ctx, tx); err != nil {
				return fmt.Errorf("migrate to version %d (%s): %w", v+1, steps[v].name, err)
			}
			// PRAGMA takes no parameters; v is an int.
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
				return fmt.Errorf("set schema version %d: %w", v+1, err)
			}
			return nil
		})
		if err != nil || done {
			return err
		}
	}
}

// Version returns the schema version recorded in the file.
func (db *DB) Version(ctx context.Context) (int, error) {
	var v int
	if err := db.sql.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: version of %s: %w", db.path, err)
	}
	return v, nil
}
