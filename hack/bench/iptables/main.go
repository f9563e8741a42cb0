// Command iptables-bench measures the netfilter backend in a network
// namespace of its own (lbd-nfbench, removed after every scenario): a full
// program of N services x E endpoints from empty, a one-service endpoint
// change, and a no-change sync. For comparison it loads the same services
// in kube-proxy's chain-per-endpoint layout and in a flat layout (every
// DNAT rule in one chain), and it rewrites LBD-SERVICES whole for the
// one-service change, the alternative to lbd's -D/-A of single lines. It
// runs every scenario with iptables-nft and, when present,
// iptables-legacy. No traffic is sent.
//
// Run it as root through run.sh; it prints figures and never fails
// because the machine is slow.
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
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
)

const nsName = "lbd-nfbench"

func main() {
	services := flag.Int("services", 10000, "services to program")
	endpoints := flag.Int("endpoints", 10, "ready endpoints per service")
	modes := flag.String("modes", "nft,legacy", "iptables modes to measure: nft, legacy")
	addresses := flag.Int("addresses", 0, "put the services on this many addresses of one /24, on distinct ports (as a pool of a few LoadBalancer addresses holds them); 0: an address each")
	compare := flag.Bool("compare", true, "also load the kube-proxy and flat layouts (kube-proxy's takes minutes with nft)")
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("iptables-bench needs root (network namespaces, iptables)")
	}
	// Every scenario runs on this thread, moved into a fresh namespace;
	// iptables children inherit the thread's namespace.
	runtime.LockOSThread()
	host, err := netns.Get()
	if err != nil {
		log.Fatal(err)
	}
	svcs := makeServices(*services, *endpoints, *addresses)
	fmt.Printf("iptables-bench: %d services x %d endpoints, %s, %d CPUs\n", *services, *endpoints, version(), runtime.NumCPU())
	for _, mode := range strings.Split(*modes, ",") {
		bin := "iptables-" + mode
		if _, err := exec.LookPath(bin + "-restore"); err != nil {
			fmt.Printf("\n[%s] not available: %v\n", mode, err)
			continue
		}
		fmt.Printf("\n[%s]\n", mode)
		var lbdFull, kp, flat time.Duration
		inFreshNS(host, func() (err error) { lbdFull, err = lbdScenario(bin, svcs); return err })
		if !*compare {
			continue
		}
		inFreshNS(host, func() (err error) {
			kp, err = layoutScenario(bin, "chain-per-endpoint (kube-proxy)", perEndpointPayload(svcs))
			return err
		})
		inFreshNS(host, func() (err error) { flat, err = layoutScenario(bin, "flat (one chain)", flatPayload(svcs)); return err })
		inFreshNS(host, func() error { return servicesRewriteScenario(bin, svcs) })
		if lbdFull > 0 && kp > 0 && flat > 0 {
			fmt.Printf("  full program, lbd vs kube-proxy layout: %.2fx faster; vs kube-proxy's reported 12.7 s (nft): %.2fx; lbd / flat: %.2fx\n",
				kp.Seconds()/lbdFull.Seconds(), 12.7/lbdFull.Seconds(), lbdFull.Seconds()/flat.Seconds())
		}
	}
}

func version() string {
	out, err := exec.Command("iptables", "--version").Output()
	if err != nil {
		return "iptables: " + err.Error()
	}
	return strings.TrimSpace(string(out)) + " is the system default"
}

// inFreshNS runs f in a new namespace lbd-nfbench and removes it after.
func inFreshNS(host netns.NsHandle, f func() error) {
	netns.DeleteNamed(nsName) // a leftover of a killed run
	ns, err := netns.NewNamed(nsName)
	if err != nil {
		log.Fatalf("create netns %s: %v", nsName, err)
	}
	err = f()
	ns.Close()
	if serr := netns.Set(host); serr != nil {
		log.Fatalf("back to the host namespace: %v", serr) // never run on in the wrong one
	}
	if derr := netns.DeleteNamed(nsName); derr != nil {
		log.Printf("delete netns %s: %v", nsName, derr)
	}
	if err != nil {
		log.Printf("  scenario failed: %v", err)
	}
}

