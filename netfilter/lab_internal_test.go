package netfilter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/lb"
)

// countingIPT counts go-iptables calls.
type countingIPT struct {
	ipTables
	n *atomic.Int64
}

func (c countingIPT) Exists(t, ch string, s ...string) (bool, error) {
	c.n.Add(1)
	return c.ipTables.Exists(t, ch, s...)
}

func (c countingIPT) Insert(t, ch string, p int, s ...string) error {
	c.n.Add(1)
	return c.ipTables.Insert(t, ch, p, s...)
}

func (c countingIPT) DeleteIfExists(t, ch string, s ...string) error {
	c.n.Add(1)
	return c.ipTables.DeleteIfExists(t, ch, s...)
}

// labBackend is a Backend that runs inside the lab's LB namespace and
// counts the commands it runs.
type labBackend struct {
	*Backend
	t        *testing.T
	ns       string
	commands atomic.Int64
}

func newLabBackend(t *testing.T, ns string, opts Options) *labBackend {
	t.Helper()
	b, err := New(opts, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	lbk := &labBackend{Backend: b, t: t, ns: ns}
	run := b.run
	b.run = func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		lbk.commands.Add(1)
		return run(ctx, stdin, name, args...)
	}
	b.ipt = countingIPT{b.ipt, &lbk.commands}
	return lbk
}

func (b *labBackend) apply(desired []lb.Service, changes ...lb.Change) {
	b.t.Helper()
	err := lab.InNS(b.ns, func() error {
		skipped, err := b.Apply(b.t.Context(), desired, changes)
		if len(skipped) > 0 {
			return fmt.Errorf("skipped %v", skipped)
		}
		return err
	})
	if err != nil {
		b.t.Fatalf("Apply: %v", err)
	}
}

func (b *labBackend) verify(applied []lb.Service) []string {
	b.t.Helper()
	var diffs []string
	err := lab.InNS(b.ns, func() error {
		var err error
		diffs, err = b.Verify(b.t.Context(), applied)
		return err
	})
	if err != nil {
		b.t.Fatalf("Verify: %v", err)
	}
	return diffs
}

func (b *labBackend) cleanup() {
	b.t.Helper()
	if err := lab.InNS(b.ns, func() error { return b.Cleanup(b.t.Context()) }); err != nil {
		b.t.Fatalf("Cleanup: %v", err)
	}
}

// changesFor turns desired into a change per service, as the reconciler
// does after Verify found drift.
func changesFor(old, desired []lb.Service) []lb.Change {
	var out []lb.Change
	for i := range desired {
		c := lb.Change{Kind: lb.Create, New: &desired[i]}
		for j := range old {
			if old[j].Key() == desired[i].Key() {
				c.Kind, c.Old = lb.Update, &old[j]
			}
		}
		out = append(out, c)
	}
	return out
}

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

// saveNormalized is iptables-save in ns without comment lines and
// counters.
func saveNormalized(t *testing.T, l *lab.Lab, ns string) string {
	t.Helper()
	out, err := l.Run(t.Context(), ns, "iptables-save")
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, counterRE.ReplaceAllString(line, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}

// filterJumpPackets is the packet counter of chain's jump to LBD-FILTER
// in the LB namespace.
func filterJumpPackets(t *testing.T, l *lab.Lab, chain string) int64 {
	t.Helper()
	out, err := l.Run(t.Context(), l.LBNS, "iptables-save", "-c", "-t", "filter")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		counters, rule, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(rule, "-A "+chain+" ") || !strings.HasSuffix(rule, " -j "+FilterChain) {
			continue
		}
		var pkts, bytes int64
		if _, err := fmt.Sscanf(counters, "[%d:%d]", &pkts, &bytes); err != nil {
			t.Fatalf("counters of %q: %v", line, err)
		}
		return pkts
	}
	t.Fatalf("filter %s has no jump to %s:\n%s", chain, FilterChain, out)
	return 0
}

