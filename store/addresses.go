package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/lbd/lbd/lb"
)

// addressesSQL is schema step 3: what lbd decided about addresses.
const addressesSQL = `
-- allocations are the pool addresses held by LoadBalancer services. They
-- survive restarts, so every service keeps its address.
CREATE TABLE allocations (
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	ip        TEXT NOT NULL,
	origin    TEXT NOT NULL CHECK (origin IN ('allocated', 'requested')),
	PRIMARY KEY (namespace, name, ip)
) WITHOUT ROWID;

-- owned_addresses are the addresses lbd itself added to an interface
-- (--vip-interface). lbd removes only these, never one it did not add.
CREATE TABLE owned_addresses (
	interface TEXT NOT NULL,
	ip        TEXT NOT NULL,
	PRIMARY KEY (interface, ip)
) WITHOUT ROWID;

-- address_report is the last pass's verdict on every address of every
-- service, for lbd status: where it came from and what lbd does with it.
CREATE TABLE address_report (
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	ip        TEXT NOT NULL, -- '' for a service still waiting for one
	origin    TEXT NOT NULL,
	state     TEXT NOT NULL CHECK (state IN ('served', 'pending', 'rejected')),
	reason    TEXT NOT NULL
);
`

// splitKey splits "namespace/name".
func splitKey(key string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok || ns == "" || name == "" {
		return "", "", fmt.Errorf("%q is not namespace/name", key)
	}
	return ns, name, nil
}

// Allocations returns the stored pool allocations, sorted by service and
// address.
func (db *DB) Allocations(ctx context.Context) ([]lb.Allocation, error) {
	var out []lb.Allocation
	err := scanAll(ctx, db.sql, `SELECT namespace, name, ip, origin FROM allocations ORDER BY namespace, name, ip`, func(r *sql.Rows) error {
		var ns, name, ip, origin string
		if err := r.Scan(&ns, &name, &ip, &origin); err != nil {
			return err
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("allocation of %s/%s: %w", ns, name, err)
		}
		out = append(out, lb.Allocation{Key: ns + "/" + name, Addr: a, Origin: origin})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: allocations: %w", err)
	}
	return out, nil
}

// SaveAllocations makes allocs the stored pool allocations, in one
// transaction.
func (db *DB) SaveAllocations(ctx context.Context, allocs []lb.Allocation) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM allocations`); err != nil {
			return err
		}
		ins := &batchInsert{tx: tx, table: "allocations", cols: []string{"namespace", "name", "ip", "origin"}}
		defer ins.close()
		for _, a := range allocs {
			ns, name, err := splitKey(a.Key)
			if err != nil {
				return err
			}
			if err := ins.add(ctx, ns, name, a.Addr.String(), a.Origin); err != nil {
				return fmt.Errorf("allocation %s %s: %w", a.Key, a.Addr, err)
			}
		}
		return ins.flush(ctx)
	})
	if err != nil {
		return fmt.Errorf("store: save allocations: %w", err)
	}
	return nil
}

// OwnedAddresses returns the addresses lbd added to iface, sorted.
func (db *DB) OwnedAddresses(ctx context.Context, iface string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := scanAll(ctx, db.sql, `SELECT ip FROM owned_addresses WHERE interface = ?`, func(r *sql.Rows) error {
		var ip string
		if err := r.Scan(&ip); err != nil {
			return err
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return err
		}
		out = append(out, a)
		return nil
	}, iface)
	if err != nil {
		return nil, fmt.Errorf("store: owned addresses of %s: %w", iface, err)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// SaveOwnedAddresses records owned as the addresses lbd added to iface.
func (db *DB) SaveOwnedAddresses(ctx context.Context, iface string, owned []netip.Addr) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM owned_addresses WHERE interface = ?`, iface); err != nil {
			return err
		}
		for _, a := range owned {
			if _, err := tx.ExecContext(ctx, `INSERT INTO owned_addresses (interface, ip) VALUES (?, ?)`, iface, a.String()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: save owned addresses of %s: %w", iface, err)
	}
	return nil
}

// AddressReport returns the last stored address report, sorted by service
// and address.
func (db *DB) AddressReport(ctx context.Context) ([]lb.AddressState, error) {
	var out []lb.AddressState
	err := scanAll(ctx, db.sql, `SELECT namespace, name, ip, origin, state, reason FROM address_report ORDER BY namespace, name, ip`, func(r *sql.Rows) error {
		var ns, name, ip string
		var st lb.AddressState
		if err := r.Scan(&ns, &name, &ip, &st.Origin, &st.State, &st.Reason); err != nil {
			return err
		}
		st.Key = ns + "/" + name
		if ip != "" {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				return err
			}
			st.Addr = a
		}
		out = append(out, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: address report: %w", err)
	}
	return out, nil
}

// SaveAddressReport replaces the stored address report.
func (db *DB) SaveAddressReport(ctx context.Context, report []lb.AddressState) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM address_report`); err != nil {
			return err
		}
		ins := &batchInsert{tx: tx, table: "address_report", cols: []string{"namespace", "name", "ip", "origin", "state", "reason"}}
		defer ins.close()
		for _, st := range report {
			ns, name, err := splitKey(st.Key)
			if err != nil {
				return err
			}
			ip := ""
			if st.Addr.IsValid() {
				ip = st.Addr.String()
			}
			if err := ins.add(ctx, ns, name, ip, st.Origin, st.State, st.Reason); err != nil {
				return fmt.Errorf("address %s %s: %w", st.Key, ip, err)
			}
		}
		return ins.flush(ctx)
	})
	if err != nil {
		return fmt.Errorf("store: save address report: %w", err)
	}
	return nil
}
