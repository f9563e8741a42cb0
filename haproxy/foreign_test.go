package haproxy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbd/lbd/lb"
)

// TestApplyKeepsForeignFiles: lbd never deletes what it did not write. A
// plain services directory holding an operator's files is adopted; the
// hand-written .cfg stays loaded (and validated) through every later
// generation and Cleanup, the log names it once, a file with the name of
// a service's file makes that service skipped rather than overwritten, and
// a subdirectory, which cannot be carried, is moved to a backup the log
// names.
func TestApplyKeepsForeignFiles(t *testing.T) {
	ctx := context.Background()
	b, c := fakeBackend(t, true)
	var logs bytes.Buffer
	b.log = slog.New(slog.NewTextHandler(&logs, nil))
	hand := "# the operator's\nlisten apiserver\n    mode tcp\n    bind 127.0.0.1:16443\n    server m1 127.0.0.1:6443\n"
	if err := os.MkdirAll(filepath.Join(b.o.Dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(b.o.Dir, "apiserver.cfg"), hand)
	write(t, filepath.Join(b.o.Dir, "README"), "notes\n")
	write(t, filepath.Join(b.o.Dir, "sub", "x"), "x\n")
	clash := "# also the operator's\n"
	write(t, filepath.Join(b.o.Dir, "default_other.cfg"), clash)

	web, other := nginx(), nginx()
	other.Name = "other"
	skipped, err := b.Apply(ctx, []lb.Service{web, other}, nil)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(skipped) != 1 || skipped[0].Key != "default/other" || !strings.Contains(skipped[0].Reason, "not written by lbd") {
		t.Errorf("skipped = %+v, want default/other, its file being the operator's", skipped)
	}
	check := func(when string) {
		t.Helper()
		for name, want := range map[string]string{"apiserver.cfg": hand, "README": "notes\n", "default_other.cfg": clash} {
			got, err := os.ReadFile(filepath.Join(b.o.Dir, name))
			if err != nil || string(got) != want {
				t.Errorf("%s: %s = %q, %v; want it kept as it was", when, name, got, err)
			}
		}
	}
	check("after the first Apply")
	if _, ok := c.dirAtReload["apiserver.cfg"]; !ok {
		t.Errorf("the operator's file was not in the directory haproxy reloaded")
	}
	web.Ports[0].Endpoints = web.Ports[0].Endpoints[:1]
	if _, err := b.Apply(ctx, []lb.Service{web, other}, nil); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	check("after a second Apply")
	if drift, err := b.Verify(ctx, []lb.Service{web}); err != nil || len(drift) != 0 {
		t.Errorf("Verify: %q %v; the operator's files are not drift", drift, err)
	}
	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	check("after Cleanup")
	if n := strings.Count(logs.String(), "apiserver.cfg"); n != 1 {
		t.Errorf("the log names apiserver.cfg %d times, want once:\n%s", n, logs.String())
	}
	// The subdirectory is in a backup the log names.
	var backup string
	for _, l := range strings.Split(logs.String(), "\n") {
		if i := strings.Index(l, "backup="); i >= 0 && strings.Contains(l, "sub") {
			backup = strings.Fields(l[i+len("backup="):])[0]
		}
	}
	if got, err := os.ReadFile(filepath.Join(backup, "sub", "x")); err != nil || string(got) != "x\n" {
		t.Errorf("sub/x not in the backup the log names (%q): %v\n%s", backup, err, logs.String())
	}
}
