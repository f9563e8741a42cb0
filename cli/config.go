package cli

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lbd/lbd/lb"
)

// Config is every setting of lbd. Each field is a flag, and each flag can
// also be set as LBD_<NAME> in the environment (dashes become
// underscores); the command line wins over the environment.
type Config struct {
	// discovery
	Master         string
	SSHKeys        string
	KnownHosts     string
	InsecureHost   bool
	Kubectl        string
	SSHTimeout     time.Duration
	KubectlTimeout time.Duration

	// store and guards
	DB              string
	LockWait        time.Duration
	MaxDelete       float64 // a fraction, 0..1
	MaxDeleteWindow time.Duration
	AllowDelete     []string // namespace/name, checked
	Force           bool
	Full            bool

	// addresses
	Pools        []string
	LBClass      string
	VIPInterface string
	StatusWrite  bool

	// high availability
	HA           string
	HAInterface  string
	HAPeers      []string
	HASource     string
	HAPriority   int
	HAAdvertInt  time.Duration
	HARouterID   int
	HAPreempt    bool
	HAConfig     string
	HAConntrackd string
	HATrackFile  string
	HANotify     string
	HAStateFile  string
	HAPIDFile    string

	// backends
	Backend      string
	PodInterface string
	RouteCheck   bool
	Masquerade   bool
	MasqBit      int
	SNATAddrs    []netip.Addr
	IPTablesBin  string
	NFTTable     string

	HAProxyBase          string
	HAProxyDir           string
	HAProxyReload        string
	HAProxyMasterSocket  string
	HAProxyStatsSocket   string
	HAProxyBin           string
	HAProxyUser          string
	HAProxyReloadTimeout time.Duration
	CheckInterval        time.Duration
	CheckFall            int
	CheckRise            int

	// lbd run
	Watch       bool
	Interval    time.Duration
	Resync      time.Duration
	Debounce    time.Duration
	MetricsAddr string
	MetricsFile string

	// output
	LogFile   string
	LogFormat string
	LogLevel  string
	Output    string

	// Given names the flags set on the command line or in the
	// environment; Parse fills it.
	Given map[string]bool
}

// keepalivedDefaultAdvert is VRRP's default advertisement interval.
const keepalivedDefaultAdvert = time.Second

// Defaults returns the defaults that are lbd's own: the notes' file
// names, the guards' and the daemon's periods, the output. The fields
// whose defaults other packages own (Kubectl, SSHTimeout, KubectlTimeout,
// MaxDelete, MaxDeleteWindow, HAConfig and the other HA paths, MasqBit, IPTablesBin, NFTTable,
// the HAProxy* paths, user and binary, CheckInterval, CheckFall,
// CheckRise) are zero: the caller sets them from those packages.
func Defaults() Config {
	return Config{
		KnownHosts:   filepath.Join(sshDir(), "known_hosts"),
		DB:           "/opt/LoadBalancer.sqlite.db",
		LockWait:     30 * time.Second,
		Full:         true,
		LBClass:      lb.DefaultLoadBalancerClass,
		StatusWrite:  true,
		HA:           "none",
		HAPriority:   100,
		HAAdvertInt:  keepalivedDefaultAdvert,
		Backend:      "haproxy",
		PodInterface: "flannel0",
		RouteCheck:   true,
		Masquerade:   true,
		Watch:        true,
		Interval:     30 * time.Second,
		Resync:       5 * time.Minute,
		Debounce:     200 * time.Millisecond,
		LogFile:      "/var/log/loadbalancer.log",
		LogFormat:    "text",
		LogLevel:     "info",
		Output:       "table",
	}
}

// sshDir is the user's ~/.ssh, /root/.ssh without a home.
func sshDir() string {
	h, err := os.UserHomeDir()
	if err != nil {
		h = "/root"
	}
	return filepath.Join(h, ".ssh")
}

// stringList is a repeatable flag; each value may itself be a
// comma-separated list, as in the environment (LBD_POOL=a,b).
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// percent is a flag value given as "50%" or "0.5".
type percent float64

func (p *percent) String() string { return strconv.FormatFloat(float64(*p)*100, 'f', -1, 64) + "%" }

func (p *percent) Set(s string) error {
	v, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return fmt.Errorf("%q is not a percentage (e.g. 50%%) or a fraction (e.g. 0.5)", s)
	}
	// A bare number is a fraction below 1. "1" or "25" could mean a
	// percentage or a fraction: refused rather than guessed, since one
	// reading turns the guard off.
	if !pct && f >= 1 {
		return fmt.Errorf("%q is ambiguous: a bare number is a fraction below 1; write %s%% or 100%%", s, v)
	}
	if pct {
		f /= 100
	}
	if f < 0 || f > 1 {
		return fmt.Errorf("%q is outside 0%%..100%%", s)
	}
	*p = percent(f)
	return nil
}

// parseAddrRange parses "a.b.c.d" or "first-last" into every address from
// first to last.
func parseAddrRange(v string) ([]netip.Addr, error) {
	first, last, ok := strings.Cut(v, "-")
	if !ok {
		last = first
	}
	a, err := netip.ParseAddr(strings.TrimSpace(first))
	if err != nil {
		return nil, err
	}
	z, err := netip.ParseAddr(strings.TrimSpace(last))
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for ; a.Compare(z) <= 0 && len(out) <= 65536; a = a.Next() {
		out = append(out, a)
	}
	if len(out) == 0 || len(out) > 65536 {
		return nil, fmt.Errorf("range %s: want first <= last, at most 65536 addresses", v)
	}
	return out, nil
}
