package hostcheck

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/lbd/lbd/lb"
)

// nonlocalBindPath is the sysctl that lets a process bind an address the
// host does not hold.
const nonlocalBindPath = "/proc/sys/net/ipv4/ip_nonlocal_bind"

// Pools is the "pool" verdict on the configured address pools, described
// by pools (ipam.Pools.String) with count of them, or the error parsing
// them.
func Pools(pools string, count int, err error) Verdict {
	switch {
	case err != nil:
		return Verdict{"pool", false, err.Error()}
	case count == 0:
		return Verdict{"pool", false, "no address pool is configured: set --pool (or LBD_POOL); lbd serves nothing"}
	}
	return Verdict{"pool", true, pools}
}

// Addresses is the "addresses" verdict: every address the last pass
// served (report, from the store) is local to this LB (local, from
// vip.LocalAddrs). err is a failure to read either.
func Addresses(report []lb.AddressState, local map[netip.Addr]bool, err error) Verdict {
	if err != nil {
		return Verdict{"addresses", false, err.Error()}
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
		return Verdict{"addresses", false, "served but not on this LB: " + strings.Join(missing, ", ") +
			"; set --vip-interface, add them to an interface, or route them here"}
	}
	return Verdict{"addresses", true, fmt.Sprintf("%d served, all local", served)}
}

// Master is what the master check needs of the discovery source
// (*discovery.Source).
type Master interface {
	Connect(ctx context.Context) error
	Discover(ctx context.Context) ([]lb.Service, []*lb.InvalidServiceError, error)
}

// CheckMaster connects to the master through m and lists its services.
// newErr is why m could not be built (m is then not used). It returns
// the verdicts: "ssh" (reachable, and whether the host key was verified:
// insecure is --insecure-ignore-host-key), then once connected "kubectl"
// with the services discovered and rejected and one "service" verdict
// per rejected one; and the services discovered, nil on any failure.
func CheckMaster(ctx context.Context, master string, insecure bool, m Master, newErr error) ([]Verdict, []lb.Service) {
	err := newErr
	if err == nil {
		err = m.Connect(ctx)
	}
	if err != nil {
		return []Verdict{{"ssh", false, err.Error()}}, nil
	}
	out := []Verdict{{"ssh", true, master + " reachable, host key verified"}}
	if insecure {
		out[0] = Verdict{"ssh", false, master + " reachable, but its host key is NOT verified (--insecure-ignore-host-key)"}
	}
	svcs, rejected, err := m.Discover(ctx)
	out = append(out, NewVerdict("kubectl", fmt.Sprintf("%d services, %d rejected", len(svcs), len(rejected)), err))
	if err != nil {
		svcs = nil
	} else if len(rejected) > 0 {
		out[1].OK = false
	}
	for _, r := range rejected {
		out = append(out, Verdict{"service", false, r.Error()})
	}
	return out, svcs
}

// HA is what the keepalived checks look at.
type HA struct {
	// PIDFile, PID and PIDErr are keepalived's pid file and the live pid
	// it names, or why none.
	PIDFile string
	PID     int
	PIDErr  error
	// State is this LB's VRRP state, or why it is unknown.
	State string
	// Interface is --ha-interface; Peers the other LBs, which must be
	// reached through it.
	Interface string
	Peers     []netip.Addr
	// Proxy: the backend binds the service addresses (haproxy), so the
	// backup needs ip_nonlocal_bind.
	Proxy bool
	// Conntrackd is conntrackd.conf's path, "" without conntrackd.
	Conntrackd string
}

// HA checks --ha=keepalived: keepalived runs and reported a state, each
// peer routes through the HA interface, haproxy may bind the addresses
// the backup does not hold, and conntrackd's configuration is there when
// it is used.
func (p *Preflight) HA(h HA) []Verdict {
	var out []Verdict
	if h.PIDErr != nil {
		out = append(out, Verdict{"keepalived", false, "not running (" + h.PIDFile + "): " + h.PIDErr.Error()})
	} else {
		out = append(out, Verdict{"keepalived", true, fmt.Sprintf("running, pid %d, this LB is %s", h.PID, h.State)})
	}
	rc := NewRouteCheck(h.Interface)
	for _, peer := range h.Peers {
		line, ok := rc.CheckIP(peer)
		out = append(out, Verdict{"ha peer", ok, strings.Replace(line, "endpoint", "peer", 1)})
	}
	if h.Proxy {
		out = append(out, p.NonlocalBind())
	}
	if h.Conntrackd != "" {
		_, err := os.Stat(h.Conntrackd)
		out = append(out, NewVerdict("conntrackd", h.Conntrackd+" present", err))
	}
	return out
}

// NonlocalBind checks net.ipv4.ip_nonlocal_bind, which the backup LB's
// haproxy needs to bind the addresses it does not hold.
func (p *Preflight) NonlocalBind() Verdict {
	b, err := p.readFile(nonlocalBindPath)
	switch {
	case err != nil:
		return Verdict{"ip_nonlocal_bind", false, err.Error()}
	case strings.TrimSpace(string(b)) != "1":
		return Verdict{"ip_nonlocal_bind", false, "net.ipv4.ip_nonlocal_bind = 0: the backup's haproxy cannot bind the service addresses; set it to 1"}
	}
	return Verdict{"ip_nonlocal_bind", true, "net.ipv4.ip_nonlocal_bind = 1: haproxy binds the addresses the backup does not hold"}
}
