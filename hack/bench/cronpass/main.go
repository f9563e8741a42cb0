// Command cronpass-bench measures one cron pass of the real lbd binary at
// scale, end to end: a cluster lab (hack/lab, real etcd, kube-apiserver
// and sshd in the master namespace) holding N Services × E endpoints
// (EndpointSlices), and `lbd sync` run in the LB namespace as cron runs
// it (the drift check on), discovering over SSH, parsing, checking
// routes, reading the store, planning, applying and committing.
//
// For each kernel backend it runs, on a fresh database and an empty data
// plane:
//
//	first      the first pass: every service created
//	no-change  a second pass with nothing changed
//	one-change a pass after one endpoint of one EndpointSlice changed
//
// and prints a table of each pass's wall time (the lbd process from exec
// to exit), the phases of lbd's "sync done" log line and lbd's peak RSS
// (VmHWM, sampled every 20 ms; "with children" is the rusage maximum,
// iptables-restore included). Then `lbd cleanup` empties the data plane.
//
// The endpoints are unique addresses in 10.248.0.0/14, a pod prefix the
// benchmark adds to the LB namespace's flannel0 (the lab's own /16 holds
// fewer than 100,000), so the route check sees every one. The load time of
// the objects is printed but is not the figure.
//
// Run as root: hack/bench/cronpass/run.sh (or go run ./hack/bench/cronpass).
// It prints figures and never fails because the machine is slow.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// pool is what lbd may serve: the externalIPs of the services.
const pool = "192.168.121.200-192.168.121.239"

// podPrefix is the extra pod prefix on flannel0; endpoints start at
// firstPod.
var (
	podPrefix = netip.MustParsePrefix("10.248.0.1/14")
	firstPod  = netip.MustParseAddr("10.248.1.0")
)

type config struct {
	services, endpoints int
	backends            []string
	lbd                 string
	dir                 string
	l                   *lab.Lab
	keep                bool
	moved               int // endpoint changes made so far
	hold                time.Duration
}

func main() {
	var c config
	var backends string
	name := flag.String("name", "crnbench", "lab `name` ([a-z0-9], at most 16)")
	flag.IntVar(&c.services, "services", 10000, "services to create")
	flag.IntVar(&c.endpoints, "endpoints", 10, "ready endpoints per service")
	flag.StringVar(&backends, "backends", "iptables,nftables", "kernel backends to measure, comma-separated; empty for none (with -hold)")
	flag.StringVar(&c.lbd, "lbd", "", "lbd `binary` to measure; empty builds ./cmd/lbd")
	limit := flag.Duration("timeout", 30*time.Minute, "bound of the whole run")
	flag.BoolVar(&c.keep, "keep", false, "keep the lab's directory (logs) after the run")
	flag.DurationVar(&c.hold, "hold", 0, "after the passes, keep the lab up this long (or until interrupted) for experiments; it prints lbd's command line")
	flag.Parse()
	if backends != "" {
		c.backends = strings.Split(backends, ",")
	}
	if os.Geteuid() != 0 {
		log.Fatal("cronpass-bench needs root (network namespaces, the cluster lab)")
	}
	if c.services < 1 || c.services > 20000 || c.endpoints < 1 || c.endpoints > 100 ||
		c.services*c.endpoints > 200000 {
		log.Fatal("-services 1..20000, -endpoints 1..100, at most 200,000 endpoints")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &c, *name); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, c *config, name string) (err error) {
	dir, err := os.MkdirTemp("", "lbd-cronpass-")
	if err != nil {
		return err
	}
	c.dir = dir
	defer func() {
		if !c.keep {
			os.RemoveAll(dir)
		} else {
			fmt.Printf("kept %s\n", dir)
		}
	}()
	if c.lbd == "" {
		c.lbd = filepath.Join(dir, "lbd")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", c.lbd, "./cmd/lbd").CombinedOutput(); err != nil {
			return fmt.Errorf("build lbd: %v\n%s", err, out)
		}
	}
	start := time.Now()
	l, err := lab.Start(ctx, lab.Options{Name: name, Cluster: true, Dir: filepath.Join(dir, "lab"), KeepDir: c.keep})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	c.l = l
	fmt.Printf("cronpass-bench: lab %s up in %s\n", name, time.Since(start).Round(time.Millisecond))
	if _, err := l.Run(ctx, l.LBNS, "ip", "addr", "add", podPrefix.String(), "dev", "flannel0"); err != nil {
		return err
	}
	start = time.Now()
	if err := load(ctx, c); err != nil {
		return err
	}
	fmt.Printf("loaded %d services x %d endpoints in %s (not the figure)\n", c.services, c.endpoints, time.Since(start).Round(time.Millisecond))

	var rows []row
	for _, b := range c.backends {
		r, err := measureBackend(ctx, c, b)
		rows = append(rows, r...)
		if err != nil {
			printTable(c, rows)
			return fmt.Errorf("backend %s: %w", b, err)
		}
	}
	printTable(c, rows)
	if c.hold > 0 {
		fmt.Printf("\nholding the lab for %s (interrupt to end); lbd runs as:\nip netns exec %s %s --backend=iptables %s sync\n",
			c.hold, l.LBNS, c.lbd, strings.Join(baseArgs(c, filepath.Join(dir, "hold")), " "))
		fmt.Printf("kubectl: ip netns exec %s %s\n", l.MasterNS, l.KubectlRemote)
		select {
		case <-ctx.Done():
		case <-time.After(c.hold):
		}
	}
	return nil
}

