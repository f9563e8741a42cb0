package keepalived

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lbd/lbd/internal/testkit"
)

// nsPrefix starts the name of every namespace these tests make.
const nsPrefix = "lbd-ha-t"

var nsSeq atomic.Int64

// newNetns creates an empty network namespace lbd-ha-t<pid>-<n> (with lo
// up) and removes it when tb ends. Leftovers of earlier runs are swept
// first.
func newNetns(tb testing.TB) string {
	tb.Helper()
	testkit.RequireRoot(tb)
	sweepOnce(tb)
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsSeq.Add(1))
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		// anything the test left running in the namespace goes with it
		if out, _ := exec.Command("ip", "netns", "pids", name).Output(); len(out) > 0 {
			for _, pid := range strings.Fields(string(out)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
		exec.Command("ip", "netns", "del", name).Run()
	})
	run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

var swept atomic.Bool

// sweepOnce kills what runs in, and removes, lbd-ha-t* namespaces of
// processes that are gone.
func sweepOnce(tb testing.TB) {
	if swept.Swap(true) {
		return
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	mine := fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())
	for _, l := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		if !strings.HasPrefix(name, nsPrefix) || strings.HasPrefix(name, mine) {
			continue
		}
		tb.Logf("removing leftover namespace %s", name)
		if pids, _ := exec.Command("ip", "netns", "pids", name).Output(); len(pids) > 0 {
			for _, pid := range strings.Fields(string(pids)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
		exec.Command("ip", "netns", "del", name).Run()
	}
}

// run runs a command and fails tb when it fails.
func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs name in namespace ns and fails tb when it fails.
func inNS(tb testing.TB, ns, name string, args ...string) string {
	tb.Helper()
	return run(tb, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// nsWithLink returns a new namespace holding an up veth named ifname with
// address cidr (its peer stays in the same namespace), for tests that
// need a real interface: keepalived refuses lo and unknown ones.
func nsWithLink(tb testing.TB, ifname, cidr string) string {
	tb.Helper()
	ns := newNetns(tb)
	run(tb, "ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", ifname+"p")
	run(tb, "ip", "-n", ns, "link", "set", ifname, "up")
	run(tb, "ip", "-n", ns, "link", "set", ifname+"p", "up")
	run(tb, "ip", "-n", ns, "addr", "add", cidr, "dev", ifname)
	return ns
}
