package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
	"github.com/lbd/lbd/store"
)

var _ reconcile.Store = (*store.DB)(nil)

// addrs compares netip.Addr values, whose fields are unexported.
var addrs = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func ips(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, ip(s))
	}
	return out
}

func ep(addr string, port uint16, ready bool) lb.Endpoint {
	return lb.Endpoint{IP: ip(addr), Port: port, Ready: ready, Serving: ready}
}

// nginx is the service of the notes (000_*.txt).
func nginx() lb.Service {
	return lb.Service{
		Namespace: "default", Name: "nginx", Type: "ClusterIP",
		ClusterIP:   ip("10.247.78.179"),
		ExternalIPs: ips("192.168.121.201"),
		Affinity:    lb.AffinityNone,
		Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: []lb.Endpoint{
			ep("10.246.82.2", 80, true), ep("10.246.82.6", 80, true),
		}}},
	}
}

// kubernetes has no external IP: stored, never programmed.
func kubernetes() lb.Service {
	return lb.Service{
		Namespace: "default", Name: "kubernetes", Type: "ClusterIP",
		ClusterIP: ip("10.247.0.1"), Affinity: lb.AffinityNone,
		Ports: []lb.Port{{Name: "https", Port: 443, Protocol: lb.TCP, TargetPort: "6443", Endpoints: []lb.Endpoint{
			ep("10.245.1.2", 6443, true),
		}}},
	}
}

// web has two ports, two external IPs, ClientIP affinity, endpoints that
// are not ready or terminating, one pod behind both ports, and input out
// of canonical order.
func web() lb.Service {
	return lb.Service{
		Namespace: "shop", Name: "web", Type: "LoadBalancer",
		ClusterIP:   ip("10.247.5.5"),
		ExternalIPs: ips("192.168.121.210", "192.168.121.202", "192.168.121.210"),
		Affinity:    lb.AffinityClientIP, AffinityTimeout: 3 * time.Hour,
		Ports: []lb.Port{
			{Name: "https", Port: 443, Protocol: lb.TCP, TargetPort: "https", Endpoints: []lb.Endpoint{
				ep("10.246.82.10", 8443, true), ep("10.246.82.2", 8443, true),
			}},
			{Name: "http", Port: 80, Protocol: lb.TCP, TargetPort: "8080", Endpoints: []lb.Endpoint{
				ep("10.246.82.10", 8080, true),
				ep("10.246.82.9", 8080, false),
				{IP: ip("10.246.82.3"), Port: 8080, Serving: true, Terminating: true},
				ep("10.246.82.2", 8080, true),
			}},
		},
	}
}

// dns6 is IPv6 only, UDP and TCP on one port number, no endpoints on one.
func dns6() lb.Service {
	return lb.Service{
		Namespace: "kube-system", Name: "dns6", Type: "LoadBalancer",
		ClusterIP:   ip("fd00:10:96::a"),
		ExternalIPs: ips("2001:db8::53"),
		Affinity:    lb.AffinityNone,
		Ports: []lb.Port{
			{Name: "dns-udp", Port: 53, Protocol: lb.UDP, TargetPort: "53", Endpoints: []lb.Endpoint{
				ep("fd00:10:244::3", 53, true), ep("fd00:10:244::2", 53, true),
			}},
			{Name: "dns-tcp", Port: 53, Protocol: lb.TCP, TargetPort: "53"},
		},
	}
}

// headless has no cluster IP and no ports.
func headless() lb.Service {
	return lb.Service{Namespace: "default", Name: "headless", Type: "ClusterIP", Affinity: lb.AffinityNone}
}

// normalized returns normalized, sorted deep copies of svcs.
func normalized(svcs ...lb.Service) []lb.Service {
	var out []lb.Service
	for _, s := range svcs {
		c := s.Clone()
		c.Normalize()
		out = append(out, *c)
	}
	lb.SortServices(out)
	return out
}

func openTemp(t *testing.T) (*store.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "LoadBalancer.sqlite.db")
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func record(backend string, services int, started time.Time) lb.SyncRecord {
	return lb.SyncRecord{Started: started.UTC(), Duration: 1500 * time.Millisecond, Backend: backend,
		Result: "ok", Services: services, Created: services}
}