// baseArgs are lbd's flags for the lab, with its files in dir.
func baseArgs(c *config, dir string) []string {
	return []string{"--master", c.l.Master, "--ssh-key", c.l.SSHKey,
		"--known-hosts", c.l.KnownHosts, "--kubectl", strconv.Quote(c.l.KubectlRemote), "--db", filepath.Join(dir, "lbd.db"),
		"--log-file", filepath.Join(dir, "lbd.log"), "--log-format", "json", "--pool", pool,
		"--metrics-textfile", filepath.Join(dir, "lbd.prom")}
}

// podAddr is the address of endpoint k.
func podAddr(k int) netip.Addr {
	a := firstPod.As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n += uint32(k)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// svcName is the name of service i.
func svcName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// objects renders service i and its EndpointSlice as two JSON objects.
// Service i listens on one of the pool's 40 addresses, port 10000 + i/40.
func objects(i, endpoints int) []string {
	ip := fmt.Sprintf("192.168.121.%d", 200+i%40)
	port := 10000 + i/40
	svc := fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":"default"},`+
		`"spec":{"externalIPs":[%q],"ports":[{"port":%d,"protocol":"TCP","targetPort":8080}]}}`, svcName(i), ip, port)
	eps := make([]string, endpoints)
	for j := range eps {
		eps[j] = fmt.Sprintf(`{"addresses":[%q],"conditions":{"ready":true}}`, podAddr(i*endpoints+j))
	}
	slice := fmt.Sprintf(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",`+
		`"metadata":{"name":"%s-1","namespace":"default","labels":{"kubernetes.io/service-name":%q}},`+
		`"addressType":"IPv4","endpoints":[%s],"ports":[{"name":"","port":8080,"protocol":"TCP"}]}`,
		svcName(i), svcName(i), strings.Join(eps, ","))
	return []string{svc, slice}
}

