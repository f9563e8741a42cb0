package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/reconcile"
)

// config is every setting of lbd. Each field is a flag, and each flag can
// also be set as LBD_<NAME> in the environment (dashes become
// underscores); the command line wins over the environment.
type config struct {
	// discovery
	master        string
	sshKeys       string
	knownHosts    string
	insecureHost  bool
	kubectl       string
	sshTimeout    time.Duration
	kubectlTimout time.Duration

	// store and guards
	db              string
	lockWait        time.Duration
	maxDelete       percent
	maxDeleteWindow time.Duration
	allowDelete     stringList
	force           bool
	full            bool

	// addresses
	pools        stringList
	lbClass      string
	vipInterface string
	statusWrite  bool

	// high availability
	ha           string
	haInterface  string
	haPeers      stringList
	haSource     string
	haPriority   int
	haAdvertInt  time.Duration
	haRouterID   int
	haPreempt    bool
	haConfig     string
	haConntrackd string
	haTrackFile  string
	haNotify     string
	haStateFile  string
	haPIDFile    string

	// backends
	backend      string
	podInterface string
	routeCheck   bool
	masquerade   bool
	masqBit      int
	snatAddrs    []netip.Addr
	iptablesBin  string
	nftTable     string

	haproxyBase         string
	haproxyDir          string
	haproxyReload       string
	haproxyMasterSocket string
	haproxyStatsSocket  string
	haproxyBin          string
	haproxyUser         string
	haproxyReloadTO     time.Duration
	checkInter          time.Duration
	checkFall           int
	checkRise           int

	// lbd run
	watch       bool
	interval    time.Duration
	resync      time.Duration
	debounce    time.Duration
	metricsAddr string
	metricsFile string

	// given names the flags set on the command line or in the
	// environment.
	given map[string]bool

	// output
	logFile   string
	logFormat string
	logLevel  string
	output    string
}

// keepalivedDefaultAdvert is VRRP's default advertisement interval.
const keepalivedDefaultAdvert = 1e9 // 1s

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

func homeDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/root"
}

