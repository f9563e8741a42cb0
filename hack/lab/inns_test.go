package lab

import (
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lbd/lbd/internal/testkit"
)

// TestInNSKeepsProcessInHostNamespace proves that InNS never runs f on
// the main thread. "ip netns pids" (and /proc/<pid>/ns/net) report the
// main thread's namespace for the whole process, so a test binary whose
// main thread sat in a lab namespace was listed there and SIGKILLed by
// the sweep that removes it.
func TestInNSKeepsProcessInHostNamespace(t *testing.T) {
	testkit.RequireRoot(t)
	ns := "lbd-innst-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				InNS(ns, func() error { time.Sleep(time.Millisecond); return nil })
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	seen := 0
	for time.Now().Before(deadline) {
		if got, _ := os.Readlink("/proc/self/ns/net"); got != host {
			seen++
		}
		time.Sleep(100 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	if seen > 0 {
		t.Fatalf("the process's main thread was in %s at %d of the samples: a sweep of %s would kill the test binary", ns, seen, ns)
	}
}