// load creates the objects with kubectl create of Lists of 500 services
// and their slices, two at a time.
func load(ctx context.Context, c *config) error {
	const chunk = 500
	work := make(chan int)
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for from := range work {
				var items []string
				for i := from; i < min(c.services, from+chunk); i++ {
					items = append(items, objects(i, c.endpoints)...)
				}
				list := `{"apiVersion":"v1","kind":"List","items":[` + strings.Join(items, ",") + `]}`
				if _, err := c.l.Kubectl(ctx, list, "create", "-f", "-", "-o", "name"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for from := 0; from < c.services; from += chunk {
		select {
		case work <- from:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	return nil
}

// row is one measured pass.
type row struct {
	backend, pass string
	wall          time.Duration
	phases        string
	result        string
	rssKB, allKB  int64
}

func measureBackend(ctx context.Context, c *config, backend string) ([]row, error) {
	bdir := filepath.Join(c.dir, backend)
	if err := os.MkdirAll(bdir, 0o755); err != nil {
		return nil, err
	}
	lbdArgs := func(args ...string) []string {
		a := append([]string{"--backend=" + backend}, baseArgs(c, bdir)...)
		a[slices.Index(a, "--kubectl")+1] = c.l.KubectlRemote // an argument vector: no quotes
		return append(a, args...)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if out, err := c.l.Command(cctx, c.l.LBNS, c.lbd, lbdArgs("cleanup")...).CombinedOutput(); err != nil {
			log.Printf("lbd cleanup (%s): %v: %s", backend, err, out)
		}
	}()
	var rows []row
	pass := func(name string) error {
		r, err := syncOnce(ctx, c, lbdArgs("sync"), filepath.Join(bdir, "lbd.log"))
		r.backend, r.pass = backend, name
		rows = append(rows, r)
		fmt.Printf("  %-9s %-10s %6.2fs  %s\n", backend, name, r.wall.Seconds(), r.phases)
		return err
	}
	if err := pass("first"); err != nil {
		return rows, err
	}
	if err := pass("no-change"); err != nil {
		return rows, err
	}
	// One endpoint of the middle service moves to a fresh address.
	i := c.services / 2
	c.moved++
	patch := fmt.Sprintf(`[{"op":"replace","path":"/endpoints/0/addresses/0","value":%q}]`,
		podAddr(c.services*c.endpoints+c.moved))
	if _, err := c.l.Kubectl(ctx, "", "patch", "endpointslice", svcName(i)+"-1", "--type=json", "-p", patch); err != nil {
		return rows, err
	}
	if err := pass("one-change"); err != nil {
		return rows, err
	}
	return rows, nil
}

// syncOnce runs one lbd sync in the LB namespace and reads its figures.
func syncOnce(ctx context.Context, c *config, args []string, logFile string) (row, error) {
	var r row
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := c.l.Command(sctx, c.l.LBNS, c.lbd, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	// `ip netns exec` execs lbd in place: the pid is lbd's.
	done := make(chan struct{})
	var hwm int64
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := vmHWM(cmd.Process.Pid); v > hwm {
				hwm = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	r.wall = time.Since(start)
	close(done)
	r.rssKB = hwm
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.allKB = ru.Maxrss
	}
	if err != nil {
		return r, fmt.Errorf("lbd sync: %w: %s", err, out.String())
	}
	r.phases, r.result, err = lastSyncLine(logFile)
	return r, err
}

// vmHWM reads the peak resident set of pid in kB, 0 when it is gone.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// lastSyncLine returns the phases and result of the last "sync done"
// line of the JSON log.
func lastSyncLine(path string) (phases, result string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg    string `json:"msg"`
			Phases string `json:"phases"`
			Result string `json:"result"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "sync done" {
			phases, result = l.Phases, l.Result
		}
	}
	if phases == "" && sc.Err() == nil {
		return "", "", fmt.Errorf("%s: no sync done line", path)
	}
	return phases, result, sc.Err()
}

// printTable prints the passes: wall time, each phase in seconds, RSS.
func printTable(c *config, rows []row) {
	// The pass's order first; a phase not known here goes after them.
	names := []string{"discover", "parse", "store-read", "verify", "plan", "route-check", "prepare", "apply", "commit", "after"}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	for _, r := range rows {
		for _, p := range strings.Fields(r.phases) {
			n, _, _ := strings.Cut(p, "=")
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	fmt.Printf("\none cron pass (lbd sync, drift check on), %d services x %d endpoints; seconds; RSS in MB;\n"+
		"discover and parse run alongside store-read and verify\n\n", c.services, c.endpoints)
	fmt.Printf("| backend | pass | result | wall |")
	for _, n := range names {
		fmt.Printf(" %s |", n)
	}
	fmt.Printf(" peak RSS | with children |\n|---|---|---|---|")
	for range names {
		fmt.Printf("---|")
	}
	fmt.Printf("---|---|\n")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %.2f |", r.backend, r.pass, r.result, r.wall.Seconds())
		ph := map[string]string{}
		for _, p := range strings.Fields(r.phases) {
			n, v, _ := strings.Cut(p, "=")
			if d, err := time.ParseDuration(v); err == nil {
				ph[n] = fmt.Sprintf("%.3f", d.Seconds())
			}
		}
		for _, n := range names {
			fmt.Printf(" %s |", ph[n])
		}
		fmt.Printf(" %d | %d |\n", r.rssKB/1024, r.allKB/1024)
	}
}