var t0 = time.Date(2016, 6, 20, 16, 17, 4, 123456789, time.UTC)

func TestSchemaVersionCountsMigrations(t *testing.T) {
	if store.SchemaVersion != store.Migrations {
		t.Errorf("SchemaVersion = %d, want the number of migrations, %d", store.SchemaVersion, store.Migrations)
	}
}

func TestOpenCreates(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "opt", "lbd")
	path := filepath.Join(dir, "LoadBalancer.sqlite.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	for p, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil {
			t.Error(err)
		} else if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	if v, err := db.Version(ctx); err != nil || v != store.SchemaVersion {
		t.Errorf("Version() = %d, %v; want %d", v, err, store.SchemaVersion)
	}

	pragmas := []struct{ name, want string }{
		{"journal_mode", "wal"},
		{"foreign_keys", "1"},
		{"synchronous", "1"}, // NORMAL
		{"busy_timeout", "10000"},
	}
	for _, p := range pragmas {
		var got string
		if err := db.SQL().QueryRowContext(ctx, "PRAGMA "+p.name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != p.want {
			t.Errorf("PRAGMA %s = %q, want %q", p.name, got, p.want)
		}
	}

	got := schemaObjects(t, db.SQL())
	want := []string{
		"table address_report", "table allocations", "table applied", "table deletions", "table endpoints", "table owned_addresses",
		"table ports", "table service_ips", "table service_states", "table services", "table sync_history", "view ServiceToEndPointsMapping",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema objects (-want +got):\n%s", diff)
	}
	if svcs, err := db.Services(ctx); err != nil || len(svcs) != 0 {
		t.Errorf("Services() on a new DB = %v, %v; want none", svcs, err)
	}
	if hist, err := db.History(ctx, 0); err != nil || len(hist) != 0 {
		t.Errorf("History() on a new DB = %v, %v; want none", hist, err)
	}
}

// schemaObjects lists "type name" of the tables and views, sorted.
func schemaObjects(t *testing.T, db *sql.DB) []string {
	t.Helper()
	return queryLines(t, db, `SELECT type || ' ' || name FROM sqlite_master
		WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY type, name`)
}

