package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/store"
)

// The last sync's error may hold the master's stderr, written by any lbd
// version: status must not send its control characters to the terminal.
func TestStatusEscapesLastError(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lbd.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	rec := lb.SyncRecord{Started: time.Now(), Backend: "iptables", Result: "error", Err: "ssh m: exit status 1: stderr: x\n\x1b[2Jlast sync: ok"}
	if err := db.RecordSync(ctx, rec); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var stdout, stderr strings.Builder
	if code := run(ctx, []string{"status", "--db", path}, func(string) string { return "" }, &stdout, &stderr); code != 0 {
		t.Fatalf("status exited %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "\x1b") || strings.Count(out, "\nlast sync") != 1 {
		t.Errorf("status printed the raw error:\n%s", out)
	}
	if !strings.Contains(out, `stderr: x\n\x1b[2Jlast sync: ok`) {
		t.Errorf("status lacks the escaped error:\n%s", out)
	}
}
