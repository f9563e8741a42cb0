// Command dataplane-bench measures lbd's data planes side by side in one
// run, in a lab of network namespaces (hack/lab, no cluster): wrk in the
// client namespace, the LB namespace in between, one pod server behind
// the service.
//
// Paths:
//
//	direct    the client routed to the pod through the LB, no NAT (a route
//	          to the pod network via the LB in the client namespace, one
//	          back on the pod, forwarding on in the LB)
//	direct-ct direct with connection tracking on in the LB namespace: the
//	          floor of every NAT path, since NAT needs conntrack
//	iptables  the netfilter backend, masquerade (or -snat, the SNAT pool)
//	nftables  the nft backend, masquerade
//	haproxy   haproxy in the LB namespace, mode tcp, one server
//
// Each path is measured with keep-alive and with a new connection per
// request (Connection: close), the kernel backends at 5 and at 10,005
// services (10,000 more services on other addresses, all sorting before
// the measured one, so a linear dispatch walks all of them). Every
// new-connection run goes to a pod of its own, so TIME_WAIT left on a pod
// by one run never meets the next. The table gives req/s, the ratio to
// direct (and, for new connections, to direct-ct), and the counters of the
// runs: TcpExtTCPSynRetrans and TcpRetransSegs on the client,
// TcpExtPAWSTimewait on the pod. Every path runs once per round and the
// rounds run one after another (-reps, 3 by default), so a burst of load
// from elsewhere on the machine hits all paths alike; the table gives the
// median of the rounds and the counters' sums.
//
// Run as root: go run ./hack/bench/dataplane (or run.sh). It prints
// figures and never fails because the machine is slow.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
)

type config struct {
	dur     time.Duration
	conns   int
	paths   []string
	counts  []int
	snat    int
	sysctls []string
	reps    int
}

func main() {
	var c config
	var paths, counts, sysctls string
	name := flag.String("name", fmt.Sprintf("dp%d", os.Getpid()), "lab `name` ([a-z0-9], at most 16)")
	flag.DurationVar(&c.dur, "d", 4*time.Second, "duration of each wrk run")
	flag.IntVar(&c.conns, "c", 20, "wrk connections")
	flag.IntVar(&c.reps, "reps", 3, "rounds: every path is measured once per round, rounds run one after another, and the table gives each figure's median")
	flag.StringVar(&paths, "paths", "direct,direct-ct,iptables-rf,iptables,nftables,haproxy", "paths to measure, comma-separated; iptables-masq measures the iptables backend with MASQUERADE (no -snat pool), iptables-rf with MASQUERADE --random-fully (lbd before the fix)")
	flag.StringVar(&counts, "services", "5,10005", "service counts for the kernel backends, comma-separated")
	flag.IntVar(&c.snat, "snat", 0, "iptables: SNAT pool size (addresses 10.246.90.1 and up on flannel0); 0 masquerades")
	flag.StringVar(&sysctls, "sysctl", "", "sysctls to set first, `ns:key=value` (ns lb, client or pod), comma-separated")
	flag.Parse()
	c.paths = strings.Split(paths, ",")
	for _, s := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			log.Fatalf("-services %q: want counts >= 1", counts)
		}
		c.counts = append(c.counts, n)
	}
	if c.reps < 1 {
		log.Fatalf("-reps %d: want >= 1", c.reps)
	}
	if sysctls != "" {
		c.sysctls = strings.Split(sysctls, ",")
	}
	if os.Geteuid() != 0 {
		log.Fatal("dataplane-bench needs root (network namespaces, iptables, nft)")
	}
	if err := run(*name, c); err != nil {
		log.Fatal(err)
	}
}

// bench is one run's lab and results.
type bench struct {
	c    config
	l    *lab.Lab
	log  *slog.Logger
	pod  int // next pod for a new-connection run
	rows []row
}

type row struct {
	path            string
	services        int
	keepAlive       float64
	close           float64
	synRetrans      int64 // client TcpExtTCPSynRetrans, new-connection run
	retrans         int64 // client TcpRetransSegs, new-connection run
	paws            int64 // pod TcpExtPAWSTimewait, new-connection run
	errors, comment string
}

// vip is the measured service's address and port.
var vip = netip.AddrPortFrom(lab.LBExternalIP, 80)