func TestReopenIsIdempotent(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	if err := db.Commit(ctx, "iptables", []lb.Service{nginx()}, []lb.Service{nginx()}, record("iptables", 1, t0)); err != nil {
		t.Fatal(err)
	}
	before := schemaObjects(t, db.SQL())
	db.Close()

	for i := range 3 {
		db, err := store.Open(ctx, path)
		if err != nil {
			t.Fatalf("reopen %d: %v", i, err)
		}
		if v, err := db.Version(ctx); err != nil || v != store.SchemaVersion {
			t.Errorf("reopen %d: Version() = %d, %v; want %d", i, v, err, store.SchemaVersion)
		}
		if diff := cmp.Diff(before, schemaObjects(t, db.SQL())); diff != "" {
			t.Errorf("reopen %d: schema (-want +got):\n%s", i, diff)
		}
		got, err := db.Services(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(normalized(nginx()), got, addrs); diff != "" {
			t.Errorf("reopen %d: Services() (-want +got):\n%s", i, diff)
		}
		if hist, err := db.History(ctx, 0); err != nil || len(hist) != 1 {
			t.Errorf("reopen %d: History() = %d records, %v; want 1", i, len(hist), err)
		}
		db.Close()
	}
}

func TestOpenMigratesOlderSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lbd.db")
	old, err := store.OpenVersion(ctx, path, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := old.Version(ctx); v != 1 {
		t.Fatalf("old schema version = %d, want 1", v)
	}
	if got := schemaObjects(t, old.SQL()); slices.Contains(got, "table applied") {
		t.Fatalf("version 1 already has the applied table: %v", got)
	}
	// A row written by the older lbd.
	if _, err := old.SQL().Exec(`INSERT INTO services (id, namespace, name, type, cluster_ip, affinity, affinity_timeout_s, exposed)
		VALUES (1, 'default', 'kept', 'ClusterIP', '', 'None', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	old.Close()

	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _ := db.Version(ctx); v != store.SchemaVersion {
		t.Errorf("migrated version = %d, want %d", v, store.SchemaVersion)
	}
	if got := schemaObjects(t, db.SQL()); !slices.Contains(got, "table applied") || !slices.Contains(got, "table sync_history") {
		t.Errorf("migrated schema lacks version 2's tables: %v", got)
	}
	svcs, err := db.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Name != "kept" {
		t.Errorf("Services() after migration = %#v, want the old row", svcs)
	}
	if err := db.RecordSync(ctx, record("haproxy", 1, t0)); err != nil {
		t.Errorf("RecordSync after migration: %v", err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	newer := store.SchemaVersion + 1
	if _, err := db.SQL().Exec(fmt.Sprintf("PRAGMA user_version = %d", newer)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err := store.Open(ctx, path)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open() error = %v, want ErrSchemaTooNew", err)
	}
	for _, want := range []string{path, fmt.Sprintf("schema version %d", newer), fmt.Sprintf("up to %d", store.SchemaVersion)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The newer file is left as it was.
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var v int
	if err := raw.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != newer {
		t.Errorf("version after refusal = %d, %v; want %d", v, err, newer)
	}
}

// The notes (000_*.txt) create the table by hand in the sqlite3 shell; the
// shell's .schema prints Endpoints where the CREATE said EndPoints, so both
// spellings are tried. Statements are copied verbatim.
func TestOpenMigratesNotesDB(t *testing.T) {
	tests := []struct {
		name   string
		create string
	}{
		{"create", `CREATE TABLE ServiceToEndPointsMapping (ServiceName varchar(50), NameSpace varchar(50), ClusterIP varchar (15), ExternalIP varchar(15), Ports varchar(50), EndPoints varchar(300) );`},
		{"schema", `CREATE TABLE ServiceToEndPointsMapping (ServiceName varchar(50), NameSpace varchar(50), ClusterIP varchar (15), ExternalIP varchar(15), Ports varchar(50), Endpoints varchar(300) );`},
	}
	const insert = `insert into servicetoendpointsmapping values('nginx','default','10.247.78.179','192.168.121.201','80/TCP','10.246.82.2:80,10.246.82.6:80');`
	const notesRow = "nginx|default|10.247.78.179|192.168.121.201|80/TCP|10.246.82.2:80,10.246.82.6:80"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "LoadBalancer.sqlite.db")
			hand, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range []string{tt.create, insert} {
				if _, err := hand.Exec(stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
			hand.Close()
			// As the sqlite3 shell leaves it under umask 022.
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}

			db, err := store.Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if fi, err := os.Stat(path); err != nil || fi.Mode() != 0o600 {
				t.Errorf("mode after Open = %v, %v; want 0600", fi.Mode(), err)
			}

			legacy := queryLines(t, db.SQL(), `SELECT ServiceName || '|' || NameSpace || '|' || ClusterIP || '|' ||
				ExternalIP || '|' || Ports || '|' || EndPoints FROM legacy_ServiceToEndPointsMapping`)
			if diff := cmp.Diff([]string{notesRow}, legacy); diff != "" {
				t.Errorf("legacy rows (-want +got):\n%s", diff)
			}
			objs := schemaObjects(t, db.SQL())
			for _, want := range []string{"table legacy_ServiceToEndPointsMapping", "view ServiceToEndPointsMapping"} {
				if !slices.Contains(objs, want) {
					t.Errorf("schema lacks %s: %v", want, objs)
				}
			}
			if got := queryLines(t, db.SQL(), viewSelect); len(got) != 0 {
				t.Errorf("view before any commit = %q, want empty", got)
			}

			if err := db.Commit(ctx, "haproxy", []lb.Service{nginx()}, nil, record("haproxy", 1, t0)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{notesRow}, queryLines(t, db.SQL(), viewSelect)); diff != "" {
				t.Errorf("view after commit (-want +got):\n%s", diff)
			}
		})
	}
}

// viewSelect prints the view the way the sqlite3 shell does.
const viewSelect = `SELECT ServiceName || '|' || NameSpace || '|' || ClusterIP || '|' ||
	ExternalIP || '|' || Ports || '|' || EndPoints FROM ServiceToEndPointsMapping`

func queryLines(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFileModes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lbd.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Widen everything, and leave WAL files as a crashed older tool might.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.WriteFile(p+".tmp", nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if p != path {
			if err := os.Rename(p+".tmp", p); err != nil {
				t.Fatal(err)
			}
		} else {
			os.Remove(p + ".tmp")
		}
		if err := os.Chmod(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}

	db, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Commit(ctx, "iptables", []lb.Service{nginx()}, []lb.Service{nginx()}, record("iptables", 1, t0)); err != nil {
		t.Fatal(err)
	}
	// The WAL files exist now (the pool keeps a connection open).
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("after commit: %v", err)
			continue
		}
		if fi.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", filepath.Base(p), fi.Mode())
		}
	}
}

func TestFreshWALFilesAre0600(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	if err := db.Commit(ctx, "iptables", []lb.Service{web()}, nil, record("iptables", 1, t0)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", filepath.Base(p), fi.Mode())
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	notDB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"empty", "", "store: open: empty path"},
		{"question mark", filepath.Join(dir, "a?b.db"), "must not contain '?'"},
		{"not a database", notDB, "store: open " + notDB},
		{"parent is a file", filepath.Join(notDB, "x.db"), "store: open " + filepath.Join(notDB, "x.db")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := store.Open(ctx, tt.path)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded", tt.path)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(%q) error = %q, want it to contain %q", tt.path, err, tt.want)
			}
		})
	}
}

func TestCommitRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		mapping []lb.Service
		applied []lb.Service
	}{
		{"notes", []lb.Service{nginx(), kubernetes()}, []lb.Service{nginx()}},
		{"all kinds", []lb.Service{web(), nginx(), dns6(), headless(), kubernetes()}, []lb.Service{dns6(), web(), nginx()}},
		{"ipv6 only", []lb.Service{dns6()}, []lb.Service{dns6()}},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, _ := openTemp(t)
			// Something to replace.
			if err := db.Commit(ctx, "iptables", []lb.Service{headless(), web()}, []lb.Service{web()}, record("iptables", 2, t0)); err != nil {
				t.Fatal(err)
			}
			if err := db.Commit(ctx, "haproxy", nil, []lb.Service{kubernetes()}, record("haproxy", 0, t0)); err != nil {
				t.Fatal(err)
			}
			inputBefore := normalizedCopyOrder(tt.mapping)
			if err := db.Commit(ctx, "iptables", tt.mapping, tt.applied, record("iptables", len(tt.mapping), t0)); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(inputBefore, normalizedCopyOrder(tt.mapping), addrs); diff != "" {
				t.Errorf("Commit modified its input (-before +after):\n%s", diff)
			}

			got, err := db.Services(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(normalized(tt.mapping...), got, addrs); diff != "" {
				t.Errorf("Services() (-want +got):\n%s", diff)
			}
			gotApplied, err := db.Applied(ctx, "iptables")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(normalized(tt.applied...), gotApplied, addrs); diff != "" {
				t.Errorf("Applied(iptables) (-want +got):\n%s", diff)
			}
			// Another backend's applied state is its own.
			other, err := db.Applied(ctx, "haproxy")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(normalized(kubernetes()), other, addrs); diff != "" {
				t.Errorf("Applied(haproxy) (-want +got):\n%s", diff)
			}
			if never, err := db.Applied(ctx, "nftables"); err != nil || len(never) != 0 {
				t.Errorf("Applied(nftables) = %v, %v; want none", never, err)
			}
			for _, s := range got {
				if err := s.Validate(); err != nil {
					t.Errorf("loaded service invalid: %v", err)
				}
			}
		})
	}
}

// normalizedCopyOrder deep-copies svcs as given, to detect mutation.
func normalizedCopyOrder(svcs []lb.Service) []lb.Service {
	var out []lb.Service
	for _, s := range svcs {
		out = append(out, *s.Clone())
	}
	return out
}

func TestAppliedKeepsSubSecondTimeout(t *testing.T) {
	// The applied state is what the reconciler diffs against; it must
	// give back exactly what went in, even where the mapping cannot.
	ctx := context.Background()
	db, _ := openTemp(t)
	s := web()
	s.AffinityTimeout = 1500 * time.Millisecond
	if err := db.Commit(ctx, "iptables", []lb.Service{s}, []lb.Service{s}, record("iptables", 1, t0)); err != nil {
		t.Fatal(err)
	}
	got, err := db.Applied(ctx, "iptables")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(normalized(s), got, addrs); diff != "" {
		t.Errorf("Applied() (-want +got):\n%s", diff)
	}
}

// cancelAfter is a context that reports itself canceled from its n-th
// Done() call on: database/sql checks Done before every statement, so a
// Commit is canceled part-way through, at the same place every run.
type cancelAfter struct {
	context.Context
	n     int64
	calls atomic.Int64
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *cancelAfter) Done() <-chan struct{} {
	if c.calls.Add(1) >= c.n {
		return closed
	}
	return nil
}

func (c *cancelAfter) Err() error {
	if c.calls.Load() >= c.n {
		return context.Canceled
	}
	return nil
}

func TestCommitIsOneTransaction(t *testing.T) {
	// Services for the failing commit: many rows, so that a failure comes
	// after the old mapping was deleted and part of the new one written.
	var many []lb.Service
	for i := range 50 {
		s := web()
		s.Name = "web-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		many = append(many, s)
	}
	dup := nginx()
	dup.ExternalIPs = ips("192.168.121.99")
	badPort := web()
	badPort.Name = "zz-bad"
	badPort.Ports[1].Endpoints[0].Port = 0

	tests := []struct {
		name    string
		ctx     func() context.Context
		mapping []lb.Service
		applied []lb.Service
		wantErr error
		wantMsg string
	}{{
		name:    "duplicate in mapping",
		ctx:     context.Background,
		mapping: append(slices.Clone(many), dup, nginx()),
		applied: many,
		wantMsg: "store: commit iptables: mapping: service default/nginx: ",
	}, {
		name:    "duplicate in applied, after the mapping was replaced",
		ctx:     context.Background,
		mapping: many,
		applied: append(slices.Clone(many), many[7]),
		wantMsg: "store: commit iptables: applied: service shop/" + many[7].Name + ": ",
	}, {
		name:    "canceled half way",
		ctx:     func() context.Context { return &cancelAfter{Context: context.Background(), n: 200} },
		mapping: many,
		applied: many,
		wantErr: context.Canceled,
		wantMsg: "store: commit iptables: mapping: ",
	}, {
		name:    "endpoint port 0 fails a CHECK in a batch",
		ctx:     context.Background,
		mapping: append(slices.Clone(many), badPort),
		applied: many,
		wantMsg: "store: commit iptables: mapping: batch up to service shop/zz-bad: insert into endpoints: ",
	}, {
		name:    "canceled before",
		ctx:     func() context.Context { c, cancel := context.WithCancel(context.Background()); cancel(); return c },
		mapping: many,
		applied: many,
		wantErr: context.Canceled,
		wantMsg: "store: commit iptables: begin: ",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, _ := openTemp(t)
			before := []lb.Service{nginx(), kubernetes()}
			if err := db.Commit(ctx, "iptables", before, before[:1], record("iptables", 2, t0)); err != nil {
				t.Fatal(err)
			}

			err := db.Commit(tt.ctx(), "iptables", tt.mapping, tt.applied, record("iptables", 99, t0.Add(time.Minute)))
			if err == nil {
				t.Fatal("Commit succeeded, want an error")
			}
			t.Logf("Commit error: %v", err)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), tt.wantMsg) {
				t.Errorf("error = %q, want prefix %q", err, tt.wantMsg)
			}

			got, err := db.Services(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(normalized(before...), got, addrs); diff != "" {
				t.Errorf("mapping changed by a failed commit (-want +got):\n%s", diff)
			}
			applied, err := db.Applied(ctx, "iptables")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(normalized(before[0]), applied, addrs); diff != "" {
				t.Errorf("applied changed by a failed commit (-want +got):\n%s", diff)
			}
			hist, err := db.History(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) != 1 || hist[0].Services != 2 {
				t.Errorf("history after a failed commit = %+v, want only the first record", hist)
			}
			// The DB is still usable.
			if err := db.Commit(ctx, "iptables", tt.mapping[:1], nil, record("iptables", 1, t0)); err != nil {
				t.Errorf("Commit after the failure: %v", err)
			}
		})
	}
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	cest := time.FixedZone("CEST", 2*3600)
	recs := []lb.SyncRecord{
		{Started: t0.In(cest), Duration: 2*time.Second + 345678*time.Microsecond, Backend: "iptables", Result: "ok",
			Services: 3, Created: 3},
		{Started: t0.Add(time.Minute), Duration: 12 * time.Millisecond, Backend: "iptables", Result: "noop", Services: 3},
		{Started: t0.Add(2 * time.Minute), Duration: time.Second, Backend: "haproxy", Result: "refused", Services: 3,
			Deleted: 3, Err: "would delete 3 of 3 services; pass --force"},
		{Started: t0.Add(3 * time.Minute), Duration: 40 * time.Millisecond, Backend: "haproxy", Result: "error",
			Services: 4, Created: 1, Updated: 1, Skipped: 2, Err: "haproxy -c: exit status 1"},
	}
	for i, r := range recs {
		var err error
		if i == 0 {
			err = db.Commit(ctx, r.Backend, []lb.Service{nginx()}, nil, r)
		} else {
			err = db.RecordSync(ctx, r)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Newest first, UTC, whole milliseconds.
	want := slices.Clone(recs)
	slices.Reverse(want)
	for i := range want {
		want[i].Started = want[i].Started.UTC()
		want[i].Duration = want[i].Duration.Truncate(time.Millisecond)
	}

	tests := []struct {
		limit int
		want  []lb.SyncRecord
	}{
		{0, want},
		{-1, want},
		{2, want[:2]},
		{1, want[:1]},
		{100, want},
	}
	for _, tt := range tests {
		got, err := db.History(ctx, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("History(%d) (-want +got):\n%s", tt.limit, diff)
		}
	}
	// RecordSync left the mapping alone.
	if got, err := db.Services(ctx); err != nil || len(got) != 1 {
		t.Errorf("Services() after RecordSync = %d services, %v; want 1", len(got), err)
	}
}

func TestHistoryPrunes(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	const keep = 5
	db.SetKeepHistory(keep)
	for i := 1; i <= 12; i++ {
		r := record("iptables", i, t0.Add(time.Duration(i)*time.Second))
		var err error
		if i%3 == 0 {
			err = db.Commit(ctx, "iptables", nil, nil, r)
		} else {
			err = db.RecordSync(ctx, r)
		}
		if err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := db.SQL().QueryRow(`SELECT count(*) FROM sync_history`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if want := min(i, keep); rows != want {
			t.Errorf("after %d records: %d rows, want %d", i, rows, want)
		}
	}
	hist, err := db.History(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, r := range hist {
		got = append(got, r.Services)
	}
	if diff := cmp.Diff([]int{12, 11, 10, 9, 8}, got); diff != "" {
		t.Errorf("kept records (-want +got):\n%s", diff)
	}
}

func TestForgetApplied(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	if err := db.Commit(ctx, "iptables", []lb.Service{nginx(), web()}, []lb.Service{nginx(), web()}, record("iptables", 2, t0)); err != nil {
		t.Fatal(err)
	}
	if err := db.Commit(ctx, "haproxy", []lb.Service{nginx(), web()}, []lb.Service{nginx()}, record("haproxy", 2, t0)); err != nil {
		t.Fatal(err)
	}
	if err := db.ForgetApplied(ctx, "iptables"); err != nil {
		t.Fatal(err)
	}
	gone, err := db.Applied(ctx, "iptables")
	if err != nil || len(gone) != 0 {
		t.Errorf("iptables applied after forget = %d services, %v; want none", len(gone), err)
	}
	kept, err := db.Applied(ctx, "haproxy")
	if err != nil || len(kept) != 1 {
		t.Errorf("haproxy applied = %d services, %v; want its 1 service kept", len(kept), err)
	}
	if m, _ := db.Services(ctx); len(m) != 2 {
		t.Errorf("mapping = %d services, want 2 kept", len(m))
	}
}
