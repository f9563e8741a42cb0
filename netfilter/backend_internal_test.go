package netfilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/lbd/lbd/lb"
)

// fakeIPT records go-iptables calls against an in-memory rule list.
type fakeIPT struct {
	rules map[string]bool
	calls []string
}

func (f *fakeIPT) key(table, chain string, spec []string) string {
	return table + " " + chain + " " + strings.Join(spec, " ")
}

func (f *fakeIPT) Exists(table, chain string, spec ...string) (bool, error) {
	f.calls = append(f.calls, "exists "+f.key(table, chain, spec))
	return f.rules[f.key(table, chain, spec)], nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	f.calls = append(f.calls, "insert "+f.key(table, chain, spec))
	f.rules[f.key(table, chain, spec)] = true
	return nil
}

func (f *fakeIPT) DeleteIfExists(table, chain string, spec ...string) error {
	f.calls = append(f.calls, "delete "+f.key(table, chain, spec))
	delete(f.rules, f.key(table, chain, spec))
	return nil
}

// fakeRun records commands; save returns saveOut, restore fails with
// restoreErr (once) when set.
type fakeRun struct {
	calls      []string
	payloads   []string
	saveOut    string
	restoreErr error
}

func (f *fakeRun) run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, strings.Join(append([]string{name}, args...), " "))
	if strings.HasSuffix(name, "-restore") {
		f.payloads = append(f.payloads, string(stdin))
		if err := f.restoreErr; err != nil {
			f.restoreErr = nil
			return nil, err
		}
	}
	if strings.HasSuffix(name, "-save") {
		return []byte(f.saveOut), nil
	}
	return nil, nil
}

type fakes struct {
	run     *fakeRun
	ipt     *fakeIPT
	sysctl  map[string]string
	deleted []string
}

func newTestBackend(t testing.TB, opts Options) (*Backend, *fakes) {
	t.Helper()
	f := &fakes{run: &fakeRun{}, ipt: &fakeIPT{rules: map[string]bool{}}, sysctl: map[string]string{
		ipForwardPath: "0\n", "/proc/sys/net/ipv4/conf/all/rp_filter": "1\n", "/proc/sys/net/ipv4/conf/flannel0/rp_filter": "0\n",
	}}
	b := &Backend{
		opts: opts,
		log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		run:  f.run.run,
		ipt:  f.ipt,
		writeFile: func(p string, d []byte) error {
			f.sysctl[p] = string(d)
			return nil
		},
		readFile: func(p string) ([]byte, error) {
			v, ok := f.sysctl[p]
			if !ok {
				return nil, errors.New("no such file")
			}
			return []byte(v), nil
		},
		deleteConntrack: func(cf *netlink.ConntrackFilter) (uint, error) {
			f.deleted = append(f.deleted, describeFilter(cf))
			return 1, nil
		},
		applied: map[string]*lb.Service{},
	}
	return b, f
}

// describeFilter says which (vip, port, endpoint) a filter matches by
// probing it with flows.
func describeFilter(cf *netlink.ConntrackFilter) string {
	var hits []string
	for _, vip := range []string{"192.168.121.201", "192.168.121.202"} {
		for _, epIP := range []string{"10.246.82.2", "10.246.82.6", "10.246.92.8"} {
			for _, port := range []uint16{53, 80} {
				fl := &netlink.ConntrackFlow{}
				fl.Forward.Protocol = 17
				fl.Forward.DstIP = net.ParseIP(vip)
				fl.Forward.DstPort = port
				fl.Reverse.SrcIP = net.ParseIP(epIP)
				if cf.MatchConntrackFlow(fl) {
					hits = append(hits, fmt.Sprintf("%s:%d->%s", vip, port, epIP))
				}
			}
		}
	}
	return strings.Join(hits, ",")
}

func svc(name string, proto lb.Protocol, port uint16, eps ...string) lb.Service {
	s := lb.Service{Namespace: "default", Name: name, Type: "LoadBalancer",
		ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.201")},
		Ports:       []lb.Port{{Port: port, Protocol: proto, TargetPort: "80"}}}
	for _, e := range eps {
		s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, lb.Endpoint{IP: netip.MustParseAddr(e), Port: port, Ready: true, Serving: true})
	}
	s.Normalize()
	return s
}

