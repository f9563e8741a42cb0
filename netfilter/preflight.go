package netfilter

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Verdict is one line of `lbd check`.
type Verdict struct {
	// Check names what was checked: "root", "ip_forward", "rp_filter",
	// "iptables", "pod route".
	Check string
	OK    bool
	// Detail says what was found, and when not OK what to do.
	Detail string
}

// String returns the verdict as printed by `lbd check`:
// "ok   ip_forward: 1" or "FAIL ip_forward: 0 ...".
func (v Verdict) String() string {
	s := "ok  "
	if !v.OK {
		s = "FAIL"
	}
	return s + " " + v.Check + ": " + v.Detail
}

// Preflight checks the host for what the iptables backend needs. Each
// method returns one verdict; nothing is changed.
type Preflight struct {
	opts   Options
	routes *RouteCheck

	readFile func(string) ([]byte, error)
	run      func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
	geteuid  func() int
}

// NewPreflight returns the checks for opts, against this host.
func NewPreflight(opts Options) *Preflight {
	return &Preflight{
		opts:     opts,
		routes:   NewRouteCheck(opts.PodInterface),
		readFile: os.ReadFile,
		run:      runCommand,
		geteuid:  os.Geteuid,
	}
}

// All runs every check, the pod route one for each of podIPs.
func (p *Preflight) All(ctx context.Context, podIPs []netip.Addr) []Verdict {
	out := []Verdict{p.Root(), p.IPTables(ctx), p.IPForward(), p.RPFilter()}
	for _, ip := range podIPs {
		out = append(out, p.PodRoute(ip))
	}
	return out
}

// Root checks that lbd runs as root.
func (p *Preflight) Root() Verdict {
	if uid := p.geteuid(); uid != 0 {
		return Verdict{"root", false, fmt.Sprintf("uid %d: %v", uid, errNotRoot)}
	}
	return Verdict{"root", true, "uid 0"}
}

// IPTables checks that the iptables command runs and reports its mode
// (nf_tables or legacy) from `iptables --version`.
func (p *Preflight) IPTables(ctx context.Context) Verdict {
	out, err := p.run(ctx, nil, p.opts.binary(), "--version")
	if err != nil {
		return Verdict{"iptables", false, err.Error()}
	}
	v := strings.TrimSpace(string(out))
	mode := "legacy"
	if strings.Contains(v, "nf_tables") {
		mode = "nft"
	}
	return Verdict{"iptables", true, v + ", mode " + mode}
}

// IPForward checks net.ipv4.ip_forward. Off is a failure here, though the
// backend turns it on at its first sync.
func (p *Preflight) IPForward() Verdict {
	b, err := p.readFile(ipForwardPath)
	if err != nil {
		return Verdict{"ip_forward", false, err.Error()}
	}
	if v := strings.TrimSpace(string(b)); v != "1" {
		return Verdict{"ip_forward", false, v + " (lbd turns it on at its first sync; without it nothing is forwarded)"}
	}
	return Verdict{"ip_forward", true, "1"}
}

// RPFilter checks that reverse-path filtering will not drop pod replies.
func (p *Preflight) RPFilter() Verdict {
	msg, ok := rpFilterVerdict(p.readFile, p.opts)
	return Verdict{"rp_filter", ok, msg}
}

// PodRoute checks that ip routes through the pod interface.
func (p *Preflight) PodRoute(ip netip.Addr) Verdict {
	msg, ok := p.routes.CheckIP(ip)
	return Verdict{"pod route", ok, msg}
}