func service(name string, port uint16, target uint16, proto lb.Protocol, pods []netip.Addr, vips ...string) lb.Service {
	s := lb.Service{Namespace: "default", Name: name, Type: "LoadBalancer",
		Ports: []lb.Port{{Port: port, Protocol: proto, TargetPort: fmt.Sprint(target)}}}
	for _, v := range vips {
		s.ExternalIPs = append(s.ExternalIPs, netip.MustParseAddr(v))
	}
	for _, p := range pods {
		s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, lb.Endpoint{IP: p, Port: target, Ready: true, Serving: true})
	}
	s.Normalize()
	return s
}

// hits makes n HTTP requests from the client, a new connection each, and
// counts the answers by pod name; failures count under "error: ...". Each
// request runs synchronously on this goroutine and ends within timeout, so
// no dial outlives the call (a background dial would keep a thread in the
// client namespace while the lab is closed).
func hits(t *testing.T, l *lab.Lab, url string, n int, timeout time.Duration) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	got := map[string]int{}
	failed := 0 // in a row; five end the loop, to bound a failing test
	for range n {
		if failed == 5 {
			got["error: gave up after 5 failures in a row"]++
			break
		}
		if ctx.Err() != nil {
			got["error: time bound"]++
			break
		}
		body, err := get(ctx, l, addr, timeout)
		if err != nil {
			got["error: "+errClass(err)]++
			failed++
			continue
		}
		got[body]++
		failed = 0
	}
	return got
}

