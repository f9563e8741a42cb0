package keepalived

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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
		killNS(name)
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
		killNS(name)
		exec.Command("ip", "netns", "del", name).Run()
	}
}

// killNS SIGKILLs every process in namespace ns but this one: should a
// thread of the test binary be inside ns, "ip netns pids" lists it too.
func killNS(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, s := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(s); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
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