// newFlagSet declares every flag of lbd on c with its default.
func newFlagSet(c *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lbd", flag.ContinueOnError)
	fs.SetOutput(out)
	ssh := filepath.Join(homeDir(), ".ssh")

	fs.StringVar(&c.master, "master", "", "Kubernetes master to discover services from, as `user@host[:port]` (SSH)")
	fs.StringVar(&c.sshKeys, "ssh-key", "", "comma-separated private key `files` for SSH (default: the usual keys in "+ssh+" that exist; the SSH agent is used too when SSH_AUTH_SOCK is set)")
	fs.StringVar(&c.knownHosts, "known-hosts", filepath.Join(ssh, "known_hosts"), "known_hosts `file` that must hold the master's host key")
	fs.BoolVar(&c.insecureHost, "insecure-ignore-host-key", false, "do NOT verify the master's SSH host key (logs a warning on every run)")
	fs.StringVar(&c.kubectl, "kubectl", discovery.DefaultKubectl, "kubectl `invocation` on the master, e.g. \"sudo kubectl --kubeconfig /etc/kubernetes/admin.conf\"")
	fs.DurationVar(&c.sshTimeout, "ssh-timeout", discovery.DefaultConnectTimeout, "SSH connect timeout")
	fs.DurationVar(&c.kubectlTimout, "kubectl-timeout", discovery.DefaultCommandTimeout, "timeout for the remote kubectl command (kubectl gets --request-timeout of nine tenths of it)")

	fs.StringVar(&c.db, "db", "/opt/LoadBalancer.sqlite.db", "SQLite `file` holding the mapping, the applied state and the sync history")
	fs.DurationVar(&c.lockWait, "lock-wait", 30*time.Second, "how long a second lbd waits for the first to finish before giving up")
	c.maxDelete = percent(reconcile.DefaultMaxDelete)
	fs.Var(&c.maxDelete, "max-delete", "share of the exposed services that may stop being served (deleted, unexposed or left without a ready endpoint) within --max-delete-window: a percentage (50%) or a fraction (0.5); at least one may, 0% none, and an empty answer from the master none. Deletions beyond it are held back (the services keep their state), the rest applies")
	fs.DurationVar(&c.maxDeleteWindow, "max-delete-window", reconcile.DefaultMaxDeleteWindow, "how long a deletion counts against the --max-delete budget of later passes; 0 counts each pass alone")
	fs.Var(&c.allowDelete, "allow-delete", "apply, plan: let the deletion of this `namespace/name` through whatever --max-delete says; repeatable (lbd apply also takes them as arguments)")
	fs.BoolVar(&c.force, "force", false, "let every deletion through, whatever --max-delete says")
	fs.BoolVar(&c.full, "full", true, "also check the backend for drift (rules flushed or files edited by hand) and repair it")

	fs.Var(&c.pools, "pool", "address `pool` lbd serves and allocates from: a CIDR (192.168.121.240/28) or a range (192.168.121.240-192.168.121.250); repeatable, or comma-separated in LBD_POOL. Without one lbd serves nothing")
	fs.StringVar(&c.lbClass, "lb-class", lb.DefaultLoadBalancerClass, "spec.loadBalancerClass lbd answers to, besides services without a class")
	fs.StringVar(&c.vipInterface, "vip-interface", "", "`interface` lbd adds every served address to (/32, /128) and announces it on with gratuitous ARP / unsolicited NA; empty: lbd owns no address")
	fs.BoolVar(&c.statusWrite, "status-write", true, "write status.loadBalancer.ingress of LoadBalancer services back to the cluster")

	fs.StringVar(&c.ha, "ha", "none", "high availability: none, or keepalived (two LBs, VRRP; keepalived owns the addresses)")
	fs.StringVar(&c.haInterface, "ha-interface", "", "keepalived: `interface` VRRP runs on and the addresses go to")
	fs.Var(&c.haPeers, "ha-peer", "keepalived: the other LB's `address` (unicast VRRP); repeatable")
	fs.StringVar(&c.haSource, "ha-source", "", "keepalived: this LB's `address` VRRP leaves from (unicast_src_ip); empty: the interface's")
	fs.IntVar(&c.haPriority, "ha-priority", 100, "keepalived: VRRP priority 1-254; the higher one becomes master first")
	fs.DurationVar(&c.haAdvertInt, "ha-advert-int", keepalivedDefaultAdvert, "keepalived: VRRP advertisement interval (VRRPv3 allows fractions: 100ms fails over in about 0.35 s)")
	fs.IntVar(&c.haRouterID, "ha-router-id", 0, "keepalived: virtual_router_id 1-255, the same on both LBs and unique on the link")
	fs.BoolVar(&c.haPreempt, "ha-preempt", false, "keepalived: a recovered LB with the higher priority takes the addresses back (a second interruption); default: it stays backup")
	fs.StringVar(&c.haConfig, "ha-config", keepalived.DefaultConfigPath, "keepalived: the include `file` lbd renders (keepalived.conf must include it)")
	fs.StringVar(&c.haTrackFile, "ha-track-file", keepalived.DefaultTrackFile, "keepalived: health `file` lbd writes after each pass (0 healthy) and keepalived tracks")
	fs.StringVar(&c.haNotify, "ha-notify-script", keepalived.DefaultNotifyScript, "keepalived: `path` lbd installs its transition hook at")
	fs.StringVar(&c.haStateFile, "ha-state-file", keepalived.DefaultStateFile, "keepalived: `file` the hook writes the VRRP state to (MASTER, BACKUP, FAULT, STOP)")
	fs.StringVar(&c.haPIDFile, "ha-pid-file", keepalived.DefaultPIDFile, "keepalived: its main pid `file`; lbd sends that pid SIGHUP to reload")
	fs.StringVar(&c.haConntrackd, "ha-conntrackd-config", "", "keepalived: conntrackd.conf `path`; when set, the notify hook commits and resyncs conntrackd's caches on every transition")

	fs.StringVar(&c.backend, "backend", "haproxy", "data plane: `haproxy` (production), nftables (kernel NAT, verdict-map dispatch) or iptables; plan and status default to the backend of the last sync")
	fs.StringVar(&c.podInterface, "pod-interface", "flannel0", "interface through which every endpoint must route")
	fs.BoolVar(&c.routeCheck, "route-check", true, "check with netlink that endpoints route via --pod-interface before programming them")
	fs.BoolVar(&c.masquerade, "masquerade", true, "iptables: masquerade forwarded traffic so pods answer the LB (false only when pods route back through the LB)")
	nf := netfilter.DefaultOptions()
	fs.IntVar(&c.masqBit, "masquerade-bit", nf.MasqueradeBit, "iptables: fwmark `bit` (0-31) lbd sets on the packets it DNATs, for masquerade and the FORWARD accept; kube-proxy uses 14 and 15")
	fs.Func("snat-addresses", "iptables: SNAT to this `range` (a.b.c.d or first-last) of pod-network addresses the LB owns instead of MASQUERADE; clients spread over it by address", func(v string) (err error) {
		c.snatAddrs, err = parseAddrRange(v)
		return err
	})
	fs.StringVar(&c.iptablesBin, "iptables", nf.Binary, "iptables: `command` (iptables, iptables-nft or iptables-legacy); -restore and -save are appended")

	fs.StringVar(&c.nftTable, "nft-table", nft.DefaultOptions().Table, "nftables: the inet `table` lbd owns; it touches no other")

	hp := haproxy.DefaultOptions()
	fs.StringVar(&c.haproxyBase, "haproxy-base", hp.BasePath, "haproxy: global/defaults base `file`; written with sound defaults when absent")
	fs.StringVar(&c.haproxyDir, "haproxy-dir", hp.Dir, "haproxy: `directory` of per-service files (<namespace>_<service>.cfg)")
	fs.StringVar(&c.haproxyReload, "haproxy-reload", "", "haproxy: reload `command`; empty: the master CLI socket if it exists, else systemctl reload haproxy")
	fs.StringVar(&c.haproxyMasterSocket, "haproxy-master-socket", hp.MasterSocket, "haproxy: master CLI socket `path` (haproxy -W -S path)")
	fs.StringVar(&c.haproxyStatsSocket, "haproxy-stats-socket", hp.StatsSocket, "haproxy: stats socket `path` written into a new base file")
	fs.StringVar(&c.haproxyBin, "haproxy-bin", hp.HaproxyBin, "haproxy: `binary` used to validate configs")
	fs.StringVar(&c.haproxyUser, "haproxy-user", hp.User, "haproxy: `user` and group the workers drop to, written into a new base file (\"-\" stays root)")
	fs.DurationVar(&c.haproxyReloadTO, "haproxy-reload-timeout", 0, "haproxy: how long a reload may take before lbd stops waiting (the files stay; the next pass confirms it); 0 scales with the number of service files (10s + 2ms per file)")
	fs.DurationVar(&c.checkInter, "check-interval", hp.CheckInterval, "haproxy: health check interval")
	fs.IntVar(&c.checkFall, "check-fall", hp.Fall, "haproxy: failed checks before a server is down")
	fs.IntVar(&c.checkRise, "check-rise", hp.Rise, "haproxy: passed checks before a server is up")

	fs.BoolVar(&c.watch, "watch", true, "run: follow changes with kubectl --watch over SSH; false polls every --interval")
	fs.DurationVar(&c.interval, "interval", 30*time.Second, "run: poll period without --watch, and while the watch reconnects")
	fs.DurationVar(&c.resync, "resync", 5*time.Minute, "run: period of the full resync (with the drift check), whatever the watch says")
	fs.DurationVar(&c.debounce, "debounce", 200*time.Millisecond, "run: wait this long after the first change seen, so that a burst of changes makes one sync")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "run: serve Prometheus /metrics and /healthz on this `address`, e.g. 127.0.0.1:9720; empty: off")
	fs.StringVar(&c.metricsFile, "metrics-textfile", "", "sync, apply, run: write the metrics after every pass to this `file` for node_exporter's textfile collector, e.g. /var/lib/prometheus/node-exporter/lbd.prom; empty: off")

	fs.StringVar(&c.logFile, "log-file", "/var/log/loadbalancer.log", "log `file`, written beside stderr; empty for stderr only")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.output, "o", "table", "output format of status and plan: table or json")
	return fs
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	return "LBD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// givenFlags returns the names of the flags fs got from the command line
// or the environment (parseArgs sets both through fs).
func givenFlags(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return given
}

