package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/ipam"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/store"
	"github.com/lbd/lbd/vip"
)

// check prints the preflight, one verdict per line: privileges, the
// iptables binary and mode, ip_forward and rp_filter, SSH to the master,
// and the pod route of every ready endpoint of an exposed service the
// master reports. Exit 0 when every line is ok.
func (a *app) check(ctx context.Context) int {
	closeLog, err := a.openLogStderr()
	if err != nil {
		return a.exit(err)
	}
	defer closeLog()
	pf := hostcheck.NewPreflight(hostcheck.Options{PodInterface: a.cfg.podInterface, Masquerade: a.cfg.masquerade})
	iptables, err := netfilter.Version(ctx, a.netfilterOptions())
	verdicts := append([]hostcheck.Verdict{pf.Root(), hostcheck.NewVerdict("iptables", iptables, err)},
		pf.Forwarding(a.cfg.backend != "haproxy")...) // haproxy proxies instead of forwarding
	verdicts = append(verdicts, a.checkPools(ctx)...)

	src, err := a.newSource()
	var svcs []lb.Service
	if err == nil {
		defer src.Close()
		err = src.Connect(ctx)
	}
	if err != nil {
		verdicts = append(verdicts, hostcheck.Verdict{Check: "ssh", OK: false, Detail: err.Error()})
	} else {
		if a.cfg.insecureHost {
			verdicts = append(verdicts, hostcheck.Verdict{Check: "ssh", OK: false, Detail: a.cfg.master + " reachable, but its host key is NOT verified (--insecure-ignore-host-key)"})
		} else {
			verdicts = append(verdicts, hostcheck.Verdict{Check: "ssh", OK: true, Detail: a.cfg.master + " reachable, host key verified"})
		}
		var rejected []*lb.InvalidServiceError
		svcs, rejected, err = src.Discover(ctx)
		verdicts = append(verdicts, hostcheck.NewVerdict("kubectl", fmt.Sprintf("%d services, %d rejected", len(svcs), len(rejected)), err))
		if err != nil {
			svcs = nil
		} else if len(rejected) > 0 {
			verdicts[len(verdicts)-1].OK = false
		}
		for _, r := range rejected {
			verdicts = append(verdicts, hostcheck.Verdict{Check: "service", OK: false, Detail: r.Error()})
		}
	}
	verdicts = append(verdicts, pf.PodRoutes(svcs)...)
	ok := true
	for _, v := range verdicts {
		fmt.Fprintln(a.stdout, v)
		ok = ok && v.OK
	}
	if !ok {
		return exitFail
	}
	return exitOK
}

// checkPools says whether lbd has address pools, and which of the
// addresses the last pass served are not local to this LB (no traffic
// reaches them unless the network routes it here).
func (a *app) checkPools(ctx context.Context) []hostcheck.Verdict {
	pools, err := ipam.ParsePools(a.cfg.pools)
	switch {
	case err != nil:
		return []hostcheck.Verdict{{Check: "pool", OK: false, Detail: err.Error()}}
	case len(pools) == 0:
		return []hostcheck.Verdict{{Check: "pool", OK: false, Detail: "no address pool is configured: set --pool (or LBD_POOL); lbd serves nothing"}}
	}
	out := []hostcheck.Verdict{{Check: "pool", OK: true, Detail: pools.String()}}
	if _, err := os.Stat(a.cfg.db); err != nil {
		return out // no pass yet: nothing served
	}
	db, err := store.Open(ctx, a.cfg.db)
	if err != nil {
		return append(out, hostcheck.Verdict{Check: "addresses", OK: false, Detail: err.Error()})
	}
	defer db.Close()
	report, err := db.AddressReport(ctx)
	if err != nil {
		return append(out, hostcheck.Verdict{Check: "addresses", OK: false, Detail: err.Error()})
	}
	local, err := vip.LocalAddrs()
	if err != nil {
		return append(out, hostcheck.Verdict{Check: "addresses", OK: false, Detail: err.Error()})
	}
	var missing []string
	served := 0
	for _, st := range report {
		if st.State != lb.AddressServed {
			continue
		}
		served++
		if !local[st.Addr] {
			missing = append(missing, st.Addr.String()+" ("+st.Key+")")
		}
	}
	if len(missing) > 0 {
		return append(out, hostcheck.Verdict{Check: "addresses", OK: false, Detail: "served but not on this LB: " + strings.Join(missing, ", ") +
			"; set --vip-interface, add them to an interface, or route them here"})
	}
	return append(out, hostcheck.Verdict{Check: "addresses", OK: true, Detail: fmt.Sprintf("%d served, all local", served)})
}