// get makes one HTTP/1.0 GET to addr from the client namespace.
func get(ctx context.Context, l *lab.Lab, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := l.Dial(ctx, l.ClientNS, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

func errClass(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timeout"
	}
	return err.Error()
}

// udpAsk sends one datagram on c and returns the answer.
func udpAsk(t *testing.T, c net.Conn) (string, error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

func TestLab(t *testing.T) {
	lab.RequireRoot(t)
	hostForward, _ := os.ReadFile(ipForwardPath)
	l := lab.ForTest(t, lab.Options{Name: "nf"})
	ctx := t.Context()
	if err := l.StartPods(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.AddLBAddress("192.168.121.202/24"); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		if _, err := l.Run(ctx, l.LBNS, args[0], args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	// Foreign rules, lbd must never touch them.
	run("iptables", "-t", "nat", "-A", "PREROUTING", "-s", "203.0.113.1/32", "-j", "RETURN")
	run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "203.0.113.1/32", "-j", "RETURN")
	run("iptables", "-t", "filter", "-A", "INPUT", "-s", "203.0.113.1/32", "-j", "DROP")
	run("iptables", "-t", "filter", "-N", "FOREIGN")
	run("iptables", "-t", "filter", "-A", "FOREIGN", "-s", "203.0.113.2/32", "-j", "DROP")
	run("iptables", "-t", "filter", "-A", "FORWARD", "-j", "FOREIGN")
	before := saveNormalized(t, l, l.LBNS)
	foreign := func(t *testing.T) {
		t.Helper()
		s := saveNormalized(t, l, l.LBNS)
		for _, r := range []string{"-A PREROUTING -s 203.0.113.1/32 -j RETURN", "-A POSTROUTING -s 203.0.113.1/32 -j RETURN",
			"-A INPUT -s 203.0.113.1/32 -j DROP", ":FOREIGN - [0:0]", "-A FOREIGN -s 203.0.113.2/32 -j DROP", "-A FORWARD -j FOREIGN"} {
			if !strings.Contains(s, r+"\n") {
				t.Errorf("foreign rule %q is gone", r)
			}
		}
	}

	pods := l.PodIPs
	name := map[netip.Addr]string{}
	for i, ip := range pods {
		name[ip] = l.PodNames[i]
	}
	vip := l.LBExternalIP.String()
	nginx := service("nginx", 80, 80, lb.TCP, pods, vip)
	web := lb.Service{Namespace: "shop", Name: "web", Type: "LoadBalancer", ExternalIPs: []netip.Addr{l.LBExternalIP, netip.MustParseAddr("192.168.121.202")}}
	for _, p := range []uint16{8080, 8443} {
		lp := lb.Port{Name: fmt.Sprint("p", p), Port: p, Protocol: lb.TCP, TargetPort: fmt.Sprint(p)}
		for _, ip := range pods {
			lp.Endpoints = append(lp.Endpoints, lb.Endpoint{IP: ip, Port: p, Ready: true, Serving: true})
		}
		web.Ports = append(web.Ports, lp)
	}
	web.Normalize()
	dns := service("dns", 53, 5353, lb.UDP, pods, vip)
	sticky := service("sticky", 81, 80, lb.TCP, pods, vip)
	sticky.Affinity, sticky.AffinityTimeout = lb.AffinityClientIP, 10*time.Minute
	desired := []lb.Service{dns, nginx, sticky, web}

	// The LBD-FILTER jumps as lbd wrote them before they were limited to
	// new connections: the first sync replaces them.
	run("iptables", "-t", "filter", "-N", FilterChain)
	for _, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		run("iptables", "-t", "filter", "-A", c, "-j", FilterChain)
	}

	b := newLabBackend(t, l.LBNS, DefaultOptions())

	// The first full sync, one chain per restore where restores are
	// batched: after every restore, whatever LBD-SERVICES jumps to must be
	// complete, masquerade included. A connection DNATed earlier keeps a
	// conntrack entry without SNAT, and its replies are lost.
	if b.batchChains > 0 {
		b.batchChains = 1
	}
	realRun := b.run
	var restores int
	var broken []string
	b.run = func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		out, err := realRun(ctx, stdin, name, args...)
		if err != nil || !strings.HasSuffix(name, "-restore") {
			return out, err
		}
		restores++
		saved, serr := exec.CommandContext(ctx, "iptables-save").Output()
		if serr != nil {
			return out, serr
		}
		if why := wayInIncomplete(string(saved)); why != "" {
			broken = append(broken, fmt.Sprintf("after restore %d: %s", restores, why))
		}
		return out, err
	}
	b.apply(desired, changesFor(nil, desired)...)
	b.run = realRun
	if b.batchChains > 0 {
		b.batchChains = nftBatchChains
	}
	t.Run("no way in before masquerade and accept", func(t *testing.T) {
		t.Logf("first full sync: %d restores", restores)
		for _, why := range broken {
			t.Error(why)
		}
	})
	t.Run("forwarding on in the LB only", func(t *testing.T) {
		out, err := l.Run(ctx, l.LBNS, "sysctl", "-n", "net.ipv4.ip_forward")
		if err != nil || strings.TrimSpace(out) != "1" {
			t.Errorf("LB ip_forward = %q, %v; want 1", out, err)
		}
		if now, _ := os.ReadFile(ipForwardPath); string(now) != string(hostForward) {
			t.Errorf("host ip_forward changed from %q to %q", hostForward, now)
		}
	})
	t.Run("verify clean after apply", func(t *testing.T) {
		if d := b.verify(desired); len(d) > 0 {
			t.Errorf("Verify right after Apply found drift:\n%s", strings.Join(d, "\n"))
		}
	})
	t.Run("spread over three pods", func(t *testing.T) {
		got := hits(t, l, "http://"+vip+":80/", 300, 3*time.Second)
		t.Logf("300 requests: %v", got)
		for _, n := range l.PodNames {
			if got[n] < 60 || got[n] > 140 {
				t.Errorf("pod %s got %d of 300 requests, want 60-140 (%v)", n, got[n], got)
			}
		}
	})
	t.Run("filter jumps for new connections only", func(t *testing.T) {
		s := saveNormalized(t, l, l.LBNS)
		for _, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
			if n := strings.Count(s, "-A "+c+" -m conntrack --ctstate NEW -j "+FilterChain+"\n"); n != 1 {
				t.Errorf("filter %s: %d jumps to %s for new connections, want 1", c, n, FilterChain)
			}
			if strings.Contains(s, "-A "+c+" -j "+FilterChain+"\n") {
				t.Errorf("filter %s: the old unconditional jump to %s is still there", c, FilterChain)
			}
		}
	})
	t.Run("established packets skip LBD-FILTER", func(t *testing.T) {
		// The LB's own connections (its SSH to the master, say) pass
		// INPUT and OUTPUT; traffic it routes without DNAT passes
		// FORWARD. Only a connection's first packet may walk
		// LBD-FILTER, whose length grows with the services that have
		// no endpoint or source ranges.
		in0, out0 := filterJumpPackets(t, l, "INPUT"), filterJumpPackets(t, l, "OUTPUT")
		pod := netip.AddrPortFrom(pods[0], 80).String()
		for i := range 10 {
			c, err := l.Dial(ctx, l.LBNS, "tcp", pod)
			if err != nil {
				t.Fatalf("connection %d from the LB to %s: %v", i, pod, err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
			if err == nil {
				_, err = io.ReadAll(c)
			}
			c.Close()
			if err != nil {
				t.Fatalf("connection %d from the LB to %s: %v", i, pod, err)
			}
		}
		in, out := filterJumpPackets(t, l, "INPUT")-in0, filterJumpPackets(t, l, "OUTPUT")-out0
		// 10 SYNs out; the answers (SYN-ACK and on) are established.
		if out != 10 || in != 0 {
			t.Errorf("10 connections from the LB took the jump to %s with %d packets in OUTPUT and %d in INPUT, want 10 and 0 (first packets only)", FilterChain, out, in)
		}
	})
	t.Run("no-change apply runs nothing", func(t *testing.T) {
		b.commands.Store(0)
		before := b.Commands()
		b.apply(desired)
		if n := b.commands.Load(); n != 0 {
			t.Errorf("no-change Apply ran %d commands, want 0", n)
		}
		if n := b.Commands() - before; n != 0 {
			t.Errorf("Commands() grew by %d on a no-change Apply, want 0", n)
		}
	})
	t.Run("two ports, two addresses", func(t *testing.T) {
		for _, a := range []string{vip, "192.168.121.202"} {
			for _, p := range []int{8080, 8443} {
				got := hits(t, l, fmt.Sprintf("http://%s:%d/", a, p), 15, 3*time.Second)
				ok := 0
				for _, n := range l.PodNames {
					ok += got[n]
				}
				if ok != 15 {
					t.Errorf("%s:%d: %v, want 15 pod answers", a, p, got)
				}
			}
		}
	})
	t.Run("udp", func(t *testing.T) {
		seen := map[string]int{}
		for range 30 {
			c, err := l.Dial(ctx, l.ClientNS, "udp", vip+":53")
			if err != nil {
				t.Fatal(err)
			}
			got, err := udpAsk(t, c)
			c.Close()
			if err != nil {
				t.Fatalf("udp ask: %v", err)
			}
			seen[got]++
		}
		if len(seen) < 2 {
			t.Errorf("30 UDP flows reached %v, want more than one pod", seen)
		}
	})
	t.Run("client ip affinity", func(t *testing.T) {
		got := hits(t, l, "http://"+vip+":81/", 30, 3*time.Second)
		if len(got) != 1 {
			t.Errorf("ClientIP affinity: 30 requests spread over %v, want one pod", got)
		}
	})
	t.Run("endpoint removed", func(t *testing.T) {
		// An existing UDP flow: fixed source port, conntrack entry.
		c, err := l.Dial(ctx, l.ClientNS, "udp", vip+":53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		first, err := udpAsk(t, c)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := udpAsk(t, c); again != first {
			t.Fatalf("one UDP flow answered by %s then %s", first, again)
		}
		var gonePod netip.Addr
		for ip, n := range name {
			if n == first {
				gonePod = ip
			}
		}
		var live []netip.Addr
		for _, p := range pods {
			if p != gonePod {
				live = append(live, p)
			}
		}
		old := desired
		desired = []lb.Service{service("dns", 53, 5353, lb.UDP, live, vip), service("nginx", 80, 80, lb.TCP, live, vip), sticky, web}
		b.apply(desired, lb.Change{Kind: lb.Update, Old: &old[0], New: &desired[0]}, lb.Change{Kind: lb.Update, Old: &old[1], New: &desired[1]})
		got, err := udpAsk(t, c)
		if err != nil || got == first {
			t.Errorf("existing UDP flow after %s left: answered by %q (%v), want a live pod", first, got, err)
		}
		web := hits(t, l, "http://"+vip+":80/", 100, 3*time.Second)
		if web[first] != 0 || web[name[live[0]]]+web[name[live[1]]] != 100 {
			t.Errorf("after removing %s: %v, want all on live pods", first, web)
		}
		if d := b.verify(desired); len(d) > 0 {
			t.Errorf("Verify after a partial sync:\n%s", strings.Join(d, "\n"))
		}
	})
	t.Run("service deleted", func(t *testing.T) {
		old := desired
		desired = []lb.Service{old[0], old[1], old[3]}
		b.commands.Store(0)
		b.apply(desired, lb.Change{Kind: lb.Delete, Old: &old[2]})
		if n := b.commands.Load(); n != 1 {
			t.Errorf("deleting one service ran %d commands, want 1 restore", n)
		}
		got := hits(t, l, "http://"+vip+":81/", 5, time.Second)
		for _, n := range l.PodNames {
			if got[n] > 0 {
				t.Errorf("deleted service still forwarded: %v", got)
			}
		}
	})
	t.Run("zero endpoints refused at once", func(t *testing.T) {
		old := desired
		none := service("nginx", 80, 80, lb.TCP, nil, vip)
		noneUDP := service("dns", 53, 5353, lb.UDP, nil, vip)
		desired = []lb.Service{noneUDP, none, old[2]}
		b.apply(desired, lb.Change{Kind: lb.Update, Old: &old[0], New: &desired[0]}, lb.Change{Kind: lb.Update, Old: &old[1], New: &desired[1]})
		start := time.Now()
		_, err := l.Dial(ctx, l.ClientNS, "tcp", vip+":80")
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("TCP to a service without endpoints: %v after %s, want connection refused at once", err, time.Since(start))
		}
		c, err := l.Dial(ctx, l.ClientNS, "udp", vip+":53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start = time.Now()
		_, err = udpAsk(t, c)
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("UDP to a service without endpoints: %v after %s, want ICMP port unreachable at once", err, time.Since(start))
		}
		// The LB's own stack would refuse too; the counters show that
		// lbd's REJECT rules did it.
		out, _ := l.Run(ctx, l.LBNS, "iptables", "-t", "filter", "-L", FilterChain, "-n", "-v", "-x")
		for _, match := range []string{"tcp dpt:80", "udp dpt:53"} {
			if !regexp.MustCompile(`(?m)^\s*[1-9]\d*\s+\d+\s+REJECT\s.*` + match).MatchString(out) {
				t.Errorf("no packet hit the REJECT rule for %s:\n%s", match, out)
			}
		}
		old = desired
		desired = []lb.Service{service("dns", 53, 5353, lb.UDP, pods, vip), nginx, web}
		b.apply(desired, lb.Change{Kind: lb.Update, Old: &old[0], New: &desired[0]}, lb.Change{Kind: lb.Update, Old: &old[1], New: &desired[1]})
		if got := hits(t, l, "http://"+vip+":80/", 30, 3*time.Second); len(got) != 3 {
			t.Errorf("endpoints back: %v, want three pods", got)
		}
	})
	t.Run("drift repaired", func(t *testing.T) {
		chain := ServicePortChain("default/nginx:80/TCP")
		run("iptables", "-t", "nat", "-F", chain)
		run("iptables", "-t", "nat", "-D", "PREROUTING", "-j", ServicesChain)
		diffs := b.verify(desired)
		want := []string{
			"nat chain " + chain + " (default/nginx:80/TCP): has 0 rules, want 4 (missing \"-A " + chain + " -j MARK --set-xmark 0x2000/0x2000\")",
			"nat PREROUTING: jump to LBD-SERVICES is missing",
		}
		if d := cmp.Diff(want, diffs); d != "" {
			t.Errorf("Verify (-want +got):\n%s", d)
		}
		b.apply(desired, changesFor(desired, desired)...)
		if d := b.verify(desired); len(d) > 0 {
			t.Errorf("Verify after repair:\n%s", strings.Join(d, "\n"))
		}
		if got := hits(t, l, "http://"+vip+":80/", 30, 3*time.Second); len(got) != 3 {
			t.Errorf("after repair: %v, want three pods", got)
		}
	})
	t.Run("foreign rules survive syncs", foreign)
	t.Run("forward policy drop", func(t *testing.T) {
		// Docker leaves FORWARD with a policy of DROP: lbd's own traffic
		// must flow anyway, both ways, TCP and UDP.
		policy := func(p string) error {
			_, err := l.Run(context.Background(), l.LBNS, "iptables", "-P", "FORWARD", p)
			return err
		}
		if err := policy("DROP"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { policy("ACCEPT") })
		got := hits(t, l, "http://"+vip+":80/", 30, 3*time.Second)
		if sum := got["pod0"] + got["pod1"] + got["pod2"]; sum != 30 {
			t.Errorf("30 requests with FORWARD policy DROP: %v", got)
		}
		c, err := l.Dial(ctx, l.ClientNS, "udp", vip+":53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, err := udpAsk(t, c); err != nil || !strings.HasPrefix(got, "pod") {
			t.Errorf("UDP with FORWARD policy DROP: %q, %v", got, err)
		}
	})
	t.Run("masquerade matters", func(t *testing.T) {
		b.cleanup()
		nm := newLabBackend(t, l.LBNS, Options{MasqueradeBit: DefaultMasqueradeBit, Masquerade: false, PodInterface: "flannel0"})
		nm.apply(desired, changesFor(nil, desired)...)
		got := hits(t, l, "http://"+vip+":80/", 5, time.Second)
		timeouts := 0 // a dial or a read timing out: no answer either way
		for k, n := range got {
			if strings.HasPrefix(k, "error: ") && strings.Contains(k, "timeout") {
				timeouts += n
			}
		}
		if timeouts != 5 {
			t.Errorf("without masquerade: %v, want 5 timeouts (pods have no route back to the client)", got)
		}
		nm.cleanup()
		b.apply(desired, changesFor(nil, desired)...)
		if got := hits(t, l, "http://"+vip+":80/", 30, 3*time.Second); len(got) != 3 {
			t.Errorf("masquerade back on: %v, want three pods", got)
		}
	})
	t.Run("cleanup restores iptables-save", func(t *testing.T) {
		b.cleanup()
		if d := cmp.Diff(before, saveNormalized(t, l, l.LBNS)); d != "" {
			t.Errorf("iptables-save after Cleanup (-before +after):\n%s", d)
		}
		foreign(t)
	})
}

// wayInIncomplete checks an iptables-save of the nat and filter tables:
// when anything jumps from LBD-SERVICES to a service-port chain, that
// chain must DNAT, POSTROUTING must lead to a masquerade and FORWARD to
// LBD-FORWARD's accept. It says what is missing, or returns "".
func wayInIncomplete(saved string) string {
	rules := map[string][]string{} // chain names are unique across nat and filter here
	for _, line := range strings.Split(saved, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "-A" {
			rules[f[1]] = append(rules[f[1]], line)
		}
	}
	jumps := 0
	// LBD-SERVICES jumps to network chains, which jump to the
	// service-port chains.
	var ways []string
	for _, r := range rules[ServicesChain] {
		if f := strings.Fields(r); strings.HasPrefix(f[len(f)-1], NetChainPrefix) {
			ways = append(ways, rules[f[len(f)-1]]...)
		}
	}
	for _, r := range ways {
		f := strings.Fields(r)
		target := f[len(f)-1]
		if !strings.HasPrefix(target, "LBD-") {
			continue
		}
		jumps++
		if !slices.ContainsFunc(rules[target], func(r string) bool { return strings.Contains(r, "-j DNAT") }) {
			return fmt.Sprintf("LBD-SERVICES jumps to %s, which has no DNAT yet", target)
		}
	}
	if jumps == 0 {
		return ""
	}
	if !slices.Contains(rules["POSTROUTING"], "-A POSTROUTING -j "+PostroutingChain) {
		return "LBD-SERVICES leads to DNATs, and POSTROUTING does not jump to " + PostroutingChain + " yet"
	}
	if !slices.ContainsFunc(rules[PostroutingChain], func(r string) bool { return strings.Contains(r, "-j MASQUERADE") || strings.Contains(r, "-j SNAT") }) {
		return "LBD-SERVICES leads to DNATs, and " + PostroutingChain + " does not masquerade yet"
	}
	if !slices.Contains(rules["FORWARD"], "-A FORWARD -j "+ForwardChain) {
		return "LBD-SERVICES leads to DNATs, and FORWARD does not jump to " + ForwardChain + " yet"
	}
	if len(rules[ForwardChain]) == 0 {
		return "LBD-SERVICES leads to DNATs, and " + ForwardChain + " accepts nothing yet"
	}
	return ""
}