func run(name string, c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// One pod for keep-alive and direct, and a fresh one per
	// new-connection run.
	pods := 2 + c.reps*len(c.paths)*len(c.counts)*2
	l, err := lab.Start(ctx, lab.Options{Name: name, Pods: pods})
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			log.Print(err)
		}
	}()
	if err := l.StartPods(ctx); err != nil {
		return err
	}
	b := &bench{c: c, l: l, log: slog.New(slog.NewTextHandler(io.Discard, nil)), pod: 1}
	if err := b.setup(ctx); err != nil {
		return err
	}
	ipt, _ := exec.Command("iptables", "--version").Output()
	fmt.Printf("dataplane-bench: wrk -t1 -c%d -d%s per run, %d rounds (medians), kernel %s, %s\n", c.conns, c.dur, c.reps, kernel(), strings.TrimSpace(string(ipt)))
	for round := range c.reps {
		if err := b.round(ctx); err != nil {
			return fmt.Errorf("round %d: %w", round+1, err)
		}
	}
	b.print()
	return nil
}

// round measures every path once, in the order given.
func (b *bench) round(ctx context.Context) error {
	c := b.c
	for _, p := range c.paths {
		var err error
		switch p {
		case "direct":
			err = b.direct(ctx)
		case "direct-ct":
			err = b.directConntrack(ctx)
		case "iptables":
			err = b.iptables(ctx, c.snat, "iptables")
		case "iptables-masq":
			err = b.iptables(ctx, 0, "iptables-masq")
		case "iptables-rf":
			err = b.iptables(ctx, -1, "iptables-rf")
		case "nftables":
			err = b.nftables(ctx)
		case "haproxy":
			err = b.haproxy(ctx)
		default:
			err = fmt.Errorf("unknown path %q", p)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func kernel() string {
	out, _ := exec.Command("uname", "-r").Output()
	return strings.TrimSpace(string(out))
}

// setup sets the sysctls asked for, the routes of the direct path (inside
// the lab's namespaces only) and the SNAT pool's addresses.
func (b *bench) setup(ctx context.Context) error {
	l := b.l
	cmds := [][]string{
		{l.ClientNS, "ip", "route", "add", lab.PodNetwork.String(), "via", lab.LBExternalIP.String()},
		{l.LBNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, ns := range l.PodNS {
		cmds = append(cmds, []string{ns, "ip", "route", "add", "192.168.121.0/24", "via", lab.FlannelIP.Addr().String()})
	}
	for _, a := range b.snatPool(b.c.snat) {
		cmds = append(cmds, []string{l.LBNS, "ip", "addr", "add", a.String() + "/16", "dev", "flannel0"})
	}
	for _, s := range b.c.sysctls {
		where, kv, ok := strings.Cut(s, ":")
		if !ok {
			return fmt.Errorf("-sysctl %q: want ns:key=value", s)
		}
		switch where {
		case "lb":
			cmds = append(cmds, []string{l.LBNS, "sysctl", "-qw", kv})
		case "client":
			cmds = append(cmds, []string{l.ClientNS, "sysctl", "-qw", kv})
		case "pod":
			for _, ns := range l.PodNS {
				cmds = append(cmds, []string{ns, "sysctl", "-qw", kv})
			}
		default:
			return fmt.Errorf("-sysctl %q: ns is lb, client or pod", s)
		}
	}
	for _, c := range cmds {
		if _, err := l.Run(ctx, c[0], c[1], c[2:]...); err != nil {
			return err
		}
	}
	return nil
}

// snatPool is 10.246.90.1 and the n-1 addresses after it.
func (b *bench) snatPool(n int) []netip.Addr {
	var out []netip.Addr
	a := lab.FlannelIP.Addr()
	for range n {
		a = a.Next()
		out = append(out, a)
	}
	return out
}

// nextPod returns a pod no new-connection run has used.
func (b *bench) nextPod() int {
	b.pod++
	return b.pod
}

func (b *bench) direct(ctx context.Context) error {
	r := row{path: "direct"}
	var err error
	if r.keepAlive, _, err = b.wrk(ctx, netip.AddrPortFrom(b.l.PodIPs[0], 80), false); err != nil {
		return err
	}
	return b.closeRun(ctx, &r, func(pod int) error { return nil }, func(pod int) netip.AddrPort {
		return netip.AddrPortFrom(b.l.PodIPs[pod], 80)
	})
}

// directConntrack is direct with connection tracking on in the LB
// namespace (a table of its own whose only rule matches ct state new): the
// floor any NAT path pays, since NAT needs conntrack.
func (b *bench) directConntrack(ctx context.Context) error {
	const table = "dataplane_bench_ct"
	for _, cmd := range [][]string{
		{"add", "table", "inet", table},
		{"add", "chain", "inet", table, "ctfloor", "{ type filter hook forward priority 0; }"},
		{"add", "rule", "inet", table, "ctfloor", "ct", "state", "new", "counter"},
	} {
		if _, err := b.l.Run(ctx, b.l.LBNS, "nft", cmd...); err != nil {
			return err
		}
	}
	defer b.l.Run(ctx, b.l.LBNS, "nft", "delete", "table", "inet", table)
	r := row{path: "direct-ct", comment: "direct, conntrack on in the LB"}
	var err error
	if r.keepAlive, _, err = b.wrk(ctx, netip.AddrPortFrom(b.l.PodIPs[0], 80), false); err != nil {
		return err
	}
	return b.closeRun(ctx, &r, func(pod int) error { return nil }, func(pod int) netip.AddrPort {
		return netip.AddrPortFrom(b.l.PodIPs[pod], 80)
	})
}

// closeRun measures new connections per request against a fresh pod:
// retarget points the data plane at it, addr names what wrk connects to.
func (b *bench) closeRun(ctx context.Context, r *row, retarget func(pod int) error, addr func(pod int) netip.AddrPort) error {
	pod := b.nextPod()
	if err := retarget(pod); err != nil {
		return err
	}
	cl0, err := b.counters(ctx, b.l.ClientNS)
	if err != nil {
		return err
	}
	p0, err := b.counters(ctx, b.l.PodNS[pod])
	if err != nil {
		return err
	}
	rate, errs, err := b.wrk(ctx, addr(pod), true)
	if err != nil {
		return err
	}
	cl1, err := b.counters(ctx, b.l.ClientNS)
	if err != nil {
		return err
	}
	p1, err := b.counters(ctx, b.l.PodNS[pod])
	if err != nil {
		return err
	}
	r.close, r.errors = rate, errs
	r.synRetrans = cl1["TcpExtTCPSynRetrans"] - cl0["TcpExtTCPSynRetrans"]
	r.retrans = cl1["TcpRetransSegs"] - cl0["TcpRetransSegs"]
	r.paws = p1["TcpExtPAWSTimewait"] - p0["TcpExtPAWSTimewait"]
	b.rows = append(b.rows, *r)
	return nil
}

// kernelBackend is what the bench needs of the netfilter and nft backends.
type kernelBackend interface {
	Apply(ctx context.Context, desired []lb.Service, changes []lb.Change) ([]lb.Skipped, error)
	Cleanup(ctx context.Context) error
}

// measureKernel runs keep-alive and new-connection runs through a kernel
// backend at every service count; mk makes a fresh backend inside the LB
// namespace.
func (b *bench) measureKernel(ctx context.Context, path, comment string, mk func() (kernelBackend, error)) error {
	for _, n := range b.c.counts {
		// A fresh backend per count: its first Apply is a full sync.
		var be kernelBackend
		if err := lab.InNS(b.l.LBNS, func() (err error) { be, err = mk(); return err }); err != nil {
			return err
		}
		err := b.measureCount(ctx, be, path, comment, n)
		if cerr := lab.InNS(b.l.LBNS, func() error { return be.Cleanup(ctx) }); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) measureCount(ctx context.Context, be kernelBackend, path, comment string, n int) error {
	r := row{path: path, services: n}
	applied := services(n, b.l.PodIPs[0])
	start := time.Now()
	if err := b.applyChanges(ctx, be, nil, applied); err != nil {
		return err
	}
	r.comment = fmt.Sprintf("%s; full program %s", comment, time.Since(start).Round(time.Millisecond))
	var err error
	if r.keepAlive, _, err = b.wrk(ctx, vip, false); err != nil {
		return err
	}
	retarget := func(pod int) error {
		next := services(n, b.l.PodIPs[pod])
		err := b.applyChanges(ctx, be, applied, next)
		applied = next
		return err
	}
	return b.closeRun(ctx, &r, retarget, func(int) netip.AddrPort { return vip })
}

// applyChanges moves be from old to next, with a change per service that
// differs.
func (b *bench) applyChanges(ctx context.Context, be kernelBackend, old, next []lb.Service) error {
	byKey := map[string]*lb.Service{}
	for i := range old {
		byKey[old[i].Key()] = &old[i]
	}
	var changes []lb.Change
	for i := range next {
		o := byKey[next[i].Key()]
		switch {
		case o == nil:
			changes = append(changes, lb.Change{Kind: lb.Create, New: &next[i]})
		case !o.Equal(&next[i]):
			changes = append(changes, lb.Change{Kind: lb.Update, Old: o, New: &next[i]})
		}
	}
	return lab.InNS(b.l.LBNS, func() error {
		skipped, err := be.Apply(ctx, next, changes)
		if err == nil && len(skipped) > 0 {
			err = fmt.Errorf("skipped %v", skipped)
		}
		return err
	})
}

// iptables measures the netfilter backend: snat > 0 SNATs to a pool of
// that many addresses, 0 masquerades, -1 masquerades with --random-fully
// as lbd did before (the rule is replaced after each program).
func (b *bench) iptables(ctx context.Context, snat int, path string) error {
	opts := netfilter.DefaultOptions()
	comment := "MASQUERADE"
	switch {
	case snat > 0:
		opts.SNATAddresses = b.snatPool(snat)
		comment = fmt.Sprintf("SNAT pool of %d", snat)
	case snat < 0:
		comment = "MASQUERADE --random-fully (before the fix)"
	}
	return b.measureKernel(ctx, path, comment, func() (kernelBackend, error) {
		be, err := netfilter.New(opts, b.log)
		if err != nil || snat >= 0 {
			return be, err
		}
		return randomFully{be, b}, nil
	})
}

// randomFully is the netfilter backend with its masquerade rule replaced
// by MASQUERADE --random-fully after every Apply.
type randomFully struct {
	*netfilter.Backend
	b *bench
}

func (r randomFully) Apply(ctx context.Context, desired []lb.Service, changes []lb.Change) ([]lb.Skipped, error) {
	skipped, err := r.Backend.Apply(ctx, desired, changes)
	if err != nil {
		return skipped, err
	}
	// Apply runs inside the LB namespace (lab.InNS), so iptables does.
	out, err := exec.CommandContext(ctx, "iptables", "-w", "-t", "nat", "-R", netfilter.PostroutingChain, "3", "-j", "MASQUERADE", "--random-fully").CombinedOutput()
	if err != nil {
		return skipped, fmt.Errorf("replace masquerade rule: %v: %s", err, out)
	}
	return skipped, nil
}

func (b *bench) nftables(ctx context.Context) error {
	return b.measureKernel(ctx, "nftables", "masquerade", func() (kernelBackend, error) {
		return nft.New(nft.DefaultOptions(), b.log)
	})
}

// haproxy runs haproxy in the LB namespace, mode tcp, in front of one pod.
func (b *bench) haproxy(ctx context.Context) error {
	r := row{path: "haproxy", comment: "mode tcp, nbthread 1"}
	var proc *lab.Process
	start := func(pod int) error {
		if proc != nil {
			proc.Stop()
		}
		cfg := fmt.Sprintf(`global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend bench
    bind %s
    default_backend pods
backend pods
    server pod %s:80
`, vip, b.l.PodIPs[pod])
		path := fmt.Sprintf("%s/haproxy-%d.cfg", b.l.Dir, pod)
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return err
		}
		var err error
		proc, err = b.l.Spawn(fmt.Sprintf("haproxy%d", pod), b.l.LBNS, "haproxy", "-db", "-f", path)
		if err != nil {
			return err
		}
		// Ready when it accepts.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			c, err := b.l.Dial(ctx, b.l.ClientNS, "tcp", vip.String())
			if err == nil {
				c.Close()
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return fmt.Errorf("haproxy not accepting on %s:\n%s", vip, proc.Tail(10))
	}
	defer func() {
		if proc != nil {
			proc.Stop()
		}
	}()
	if err := start(0); err != nil {
		return err
	}
	var err error
	if r.keepAlive, _, err = b.wrk(ctx, vip, false); err != nil {
		return err
	}
	return b.closeRun(ctx, &r, start, func(int) netip.AddrPort { return vip })
}

// services returns n services: n-1 on addresses of the benchmarking range
// 198.18.0.0/15 (no packet goes there), in namespace "bench", and the
// measured one, default/web on the LB's address port 80 to pod:80, which
// sorts last.
func services(n int, pod netip.Addr) []lb.Service {
	svcs := make([]lb.Service, 0, n)
	for i := range n - 1 {
		s := lb.Service{Namespace: "bench", Name: fmt.Sprintf("svc%05d", i), Type: "LoadBalancer",
			ExternalIPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})},
			Ports:       []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80"}}}
		s.Ports[0].Endpoints = []lb.Endpoint{{IP: netip.AddrFrom4([4]byte{10, 246, 200 + byte(i>>8), byte(i)}), Port: 80, Ready: true, Serving: true}}
		svcs = append(svcs, s)
	}
	svcs = append(svcs, lb.Service{Namespace: "default", Name: "web", Type: "LoadBalancer",
		ExternalIPs: []netip.Addr{vip.Addr()},
		Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80",
			Endpoints: []lb.Endpoint{{IP: pod, Port: 80, Ready: true, Serving: true}}}}})
	for i := range svcs {
		svcs[i].Normalize()
	}
	lb.SortServices(svcs)
	return svcs
}

var (
	reqRE  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	sockRE = regexp.MustCompile(`Socket errors: (.*)`)
)

// wrk runs one bounded wrk in the client namespace.
func (b *bench) wrk(ctx context.Context, addr netip.AddrPort, closeConn bool) (float64, string, error) {
	args := []string{"-t1", "-c" + strconv.Itoa(b.c.conns), "-d" + b.c.dur.String(), "--timeout", "2s"}
	if closeConn {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+addr.String()+"/")
	ctx, cancel := context.WithTimeout(ctx, b.c.dur+30*time.Second)
	defer cancel()
	out, err := b.l.Run(ctx, b.l.ClientNS, "wrk", args...)
	if err != nil {
		return 0, "", err
	}
	m := reqRE.FindStringSubmatch(out)
	if m == nil {
		return 0, "", fmt.Errorf("wrk: no Requests/sec in:\n%s", out)
	}
	rate, _ := strconv.ParseFloat(m[1], 64)
	var errs string
	if s := sockRE.FindStringSubmatch(out); s != nil {
		errs = s[1]
	}
	return rate, errs, nil
}

// counters reads the TCP counters of ns as nstat names them ("TcpRetransSegs",
// "TcpExtPAWSTimewait"), from /proc/net/snmp and /proc/net/netstat.
func (b *bench) counters(ctx context.Context, ns string) (map[string]int64, error) {
	out, err := b.l.Run(ctx, ns, "cat", "/proc/net/snmp", "/proc/net/netstat")
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || len(names) != len(values) {
			continue
		}
		prefix := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			v, _ := strconv.ParseInt(values[j], 10, 64)
			m[prefix+names[j]] = v
		}
	}
	return m, nil
}

