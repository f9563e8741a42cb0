package daemon

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogFileReopen: the log file goes on in a new file after logrotate
// renamed it and Reopen ran; the new file is 0640.
func TestLogFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "loadbalancer.log")
	l, err := OpenLogs(io.Discard, path, "text", "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, reopen := l, l.Reopen
	a.Log.Info("before rotation")
	if err := os.Rename(path, path+".1"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	a.Log.Info("still the old file")
	if err := reopen(); err != nil {
		t.Fatal(err)
	}
	a.Log.Info("after rotation")
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), "before rotation") || !strings.Contains(string(old), "still the old file") || strings.Contains(string(old), "after rotation") {
		t.Errorf("rotated file:\n%s", old)
	}
	if !strings.Contains(string(cur), "after rotation") || strings.Contains(string(cur), "before") {
		t.Errorf("new file:\n%s", cur)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new file mode %v, %v; want 0640", fi.Mode(), err)
	}
}

// TestOpenLogs: level and format are checked and named; the file
// logger writes to the file alone, the other to stderr too.
func TestOpenLogs(t *testing.T) {
	if _, err := OpenLogs(io.Discard, "", "text", "loud"); err == nil || err.Error() != `--log-level "loud": want debug, info, warn or error` {
		t.Errorf("bad level: %v", err)
	}
	if _, err := OpenLogs(io.Discard, "", "xml", "info"); err == nil || err.Error() != `--log-format "xml": want text or json` {
		t.Errorf("bad format: %v", err)
	}
	var stderr bytes.Buffer
	l, err := OpenLogs(&stderr, "", "json", "warn")
	if err != nil || l.File != nil || l.Reopen() != nil {
		t.Fatalf("without a file: %+v, %v", l, err)
	}
	l.Log.Info("hidden")
	l.Log.Warn("shown")
	if out := stderr.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) {
		t.Errorf("stderr: %s", out)
	}
	path := filepath.Join(t.TempDir(), "sub", "lbd.log")
	stderr.Reset()
	if l, err = OpenLogs(&stderr, path, "text", ""); err != nil {
		t.Fatal(err)
	}
	l.File.Error("file only")
	l.Log.Info("both")
	l.Close()
	b, _ := os.ReadFile(path)
	if out := stderr.String(); strings.Contains(out, "file only") || !strings.Contains(out, "both") || !strings.Contains(string(b), "file only") || !strings.Contains(string(b), "both") {
		t.Errorf("stderr %q, file %q", out, b)
	}
}
