package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/lbd/lbd/lb"
)

// Commit records a successful sync in one transaction: mapping replaces the
// service mapping (the tables behind the ServiceToEndPointsMapping view),
// applied replaces backend's applied state, and rec is appended to the
// history. On any error nothing changes. The services are stored in
// normalized form; the caller's values are not modified.
//
// Commit writes only what changed: the rows of a service whose normalized
// form is the one stored (by its digest in the mapping, by its JSON in the
// applied state) stay untouched, so a pass that changed one endpoint of
// 10,000 services rewrites one service's rows. What the view and Applied
// return is the same as if everything had been rewritten.
//
// The mapping keeps ClientIP affinity timeouts in whole seconds, as
// Kubernetes does; the applied state keeps every field exactly.
func (db *DB) Commit(ctx context.Context, backend string, mapping, applied []lb.Service, rec lb.SyncRecord) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := commitMapping(ctx, tx, mapping); err != nil {
			return fmt.Errorf("mapping: %w", err)
		}
		if err := commitApplied(ctx, tx, backend, applied); err != nil {
			return fmt.Errorf("applied: %w", err)
		}
		if err := db.insertSync(ctx, tx, rec); err != nil {
			return fmt.Errorf("history: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: commit %s: %w", backend, err)
	}
	return nil
}

// RecordSync appends rec to the sync history and changes nothing else.
func (db *DB) RecordSync(ctx context.Context, rec lb.SyncRecord) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error { return db.insertSync(ctx, tx, rec) })
	if err != nil {
		return fmt.Errorf("store: record sync of %s: %w", rec.Backend, err)
	}
	return nil
}

// digestSQL is schema step 6: a digest of each mapped service, so that a
// commit can tell which services changed without reading their rows.
// Rows written before it have an empty digest, which matches nothing.
const digestSQL = `ALTER TABLE services ADD COLUMN digest BLOB NOT NULL DEFAULT x'';`

// errListedTwice rejects a commit that names a service twice.
var errListedTwice = errors.New("listed twice")

