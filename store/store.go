package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// busyTimeout is how long a statement waits for another process's write
// lock before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// keepHistory is how many sync_history rows a DB keeps; older ones are
// pruned in the transaction that adds a new one.
const keepHistory = 10000

// ErrSchemaTooNew is returned (wrapped) by [Open] when the file was written
// by a newer lbd whose schema this one does not know.
var ErrSchemaTooNew = errors.New("database schema is newer than this lbd supports")

// DB is an open lbd state database. Its methods are safe for concurrent use.
type DB struct {
	sql  *sql.DB
	path string
	// keepHistory bounds the sync_history table; tests lower it.
	keepHistory int
}

// Open opens the database at path, creating it and its parent directory
// (mode 0700) if missing, and migrates its schema to the current version.
// The file and its -wal and -shm companions are made mode 0600: the
// mapping names every service and pod address of the cluster. Connections
// use WAL journaling, synchronous=NORMAL, foreign keys and a busy timeout.
//
// Open fails with an error wrapping [ErrSchemaTooNew] when the file was
// written by a newer lbd.
func Open(ctx context.Context, path string) (*DB, error) {
	return open(ctx, path, migrations)
}

func open(ctx context.Context, path string, steps []migration) (*DB, error) {
	if path == "" {
		return nil, errors.New("store: open: empty path")
	}
	// The driver reads everything after '?' as connection parameters.
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("store: open %s: path must not contain '?'", path)
	}
	if err := prepareFile(path); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	dsn := path + "?" + strings.Join([]string{
		fmt.Sprintf("_busy_timeout=%d", busyTimeout.Milliseconds()),
		"_foreign_keys=1",
		"_journal_mode=WAL",
		"_synchronous=NORMAL",
		// Write transactions take the write lock at BEGIN, so two
		// processes never deadlock upgrading read locks.
		"_txlock=immediate",
	}, "&")
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{sql: sdb, path: path, keepHistory: keepHistory}
	if err := db.migrate(ctx, steps); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// SQLite creates -wal and -shm with the database file's mode, but
	// files left by an older tool may be wider.
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := restrictMode(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			sdb.Close()
			return nil, fmt.Errorf("store: open %s: %w", path, err)
		}
	}
	return db, nil
}

// prepareFile creates path's directory (0700) and the file itself (0600)
// if missing, and narrows the mode of an existing file and its WAL files.
func prepareFile(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := restrictMode(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// restrictMode makes p mode 0600 unless it already grants nothing to group
// and others.
func restrictMode(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	return os.Chmod(p, 0o600)
}

// Path returns the file the DB was opened from.
func (db *DB) Path() string { return db.path }

// Close closes the database. Pending WAL content is checkpointed by SQLite
// when the last connection closes.
func (db *DB) Close() error {
	if err := db.sql.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", db.path, err)
	}
	return nil
}

// inTx runs fn in one write transaction, committing when fn returns nil and
// rolling back otherwise.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
