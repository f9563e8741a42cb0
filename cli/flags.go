package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// choices are the fixed values of the flags that have them, for the
// help, the shell completion and the man page.
var choices = map[string][]string{
	"backend":    {"haproxy", "iptables", "nftables"},
	"ha":         {"none", "keepalived"},
	"log-format": {"text", "json"},
	"log-level":  {"debug", "info", "warn", "error"},
	"o":          {"table", "json"},
}

// newFlagSet declares every flag of lbd on c, each with c's value as its
// default. The flag package's own messages go nowhere: Parse returns the
// one error line.
func newFlagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("lbd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ssh := sshDir()

	fs.StringVar(&c.Master, "master", c.Master, "Kubernetes master to discover services from, as `user@host[:port]` (SSH)")
	fs.StringVar(&c.SSHKeys, "ssh-key", c.SSHKeys, "comma-separated private key `files` for SSH (default: the usual keys in "+ssh+" that exist; the SSH agent is used too when SSH_AUTH_SOCK is set)")
	fs.StringVar(&c.KnownHosts, "known-hosts", c.KnownHosts, "known_hosts `file` that must hold the master's host key")
	fs.BoolVar(&c.InsecureHost, "insecure-ignore-host-key", c.InsecureHost, "do NOT verify the master's SSH host key (logs a warning on every run)")
	fs.StringVar(&c.Kubectl, "kubectl", c.Kubectl, "kubectl `invocation` on the master, e.g. \"sudo kubectl --kubeconfig /etc/kubernetes/admin.conf\"")
	fs.DurationVar(&c.SSHTimeout, "ssh-timeout", c.SSHTimeout, "SSH connect timeout")
	fs.DurationVar(&c.KubectlTimeout, "kubectl-timeout", c.KubectlTimeout, "timeout for the remote kubectl command (kubectl gets --request-timeout of nine tenths of it)")

	fs.StringVar(&c.DB, "db", c.DB, "SQLite `file` holding the mapping, the applied state and the sync history")
	fs.DurationVar(&c.LockWait, "lock-wait", c.LockWait, "how long a second lbd waits for the first to finish before giving up")
	fs.Var((*percent)(&c.MaxDelete), "max-delete", "share of the exposed services that may stop being served (deleted, unexposed or left without a ready endpoint) within --max-delete-window: a percentage (50%) or a fraction (0.5); at least one may, 0% none, and an empty answer from the master none. Deletions beyond it are held back (the services keep their state), the rest applies")
	fs.DurationVar(&c.MaxDeleteWindow, "max-delete-window", c.MaxDeleteWindow, "how long a deletion counts against the --max-delete budget of later passes; 0 counts each pass alone")
	fs.Var((*stringList)(&c.AllowDelete), "allow-delete", "apply, plan: let the deletion of this `namespace/name` through whatever --max-delete says; repeatable (lbd apply also takes them as arguments)")
	fs.BoolVar(&c.Force, "force", c.Force, "let every deletion through, whatever --max-delete says")
	fs.BoolVar(&c.Full, "full", c.Full, "also check the backend for drift (rules flushed or files edited by hand) and repair it")

	fs.Var((*stringList)(&c.Pools), "pool", "address `pool` lbd serves and allocates from: a CIDR (192.168.121.240/28) or a range (192.168.121.240-192.168.121.250); repeatable, or comma-separated in LBD_POOL. Without one lbd serves nothing")
	fs.StringVar(&c.LBClass, "lb-class", c.LBClass, "spec.loadBalancerClass lbd answers to, besides services without a class")
	fs.StringVar(&c.VIPInterface, "vip-interface", c.VIPInterface, "`interface` lbd adds every served address to (/32, /128) and announces it on with gratuitous ARP / unsolicited NA; empty: lbd owns no address")
	fs.BoolVar(&c.StatusWrite, "status-write", c.StatusWrite, "write status.loadBalancer.ingress of LoadBalancer services back to the cluster")

	fs.StringVar(&c.HA, "ha", c.HA, "high availability: none, or keepalived (two LBs, VRRP; keepalived owns the addresses)")
	fs.StringVar(&c.HAInterface, "ha-interface", c.HAInterface, "keepalived: `interface` VRRP runs on and the addresses go to")
	fs.Var((*stringList)(&c.HAPeers), "ha-peer", "keepalived: the other LB's `address` (unicast VRRP); repeatable")
	fs.StringVar(&c.HASource, "ha-source", c.HASource, "keepalived: this LB's `address` VRRP leaves from (unicast_src_ip); empty: the interface's")
	fs.IntVar(&c.HAPriority, "ha-priority", c.HAPriority, "keepalived: VRRP priority 1-254; the higher one becomes master first")
	fs.DurationVar(&c.HAAdvertInt, "ha-advert-int", c.HAAdvertInt, "keepalived: VRRP advertisement interval (VRRPv3 allows fractions: 100ms fails over in about 0.35 s)")
	fs.IntVar(&c.HARouterID, "ha-router-id", c.HARouterID, "keepalived: virtual_router_id 1-255, the same on both LBs and unique on the link")
	fs.BoolVar(&c.HAPreempt, "ha-preempt", c.HAPreempt, "keepalived: a recovered LB with the higher priority takes the addresses back (a second interruption); default: it stays backup")
	fs.StringVar(&c.HAConfig, "ha-config", c.HAConfig, "keepalived: the include `file` lbd renders (keepalived.conf must include it)")
	fs.StringVar(&c.HATrackFile, "ha-track-file", c.HATrackFile, "keepalived: health `file` lbd writes after each pass (0 healthy) and keepalived tracks")
	fs.StringVar(&c.HANotify, "ha-notify-script", c.HANotify, "keepalived: `path` lbd installs its transition hook at")
	fs.StringVar(&c.HAStateFile, "ha-state-file", c.HAStateFile, "keepalived: `file` the hook writes the VRRP state to (MASTER, BACKUP, FAULT, STOP)")
	fs.StringVar(&c.HAPIDFile, "ha-pid-file", c.HAPIDFile, "keepalived: its main pid `file`; lbd sends that pid SIGHUP to reload")
	fs.StringVar(&c.HAConntrackd, "ha-conntrackd-config", c.HAConntrackd, "keepalived: conntrackd.conf `path`; when set, the notify hook commits and resyncs conntrackd's caches on every transition")

	fs.StringVar(&c.Backend, "backend", c.Backend, "data plane: `haproxy` (production), nftables (kernel NAT, verdict-map dispatch) or iptables; plan and status default to the backend of the last sync")
	fs.StringVar(&c.PodInterface, "pod-interface", c.PodInterface, "interface through which every endpoint must route")
	fs.BoolVar(&c.RouteCheck, "route-check", c.RouteCheck, "check with netlink that endpoints route via --pod-interface before programming them")
	fs.BoolVar(&c.Masquerade, "masquerade", c.Masquerade, "iptables: masquerade forwarded traffic so pods answer the LB (false only when pods route back through the LB)")
	fs.IntVar(&c.MasqBit, "masquerade-bit", c.MasqBit, "iptables: fwmark `bit` (0-31) lbd sets on the packets it DNATs, for masquerade and the FORWARD accept; kube-proxy uses 14 and 15")
	fs.Func("snat-addresses", "iptables: SNAT to this `range` (a.b.c.d or first-last) of pod-network addresses the LB owns instead of MASQUERADE; clients spread over it by address", func(v string) (err error) {
		c.SNATAddrs, err = parseAddrRange(v)
		return err
	})
	fs.StringVar(&c.IPTablesBin, "iptables", c.IPTablesBin, "iptables: `command` (iptables, iptables-nft or iptables-legacy); -restore and -save are appended")

	fs.StringVar(&c.NFTTable, "nft-table", c.NFTTable, "nftables: the inet `table` lbd owns; it touches no other")

	fs.StringVar(&c.HAProxyBase, "haproxy-base", c.HAProxyBase, "haproxy: global/defaults base `file`; written with sound defaults when absent")
	fs.StringVar(&c.HAProxyDir, "haproxy-dir", c.HAProxyDir, "haproxy: `directory` of per-service files (<namespace>_<service>.cfg)")
	fs.StringVar(&c.HAProxyReload, "haproxy-reload", c.HAProxyReload, "haproxy: reload `command`; empty: the master CLI socket if it exists, else systemctl reload haproxy")
	fs.StringVar(&c.HAProxyMasterSocket, "haproxy-master-socket", c.HAProxyMasterSocket, "haproxy: master CLI socket `path` (haproxy -W -S path)")
	fs.StringVar(&c.HAProxyStatsSocket, "haproxy-stats-socket", c.HAProxyStatsSocket, "haproxy: stats socket `path` written into a new base file")
	fs.StringVar(&c.HAProxyBin, "haproxy-bin", c.HAProxyBin, "haproxy: `binary` used to validate configs")
	fs.StringVar(&c.HAProxyUser, "haproxy-user", c.HAProxyUser, "haproxy: `user` and group the workers drop to, written into a new base file (\"-\" stays root)")
	fs.DurationVar(&c.HAProxyReloadTimeout, "haproxy-reload-timeout", c.HAProxyReloadTimeout, "haproxy: how long a reload may take before lbd stops waiting (the files stay; the next pass confirms it); 0 scales with the number of service files (10s + 2ms per file)")
	fs.DurationVar(&c.CheckInterval, "check-interval", c.CheckInterval, "haproxy: health check interval")
	fs.IntVar(&c.CheckFall, "check-fall", c.CheckFall, "haproxy: failed checks before a server is down")
	fs.IntVar(&c.CheckRise, "check-rise", c.CheckRise, "haproxy: passed checks before a server is up")

	fs.BoolVar(&c.Watch, "watch", c.Watch, "run: follow changes with kubectl --watch over SSH; false polls every --interval")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "run: poll period without --watch, and while the watch reconnects")
	fs.DurationVar(&c.Resync, "resync", c.Resync, "run: period of the full resync (with the drift check), whatever the watch says")
	fs.DurationVar(&c.Debounce, "debounce", c.Debounce, "run: wait this long after the first change seen, so that a burst of changes makes one sync")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "run: serve Prometheus /metrics and /healthz on this `address`, e.g. 127.0.0.1:9720; empty: off")
	fs.StringVar(&c.MetricsFile, "metrics-textfile", c.MetricsFile, "sync, apply, run: write the metrics after every pass to this `file` for node_exporter's textfile collector, e.g. /var/lib/prometheus/node-exporter/lbd.prom; empty: off")

	fs.StringVar(&c.LogFile, "log-file", c.LogFile, "log `file`, written beside stderr; empty for stderr only")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.Output, "o", c.Output, "output format of status and plan: table or json")
	return fs
}

// EnvName is the environment variable that sets flag name:
// LBD_<NAME>, dashes as underscores.
func EnvName(name string) string {
	return "LBD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// spelling is how a flag is written: -o for a one-letter name, --name
// otherwise (the flag package accepts both dashes on input).
func spelling(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// isBoolFlag reports whether f takes no value (--force, not --force x).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// valueName is the placeholder of f's value in the help: its fixed
// values joined by |, the `word` of its usage, or "" for a boolean.
func valueName(f *flag.Flag) string {
	if ch, ok := choices[f.Name]; ok {
		return strings.Join(ch, "|")
	}
	name, _ := flag.UnquoteUsage(f)
	return name
}

// usageOf is f's usage with the backquotes removed.
func usageOf(f *flag.Flag) string {
	_, usage := flag.UnquoteUsage(f)
	return usage
}

// defaultText is f's default as the help shows it, "" when it is the
// zero value (empty, 0, false) and so not worth a mention.
func defaultText(f *flag.Flag) string {
	switch f.DefValue {
	case "", "0", "0s", "false":
		return ""
	}
	if strings.ContainsAny(f.DefValue, " \t") {
		return fmt.Sprintf("%q", f.DefValue)
	}
	return f.DefValue
}
