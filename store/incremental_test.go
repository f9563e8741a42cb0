package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/store"
)

// rows returns every row of query as strings.
func rows(t *testing.T, db *sql.DB, query string) [][]string {
	t.Helper()
	r, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cols, _ := r.Columns()
	var out [][]string
	for r.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := r.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			row[i] = v.String
		}
		out = append(out, row)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// edit returns a copy of svcs with every 7th service's endpoints changed,
// every 11th dropped, every 13th given another external IP and a second
// port, and extra new services.
func edit(svcs []lb.Service, extra int) []lb.Service {
	var out []lb.Service
	for i, s := range svcs {
		s := *s.Clone()
		switch {
		case i%11 == 0:
			continue
		case i%7 == 0:
			s.Ports[0].Endpoints = s.Ports[0].Endpoints[:3]
			s.Ports[0].Endpoints[1].Ready = !s.Ports[0].Endpoints[1].Ready
		case i%13 == 0 && !slices.ContainsFunc(s.Ports, func(p lb.Port) bool { return p.Port == 9999 }):
			s.ExternalIPs = append(s.ExternalIPs, netip.AddrFrom4([4]byte{192, 168, 200, byte(i)}))
			s.Ports = append(s.Ports, lb.Port{Name: "extra", Port: 9999, Protocol: lb.UDP, TargetPort: "53"})
			if s.Ports[0].Name == "" {
				s.Ports[0].Name = "main"
			}
			s.Affinity, s.AffinityTimeout = lb.AffinityClientIP, 90*time.Second
		}
		out = append(out, s)
	}
	for i := range extra {
		s := *svcs[0].Clone()
		s.Name = fmt.Sprintf("new-%d-%d", extra, i)
		out = append(out, s)
	}
	lb.SortServices(out)
	return out
}

// TestCommitIncrementalMatchesFull commits a state into a fresh database
// and, through a chain of different states, into another: the two agree
// row for row in the ServiceToEndPointsMapping view and the mapping
// tables (row ids aside), and in Services and Applied.
func TestCommitIncrementalMatchesFull(t *testing.T) {
	ctx := context.Background()
	base := bigCluster(300)
	final := edit(base, 5)
	states := [][]lb.Service{base, edit(final, 3), nil, base[:10], final}

	full, _ := openTemp(t)
	if err := full.Commit(ctx, "iptables", final, final, record("iptables", len(final), t0)); err != nil {
		t.Fatal(err)
	}
	inc, _ := openTemp(t)
	for i, st := range states {
		// The applied state lags one step behind, as a different list.
		applied := st
		if i > 0 {
			applied = states[i-1]
		}
		if i == len(states)-1 {
			applied = final
		}
		if err := inc.Commit(ctx, "iptables", st, applied, record("iptables", len(st), t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}

	for _, q := range []string{
		`SELECT * FROM ServiceToEndPointsMapping`,
		`SELECT namespace, name, type, cluster_ip, affinity, affinity_timeout_s, exposed, hex(digest) FROM services ORDER BY namespace, name`,
		`SELECT s.namespace, s.name, i.ip, i.ordinal FROM service_ips i JOIN services s ON s.id = i.service_id ORDER BY 1, 2, 4`,
		`SELECT s.namespace, s.name, p.ordinal, p.name, p.port, p.protocol, p.target_port FROM ports p JOIN services s ON s.id = p.service_id ORDER BY 1, 2, 3`,
		`SELECT s.namespace, s.name, p.ordinal, e.ordinal, e.ip, e.port, e.ready, e.serving, e.terminating
			FROM endpoints e JOIN ports p ON p.id = e.port_id JOIN services s ON s.id = p.service_id ORDER BY 1, 2, 3, 4`,
		`SELECT count(*) FROM endpoints`, // no orphans
		`SELECT count(*) FROM ports`,
		`SELECT count(*) FROM service_ips`,
		`SELECT backend, namespace, name, spec FROM applied ORDER BY 1, 2, 3`,
	} {
		want, got := rows(t, full.SQL(), q), rows(t, inc.SQL(), q)
		if len(want) == 0 {
			t.Errorf("%s: no rows", q)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-full +incremental):\n%s", q, diff)
		}
	}
	for name, db := range map[string]*store.DB{"full": full, "incremental": inc} {
		svcs, err := db.Services(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(final, svcs, addrs); diff != "" {
			t.Errorf("%s: Services (-want +got):\n%s", name, diff)
		}
		applied, err := db.Applied(ctx, "iptables")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(final, applied, addrs); diff != "" {
			t.Errorf("%s: Applied (-want +got):\n%s", name, diff)
		}
	}
}

// TestCommitTouchesOnlyChanged: after a commit that changes one service's
// endpoints, every other service keeps its rows (its row id); the changed
// one was rewritten.
func TestCommitTouchesOnlyChanged(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	svcs := bigCluster(50)
	if err := db.Commit(ctx, "iptables", svcs, svcs, record("iptables", 50, t0)); err != nil {
		t.Fatal(err)
	}
	ids := func() map[string]string {
		m := map[string]string{}
		for _, r := range rows(t, db.SQL(), `SELECT namespace || '/' || name, id FROM services`) {
			m[r[0]] = r[1]
		}
		return m
	}
	before := ids()
	next := normalized(svcs...)
	next[20].Ports[0].Endpoints[0].Ready = false
	if err := db.Commit(ctx, "iptables", next, next, record("iptables", 50, t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	after := ids()
	for k, id := range before {
		if changed := after[k] != id; changed != (k == next[20].Key()) {
			t.Errorf("service %s: row id %s -> %s", k, id, after[k])
		}
	}
	got, err := db.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(next, got, addrs); diff != "" {
		t.Errorf("Services (-want +got):\n%s", diff)
	}
}

// BenchmarkCommitOneChange10k: the commit of a pass that changed one
// endpoint of one service in 10,000 (what the daemon does on endpoint
// churn), against a database holding the previous pass.
func BenchmarkCommitOneChange10k(b *testing.B) {
	ctx := context.Background()
	svcs := bigCluster(10000)
	db, err := store.Open(ctx, b.TempDir()+"/lbd.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rec := lb.SyncRecord{Started: time.Now(), Backend: "iptables", Result: "ok", Services: len(svcs)}
	if err := db.Commit(ctx, "iptables", svcs, svcs, rec); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		e := &svcs[(i*37)%len(svcs)].Ports[0].Endpoints[0]
		e.Ready = !e.Ready
		i++
		if err := db.Commit(ctx, "iptables", svcs, svcs, rec); err != nil {
			b.Fatal(err)
		}
	}
}
