package hostcheck

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// fakeMaster answers Connect and Discover from its fields.
type fakeMaster struct {
	connErr  error
	svcs     []lb.Service
	rejected []*lb.InvalidServiceError
	err      error
}

func (m fakeMaster) Connect(context.Context) error { return m.connErr }
func (m fakeMaster) Discover(context.Context) ([]lb.Service, []*lb.InvalidServiceError, error) {
	return m.svcs, m.rejected, m.err
}

// master is CheckMaster's verdicts for root@m; it checks that the
// services come back only from a good listing.
func master(newErr, connErr error, insecure bool, n int, rejected []*lb.InvalidServiceError, err error) []Verdict {
	v, svcs := CheckMaster(context.Background(), "root@m", insecure, fakeMaster{connErr, make([]lb.Service, n), rejected, err}, newErr)
	if len(svcs) != n || (newErr != nil || connErr != nil || err != nil) && svcs != nil {
		return append(v, Verdict{"test", false, "wrong services"})
	}
	return v
}

// TestCheckVerdicts: the verdicts lbd check draws from the pools, the
// store's addresses, the master and keepalived.
func TestCheckVerdicts(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	report := []lb.AddressState{
		{Key: "default/web", Addr: a("192.168.121.240"), State: lb.AddressServed},
		{Key: "default/db", Addr: a("192.168.121.241"), State: lb.AddressServed},
		{Key: "default/wait", State: lb.AddressPending},
	}
	rejected := []*lb.InvalidServiceError{{Namespace: "default", Name: "bad", Field: "spec.ports[0].port", Reason: "0"}}
	conntrackd := filepath.Join(t.TempDir(), "conntrackd.conf")
	os.WriteFile(conntrackd, nil, 0o644)
	pf := &Preflight{readFile: func(string) ([]byte, error) { return []byte("0\n"), nil }}
	tests := []struct {
		name string
		got  []Verdict
		want []Verdict
	}{
		{"pools", []Verdict{Pools("10.0.0.0/28", 1, nil), Pools("", 0, nil), Pools("", 0, errors.New("--pool x: bad"))}, []Verdict{
			{"pool", true, "10.0.0.0/28"},
			{"pool", false, "no address pool is configured: set --pool (or LBD_POOL); lbd serves nothing"},
			{"pool", false, "--pool x: bad"},
		}},
		{"addresses", []Verdict{
			Addresses(report, map[netip.Addr]bool{a("192.168.121.240"): true, a("192.168.121.241"): true}, nil),
			Addresses(report, map[netip.Addr]bool{a("192.168.121.240"): true}, nil),
			Addresses(nil, nil, errors.New("store: locked")),
		}, []Verdict{
			{"addresses", true, "2 served, all local"},
			{"addresses", false, "served but not on this LB: 192.168.121.241 (default/db); set --vip-interface, add them to an interface, or route them here"},
			{"addresses", false, "store: locked"},
		}},
		{"master down", master(errors.New("dial: refused"), nil, false, 0, nil, nil), []Verdict{{"ssh", false, "dial: refused"}}},
		{"master unreachable", master(nil, errors.New("connect: timeout"), false, 0, nil, nil), []Verdict{{"ssh", false, "connect: timeout"}}},
		{"master unverified", master(nil, nil, true, 3, nil, nil), []Verdict{
			{"ssh", false, "root@m reachable, but its host key is NOT verified (--insecure-ignore-host-key)"},
			{"kubectl", true, "3 services, 0 rejected"},
		}},
		{"master with a rejected service", master(nil, nil, false, 3, rejected, nil), []Verdict{
			{"ssh", true, "root@m reachable, host key verified"},
			{"kubectl", false, "3 services, 1 rejected"},
			{"service", false, rejected[0].Error()},
		}},
		{"kubectl fails", master(nil, nil, false, 0, nil, errors.New("kubectl: exit 1")), []Verdict{
			{"ssh", true, "root@m reachable, host key verified"},
			{"kubectl", false, "kubectl: exit 1"},
		}},
		{"ha", pf.HA(HA{PIDFile: "/run/keepalived.pid", PIDErr: errors.New("no such file"), Proxy: true, Conntrackd: conntrackd}), []Verdict{
			{"keepalived", false, "not running (/run/keepalived.pid): no such file"},
			{"ip_nonlocal_bind", false, "net.ipv4.ip_nonlocal_bind = 0: the backup's haproxy cannot bind the service addresses; set it to 1"},
			{"conntrackd", true, conntrackd + " present"},
		}},
		{"ha running", pf.HA(HA{PID: 42, State: "BACKUP", Conntrackd: conntrackd + ".gone"}), []Verdict{
			{"keepalived", true, "running, pid 42, this LB is BACKUP"},
			{"conntrackd", false, "stat " + conntrackd + ".gone: no such file or directory"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, tt.got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	pf.readFile = func(string) ([]byte, error) { return []byte("1\n"), nil }
	if v := pf.NonlocalBind(); !v.OK {
		t.Errorf("ip_nonlocal_bind 1: %v", v)
	}
}
