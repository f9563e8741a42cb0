// Package store keeps lbd's state in one SQLite file (modernc.org/sqlite,
// pure Go, no cgo): the service mapping lbd last discovered and committed,
// the services each backend last programmed, and the history of syncs.
//
// The mapping lives in normalized tables (services, service_ips, ports,
// endpoints) joined by foreign keys, the "endpoints in their own table"
// TODO of the original notes. The notes' table name stays visible as a view,
// ServiceToEndPointsMapping, with the notes' columns and value forms, so
//
//	sqlite3 /opt/LoadBalancer.sqlite.db 'select * from ServiceToEndPointsMapping'
//
// still prints lines like
//
//	nginx|default|10.247.78.179|192.168.121.201|80/TCP|10.246.82.2:80,10.246.82.6:80
//
// A database made by hand from the notes (a table of that name) is migrated
// on open: its rows are kept in legacy_ServiceToEndPointsMapping.
//
// The schema is versioned with PRAGMA user_version and an ordered list of
// migrations, each applied in its own transaction. A file written by a newer
// lbd is refused with [ErrSchemaTooNew].
//
// [Lock] serializes lbd processes (a cron run overlapping the previous one)
// with flock(2) on a file next to the database.
//
// store imports only lb. *DB satisfies reconcile.Store without importing
// reconcile.
package store
