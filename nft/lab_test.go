package nft

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

// get makes one HTTP/1.0 GET to addr from the client namespace, from
// source address src when valid, and returns the body.
func get(ctx context.Context, l *lab.Lab, src netip.Addr, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var c net.Conn
	err := lab.InNS(l.ClientNS, func() error {
		d := net.Dialer{}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)) + "|" + resp.Header.Get("X-Remote-Addr"), err
}

// hits makes n requests and counts answers by pod; failures count under
// "error: ...". Five failures in a row end it.
func hits(t *testing.T, l *lab.Lab, src netip.Addr, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	failed := 0
	for range n {
		if failed == 5 {
			break
		}
		body, err := get(t.Context(), l, src, addr)
		if err != nil {
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				got["error: refused"]++
			case os.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded):
				got["error: timeout"]++
			default:
				got["error: "+err.Error()]++
			}
			failed++
			continue
		}
		pod, _, _ := strings.Cut(body, "|")
		got[pod]++
		failed = 0
	}
	return got
}

func udpAsk(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

func TestLab(t *testing.T) {
	testkit.RequireRoot(t)
	sweepOnce(t)
	l := lab.ForTest(t, lab.Options{Name: fmt.Sprintf("%s%d", labPrefix, os.Getpid())})
	ctx := t.Context()
	if err := l.StartPods(ctx); err != nil {
		t.Fatal(err)
	}
	run := func(ns string, args ...string) string {
		t.Helper()
		out, err := l.Run(ctx, ns, args[0], args[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// A foreign table lbd must never touch, and a second client address
	// outside the source range.
	run(l.LBNS, "nft", "add table inet foreign; add chain inet foreign c { type filter hook input priority 10; }; add rule inet foreign c ip saddr 203.0.113.1 counter drop")
	foreign := run(l.LBNS, "nft", "list", "table", "inet", "foreign")
	outsider := netip.MustParseAddr("192.168.121.99")
	run(l.ClientNS, "ip", "addr", "add", outsider.String()+"/24", "dev", "eth0")

	pods := l.PodIPs
	vip := l.LBExternalIP.String()
	web := svc("web", 80, 80, lb.TCP, pods, vip)
	dns := svc("dns", 53, 5353, lb.UDP, pods, vip)
	sticky := svc("sticky", 81, 80, lb.TCP, pods, vip)
	sticky.Affinity, sticky.AffinityTimeout = lb.AffinityClientIP, 10*time.Minute
	ranged := svc("ranged", 82, 80, lb.TCP, pods, vip)
	ranged.SourceRanges = []netip.Prefix{netip.PrefixFrom(l.ClientIP, 32)}
	desired := []lb.Service{dns, ranged, sticky, web}

	b := nsBackend(t, l.LBNS, DefaultOptions())
	apply := func(changes ...lb.Change) {
		t.Helper()
		err := lab.InNS(l.LBNS, func() error {
			sk, err := b.Apply(ctx, desired, changes)
			if len(sk) > 0 {
				return fmt.Errorf("skipped %v", sk)
			}
			return err
		})
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	verify := func() []string {
		t.Helper()
		var d []string
		if err := lab.InNS(l.LBNS, func() (err error) { d, err = b.Verify(ctx, desired); return err }); err != nil {
			t.Fatal(err)
		}
		return d
	}
	apply(creates(desired)...)
	none := netip.Addr{}
	web80 := vip + ":80"

	t.Run("verify clean after apply", func(t *testing.T) {
		if d := verify(); len(d) > 0 {
			t.Errorf("drift right after Apply:\n%s", strings.Join(d, "\n"))
		}
	})
	t.Run("explain reads the spread from the endpoints map", func(t *testing.T) {
		explain := func(s lb.Service) lb.Explanation {
			t.Helper()
			var e lb.Explanation
			if err := lab.InNS(l.LBNS, func() (err error) { e, err = b.Explain(ctx, &s, s.Ports[0], l.LBExternalIP); return err }); err != nil {
				t.Fatal(err)
			}
			return e
		}
		for _, s := range []lb.Service{web, ranged} {
			e := explain(s)
			if !e.Matches() || len(e.Have.Endpoints) != 3 || len(e.Want.Endpoints) != 3 {
				t.Errorf("explain %s: diff %q, have %+v, want %+v", s.Key(), e.Diff(), e.Have, e.Want)
			}
		}
		if e := explain(ranged); !slices.Equal(e.Have.SourceRanges, ranged.SourceRanges) {
			t.Errorf("explain ranged: source ranges %v, want %v", e.Have.SourceRanges, ranged.SourceRanges)
		}
		// One index of web's spread without its endpoint: a third of
		// new connections would find nothing.
		var ep Element
		for _, e := range Render(desired, b.opts).Elements {
			if e.endpoint() && e.Port == 80 && e.Index == 2 {
				ep = e
			}
		}
		key, _, _ := strings.Cut(ep.text(), " : ")
		run(l.LBNS, "nft", "delete element inet lbd "+ep.Set+" { "+key+" }")
		e := explain(web)
		if d := strings.Join(e.Diff(), "\n"); e.Matches() || !strings.Contains(d, "lacks element "+ep.text()) || !strings.Contains(d, "is not programmed") {
			t.Errorf("explain with an endpoint element deleted: %s", d)
		}
		apply()
		if d := verify(); len(d) != 1 || !strings.Contains(d[0], "lacks element "+ep.text()) {
			t.Fatalf("Verify = %q, want the missing element", d)
		}
		apply() // the full sync after drift
		if e := explain(web); !e.Matches() {
			t.Errorf("explain after repair: %q", e.Diff())
		}
	})
	t.Run("one rule dump reads what GetRules reads chain by chain", func(t *testing.T) {
		err := lab.InNS(l.LBNS, func() error {
			all, err := b.ruleIDs(b.opts.Table)
			if err != nil {
				return err
			}
			c, err := b.dialRead()
			if err != nil {
				return err
			}
			chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
			if err != nil {
				return err
			}
			n := 0
			for _, ch := range chains {
				if ch.Table.Name != b.opts.Table {
					continue
				}
				rules, err := c.GetRules(b.table, ch)
				if err != nil {
					return err
				}
				var want []string
				for _, r := range rules {
					id, _ := userdata.GetString(r.UserData, userdata.TypeComment)
					want = append(want, id)
				}
				n += len(want)
				if d := cmp.Diff(want, all[ch.Name]); d != "" {
					t.Errorf("chain %s (-GetRules +dump):\n%s", ch.Name, d)
				}
			}
			if n == 0 {
				t.Errorf("no rules read")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("spread over three pods, masqueraded", func(t *testing.T) {
		got := hits(t, l, none, web80, 300)
		for _, n := range l.PodNames {
			if got[n] < 60 || got[n] > 140 {
				t.Errorf("pod %s got %d of 300, want 60-140 (%v)", n, got[n], got)
			}
		}
		body, err := get(ctx, l, none, web80)
		if _, from, _ := strings.Cut(body, "|"); err != nil || !strings.HasPrefix(from, "10.246.90.0:") {
			t.Errorf("pod saw the client as %q (%v), want the LB's pod-network address 10.246.90.0", body, err)
		}
	})
	t.Run("udp", func(t *testing.T) {
		seen := map[string]int{}
		for range 30 {
			c, err := l.Dial(ctx, l.ClientNS, "udp", vip+":53")
			if err != nil {
				t.Fatal(err)
			}
			got, err := udpAsk(c)
			c.Close()
			if err != nil {
				t.Fatalf("udp: %v", err)
			}
			seen[got]++
		}
		if len(seen) < 2 {
			t.Errorf("30 UDP flows reached %v, want more than one pod", seen)
		}
	})
	t.Run("client ip affinity", func(t *testing.T) {
		if got := hits(t, l, none, vip+":81", 30); len(got) != 1 {
			t.Errorf("30 requests spread over %v, want one pod", got)
		}
	})
	t.Run("source ranges", func(t *testing.T) {
		if got := hits(t, l, l.ClientIP, vip+":82", 10); got["error: refused"]+got["error: timeout"] > 0 {
			t.Errorf("client inside the range: %v", got)
		}
		got := hits(t, l, outsider, vip+":82", 2)
		if got["error: timeout"] != 2 {
			t.Errorf("client outside the range: %v, want 2 timeouts (dropped)", got)
		}
		if got := hits(t, l, outsider, web80, 3); got["error: timeout"]+got["error: refused"] > 0 {
			t.Errorf("the outsider reaches a service without ranges: %v", got)
		}
	})
	t.Run("no-change apply makes no call", func(t *testing.T) {
		before := b.Calls()
		apply()
		if n := b.Calls() - before; n != 0 {
			t.Errorf("no-change Apply made %d netlink calls, want 0", n)
		}
	})
	t.Run("endpoint removed: map elements only, UDP conntrack cleared", func(t *testing.T) {
		c, err := l.Dial(ctx, l.ClientNS, "udp", vip+":53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		first, err := udpAsk(c)
		if err != nil {
			t.Fatal(err)
		}
		var gone netip.Addr
		var live []netip.Addr
		for i, ip := range pods {
			if l.PodNames[i] == first {
				gone = ip
			} else {
				live = append(live, ip)
			}
		}
		// web, ranged and dns spread over three pods; dns leaves for the
		// spread chain of two, which appears, and no chain is rewritten.
		webChain := SpreadChain("default/web:80/TCP", 3, false)
		handles := regexp.MustCompile(`# handle \d+`)
		webBefore := handles.FindAllString(run(l.LBNS, "nft", "-a", "list", "chain", "inet", "lbd", webChain), -1)
		old := desired
		desired = []lb.Service{svc("dns", 53, 5353, lb.UDP, live, vip), ranged, sticky, web}
		before := b.Calls()
		apply(lb.Change{Kind: lb.Update, Old: &old[0], New: &desired[0]})
		if n := b.Calls() - before; n != 1 {
			t.Errorf("one-service change made %d netlink calls, want 1 batch", n)
		}
		if after := handles.FindAllString(run(l.LBNS, "nft", "-a", "list", "chain", "inet", "lbd", webChain), -1); strings.Join(after, ",") != strings.Join(webBefore, ",") {
			t.Errorf("web's chain was rewritten by a change of dns: handles %v -> %v", webBefore, after)
		}
		if out := run(l.LBNS, "nft", "list", "chain", "inet", "lbd", SpreadChain("default/dns:53/UDP", 2, false)); !strings.Contains(out, "numgen random mod 2") {
			t.Errorf("spread chain of two endpoints:\n%s", out)
		}
		if got, err := udpAsk(c); err != nil || got == first {
			t.Errorf("existing UDP flow after %s (%s) left: answered by %q (%v), want a live pod", first, gone, got, err)
		}
		if d := verify(); len(d) > 0 {
			t.Errorf("Verify after a partial sync:\n%s", strings.Join(d, "\n"))
		}
	})
	t.Run("zero endpoints refused at once", func(t *testing.T) {
		old := desired
		desired = []lb.Service{svc("dns", 53, 5353, lb.UDP, nil, vip), ranged, sticky, svc("web", 80, 80, lb.TCP, nil, vip)}
		apply(lb.Change{Kind: lb.Update, Old: &old[0], New: &desired[0]}, lb.Change{Kind: lb.Update, Old: &old[3], New: &desired[3]})
		start := time.Now()
		_, err := l.Dial(ctx, l.ClientNS, "tcp", web80)
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("TCP without endpoints: %v, want refused at once", err)
		}
		c, err := l.Dial(ctx, l.ClientNS, "udp", vip+":53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := udpAsk(c); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("UDP without endpoints: %v, want ICMP port unreachable", err)
		}
		if out := run(l.LBNS, "nft", "list", "set", "inet", "lbd", NoEndpointsSet4); !strings.Contains(out, vip+" . tcp . 80") {
			t.Errorf("noendpoints4 lacks web:\n%s", out)
		}
		// dns was the last port of two endpoints: its spread chain and
		// map went with it.
		if out := run(l.LBNS, "nft", "list", "table", "inet", "lbd"); strings.Contains(out, SpreadChain("default/dns:53/UDP", 2, false)) || strings.Contains(out, EndpointsMap("default/dns:53/UDP", 2, false)) {
			t.Errorf("the spread chain of two endpoints outlived its last port:\n%s", out)
		}
		if d := verify(); len(d) > 0 {
			t.Errorf("Verify after the spread chain went:\n%s", strings.Join(d, "\n"))
		}
		old = desired
		desired = []lb.Service{dns, ranged, sticky, web}
		apply(lb.Change{Kind: lb.Update, Old: &old[0], New: &desired[0]}, lb.Change{Kind: lb.Update, Old: &old[3], New: &desired[3]})
		if got := hits(t, l, none, web80, 30); len(got) != 3 {
			t.Errorf("endpoints back: %v, want three pods", got)
		}
	})
	t.Run("drift repaired", func(t *testing.T) {
		chain := SpreadChain("default/web:80/TCP", 3, false)
		run(l.LBNS, "nft", "flush", "chain", "inet", "lbd", chain)
		d := verify()
		want := "table inet lbd: chain " + chain + " has 0 rules, want 1 (missing \"meta mark set meta mark | 0x00002000 dnat ip to "
		if len(d) != 1 || !strings.HasPrefix(d[0], want) {
			t.Errorf("Verify = %q, want [%q...]", d, want)
		}
		apply() // the reconciler's full sync after drift, here with no change
		if d := verify(); len(d) > 0 {
			t.Errorf("Verify after repair:\n%s", strings.Join(d, "\n"))
		}
		if got := hits(t, l, none, web80, 30); len(got) != 3 {
			t.Errorf("after repair: %v, want three pods", got)
		}
	})
	t.Run("endpoint and verdict drift repaired", func(t *testing.T) {
		webChain := ServicePortChain("default/sticky:81/TCP", false)
		var ep, dispatch Element
		for _, e := range Render(desired, b.opts).Elements {
			switch {
			case e.endpoint() && e.Proto == lb.TCP && e.Port == 80 && e.Index == 0:
				ep = e
			case e.Set == ServicesMap4 && e.Proto == lb.UDP:
				dispatch = e
			}
		}
		key, _, _ := strings.Cut(ep.text(), " : ")
		run(l.LBNS, "nft", "delete element inet lbd "+ep.Set+" { "+key+" }; add element inet lbd "+ep.Set+" { "+key+" : 10.246.99.99 . 80 }")
		key, _, _ = strings.Cut(dispatch.text(), " : ")
		run(l.LBNS, "nft", "delete element inet lbd "+ServicesMap4+" { "+key+" }; add element inet lbd "+ServicesMap4+" { "+key+" : goto "+webChain+" }")
		d := verify()
		if len(d) != 2 || !strings.Contains(d[0], ep.text()+" maps to") && !strings.Contains(d[1], ep.text()+" maps to") ||
			!strings.Contains(d[0], dispatch.text()+" goes to \""+webChain) && !strings.Contains(d[1], dispatch.text()+" goes to \""+webChain) {
			t.Errorf("Verify = %q, want the endpoint %s and the verdict of %s", d, ep.text(), dispatch.text())
		}
		apply()
		if d := verify(); len(d) > 0 {
			t.Errorf("Verify after repair:\n%s", strings.Join(d, "\n"))
		}
		if got := hits(t, l, none, web80, 30); len(got) != 3 {
			t.Errorf("after repair: %v, want three pods", got)
		}
	})
	t.Run("masquerade off: pods cannot answer", func(t *testing.T) {
		if err := lab.InNS(l.LBNS, func() error { return b.Cleanup(ctx) }); err != nil {
			t.Fatal(err)
		}
		o := DefaultOptions()
		o.Masquerade = false
		nm := nsBackend(t, l.LBNS, o)
		if err := lab.InNS(l.LBNS, func() error { _, err := nm.Apply(ctx, desired, creates(desired)); return err }); err != nil {
			t.Fatal(err)
		}
		if got := hits(t, l, none, web80, 3); got["error: timeout"] != 3 {
			t.Errorf("without masquerade: %v, want 3 timeouts", got)
		}
		if err := lab.InNS(l.LBNS, func() error { return nm.Cleanup(ctx) }); err != nil {
			t.Fatal(err)
		}
		apply(creates(desired)...)
		if got := hits(t, l, none, web80, 30); len(got) != 3 {
			t.Errorf("masquerade back: %v", got)
		}
	})
	t.Run("cleanup deletes only lbd's table", func(t *testing.T) {
		if err := lab.InNS(l.LBNS, func() error { return b.Cleanup(ctx) }); err != nil {
			t.Fatal(err)
		}
		if err := lab.InNS(l.LBNS, func() error { return b.Cleanup(ctx) }); err != nil {
			t.Fatalf("second Cleanup: %v", err)
		}
		out := run(l.LBNS, "nft", "list", "tables")
		if strings.Contains(out, "inet lbd") {
			t.Errorf("table lbd still there:\n%s", out)
		}
		if now := run(l.LBNS, "nft", "list", "table", "inet", "foreign"); now != foreign {
			t.Errorf("foreign table changed:\n%s\nwas:\n%s", now, foreign)
		}
	})
}

// A partial sync that would overflow a set fails whole in the kernel,
// and Apply rewrites the table with sets sized anew: nothing is lost,
// and the next partial syncs fit.
func TestSetFullFallsBackToFullSync(t *testing.T) {
	ns := newNetns(t)
	b := nsBackend(t, ns, DefaultOptions())
	ctx := t.Context()
	// One port's elements all go to one map: 600 addresses of two
	// endpoints are 1,200 elements for a map of 1,024.
	pods := []netip.Addr{netip.MustParseAddr("10.246.0.1"), netip.MustParseAddr("10.246.0.2")}
	first := []lb.Service{svc("many", 80, 8080, lb.TCP, pods, "198.18.0.1")}
	if err := lab.InNS(ns, func() error { _, err := b.Apply(ctx, first, creates(first)); return err }); err != nil {
		t.Fatal(err)
	}
	var vips []string
	for i := range 600 {
		vips = append(vips, netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i + 1)}).String())
	}
	all := []lb.Service{svc("many", 80, 8080, lb.TCP, pods, vips...)}
	epMap := EndpointsMap("default/many:80/TCP", 2, false)
	before := b.Calls()
	if err := lab.InNS(ns, func() error {
		_, err := b.Apply(ctx, all, []lb.Change{{Kind: lb.Update, Old: &first[0], New: &all[0]}})
		return err
	}); err != nil {
		t.Fatalf("Apply past a set's size: %v", err)
	}
	if n := b.Calls() - before; n != 2 {
		t.Errorf("%d netlink calls, want 2 (the partial sync the kernel refused, then the full sync)", n)
	}
	var d []string
	var size uint32
	err := lab.InNS(ns, func() error {
		var err error
		if d, err = b.Verify(ctx, all); err != nil {
			return err
		}
		c, err := b.dialRead()
		if err != nil {
			return err
		}
		sets, err := c.GetSets(b.table)
		for _, s := range sets {
			if s.Name == epMap {
				size = s.Size
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(d) > 0 {
		t.Errorf("Verify after the fallback:\n%s", strings.Join(d, "\n"))
	}
	if size != 4096 {
		t.Errorf("%s has size %d, want 4096 (room for twice its 1,200 elements)", epMap, size)
	}
}
