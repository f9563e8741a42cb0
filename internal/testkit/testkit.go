package testkit

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// update is the -update flag of every test binary that uses Golden.
var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// RequireRoot skips t, loudly, under -short or unless the test runs as
// root. It is the one gate of every test that needs the lab: network
// namespaces, iptables, nft, netlink, haproxy, sshd or the cluster. CI
// runs as root without -short, so these tests run there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIPPED under -short: this test needs the lab (root, network namespaces, real daemons)")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root (network namespaces, iptables, sshd); run as root, as CI does")
	}
}

// Updating reports whether the test binary runs with -update.
func Updating() bool { return *update }

// Golden compares got with testdata/<test name>.golden ("/" in subtest
// names becomes "_"), or rewrites that file first with -update.
func Golden(t testing.TB, got []byte) {
	t.Helper()
	GoldenFile(t, filepath.Join("testdata", strings.ReplaceAll(t.Name(), "/", "_")+".golden"), got)
}

// GoldenFile is Golden with an explicit path.
func GoldenFile(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got); run go test -update if the change is intended:\n%s", path, d)
	}
}

// WaitFor polls cond every 20 ms until it holds, and fails t when limit
// passes first, naming what it waited for.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
