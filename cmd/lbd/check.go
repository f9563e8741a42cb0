package main

import (
	"context"
	"os"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/ipam"
	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/report"
	"github.com/lbd/lbd/store"
	"github.com/lbd/lbd/vip"
)

// check prints the preflight, one verdict per line: privileges, the
// iptables binary and mode, ip_forward and rp_filter, the pools and
// served addresses, HA, SSH to the master, and the pod route of every
// ready endpoint of an exposed service the master reports. Exit 0 when
// every line is ok.
func (a *app) check(ctx context.Context) int {
	if _, err := a.openLog(""); err != nil {
		return a.exit(err)
	}
	pf := hostcheck.NewPreflight(hostcheck.Options{PodInterface: a.cfg.PodInterface, Masquerade: a.cfg.Masquerade})
	iptables, err := netfilter.Version(ctx, a.netfilterOptions())
	verdicts := append([]hostcheck.Verdict{pf.Root(), hostcheck.NewVerdict("iptables", iptables, err)},
		pf.Forwarding(a.cfg.Backend != "haproxy")...) // haproxy proxies instead of forwarding
	verdicts = append(verdicts, a.checkPools(ctx)...)
	if o, err := a.haOptions(); err != nil {
		verdicts = append(verdicts, hostcheck.Verdict{Check: "ha", OK: false, Detail: err.Error()})
	} else if o != nil {
		k := keepalived.New(*o, a.log)
		pid, perr := k.PID()
		verdicts = append(verdicts, pf.HA(hostcheck.HA{PIDFile: o.PIDFile, PID: pid, PIDErr: perr, State: k.Describe(),
			Interface: o.Interface, Peers: o.Peers, Proxy: a.cfg.Backend == "haproxy", Conntrackd: o.ConntrackdConfig})...)
	}
	src, err := a.newSource()
	if err == nil {
		defer src.Close()
	}
	mv, svcs := hostcheck.CheckMaster(ctx, a.cfg.Master, a.cfg.InsecureHost, src, err)
	verdicts = append(verdicts, mv...)
	verdicts = append(verdicts, pf.PodRoutes(svcs)...)
	ok, err := report.WriteCheck(a.stdout, a.cfg.Output, verdicts)
	if err != nil {
		return a.exit(err)
	}
	if !ok {
		return cli.ExitFail
	}
	return cli.ExitOK
}

// checkPools is the verdict on the pools and on the addresses the last
// pass served: local to this LB, or no traffic reaches them unless the
// network routes it here.
func (a *app) checkPools(ctx context.Context) []hostcheck.Verdict {
	pools, err := ipam.ParsePools(a.cfg.Pools)
	out := []hostcheck.Verdict{hostcheck.Pools(pools.String(), len(pools), err)}
	if !out[0].OK {
		return out
	}
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return out // no pass yet: nothing served
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return append(out, hostcheck.Addresses(nil, nil, err))
	}
	defer db.Close()
	served, err := db.AddressReport(ctx)
	if err != nil {
		return append(out, hostcheck.Addresses(nil, nil, err))
	}
	local, err := vip.LocalAddrs()
	return append(out, hostcheck.Addresses(served, local, err))
}
