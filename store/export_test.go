package store

import (
	"context"
	"database/sql"
)

// Migrations is the number of migration steps, for checking SchemaVersion.
var Migrations = len(migrations)

// OpenVersion opens path migrated only up to version, as an older lbd did.
func OpenVersion(ctx context.Context, path string, version int) (*DB, error) {
	return open(ctx, path, migrations[:version])
}

// SetKeepHistory lowers the history bound so pruning is cheap to test.
func (db *DB) SetKeepHistory(n int) { db.keepHistory = n }

// SQL exposes the connection pool for inspecting tables.
func (db *DB) SQL() *sql.DB { return db.sql }