// commitMapping makes svcs the mapping: it deletes the services that are
// gone or changed (their ports, endpoints and IPs go by cascade) and
// inserts the changed and new ones. A service is unchanged when the
// SHA-256 of its normalized JSON is the digest stored with it.
func commitMapping(ctx context.Context, tx *sql.Tx, svcs []lb.Service) error {
	type stored struct {
		id     int64
		digest []byte
		keep   bool
	}
	old := map[string]*stored{}
	var maxSvc, maxPort int64
	err := scanAll(ctx, tx, `SELECT id, namespace, name, digest FROM services`, func(rows *sql.Rows) error {
		var ns, name string
		r := &stored{}
		if err := rows.Scan(&r.id, &ns, &name, &r.digest); err != nil {
			return err
		}
		old[ns+"/"+name] = r
		maxSvc = max(maxSvc, r.id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read services: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT ifnull(max(id), 0) FROM ports`).Scan(&maxPort); err != nil {
		return fmt.Errorf("read ports: %w", err)
	}
	var write []lb.Service
	var digests [][]byte
	seen := make(map[string]bool, len(svcs))
	for i := range svcs {
		s := svcs[i].Clone()
		s.Normalize()
		key := s.Key()
		if seen[key] {
			return fmt.Errorf("service %s: %w", key, errListedTwice)
		}
		seen[key] = true
		spec, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("service %s: %w", key, err)
		}
		d := sha256.Sum256(spec)
		if r := old[key]; r != nil && bytes.Equal(r.digest, d[:]) {
			r.keep = true
			continue
		}
		write = append(write, *s)
		digests = append(digests, d[:])
	}
	del, err := tx.PrepareContext(ctx, `DELETE FROM services WHERE id = ?`)
	if err != nil {
		return fmt.Errorf("prepare delete: %w", err)
	}
	defer del.Close()
	for key, r := range old {
		if r.keep {
			continue
		}
		if _, err := del.ExecContext(ctx, r.id); err != nil {
			return fmt.Errorf("delete service %s: %w", key, err)
		}
	}
	return insertMapping(ctx, tx, write, digests, maxSvc, maxPort)
}

// insertMapping inserts svcs, normalized, with their digests; their row
// ids follow lastSvc and lastPort. Row ids are assigned here, so every
// insert is a plain prepared statement with no round trip for the new id.
func insertMapping(ctx context.Context, tx *sql.Tx, svcs []lb.Service, digests [][]byte, lastSvc, lastPort int64) error {
	ins, err := prepareAll(ctx, tx,
		`INSERT INTO services (id, namespace, name, type, cluster_ip, affinity, affinity_timeout_s, exposed, digest)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		`INSERT INTO ports (id, service_id, ordinal, name, port, protocol, target_port)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
	)
	if err != nil {
		return err
	}
	defer closeAll(ins)
	insSvc, insPort := ins[0], ins[1]
	// Endpoints and IPs are most of the rows and, normalized, cannot
	// conflict: they go in many to a statement, and an error names the
	// batch's last service only. Services and ports go one by one so that
	// a conflict (a duplicate service or port) names its service.
	insIP := &batchInsert{tx: tx, table: "service_ips", cols: []string{"service_id", "ip", "ordinal"}}
	defer insIP.close()
	insEP := &batchInsert{tx: tx, table: "endpoints",
		cols: []string{"port_id", "ordinal", "ip", "port", "ready", "serving", "terminating"}}
	defer insEP.close()

	portID := lastPort
	for i := range svcs {
		s := &svcs[i]
		svcID := lastSvc + int64(i) + 1
		clusterIP := ""
		if s.ClusterIP.IsValid() {
			clusterIP = s.ClusterIP.String()
		}
		if _, err := insSvc.ExecContext(ctx, svcID, s.Namespace, s.Name, s.Type, clusterIP,
			string(s.Affinity), int64(s.AffinityTimeout/time.Second), s.Exposed(), digests[i]); err != nil {
			return fmt.Errorf("service %s: %w", s.Key(), err)
		}
		for j, ip := range s.ExternalIPs {
			if err := insIP.add(ctx, svcID, ip.String(), j); err != nil {
				return fmt.Errorf("batch up to service %s: %w", s.Key(), err)
			}
		}
		for j, p := range s.Ports {
			portID++
			if _, err := insPort.ExecContext(ctx, portID, svcID, j, p.Name, int(p.Port), string(p.Protocol), p.TargetPort); err != nil {
				return fmt.Errorf("service %s port %s: %w", s.Key(), p, err)
			}
			for k, e := range p.Endpoints {
				if err := insEP.add(ctx, portID, k, e.IP.String(), int(e.Port), e.Ready, e.Serving, e.Terminating); err != nil {
					return fmt.Errorf("batch up to service %s port %s: %w", s.Key(), p, err)
				}
			}
		}
	}
	last := "(none)"
	if len(svcs) > 0 {
		last = svcs[len(svcs)-1].Key()
	}
	if err := insIP.flush(ctx); err != nil {
		return fmt.Errorf("batch up to service %s: %w", last, err)
	}
	if err := insEP.flush(ctx); err != nil {
		return fmt.Errorf("batch up to service %s: %w", last, err)
	}
	return nil
}

// batchRows is how many rows one batchInsert statement carries; with seven
// columns that is 700 parameters, far below SQLite's limit of 32766.
const batchRows = 100

// batchInsert inserts rows into table batchRows at a time with one
// multi-row INSERT: per statement, database/sql and the driver cost more
// than SQLite's own work for a small row.
type batchInsert struct {
	tx    *sql.Tx
	table string
	cols  []string
	full  *sql.Stmt // prepared on first use
	args  []any
}

// add queues one row, inserting the queue when it holds batchRows rows.
func (b *batchInsert) add(ctx context.Context, row ...any) error {
	b.args = append(b.args, row...)
	if len(b.args) < batchRows*len(b.cols) {
		return nil
	}
	if b.full == nil {
		st, err := b.tx.PrepareContext(ctx, b.query(batchRows))
		if err != nil {
			return fmt.Errorf("prepare insert into %s: %w", b.table, err)
		}
		b.full = st
	}
	if _, err := b.full.ExecContext(ctx, b.args...); err != nil {
		return fmt.Errorf("insert into %s: %w", b.table, err)
	}
	b.args = b.args[:0]
	return nil
}

// flush inserts the rows still queued.
func (b *batchInsert) flush(ctx context.Context) error {
	if len(b.args) == 0 {
		return nil
	}
	if _, err := b.tx.ExecContext(ctx, b.query(len(b.args)/len(b.cols)), b.args...); err != nil {
		return fmt.Errorf("insert into %s: %w", b.table, err)
	}
	b.args = b.args[:0]
	return nil
}

func (b *batchInsert) close() {
	if b.full != nil {
		b.full.Close()
	}
}

// query returns "INSERT INTO table (cols) VALUES (?, ...), ..." for rows rows.
func (b *batchInsert) query(rows int) string {
	row := "(" + strings.Repeat("?, ", len(b.cols)-1) + "?)"
	var q strings.Builder
	q.WriteString("INSERT INTO " + b.table + " (" + strings.Join(b.cols, ", ") + ") VALUES ")
	for i := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(row)
	}
	return q.String()
}

// commitApplied makes svcs the applied state of backend, writing only the
// services whose normalized JSON differs from the one stored and deleting
// those that are gone.
func commitApplied(ctx context.Context, tx *sql.Tx, backend string, svcs []lb.Service) error {
	old := map[string][]byte{}
	err := scanAll(ctx, tx, `SELECT namespace, name, spec FROM applied WHERE backend = ?`, func(rows *sql.Rows) error {
		var ns, name string
		var spec []byte
		if err := rows.Scan(&ns, &name, &spec); err != nil {
			return err
		}
		old[ns+"/"+name] = spec
		return nil
	}, backend)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	stmts, err := prepareAll(ctx, tx,
		`INSERT INTO applied (backend, namespace, name, spec) VALUES (?, ?, ?, ?)
			ON CONFLICT (backend, namespace, name) DO UPDATE SET spec = excluded.spec`,
		`DELETE FROM applied WHERE backend = ? AND namespace = ? AND name = ?`,
	)
	if err != nil {
		return err
	}
	defer closeAll(stmts)
	upsert, del := stmts[0], stmts[1]
	seen := make(map[string]bool, len(svcs))
	for i := range svcs {
		s := svcs[i].Clone()
		s.Normalize()
		key := s.Key()
		if seen[key] {
			return fmt.Errorf("service %s: %w", key, errListedTwice)
		}
		seen[key] = true
		spec, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("service %s: %w", key, err)
		}
		if prev, ok := old[key]; ok && bytes.Equal(prev, spec) {
			continue
		}
		if _, err := upsert.ExecContext(ctx, backend, s.Namespace, s.Name, spec); err != nil {
			return fmt.Errorf("service %s: %w", key, err)
		}
	}
	for key := range old {
		if seen[key] {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		if _, err := del.ExecContext(ctx, backend, ns, name); err != nil {
			return fmt.Errorf("delete service %s: %w", key, err)
		}
	}
	return nil
}

// Applied returns the services as backend last programmed them, normalized
// and sorted by namespace and name; empty when backend never committed.
func (db *DB) Applied(ctx context.Context, backend string) ([]lb.Service, error) {
	svcs, err := db.applied(ctx, backend)
	if err != nil {
		return nil, fmt.Errorf("store: applied state of %s: %w", backend, err)
	}
	return svcs, nil
}

func (db *DB) applied(ctx context.Context, backend string) ([]lb.Service, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT namespace, name, spec FROM applied WHERE backend = ?`, backend)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var svcs []lb.Service
	for rows.Next() {
		var ns, name string
		var spec []byte
		if err := rows.Scan(&ns, &name, &spec); err != nil {
			return nil, err
		}
		var s lb.Service
		if err := json.Unmarshal(spec, &s); err != nil {
			return nil, fmt.Errorf("service %s/%s: %w", ns, name, err)
		}
		s.Normalize()
		svcs = append(svcs, s)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	lb.SortServices(svcs)
	return svcs, nil
}

// Services returns the service mapping as last committed, normalized and
// sorted by namespace and name (what `lbd status` shows).
func (db *DB) Services(ctx context.Context) ([]lb.Service, error) {
	var svcs []lb.Service
	// A read transaction gives the four queries one snapshot.
	tx, err := db.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("store: services: begin: %w", err)
	}
	defer tx.Rollback()
	svcs, err = loadMapping(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("store: services: %w", err)
	}
	return svcs, nil
}

// loadMapping reads the four mapping tables, each in one ordered scan, and
// assembles the services.
func loadMapping(ctx context.Context, tx *sql.Tx) ([]lb.Service, error) {
	var svcs []lb.Service
	byID := map[int64]int{}
	err := scanAll(ctx, tx, `SELECT id, namespace, name, type, cluster_ip, affinity, affinity_timeout_s
		FROM services ORDER BY id`, func(rows *sql.Rows) error {
		var (
			id        int64
			s         lb.Service
			clusterIP string
			affinity  string
			timeout   int64
		)
		if err := rows.Scan(&id, &s.Namespace, &s.Name, &s.Type, &clusterIP, &affinity, &timeout); err != nil {
			return err
		}
		if clusterIP != "" {
			ip, err := netip.ParseAddr(clusterIP)
			if err != nil {
				return fmt.Errorf("service %s cluster IP: %w", s.Key(), err)
			}
			s.ClusterIP = ip
		}
		s.Affinity = lb.Affinity(affinity)
		s.AffinityTimeout = time.Duration(timeout) * time.Second
		byID[id] = len(svcs)
		svcs = append(svcs, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}

	err = scanAll(ctx, tx, `SELECT service_id, ip FROM service_ips ORDER BY service_id, ordinal`, func(rows *sql.Rows) error {
		var id int64
		var ipText string
		if err := rows.Scan(&id, &ipText); err != nil {
			return err
		}
		ip, err := netip.ParseAddr(ipText)
		if err != nil {
			return err
		}
		s := &svcs[byID[id]]
		s.ExternalIPs = append(s.ExternalIPs, ip)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("service_ips: %w", err)
	}

	// port id -> (service index, port index)
	type portRef struct{ svc, port int }
	ports := map[int64]portRef{}
	err = scanAll(ctx, tx, `SELECT id, service_id, name, port, protocol, target_port
		FROM ports ORDER BY service_id, ordinal`, func(rows *sql.Rows) error {
		var id, svcID int64
		var p lb.Port
		var proto string
		if err := rows.Scan(&id, &svcID, &p.Name, &p.Port, &proto, &p.TargetPort); err != nil {
			return err
		}
		p.Protocol = lb.Protocol(proto)
		si := byID[svcID]
		ports[id] = portRef{si, len(svcs[si].Ports)}
		svcs[si].Ports = append(svcs[si].Ports, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ports: %w", err)
	}

	err = scanAll(ctx, tx, `SELECT port_id, ip, port, ready, serving, terminating
		FROM endpoints ORDER BY port_id, ordinal`, func(rows *sql.Rows) error {
		var portID int64
		var ipText string
		var e lb.Endpoint
		if err := rows.Scan(&portID, &ipText, &e.Port, &e.Ready, &e.Serving, &e.Terminating); err != nil {
			return err
		}
		ip, err := netip.ParseAddr(ipText)
		if err != nil {
			return err
		}
		e.IP = ip
		ref := ports[portID]
		p := &svcs[ref.svc].Ports[ref.port]
		p.Endpoints = append(p.Endpoints, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("endpoints: %w", err)
	}

	for i := range svcs {
		svcs[i].Normalize()
	}
	lb.SortServices(svcs)
	return svcs, nil
}

// insertSync appends rec to sync_history and prunes the oldest rows beyond
// db.keepHistory.
func (db *DB) insertSync(ctx context.Context, tx *sql.Tx, rec lb.SyncRecord) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sync_history
		(started, duration_ms, backend, result, services, created, updated, deleted, skipped, error)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		rec.Started.UTC().Format(time.RFC3339Nano), rec.Duration.Milliseconds(), rec.Backend, rec.Result,
		rec.Services, rec.Created, rec.Updated, rec.Deleted, rec.Skipped, rec.Err)
	if err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	// Ids only grow, so the row keepHistory places below the newest marks
	// where the old ones start; the primary key index finds it.
	_, err = tx.ExecContext(ctx, `DELETE FROM sync_history WHERE id <=
		(SELECT id FROM sync_history ORDER BY id DESC LIMIT 1 OFFSET ?)`, db.keepHistory)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return nil
}

// History returns up to limit sync records, newest first; all of them when
// limit <= 0. Durations come back in whole milliseconds, start times in UTC.
func (db *DB) History(ctx context.Context, limit int) ([]lb.SyncRecord, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	var recs []lb.SyncRecord
	err := scanAll(ctx, db.sql, `SELECT started, duration_ms, backend, result, services, created, updated, deleted, skipped, error
		FROM sync_history ORDER BY id DESC LIMIT ?`, func(rows *sql.Rows) error {
		var r lb.SyncRecord
		var started string
		var ms int64
		if err := rows.Scan(&started, &ms, &r.Backend, &r.Result, &r.Services, &r.Created, &r.Updated,
			&r.Deleted, &r.Skipped, &r.Err); err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339Nano, started)
		if err != nil {
			return fmt.Errorf("started: %w", err)
		}
		r.Started = t
		r.Duration = time.Duration(ms) * time.Millisecond
		recs = append(recs, r)
		return nil
	}, limit)
	if err != nil {
		return nil, fmt.Errorf("store: history: %w", err)
	}
	return recs, nil
}

// querier is what scanAll needs of a *sql.DB or *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// scanAll runs query and calls row for each result row.
func scanAll(ctx context.Context, q querier, query string, row func(*sql.Rows) error, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// prepareAll prepares each query in tx; on error it closes those prepared.
func prepareAll(ctx context.Context, tx *sql.Tx, queries ...string) ([]*sql.Stmt, error) {
	var stmts []*sql.Stmt
	for _, q := range queries {
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			closeAll(stmts)
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		stmts = append(stmts, st)
	}
	return stmts, nil
}

func closeAll(stmts []*sql.Stmt) {
	for _, st := range stmts {
		st.Close()
	}
}

// ForgetApplied drops the named backend's applied state, after `lbd
// cleanup` removed what it programmed, so the next sync creates every
// service again. The mapping and the history stay.
func (db *DB) ForgetApplied(ctx context.Context, backend string) error {
	if _, err := db.sql.ExecContext(ctx, `DELETE FROM applied WHERE backend = ?`, backend); err != nil {
		return fmt.Errorf("store: forget applied state of %s: %w", backend, err)
	}
	return nil
}
