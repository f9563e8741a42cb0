package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// BenchmarkLoadBalancer1000 is the LoadBalancer issue's figure: 1,000
// Services of type LoadBalancer created at once with kubectl, then one
// lbd pass (iptables, --vip-interface); it reports the time from the
// pass's start until `kubectl get svc` on the master shows an address for
// every one of them, and the pass alone. Run it with
// go test -run '^$' -bench LoadBalancer1000 -benchtime 1x ./cmd/lbd
func BenchmarkLoadBalancer1000(b *testing.B) {
	l := e2eLab(b)
	const n = 1000
	var m strings.Builder
	for i := range n {
		m.WriteString(lab.ServiceManifest(lab.ServiceSpec{Name: fmt.Sprintf("bulk-%04d", i), LoadBalancer: true,
			Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs[:1]}))
	}
	start := time.Now()
	if _, err := l.Kubectl(b.Context(), m.String(), "create", "-f", "-"); err != nil {
		b.Fatal(err)
	}
	b.Logf("kubectl apply of %d services with their endpoints: %v", n, time.Since(start).Round(time.Millisecond))
	b.Cleanup(func() {
		l.Kubectl(b.Context(), "", "delete", "svc,endpoints,endpointslices", "-l", "!nonexistent", "--field-selector", "metadata.namespace=default", "--ignore-not-found", "--wait=false")
	})
	db := filepath.Join(b.TempDir(), "lbd.db")
	args := []string{"--backend=iptables", "--vip-interface=eth0"}
	const pool = "192.168.124.0/22"
	b.Cleanup(func() { lbdRunPool(b, l, db, pool, append(args, "cleanup")...) })
	for b.Loop() {
		start = time.Now()
		if _, stderr, code := lbdRunPool(b, l, db, pool, args...); code != 0 {
			b.Fatalf("sync exit %d: %s", code, stderr)
		}
		pass := time.Since(start)
		for {
			out, err := l.Kubectl(b.Context(), "", "get", "svc", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.loadBalancer.ingress[0].ip}{\"\\n\"}{end}")
			if err != nil {
				b.Fatal(err)
			}
			shown := 0
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "bulk-") {
					shown++
				}
			}
			if shown == n {
				break
			}
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("only %d of %d services show an address after %v", shown, n, time.Since(start))
			}
			time.Sleep(100 * time.Millisecond)
		}
		all := time.Since(start)
		b.ReportMetric(all.Seconds(), "s-to-all-addresses")
		b.ReportMetric(pass.Seconds(), "s-pass")
		b.Logf("%d LoadBalancer services: one lbd pass %v; every address shown by kubectl after %v", n, pass.Round(time.Millisecond), all.Round(time.Millisecond))
	}
}
