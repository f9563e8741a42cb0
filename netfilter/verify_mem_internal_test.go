package netfilter

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/lbd/lbd/lb"
)

// TestVerifyHoldsOneService: the drift check renders and compares one
// service at a time, and keeps the saved rules as parts of one string, so
// the memory it holds at 10,000 services x 10 endpoints stays under 35 MB
// above what it is given: 28-30 MB (rendering the whole ruleset first,
// and a string per saved line, held 41-42).
func TestVerifyHoldsOneService(t *testing.T) {
	b, f := newTestBackend(t, DefaultOptions())
	// 10,000 services x 10 endpoints, each on its own external IP.
	applied := make([]lb.Service, 10000)
	for i := range applied {
		var eps []string
		for j := range 10 {
			eps = append(eps, fmt.Sprintf("10.%d.%d.%d", 100+i>>8, i&255, 2+j))
		}
		applied[i] = svc(fmt.Sprintf("svc-%d", i), lb.TCP, 80, eps...)
		applied[i].ExternalIPs = []netip.Addr{netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})}
	}
	lb.SortServices(applied)
	f.run.saveOut = saveOf(Render(applied, b.opts))
	// A GC at every 10% of growth: the heap follows what is live.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	diffs, err := b.Verify(context.Background(), applied)
	close(done)
	wg.Wait()
	if err != nil || len(diffs) != 0 {
		t.Fatalf("Verify: %v, %d differences", err, len(diffs))
	}
	mb := float64(peak-min(peak, base)) / (1 << 20)
	t.Logf("Verify held up to %.1f MB above the %.1f MB before", mb, float64(base)/(1<<20))
	if mb > 35 {
		t.Errorf("Verify held %.1f MB at 10,000 services, want at most 35", mb)
	}
}
