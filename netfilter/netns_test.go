package netfilter_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lbd/lbd/internal/testkit"
)

// requireRoot is the one lab gate, testkit.RequireRoot.
var requireRoot = testkit.RequireRoot

var nsSeq atomic.Int64

// newNetns creates an empty network namespace lbd-nf-t<pid>-<n> and
// removes it when t ends. Leftovers of earlier runs are swept first.
func newNetns(t testing.TB) string {
	t.Helper()
	requireRoot(t)
	sweepOnce(t)
	name := fmt.Sprintf("lbd-nf-t%d-%d", os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

var swept atomic.Bool

// sweepOnce removes lbd-nf-t* namespaces of processes that are gone.
func sweepOnce(t testing.TB) {
	if swept.Swap(true) {
		return
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	mine := fmt.Sprintf("lbd-nf-t%d-", os.Getpid())
	for _, l := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		if strings.HasPrefix(name, "lbd-nf-t") && !strings.HasPrefix(name, mine) {
			t.Logf("removing leftover namespace %s", name)
			exec.Command("ip", "netns", "del", name).Run()
		}
	}
}
