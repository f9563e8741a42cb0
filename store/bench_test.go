package store_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/store"
)

// bigCluster returns n services with 10 endpoints per port; every tenth
// service has a second port.
func bigCluster(n int) []lb.Service {
	svcs := make([]lb.Service, 0, n)
	for i := range n {
		s := lb.Service{
			Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("svc-%d", i), Type: "LoadBalancer",
			ClusterIP:   netip.AddrFrom4([4]byte{10, 247, byte(i >> 8), byte(i)}),
			ExternalIPs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})},
			Affinity:    lb.AffinityNone,
		}
		nports := 1
		if i%10 == 0 {
			nports = 2
		}
		for p := range nports {
			port := lb.Port{Port: uint16(80 + p*363), Protocol: lb.TCP, TargetPort: "8080"}
			if nports > 1 {
				port.Name = fmt.Sprintf("p%d", p)
			}
			for e := range 10 {
				port.Endpoints = append(port.Endpoints, lb.Endpoint{
					IP:   netip.AddrFrom4([4]byte{10, 246, byte(i >> 6), byte(i<<2) + byte(e)}),
					Port: 8080, Ready: e != 9, Serving: true,
				})
			}
			s.Ports = append(s.Ports, port)
		}
		s.Normalize()
		svcs = append(svcs, s)
	}
	lb.SortServices(svcs)
	return svcs
}

// BenchmarkCommitLoad10k: Commit of 10,000 services (11,000 ports, 110,000
// endpoints) as both the mapping and the applied state, then Services()
// loading the mapping back. Target: save + load <= 2 s.
func BenchmarkCommitLoad10k(b *testing.B) {
	ctx := context.Background()
	svcs := bigCluster(10000)
	db, err := store.Open(ctx, b.TempDir()+"/lbd.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rec := lb.SyncRecord{Started: time.Now(), Backend: "iptables", Result: "ok", Services: len(svcs)}

	b.Run("save", func(b *testing.B) {
		for b.Loop() {
			if err := db.Commit(ctx, "iptables", svcs, svcs, rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("load", func(b *testing.B) {
		for b.Loop() {
			got, err := db.Services(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if len(got) != len(svcs) {
				b.Fatalf("loaded %d services, want %d", len(got), len(svcs))
			}
		}
	})
	b.Run("applied", func(b *testing.B) {
		for b.Loop() {
			got, err := db.Applied(ctx, "iptables")
			if err != nil {
				b.Fatal(err)
			}
			if len(got) != len(svcs) {
				b.Fatalf("loaded %d services, want %d", len(got), len(svcs))
			}
		}
	})
}
