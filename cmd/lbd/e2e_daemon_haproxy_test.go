package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// TestDaemonHAProxy runs the production pairing: lbd run with the haproxy
// backend, started before haproxy as the systemd drop-in orders them. Six
// kubectl endpoint changes under steady load reach haproxy through the
// watch and a reload each, and not one request fails.
func TestDaemonHAProxy(t *testing.T) {
	l := e2eLab(t)
	ext := lab.LBExternalIP
	h := newHAProxyFiles(t)

	spec := lab.ServiceSpec{Name: "hdaemon", ExternalIPs: []netip.Addr{ext}, Ports: []lab.ServicePort{{Port: 86, TargetPort: 80}}, Ready: l.PodIPs}
	apply := applyService(t, l, spec)
	serviceFile := filepath.Join(h.services, "default_"+spec.Name+".cfg")

	// lbd first: with no haproxy running yet, its sync only writes files.
	spawnDaemon(t, l, "lbd-run-haproxy", h.db, h.flags...)
	lab.WaitFor(t, 20*time.Second, "lbd run to write "+serviceFile, func() bool {
		_, err := os.Stat(serviceFile)
		return err == nil
	})
	h.spawn(t, l, "haproxy-daemon")
	addr := ext.String() + ":86"
	lab.WaitFor(t, 10*time.Second, "haproxy to serve "+addr, func() bool { why, _ := dialFails(l, addr); return why == "" })
	if got := hits(t, l, addr, 30); sum(got, l.PodNames) != 30 || got["pod2"] == 0 {
		t.Fatalf("30 requests through lbd run's haproxy: %v", got)
	}

	// Steady load, bounded in count and time, while pod2 leaves and comes
	// back three times.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newConnClient(l)
			tick := time.NewTicker(20 * time.Millisecond) // 100 requests/s in all
			defer tick.Stop()
			for range 3000 {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				resp, err := c.Get("http://" + addr + "/")
				if err == nil {
					resp.Body.Close()
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	// Endpoint changes go through haproxy's runtime API: each change is
	// a runtime change, not a reload.
	reloads := func() float64 {
		return metric(t, l, "lbd_haproxy_reloads_total") + metric(t, l, "lbd_haproxy_runtime_changes_total")
	}
	var took []time.Duration
	pod2 := netip.AddrPortFrom(l.PodIPs[2], 80).String()
	for i := range 6 {
		ready, want := podsExcept(l, "pod2"), false
		if i%2 == 1 {
			ready, want = l.PodIPs, true
		}
		before := reloads()
		apply(ready)
		applied := time.Now()
		lab.WaitFor(t, 10*time.Second, fmt.Sprintf("change %d in haproxy (pod2 served: %v)", i, want), func() bool {
			b, err := os.ReadFile(serviceFile)
			return err == nil && strings.Contains(string(b), pod2) == want && reloads() > before
		})
		took = append(took, time.Since(applied))
		if !want {
			// The old worker may still take a connection or two from the
			// shared listener while it stops; then pod2 gets none.
			lab.WaitFor(t, 5*time.Second, fmt.Sprintf("change %d: new requests to avoid pod2", i), func() bool {
				return hits(t, l, addr, 10)["pod2"] == 0
			})
		}
	}
	time.Sleep(time.Second) // load on the last config too
	close(stop)
	wg.Wait()
	t.Logf("lbd run (haproxy): %d requests, %d failed; change to reload: %v", ok.Load()+failed.Load(), failed.Load(), took)
	fmt.Printf("lbd run convergence (haproxy, 6 changes): p50 %v max %v from kubectl apply's return to the reloaded haproxy; %d requests under load, %d failed\n",
		percentile(took, .5).Round(time.Millisecond), percentile(took, 1).Round(time.Millisecond), ok.Load()+failed.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during the changes; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests went through: the load did not run", ok.Load())
	}
	// The last change brought pod2 back: it serves again.
	if got := hits(t, l, addr, 30); got["pod2"] == 0 {
		t.Errorf("after the last change pod2 gets no traffic: %v", got)
	}
}