// makeServices returns n services of e endpoints each, on an address
// each, or with addrs > 0 on addrs addresses of one /24 and distinct
// ports.
func makeServices(n, e, addrs int) []lb.Service {
	svcs := make([]lb.Service, n)
	for i := range svcs {
		// 198.18.0.0/15 is the benchmarking range; no packet is sent.
		ip, port := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)}), uint16(80)
		if addrs > 0 {
			ip, port = netip.AddrFrom4([4]byte{198, 18, 0, byte(i % addrs)}), uint16(10000+i/addrs)
		}
		s := lb.Service{Namespace: "bench", Name: fmt.Sprintf("svc%05d", i), Type: "LoadBalancer",
			ExternalIPs: []netip.Addr{ip},
			Ports:       []lb.Port{{Port: port, Protocol: lb.TCP, TargetPort: "8080"}}}
		for j := range e {
			k := i*e + j
			s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, lb.Endpoint{
				IP: netip.AddrFrom4([4]byte{10, 246 + byte(k>>16), byte(k >> 8), byte(k)}), Port: 8080, Ready: true, Serving: true})
		}
		s.Normalize()
		svcs[i] = s
	}
	lb.SortServices(svcs)
	return svcs
}

func lbdScenario(bin string, svcs []lb.Service) (time.Duration, error) {
	ctx := context.Background()
	opts := netfilter.DefaultOptions()
	opts.Binary = bin
	b, err := netfilter.New(opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	changes := make([]lb.Change, len(svcs))
	for i := range svcs {
		changes[i] = lb.Change{Kind: lb.Create, New: &svcs[i]}
	}
	start := time.Now()
	if _, err := b.Apply(ctx, svcs, changes); err != nil {
		return 0, err
	}
	full := time.Since(start)
	rules := countRules(bin)

	// One endpoint of one service replaced.
	i := len(svcs) / 2
	old := svcs[i]
	next := svcs[i].Clone()
	next.Ports[0].Endpoints[0].IP = netip.MustParseAddr("10.255.255.1")
	next.Normalize()
	desired := append([]lb.Service(nil), svcs...)
	desired[i] = *next
	start = time.Now()
	if _, err := b.Apply(ctx, desired, []lb.Change{{Kind: lb.Update, Old: &old, New: next}}); err != nil {
		return 0, err
	}
	one := time.Since(start)

	// A service created and one deleted: the -A/-D of single LBD-SERVICES lines.
	extra := makeServices(len(svcs)+1, 10, 0)[len(svcs)]
	start = time.Now()
	if _, err := b.Apply(ctx, append(desired, extra), []lb.Change{{Kind: lb.Create, New: &extra}}); err != nil {
		return 0, err
	}
	create := time.Since(start)
	start = time.Now()
	if _, err := b.Apply(ctx, desired, []lb.Change{{Kind: lb.Delete, Old: &extra}}); err != nil {
		return 0, err
	}
	del := time.Since(start)

	before := b.Commands()
	start = time.Now()
	if _, err := b.Apply(ctx, desired, nil); err != nil {
		return 0, err
	}
	noop := time.Since(start)
	noopCmds := b.Commands() - before

	start = time.Now()
	diffs, err := b.Verify(ctx, desired)
	if err != nil {
		return 0, err
	}
	verify := time.Since(start)

	start = time.Now()
	if err := b.Cleanup(ctx); err != nil {
		return 0, err
	}
	cleanup := time.Since(start)
	fmt.Printf("  lbd layout: full program %v (%d rules) | one-service endpoint change %v | create one %v | delete one %v | no-change sync %v, %d iptables commands | Verify %v (%d differences) | Cleanup %v\n",
		ms(full), rules, ms(one), ms(create), ms(del), noop, noopCmds, ms(verify), len(diffs), ms(cleanup))
	return full, nil
}

// layoutScenario loads payload with one restore and reports the time.
func layoutScenario(bin, name string, payload []byte) (time.Duration, error) {
	start := time.Now()
	if err := restore(bin, payload); err != nil {
		return 0, err
	}
	d := time.Since(start)
	fmt.Printf("  %s: full program %v (%d rules)\n", name, ms(d), countRules(bin))
	return d, nil
}

// servicesRewriteScenario times the alternative one-service change that
// rewrites LBD-SERVICES whole instead of -D/-A of its lines.
func servicesRewriteScenario(bin string, svcs []lb.Service) error {
	rs := netfilter.Render(svcs, netfilter.DefaultOptions())
	if err := restore(bin, rs.Payload()); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("*nat\n:" + netfilter.ServicesChain + " - [0:0]\n")
	c := rs.NAT[len(rs.NAT)/2]
	b.WriteString(":" + c.Name + " - [0:0]\n")
	for _, r := range rs.NAT[0].Rules {
		b.WriteString(r + "\n")
	}
	for _, r := range c.Rules {
		b.WriteString(r + "\n")
	}
	b.WriteString("COMMIT\n")
	start := time.Now()
	if err := restore(bin, []byte(b.String())); err != nil {
		return err
	}
	fmt.Printf("  one-service change rewriting all of LBD-SERVICES (the alternative): %v\n", ms(time.Since(start)))
	return nil
}

// perEndpointPayload renders kube-proxy's layout: service chain with a
// statistic jump per endpoint to a chain per endpoint that marks and DNATs.
func perEndpointPayload(svcs []lb.Service) []byte {
	var decl, rules strings.Builder
	decl.WriteString("*nat\n:KP-SERVICES - [0:0]\n:KP-MARK-MASQ - [0:0]\n")
	rules.WriteString("-A KP-MARK-MASQ -j MARK --set-xmark 0x2000/0x2000\n")
	for i := range svcs {
		s := &svcs[i]
		p := s.Ports[0]
		svc := "KP-SVC-" + fmt.Sprintf("%05d", i)
		decl.WriteString(":" + svc + " - [0:0]\n")
		fmt.Fprintf(&rules, "-A KP-SERVICES -d %s/32 -p tcp -m tcp --dport %d -j %s\n", s.ExternalIPs[0], p.Port, svc)
		eps := p.ReadyEndpoints()
		for j, e := range eps {
			sep := fmt.Sprintf("KP-SEP-%05d-%02d", i, j)
			decl.WriteString(":" + sep + " - [0:0]\n")
			if j < len(eps)-1 {
				fmt.Fprintf(&rules, "-A %s -m statistic --mode random --probability %0.10f -j %s\n", svc, 1/float64(len(eps)-j), sep)
			} else {
				fmt.Fprintf(&rules, "-A %s -j %s\n", svc, sep)
			}
			fmt.Fprintf(&rules, "-A %s -j KP-MARK-MASQ\n-A %s -p tcp -m tcp -j DNAT --to-destination %s\n", sep, sep, e)
		}
	}
	return []byte(decl.String() + rules.String() + "COMMIT\n")
}

// flatPayload puts every DNAT rule in one chain.
func flatPayload(svcs []lb.Service) []byte {
	var b strings.Builder
	b.WriteString("*nat\n:FLAT - [0:0]\n")
	for i := range svcs {
		s := &svcs[i]
		p := s.Ports[0]
		eps := p.ReadyEndpoints()
		m := fmt.Sprintf("-A FLAT -d %s/32 -p tcp -m tcp --dport %d", s.ExternalIPs[0], p.Port)
		for j, e := range eps {
			stat := ""
			if j < len(eps)-1 {
				stat = fmt.Sprintf(" -m statistic --mode random --probability %0.10f", 1/float64(len(eps)-j))
			}
			fmt.Fprintf(&b, "%s%s -j DNAT --to-destination %s\n", m, stat, e)
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

func restore(bin string, payload []byte) error {
	cmd := exec.Command(bin+"-restore", "--noflush", "-w")
	cmd.Stdin = strings.NewReader(string(payload))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %v: %s", bin, err, out)
	}
	return nil
}

func countRules(bin string) int {
	out, err := exec.Command(bin+"-save", "-t", "nat").Output()
	if err != nil {
		return -1
	}
	return strings.Count(string(out), "\n-A ")
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