func TestApplyFullThenPartial(t *testing.T) {
	ctx := context.Background()
	b, f := newTestBackend(t, DefaultOptions())
	a := svc("a", lb.TCP, 80, "10.246.82.2", "10.246.82.6")
	c := svc("c", lb.UDP, 53, "10.246.82.2", "10.246.82.6")
	desired := []lb.Service{a, c}
	f.run.saveOut = "*nat\n:PREROUTING ACCEPT [0:0]\n:LBD-STALE - [0:0]\n-A PREROUTING -j DNAT --to-destination 1.2.3.4\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
	skipped, err := b.Apply(ctx, desired, []lb.Change{{Kind: lb.Create, New: &a}, {Kind: lb.Create, New: &c}})
	if err != nil || skipped != nil {
		t.Fatalf("first Apply: skipped %v, err %v", skipped, err)
	}
	// save, create the jumps' target chains, then the full payload.
	if d := cmp.Diff([]string{"iptables-save", "iptables-restore --noflush -w", "iptables-restore --noflush -w"}, f.run.calls); d != "" {
		t.Errorf("first Apply commands (-want +got):\n%s", d)
	}
	if d := cmp.Diff("*nat\n:LBD-SERVICES - [0:0]\n:LBD-POSTROUTING - [0:0]\nCOMMIT\n*filter\n:LBD-FILTER - [0:0]\n:LBD-FORWARD - [0:0]\nCOMMIT\n", f.run.payloads[0]); d != "" {
		t.Errorf("chains for the jumps (-want +got):\n%s", d)
	}
	full := f.run.payloads[1]
	for _, want := range []string{":LBD-SERVICES - [0:0]", ":LBD-STALE - [0:0]", "-X LBD-STALE", ":LBD-FILTER - [0:0]"} {
		if !strings.Contains(full, want) {
			t.Errorf("full payload lacks %q:\n%s", want, full)
		}
	}
	if strings.Contains(full, "PREROUTING") {
		t.Errorf("full payload touches a built-in chain:\n%s", full)
	}
	if got := len(f.ipt.rules); got != len(jumps) {
		t.Errorf("%d jumps ensured, want %d: %v", got, len(jumps), f.ipt.calls)
	}
	if d := cmp.Diff("1", f.sysctl[ipForwardPath]); d != "" {
		t.Errorf("ip_forward (-want +got):\n%s", d)
	}

	// No change: no command at all.
	f.run.calls, f.ipt.calls = nil, nil
	if _, err := b.Apply(ctx, desired, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.run.calls)+len(f.ipt.calls) != 0 {
		t.Errorf("no-change Apply ran %v %v, want nothing", f.run.calls, f.ipt.calls)
	}

	// One endpoint of the UDP service goes: only its chain is rewritten,
	// the shared chains are not redeclared, and its conntrack goes.
	c2 := svc("c", lb.UDP, 53, "10.246.82.2")
	desired = []lb.Service{a, c2}
	f.run.calls, f.run.payloads = nil, nil
	if _, err := b.Apply(ctx, desired, []lb.Change{{Kind: lb.Update, Old: &c, New: &c2}}); err != nil {
		t.Fatal(err)
	}
	cc := ServicePortChain("default/c:53/UDP")
	want := "*nat\n:" + cc + " - [0:0]\n" +
		"-A " + cc + " -j MARK --set-xmark 0x2000/0x2000\n" +
		"-A " + cc + " -p udp -j DNAT --to-destination 10.246.82.2:53\nCOMMIT\n"
	if d := cmp.Diff([]string{want}, f.run.payloads); d != "" {
		t.Errorf("endpoint change payload (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"192.168.121.201:53->10.246.82.6"}, f.deleted); d != "" {
		t.Errorf("conntrack deletions (-want +got):\n%s", d)
	}
	if len(f.ipt.calls) != 0 {
		t.Errorf("partial sync called go-iptables: %v", f.ipt.calls)
	}

	// Delete a: its jump line goes with -D, its chain is dropped.
	f.run.payloads = nil
	ac := ServicePortChain("default/a:80/TCP")
	if _, err := b.Apply(ctx, []lb.Service{c2}, []lb.Change{{Kind: lb.Delete, Old: &a}}); err != nil {
		t.Fatal(err)
	}
	want = "*nat\n:" + ac + " - [0:0]\n" +
		"-D " + NetChain(netip.MustParseAddr("192.168.121.201")) + ` -d 192.168.121.201/32 -p tcp -m tcp --dport 80 -m comment --comment "default/a:80/TCP" -j ` + ac + "\n" +
		"-X " + ac + "\nCOMMIT\n"
	if d := cmp.Diff([]string{want}, f.run.payloads); d != "" {
		t.Errorf("delete payload (-want +got):\n%s", d)
	}

	// c loses its last endpoint: jump out, chain dropped, REJECT in.
	f.run.payloads, f.deleted = nil, nil
	c3 := svc("c", lb.UDP, 53)
	if _, err := b.Apply(ctx, []lb.Service{c3}, []lb.Change{{Kind: lb.Update, Old: &c2, New: &c3}}); err != nil {
		t.Fatal(err)
	}
	if p := f.run.payloads[0]; !strings.Contains(p, "*filter\n-A LBD-FILTER -d 192.168.121.201/32 -p udp -m udp --dport 53 -m comment --comment \"default/c:53/UDP\" -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n") ||
		!strings.Contains(p, "-X "+cc) {
		t.Errorf("zero-endpoint payload:\n%s", p)
	}
	if d := cmp.Diff([]string{"192.168.121.201:53->10.246.82.2"}, f.deleted); d != "" {
		t.Errorf("conntrack deletions (-want +got):\n%s", d)
	}
}

// TestPartialSyncNetChains: the first service in a /24 creates its
// network chain and the LBD-SERVICES jump to it, in one restore; the last
// one leaving drops both, without -D of the rules the flush removes.
func TestPartialSyncNetChains(t *testing.T) {
	ctx := context.Background()
	b, f := newTestBackend(t, DefaultOptions())
	a := svc("a", lb.TCP, 80, "10.246.82.2")
	if _, err := b.Apply(ctx, []lb.Service{a}, []lb.Change{{Kind: lb.Create, New: &a}}); err != nil {
		t.Fatal(err)
	}
	far := svc("far", lb.TCP, 80, "10.246.82.6")
	far.ExternalIPs = []netip.Addr{netip.MustParseAddr("198.18.7.9")}
	net := NetChain(netip.MustParseAddr("198.18.7.9"))
	fc := ServicePortChain("default/far:80/TCP")
	f.run.payloads = nil
	if _, err := b.Apply(ctx, []lb.Service{a, far}, []lb.Change{{Kind: lb.Create, New: &far}}); err != nil {
		t.Fatal(err)
	}
	rule := "-A " + net + ` -d 198.18.7.9/32 -p tcp -m tcp --dport 80 -m comment --comment "default/far:80/TCP" -j ` + fc
	want := "*nat\n:" + fc + " - [0:0]\n:" + net + " - [0:0]\n" +
		"-A " + fc + " -j MARK --set-xmark 0x2000/0x2000\n-A " + fc + " -p tcp -j DNAT --to-destination 10.246.82.6:80\n" +
		rule + "\n-A LBD-SERVICES -d 198.18.7.0/24 -j " + net + "\nCOMMIT\n"
	if d := cmp.Diff([]string{want}, f.run.payloads); d != "" {
		t.Errorf("create in a new network (-want +got):\n%s", d)
	}
	f.run.payloads = nil
	if _, err := b.Apply(ctx, []lb.Service{a}, []lb.Change{{Kind: lb.Delete, Old: &far}}); err != nil {
		t.Fatal(err)
	}
	want = "*nat\n:" + fc + " - [0:0]\n:" + net + " - [0:0]\n" +
		"-D LBD-SERVICES -d 198.18.7.0/24 -j " + net + "\n-X " + fc + "\n-X " + net + "\nCOMMIT\n"
	if d := cmp.Diff([]string{want}, f.run.payloads); d != "" {
		t.Errorf("delete the network's last service (-want +got):\n%s", d)
	}
	if len(b.nets) != 1 {
		t.Errorf("network chains tracked: %v, want only 192.168.121.0/24's", b.nets)
	}
}

func TestApplyPartialFailureFallsBackToFull(t *testing.T) {
	ctx := context.Background()
	b, f := newTestBackend(t, DefaultOptions())
	a := svc("a", lb.TCP, 80, "10.246.82.2")
	if _, err := b.Apply(ctx, []lb.Service{a}, nil); err != nil {
		t.Fatal(err)
	}
	a2 := svc("a", lb.TCP, 80, "10.246.82.6")
	f.run.calls = nil
	f.run.saveOut = savedWithJumps
	f.run.restoreErr = errors.New("rule not found")
	if _, err := b.Apply(ctx, []lb.Service{a2}, []lb.Change{{Kind: lb.Update, Old: &a, New: &a2}}); err != nil {
		t.Fatal(err)
	}
	want := []string{"iptables-restore --noflush -w", "iptables-save", "iptables-restore --noflush -w"}
	if d := cmp.Diff(want, f.run.calls); d != "" {
		t.Errorf("commands (-want +got):\n%s", d)
	}
}

func TestApplySkipsIPv6Only(t *testing.T) {
	ctx := context.Background()
	b, f := newTestBackend(t, DefaultOptions())
	a := svc("a", lb.TCP, 80, "10.246.82.2")
	if _, err := b.Apply(ctx, []lb.Service{a}, nil); err != nil {
		t.Fatal(err)
	}
	a6 := a.Clone()
	a6.ExternalIPs = []netip.Addr{netip.MustParseAddr("2001:db8::1")}
	f.run.calls = nil
	skipped, err := b.Apply(ctx, []lb.Service{*a6}, []lb.Change{{Kind: lb.Update, Old: &a, New: a6}})
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 1 || skipped[0].Key != "default/a" {
		t.Errorf("skipped = %v, want default/a", skipped)
	}
	if len(f.run.calls) != 0 {
		t.Errorf("a skipped service's old rules were touched: %v", f.run.calls)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	b, f := newTestBackend(t, DefaultOptions())
	a := svc("a", lb.TCP, 80, "10.246.82.2", "10.246.82.6")
	applied := []lb.Service{a}
	rs := Render(applied, b.opts)
	good := "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
	var rules []string
	for _, c := range rs.NAT {
		good += ":" + c.Name + " - [0:0]\n"
		rules = append(rules, c.Rules...)
	}
	good += "-A PREROUTING -j LBD-SERVICES\n-A OUTPUT -j LBD-SERVICES\n-A POSTROUTING -j LBD-POSTROUTING\n" + strings.Join(rules, "\n") + "\nCOMMIT\n" +
		"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:LBD-FILTER - [0:0]\n:LBD-FORWARD - [0:0]\n" +
		"-A INPUT -m conntrack --ctstate NEW -j LBD-FILTER\n-A FORWARD -j LBD-FORWARD\n-A FORWARD -m conntrack --ctstate NEW -j LBD-FILTER\n-A OUTPUT -m conntrack --ctstate NEW -j LBD-FILTER\n" + strings.Join(rs.Filter[1].Rules, "\n") + "\nCOMMIT\n"
	ac := ServicePortChain("default/a:80/TCP")
	tests := []struct {
		name string
		save string
		want []string
	}{
		{"in sync", good, nil},
		{"jump deleted", strings.Replace(good, "-A PREROUTING -j LBD-SERVICES\n", "", 1), []string{"nat PREROUTING: jump to LBD-SERVICES is missing"}},
		{"chain flushed", strings.Replace(good, "-A "+ac+" -p tcp -j DNAT --to-destination 10.246.82.6:80\n", "", 1),
			[]string{"nat chain " + ac + " (default/a:80/TCP): has 2 rules, want 3 (missing \"-A " + ac + " -p tcp -j DNAT --to-destination 10.246.82.6:80\")"}},
		{"stale chain", strings.Replace(good, ":LBD-FILTER - [0:0]\n", ":LBD-FILTER - [0:0]\n:LBD-OLD - [0:0]\n", 1), []string{"filter chain LBD-OLD is not lbd's current state (stale)"}},
		{"nothing", "", []string{
			"nat chain LBD-SERVICES is missing", "nat chain LBD-POSTROUTING is missing", "nat chain " + ac + " (default/a:80/TCP) is missing",
			"nat chain " + NetChain(netip.MustParseAddr("192.168.121.201")) + " is missing",
			"nat PREROUTING: jump to LBD-SERVICES is missing", "nat OUTPUT: jump to LBD-SERVICES is missing", "nat POSTROUTING: jump to LBD-POSTROUTING is missing",
			"filter chain LBD-FILTER is missing", "filter chain LBD-FORWARD is missing",
			"filter INPUT: jump to LBD-FILTER is missing", "filter FORWARD: jump to LBD-FILTER is missing", "filter FORWARD: jump to LBD-FORWARD is missing",
			"filter OUTPUT: jump to LBD-FILTER is missing",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.dirty = false
			f.run.saveOut = tt.save
			got, err := b.Verify(ctx, applied)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Verify (-want +got):\n%s", d)
			}
			if b.dirty != (len(tt.want) > 0) {
				t.Errorf("dirty = %v after %d differences", b.dirty, len(tt.want))
			}
		})
	}
}

func TestCleanupPayload(t *testing.T) {
	ctx := context.Background()
	b, f := newTestBackend(t, DefaultOptions())
	f.run.saveOut = "*nat\n:PREROUTING ACCEPT [0:0]\n:LBD-SERVICES - [0:0]\n:LBD-X - [0:0]\n:FOREIGN - [0:0]\n" +
		"-A PREROUTING -p tcp -j LBD-SERVICES\n-A PREROUTING -j FOREIGN\n-A LBD-SERVICES -j LBD-X\n-A FOREIGN -j RETURN\nCOMMIT\n"
	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	want := "*nat\n:LBD-SERVICES - [0:0]\n:LBD-X - [0:0]\n-D PREROUTING -p tcp -j LBD-SERVICES\n-X LBD-SERVICES\n-X LBD-X\nCOMMIT\n"
	if d := cmp.Diff([]string{want}, f.run.payloads); d != "" {
		t.Errorf("cleanup payload (-want +got):\n%s", d)
	}
	if len(f.ipt.calls) != 0 {
		t.Errorf("go-iptables calls %v, want none: the restore removes the jumps", f.ipt.calls)
	}
	// Nothing of lbd's left: a second cleanup reads and writes nothing.
	f.run.saveOut = "*nat\n:PREROUTING ACCEPT [0:0]\n:FOREIGN - [0:0]\n-A PREROUTING -j FOREIGN\nCOMMIT\n"
	if err := b.Cleanup(ctx); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
	if len(f.run.payloads) != 1 {
		t.Errorf("second cleanup restored %q, want no restore", f.run.payloads[1:])
	}
}

// TestFreshProcessTrustsTheStore: a new process (a cron pass) whose
// reconciler says rules are applied rewrites only the changed service, with
// no iptables-save, and flushes the UDP flows of the endpoint that went.
func TestFreshProcessTrustsTheStore(t *testing.T) {
	b, f := newTestBackend(t, DefaultOptions())
	web := svc("web", lb.TCP, 80, "10.246.82.2")
	dnsOld := svc("dns", lb.UDP, 53, "10.246.82.2", "10.246.82.6")
	dnsNew := svc("dns", lb.UDP, 53, "10.246.82.2")
	desired := []lb.Service{dnsNew, web}
	changes := []lb.Change{{Kind: lb.Update, Old: &dnsOld, New: &desired[0]}}
	if _, err := b.Apply(context.Background(), desired, changes); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.run.calls {
		if strings.Contains(c, "-save") {
			t.Errorf("ran %q: a fresh process must trust the store, not read the ruleset", c)
		}
	}
	if len(f.run.payloads) != 1 || strings.Contains(f.run.payloads[0], ServicePortChain(web.Ports[0].Key(&web))) {
		t.Errorf("payloads %q: want one restore that leaves the unchanged service alone", f.run.payloads)
	}
	if d := cmp.Diff([]string{"192.168.121.201:53->10.246.82.6"}, f.deleted); d != "" {
		t.Errorf("conntrack deletions (-want +got):\n%s", d)
	}
	if f.sysctl[ipForwardPath] != "1\n" && f.sysctl[ipForwardPath] != "1" {
		t.Errorf("ip_forward = %q, want it turned on", f.sysctl[ipForwardPath])
	}
}

func TestRPFilterVerdict(t *testing.T) {
	tests := []struct {
		all, dev   string
		masquerade bool
		wantOK     bool
	}{
		{"0", "0", false, true},
		{"1", "0", true, true},
		{"1", "0", false, false},
		{"0", "1", false, false},
		{"2", "1", false, true},
	}
	for _, tt := range tests {
		read := func(p string) ([]byte, error) {
			if strings.Contains(p, "/all/") {
				return []byte(tt.all), nil
			}
			return []byte(tt.dev), nil
		}
		msg, ok := rpFilterVerdict(read, Options{PodInterface: "flannel0", Masquerade: tt.masquerade})
		if ok != tt.wantOK {
			t.Errorf("all=%s flannel0=%s masquerade=%v: ok=%v (%s), want %v", tt.all, tt.dev, tt.masquerade, ok, msg, tt.wantOK)
		}
	}
}

func TestFullSyncBatches(t *testing.T) {
	b, f := newTestBackend(t, DefaultOptions())
	b.batchChains = 2
	f.run.saveOut = savedWithJumps
	var desired []lb.Service
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		desired = append(desired, svc(n, lb.TCP, 80, "10.246.82.2"))
	}
	var creates []lb.Change // a first sync: everything is new
	for i := range desired {
		creates = append(creates, lb.Change{Kind: lb.Create, New: &desired[i]})
	}
	if _, err := b.Apply(context.Background(), desired, creates); err != nil {
		t.Fatal(err)
	}
	var got []int
	lastChain, firstJump := -1, -1
	for i, p := range f.run.payloads {
		got = append(got, strings.Count(p, "\n:LBD-"))
		if strings.Contains(p, ":LBD-SERVICES") {
			t.Errorf("payload %d flushes LBD-SERVICES: a full sync must only add and delete its lines:\n%s", i, p)
		}
		if strings.Contains(p, "-j DNAT") {
			lastChain = i
		}
		if strings.Contains(p, "-A LBD-SERVICES") && firstJump < 0 {
			firstJump = i
		}
	}
	if firstJump <= lastChain {
		t.Errorf("a jump was added (payload %d) before every port chain was filled (payload %d)", firstJump, lastChain)
	}
	// LBD-POSTROUTING, the five port chains and the network chain 2 + 2
	// + 2 + 1, with LBD-FILTER and LBD-FORWARD in the first, then the
	// one jump to the network chain, then the deletions: none, so no
	// restore.
	if d := cmp.Diff([]int{4, 2, 2, 1, 0}, got); d != "" {
		t.Errorf("chains per restore (-want +got):\n%s", d)
	}
}