// summary is one path's rounds: the medians of the rates, the sums of
// the counters.
type summary struct {
	row
	rounds int
}

// summarize folds the rows of every round into one per path and service
// count, in the order the paths first ran.
func summarize(rows []row) []summary {
	var order []string
	groups := map[string][]row{}
	for _, r := range rows {
		k := r.path + "/" + strconv.Itoa(r.services)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []summary
	for _, k := range order {
		g := groups[k]
		s := summary{row: row{path: g[0].path, services: g[0].services, comment: g[0].comment}, rounds: len(g)}
		var ka, cl []float64
		var errs []string
		for _, r := range g {
			ka, cl = append(ka, r.keepAlive), append(cl, r.close)
			s.synRetrans += r.synRetrans
			s.retrans += r.retrans
			s.paws += r.paws
			if r.errors != "" && !strings.HasPrefix(r.errors, "connect 0, read 0, write 0, timeout 0") {
				errs = append(errs, r.errors)
			}
		}
		s.keepAlive, s.close = median(ka), median(cl)
		s.errors = strings.Join(errs, " | ")
		out = append(out, s)
	}
	return out
}

// median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	ys := slices.Clone(xs)
	slices.Sort(ys)
	n := len(ys)
	if n%2 == 1 {
		return ys[n/2]
	}
	return (ys[n/2-1] + ys[n/2]) / 2
}

