package hostcheck

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/lbd/lbd/lb"
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

// NewVerdict is the verdict of a check that found detail, or failed with
// err (whose text is then the detail).
func NewVerdict(check, detail string, err error) Verdict {
	if err != nil {
		return Verdict{check, false, err.Error()}
	}
	return Verdict{check, true, detail}
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

// errNotRoot is the preflight's verdict cause when not running as root.
var errNotRoot = errors.New("not root: iptables and netlink need CAP_NET_ADMIN")

// Paths of the sysctls the preflight reads.
const (
	ipForwardPath = "/proc/sys/net/ipv4/ip_forward"
	rpFilterPath  = "/proc/sys/net/ipv4/conf/%s/rp_filter"
)

// Options are what the preflight needs to know of the configuration.
type Options struct {
	// PodInterface is the interface every endpoint must route through,
	// e.g. "flannel0".
	PodInterface string
	// Masquerade: the kernel backends rewrite the source of forwarded
	// traffic, so pods answer the LB whatever rp_filter says.
	Masquerade bool
}

// Preflight checks the host for what lbd's backends need. Each method
// returns verdicts; nothing is changed.
type Preflight struct {
	opts   Options
	routes *RouteCheck

	readFile func(string) ([]byte, error)
	geteuid  func() int
}

// NewPreflight returns the checks for opts, against this host.
func NewPreflight(opts Options) *Preflight {
	return &Preflight{
		opts:     opts,
		routes:   NewRouteCheck(opts.PodInterface),
		readFile: os.ReadFile,
		geteuid:  os.Geteuid,
	}
}

// Root checks that lbd runs as root.
func (p *Preflight) Root() Verdict {
	if uid := p.geteuid(); uid != 0 {
		return Verdict{"root", false, fmt.Sprintf("uid %d: %v", uid, errNotRoot)}
	}
	return Verdict{"root", true, "uid 0"}
}

// Forwarding checks ip_forward and rp_filter for a backend that forwards
// packets (forwards: iptables, nftables). A backend that proxies instead
// (haproxy) needs neither: forwarding that is off is then ok, and
// rp_filter is not looked at.
func (p *Preflight) Forwarding(forwards bool) []Verdict {
	if fwd := p.IPForward(); forwards || fwd.OK {
		return []Verdict{fwd, p.RPFilter()}
	}
	return []Verdict{{Check: "ip_forward", OK: true, Detail: "off; not needed by --backend=haproxy"}}
}

// IPForward checks net.ipv4.ip_forward. Off is a failure here, though the
// kernel backends turn it on at their first sync.
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
// It reads rp_filter for "all" and the pod interface; the kernel uses the
// larger of the two. 1 (strict) drops packets whose source does not route
// back through the interface they came in on, which is what pod replies
// look like when masquerade is off and routing is asymmetric.
func (p *Preflight) RPFilter() Verdict {
	var parts []string
	eff := 0
	for _, dev := range []string{"all", p.opts.PodInterface} {
		if dev == "" {
			continue
		}
		v, err := p.readFile(fmt.Sprintf(rpFilterPath, dev))
		if err != nil {
			parts = append(parts, dev+"=?")
			continue
		}
		s := strings.TrimSpace(string(v))
		parts = append(parts, dev+"="+s)
		if s == "1" || s == "2" {
			eff = max(eff, int(s[0]-'0'))
		}
	}
	detail := "rp_filter " + strings.Join(parts, " ")
	if eff == 1 && !p.opts.Masquerade {
		return Verdict{"rp_filter", false, detail + ": strict reverse-path filtering with masquerade off can drop pod replies; set 2 (loose) or 0"}
	}
	return Verdict{"rp_filter", true, detail}
}

// PodRoute checks that ip routes through the pod interface.
func (p *Preflight) PodRoute(ip netip.Addr) Verdict {
	msg, ok := p.routes.CheckIP(ip)
	return Verdict{"pod route", ok, msg}
}

// PodRoutes checks the pod route of every ready endpoint of the exposed
// services in svcs, each address once, in the order met. Without any it
// returns one ok verdict that says so.
func (p *Preflight) PodRoutes(svcs []lb.Service) []Verdict {
	var out []Verdict
	seen := map[netip.Addr]bool{}
	for _, s := range svcs {
		if !s.Exposed() {
			continue
		}
		for _, port := range s.Ports {
			for _, e := range port.ReadyEndpoints() {
				if !seen[e.IP] {
					seen[e.IP] = true
					out = append(out, p.PodRoute(e.IP))
				}
			}
		}
	}
	if len(out) == 0 {
		return []Verdict{{Check: "pod route", OK: true, Detail: "no ready endpoint of an exposed service to check"}}
	}
	return out
}
