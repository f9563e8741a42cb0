package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/ipam"
	"github.com/lbd/lbd/keepalived"
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
	pf := hostcheck.NewPreflight(hostcheck.Options{PodInterface: a.cfg.PodInterface, Masquerade: a.cfg.Masquerade})
	iptables, err := netfilter.Version(ctx, a.netfilterOptions())
	verdicts := append([]hostcheck.Verdict{pf.Root(), hostcheck.NewVerdict("iptables", iptables, err)},
		pf.Forwarding(a.cfg.Backend != "haproxy")...) // haproxy proxies instead of forwarding
	verdicts = append(verdicts, a.checkPools(ctx)...)
	verdicts = append(verdicts, a.checkHA()...)

	src, err := a.newSource()
	var svcs []lb.Service
	if err == nil {
		defer src.Close()
		err = src.Connect(ctx)
	}
	if err != nil {
		verdicts = append(verdicts, hostcheck.Verdict{Check: "ssh", OK: false, Detail: err.Error()})
	} else {
		if a.cfg.InsecureHost {
			verdicts = append(verdicts, hostcheck.Verdict{Check: "ssh", OK: false, Detail: a.cfg.Master + " reachable, but its host key is NOT verified (--insecure-ignore-host-key)"})
		} else {
			verdicts = append(verdicts, hostcheck.Verdict{Check: "ssh", OK: true, Detail: a.cfg.Master + " reachable, host key verified"})
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
		ok = ok && v.OK
	}
	switch a.cfg.Output {
	case "json":
		type jsonVerdict struct {
			Check  string `json:"check"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		}
		out := struct {
			OK       bool          `json:"ok"`
			Verdicts []jsonVerdict `json:"verdicts"`
		}{OK: ok, Verdicts: []jsonVerdict{}}
		for _, v := range verdicts {
			out.Verdicts = append(out.Verdicts, jsonVerdict{v.Check, v.OK, v.Detail})
		}
		if err := writeJSON(a.stdout, out); err != nil {
			return a.exit(err)
		}
	default:
		for _, v := range verdicts {
			fmt.Fprintln(a.stdout, v)
		}
	}
	if !ok {
		return cli.ExitFail
	}
	return cli.ExitOK
}

// checkPools says whether lbd has address pools, and which of the
// addresses the last pass served are not local to this LB (no traffic
// reaches them unless the network routes it here).
func (a *app) checkPools(ctx context.Context) []hostcheck.Verdict {
	pools, err := ipam.ParsePools(a.cfg.Pools)
	switch {
	case err != nil:
		return []hostcheck.Verdict{{Check: "pool", OK: false, Detail: err.Error()}}
	case len(pools) == 0:
		return []hostcheck.Verdict{{Check: "pool", OK: false, Detail: "no address pool is configured: set --pool (or LBD_POOL); lbd serves nothing"}}
	}
	out := []hostcheck.Verdict{{Check: "pool", OK: true, Detail: pools.String()}}
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return out // no pass yet: nothing served
	}
	db, err := store.Open(ctx, a.cfg.DB)
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

// checkHA checks --ha=keepalived: keepalived runs and reported a state,
// its peer is reachable through --ha-interface, haproxy may bind the
// addresses the backup does not hold, and conntrackd's configuration is
// there when it is used.
func (a *app) checkHA() []hostcheck.Verdict {
	o, err := a.haOptions()
	if err != nil {
		return []hostcheck.Verdict{{Check: "ha", OK: false, Detail: err.Error()}}
	}
	if o == nil {
		return nil
	}
	var out []hostcheck.Verdict
	k := keepalived.New(*o, a.log)
	if pid, err := readPID(o.PIDFile); err != nil {
		out = append(out, hostcheck.Verdict{Check: "keepalived", OK: false, Detail: "not running (" + o.PIDFile + "): " + err.Error()})
	} else {
		out = append(out, hostcheck.Verdict{Check: "keepalived", OK: true, Detail: fmt.Sprintf("running, pid %d, this LB is %s", pid, haState(k))})
	}
	rc := hostcheck.NewRouteCheck(o.Interface)
	for _, p := range o.Peers {
		line, ok := rc.CheckIP(p)
		out = append(out, hostcheck.Verdict{Check: "ha peer", OK: ok, Detail: strings.Replace(line, "endpoint", "peer", 1)})
	}
	if a.cfg.Backend == "haproxy" {
		ok, err := nonlocalBind()
		detail := "net.ipv4.ip_nonlocal_bind = 1: haproxy binds the addresses the backup does not hold"
		if err != nil {
			detail = err.Error()
		} else if !ok {
			detail = "net.ipv4.ip_nonlocal_bind = 0: the backup's haproxy cannot bind the service addresses; set it to 1"
		}
		out = append(out, hostcheck.Verdict{Check: "ip_nonlocal_bind", OK: ok && err == nil, Detail: detail})
	}
	if o.ConntrackdConfig != "" {
		_, err := os.Stat(o.ConntrackdConfig)
		out = append(out, hostcheck.NewVerdict("conntrackd", o.ConntrackdConfig+" present", err))
	}
	return out
}

// readPID returns the live process named by a pid file.
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a pid", path, b)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return pid, nil
}
