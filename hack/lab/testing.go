package lab

import (
	"context"
	"testing"
	"time"

	"github.com/lbd/lbd/internal/testkit"
)

// RequireRoot is testkit.RequireRoot: it skips t, loudly, under -short or
// unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	testkit.RequireRoot(t)
}

// ForTest starts a lab for t (skipping when not root), bounded by t's
// context and a generous timeout that allows a first kube-apiserver build,
// and closes it in t.Cleanup, first logging the tails of the lab's process
// logs if t failed. With an empty o.Dir, the lab works in a
// t.TempDir. It fails t if the lab does not start.
func ForTest(t testing.TB, o Options) *Lab {
	t.Helper()
	RequireRoot(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	l, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Logf("lab %s (cluster=%v) up in %s, dir %s", o.Name, o.Cluster, time.Since(start).Round(time.Millisecond), l.Dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab %s process logs:\n%s", l.Name, l.LogTails(20))
		}
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// WaitFor is testkit.WaitFor.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, limit, what, cond)
}
