package discovery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCachedWatch runs Cached's watch against a fake kubectl behind the
// real sshd: the watches print indented JSON events, as kubectl does; an
// endpoint change reaches Discover with no remote command beyond the one
// LIST and the two watches.
func TestCachedWatch(t *testing.T) {
	d := startSSHD(t)
	mark := marker(t)
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	svc := svcObj("shop", "web", 80)
	write("services.list", listOf(svc))
	write("slices.list", listOf(sliceObj("shop", "web", "10.244.1.1")))
	write("services.ev", event(evAdded, svc))
	write("endpointslices.discovery.k8s.io.ev", event(evAdded, sliceObj("shop", "web", "10.244.1.1")))
	write("change.ev", event(evModified, sliceObj("shop", "web", "10.244.1.1", "10.244.1.2")))
	kubectl, calls := script(t, fmt.Sprintf(`cd %s
case "$*" in
*--watch*) cat "$2.ev"
	if [ "$2" != services ]; then
		while [ ! -e go ]; do sleep 0.05; done
		cat change.ev; echo "Warning: a line of text between events"
	fi
	exec -a %s sleep 600;;
"get --raw /api/v1/services "*) cat services.list;;
*) cat slices.list;;
esac`, dir, mark))
	s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
	c := NewCached(s)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, 0, func(res string) { mu.Lock(); seen[res]++; mu.Unlock() })
	}()
	seenOf := func(res string) int { mu.Lock(); defer mu.Unlock(); return seen[res] }
	waitFor(t, 10*time.Second, "kubectl's listing from both watches", func() bool {
		return seenOf(resServices) == 1 && seenOf(resSlices) == 1
	})
	endpoints := func() []string {
		t.Helper()
		svcs, invalid, err := c.Discover(ctx)
		if err != nil || len(invalid) != 0 || len(svcs) != 1 {
			t.Fatalf("Discover = %v, %v, %v", svcs, invalid, err)
		}
		var out []string
		for _, e := range svcs[0].Ports[0].Endpoints {
			out = append(out, e.IP.String())
		}
		return out
	}
	if diff := cmp.Diff([]string{"10.244.1.1"}, endpoints()); diff != "" {
		t.Errorf("first Discover (-want +got):\n%s", diff)
	}
	before := s.Received()
	write("go", nil)
	waitFor(t, 10*time.Second, "the change event", func() bool { return seenOf(resSlices) == 2 })
	if diff := cmp.Diff([]string{"10.244.1.1", "10.244.1.2"}, endpoints()); diff != "" {
		t.Errorf("Discover after the change (-want +got):\n%s", diff)
	}
	if got, want := s.Received()-before, int64(len(mustRead(t, filepath.Join(dir, "change.ev")))); got < want || got > want+100 {
		t.Errorf("bytes received for the change = %d, want the event's %d and the text line", got, want)
	}

	var args []string
	for _, l := range callLog(t, calls) {
		_, a, _ := strings.Cut(l, "|")
		args = append(args, a)
	}
	want := []string{
		"get --raw /api/v1/services --request-timeout=18s",
		"get --raw /apis/discovery.k8s.io/v1/endpointslices --request-timeout=18s",
		"get endpointslices.discovery.k8s.io --all-namespaces --watch -o json --output-watch-events",
		"get services --all-namespaces --watch -o json --output-watch-events",
	}
	slices.Sort(args) // the watches start in either order
	if diff := cmp.Diff(want, args); diff != "" {
		t.Errorf("remote commands (-want +got):\n%s", diff)
	}
	if c.Lists() != 1 {
		t.Errorf("Lists() = %d, want 1", c.Lists())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch after cancel = %v", err)
	}
	waitFor(t, 5*time.Second, "the remote watches to end", func() bool { return len(remotePIDs(mark)) == 0 })
}