// parseArgs fills c from the environment, then from args, and returns the
// subcommand ("" for a sync pass) and its remaining arguments. Flags may
// stand before or after the subcommand.
//
// A variable set to the empty string sets its flag to empty
// (LBD_LOG_FILE= turns the log file off); only an unset one is ignored.
// An empty value for a flag whose default is already empty changes
// nothing; for a number, a duration or a boolean it is an error.
func parseArgs(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) (cmd string, rest []string, err error) {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := lookupEnv(envName(f.Name))
		if !ok || envErr != nil || (v == "" && f.DefValue == "") {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
		}
	})
	if envErr != nil {
		return "", nil, envErr
	}
	for {
		if err := fs.Parse(args); err != nil {
			return cmd, nil, err // the command, for its help
		}
		args = fs.Args()
		if len(args) == 0 {
			return cmd, rest, nil
		}
		if cmd == "" {
			cmd = args[0]
		} else {
			rest = append(rest, args[0])
		}
		args = args[1:]
	}
}

const usageHead = `lbd: external load balancer for bare-metal Kubernetes.

Usage:
  lbd [flags]            one sync pass (for cron): discover, plan, apply, store;
                         exit 0 done, 3 done but the guard held deletions back, 1 error
  lbd apply [flags] [--allow-delete] namespace/name...
                         one sync pass that lets the named services' deletions through
  lbd run [flags]        daemon: watch the master over SSH and sync on every change
  lbd plan [flags]       print what a sync would change; exit 0 no changes, 2 pending,
                         3 nothing pending but deletions the guard holds back, 1 error
  lbd status [flags]     the stored service mapping (-o table|json)
  lbd check [flags]      preflight: pod routes, forwarding, iptables, privileges, SSH
  lbd cleanup [flags]    remove everything lbd programmed in the chosen backend
  lbd explain [flags] ADDRESS:PORT[/PROTO]  its service and backend objects, read live; exit 2 if they differ from the store
  lbd version
  lbd completion bash|zsh  a shell completion script: source <(lbd completion bash)
  lbd man                a roff man page: lbd man > lbd.1; man -l lbd.1
  lbd help [CMD]         this help, or one command's (lbd CMD --help too)

Every flag can also be set as LBD_<NAME> in the environment,
e.g. LBD_MASTER=root@10.245.1.10 or LBD_MAX_DELETE=25%;
an empty value sets the flag empty (LBD_LOG_FILE= turns the log file off).

Flags:
`

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
