package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"

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
	pf := netfilter.NewPreflight(a.netfilterOptions())
	verdicts := []netfilter.Verdict{pf.Root(), pf.IPTables(ctx)}
	if fwd := pf.IPForward(); a.cfg.backend != "haproxy" || fwd.OK {
		verdicts = append(verdicts, fwd, pf.RPFilter())
	} else {
		// haproxy proxies instead of forwarding: it needs neither.
		verdicts = append(verdicts, netfilter.Verdict{Check: "ip_forward", OK: true, Detail: "off; not needed by --backend=haproxy"})
	}

	verdicts = append(verdicts, a.checkPools(ctx)...)

	src, err := a.newSource()
	var podIPs []netip.Addr
	if err == nil {
		defer src.Close()
		err = src.Connect(ctx)
	}
	if err != nil {
		verdicts = append(verdicts, netfilter.Verdict{Check: "ssh", OK: false, Detail: err.Error()})
	} else {
		if a.cfg.insecureHost {
			verdicts = append(verdicts, netfilter.Verdict{Check: "ssh", OK: false, Detail: a.cfg.master + " reachable, but its host key is NOT verified (--insecure-ignore-host-key)"})
		} else {
			verdicts = append(verdicts, netfilter.Verdict{Check: "ssh", OK: true, Detail: a.cfg.master + " reachable, host key verified"})
		}
		svcs, rejected, err := src.Discover(ctx)
		if err != nil {
			verdicts = append(verdicts, netfilter.Verdict{Check: "kubectl", OK: false, Detail: err.Error()})
		} else {
			verdicts = append(verdicts, netfilter.Verdict{Check: "kubectl", OK: len(rejected) == 0,
				Detail: fmt.Sprintf("%d services, %d rejected", len(svcs), len(rejected))})
			for _, r := range rejected {
				verdicts = append(verdicts, netfilter.Verdict{Check: "service", OK: false, Detail: r.Error()})
			}
			seen := map[netip.Addr]bool{}
			for _, s := range svcs {
				if !s.Exposed() {
					continue
				}
				for _, p := range s.Ports {
					for _, e := range p.ReadyEndpoints() {
						if !seen[e.IP] {
							seen[e.IP] = true
							podIPs = append(podIPs, e.IP)
						}
					}
				}
			}
		}
	}
	if len(podIPs) == 0 {
		verdicts = append(verdicts, netfilter.Verdict{Check: "pod route", OK: true, Detail: "no ready endpoint of an exposed service to check"})
	}
	for _, ip := range podIPs {
		verdicts = append(verdicts, pf.PodRoute(ip))
	}
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
func (a *app) checkPools(ctx context.Context) []netfilter.Verdict {
	pools, err := ipam.ParsePools(a.cfg.pools)
	switch {
	case err != nil:
		return []netfilter.Verdict{{Check: "pool", OK: false, Detail: err.Error()}}
	case len(pools) == 0:
		return []netfilter.Verdict{{Check: "pool", OK: false, Detail: "no address pool is configured: set --pool (or LBD_POOL); lbd serves nothing"}}
	}
	out := []netfilter.Verdict{{Check: "pool", OK: true, Detail: pools.String()}}
	if _, err := os.Stat(a.cfg.db); err != nil {
		return out // no pass yet: nothing served
	}
	db, err := store.Open(ctx, a.cfg.db)
	if err != nil {
		return append(out, netfilter.Verdict{Check: "addresses", OK: false, Detail: err.Error()})
	}
	defer db.Close()
	report, err := db.AddressReport(ctx)
	if err != nil {
		return append(out, netfilter.Verdict{Check: "addresses", OK: false, Detail: err.Error()})
	}
	local, err := vip.LocalAddrs()
	if err != nil {
		return append(out, netfilter.Verdict{Check: "addresses", OK: false, Detail: err.Error()})
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
		return append(out, netfilter.Verdict{Check: "addresses", OK: false, Detail: "served but not on this LB: " + strings.Join(missing, ", ") +
			"; set --vip-interface, add them to an interface, or route them here"})
	}
	return append(out, netfilter.Verdict{Check: "addresses", OK: true, Detail: fmt.Sprintf("%d served, all local", served)})
}