// print writes the table: each path's medians over the rounds, their
// ratios to direct, the new-connection ratio to direct-ct (the conntrack
// floor every NAT path pays), and the counters summed over the rounds.
func (b *bench) print() {
	sums := summarize(b.rows)
	var direct, floor summary
	for _, r := range sums {
		switch r.path {
		case "direct":
			direct = r
		case "direct-ct":
			floor = r
		}
	}
	ratio := func(v, d float64) string {
		if d == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", v/d)
	}
	fmt.Printf("\n%-14s %8s %12s %7s %12s %7s %7s %8s %8s %8s  %s\n", "path", "services", "keep-alive", "ratio", "new conn", "ratio", "vs ct", "SYN rtx", "rtx segs", "PAWS-TW", "notes")
	for _, r := range sums {
		svcs := "-"
		if r.services > 0 {
			svcs = strconv.Itoa(r.services)
		}
		notes := r.comment
		if r.errors != "" {
			notes = strings.TrimSpace(notes + "; wrk socket errors: " + r.errors)
		}
		fmt.Printf("%-14s %8s %12.0f %7s %12.0f %7s %7s %8d %8d %8d  %s\n", r.path, svcs, r.keepAlive, ratio(r.keepAlive, direct.keepAlive),
			r.close, ratio(r.close, direct.close), ratio(r.close, floor.close), r.synRetrans, r.retrans, r.paws, notes)
	}
}