func TestLineDiff(t *testing.T) {
	tests := []struct {
		have, want, adds, dels []string
	}{
		{nil, nil, nil, nil},
		{nil, []string{"a", "b"}, []string{"a", "b"}, nil},
		{[]string{"a", "b"}, nil, nil, []string{"a", "b"}},
		{[]string{"a", "x", "b"}, []string{"b", "c", "a"}, []string{"c"}, []string{"x"}},
		{[]string{"a", "a", "b"}, []string{"a", "b"}, nil, []string{"a"}}, // a hand-made duplicate goes
	}
	for _, tt := range tests {
		adds, dels := lineDiff(tt.have, tt.want)
		if d := cmp.Diff([2][]string{tt.adds, tt.dels}, [2][]string{adds, dels}); d != "" {
			t.Errorf("lineDiff(%q, %q) (-want +got):\n%s", tt.have, tt.want, d)
		}
	}
}

// savedWithJumps is an iptables-save with lbd's shared chains and jumps.
const savedWithJumps = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:LBD-SERVICES - [0:0]\n:LBD-POSTROUTING - [0:0]\n" +
	"-A PREROUTING -j LBD-SERVICES\n-A OUTPUT -j LBD-SERVICES\n-A POSTROUTING -j LBD-POSTROUTING\nCOMMIT\n" +
	"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:LBD-FILTER - [0:0]\n:LBD-FORWARD - [0:0]\n-A INPUT -m conntrack --ctstate NEW -j LBD-FILTER\n-A FORWARD -j LBD-FORWARD\n-A FORWARD -m conntrack --ctstate NEW -j LBD-FILTER\n-A OUTPUT -m conntrack --ctstate NEW -j LBD-FILTER\nCOMMIT\n"

// TestFailedFullSyncStaysDirty: when one of a full sync's restores fails,
// the next Apply is a full sync again, not a partial one on top of a
// half-written state.
func TestFailedFullSyncStaysDirty(t *testing.T) {
	b, f := newTestBackend(t, DefaultOptions())
	b.batchChains = 1
	f.run.saveOut = savedWithJumps
	desired := []lb.Service{svc("a", lb.TCP, 80, "10.246.82.2"), svc("b", lb.TCP, 81, "10.246.82.2")}
	creates := []lb.Change{{Kind: lb.Create, New: &desired[0]}, {Kind: lb.Create, New: &desired[1]}}
	f.run.restoreErr = errors.New("exit status 1: out of memory")
	if _, err := b.Apply(context.Background(), desired, creates); err == nil {
		t.Fatal("Apply succeeded although a restore failed")
	}
	f.run.calls = nil
	if _, err := b.Apply(context.Background(), desired, nil); err != nil {
		t.Fatal(err)
	}
	saved := false
	for _, c := range f.run.calls {
		saved = saved || strings.Contains(c, "-save")
	}
	if !saved {
		t.Errorf("after a failed full sync the next Apply ran %q, want a full sync (which reads the ruleset)", f.run.calls)
	}
}
