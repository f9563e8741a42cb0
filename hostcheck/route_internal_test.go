package hostcheck

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

func fakeRouteCheck(routes map[string]netlink.Route, asked *[]string) *RouteCheck {
	links := map[int]string{1: "lo", 2: "eth0", 3: "flannel0"}
	return &RouteCheck{
		Interface: "flannel0",
		routeGet: func(ip net.IP) ([]netlink.Route, error) {
			*asked = append(*asked, ip.String())
			if ip.String() == "10.9.9.9" {
				return nil, errors.New("network is unreachable")
			}
			r, ok := routes[ip.String()]
			if !ok {
				return nil, nil
			}
			return []netlink.Route{r}, nil
		},
		linkName: func(i int) (string, error) {
			if n, ok := links[i]; ok {
				return n, nil
			}
			return "", fmt.Errorf("link %d not found", i)
		},
	}
}

func TestRouteCheck(t *testing.T) {
	routes := map[string]netlink.Route{
		"10.246.82.2": {LinkIndex: 3, Type: unix.RTN_UNICAST},
		"10.246.82.6": {LinkIndex: 3, Type: unix.RTN_UNICAST},
		"10.9.0.3":    {LinkIndex: 2, Gw: net.ParseIP("10.245.1.1"), Type: unix.RTN_UNICAST},
		"10.246.90.0": {LinkIndex: 3, Type: unix.RTN_LOCAL},
	}
	mk := func(eps ...lb.Endpoint) *lb.Service {
		s := svc("nginx", lb.TCP, 80)
		s.Ports[0].Endpoints = eps
		return &s
	}
	e := func(ip string, ready bool) lb.Endpoint {
		return lb.Endpoint{IP: netip.MustParseAddr(ip), Port: 80, Ready: ready}
	}
	tests := []struct {
		name      string
		svc       *lb.Service
		wantErr   string
		wantAsked []string
	}{
		{"all via flannel0", mk(e("10.246.82.2", true), e("10.246.82.6", true)), "", []string{"10.246.82.2", "10.246.82.6"}},
		{"not ready is not checked", mk(e("10.246.82.2", true), e("10.9.0.3", false)), "", []string{"10.246.82.2"}},
		{"via eth0", mk(e("10.246.82.2", true), e("10.9.0.3", true)),
			"service default/nginx: endpoint 10.9.0.3 routes via eth0 gw 10.245.1.1, not flannel0", []string{"10.246.82.2", "10.9.0.3"}},
		{"local", mk(e("10.246.90.0", true)), "service default/nginx: endpoint 10.246.90.0 routes via local address on flannel0, not flannel0", []string{"10.246.90.0"}},
		{"lookup fails", mk(e("10.9.9.9", true)), "service default/nginx: endpoint 10.9.9.9: route lookup: network is unreachable", []string{"10.9.9.9"}},
		{"no route", mk(e("10.1.1.1", true)), "service default/nginx: endpoint 10.1.1.1 routes via no route, not flannel0", []string{"10.1.1.1"}},
		{"not exposed", func() *lb.Service { s := mk(e("10.9.0.3", true)); s.ExternalIPs = nil; return s }(), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			err := fakeRouteCheck(routes, &asked).Check(tt.svc)
			got := ""
			if err != nil {
				got = err.Error()
				var re *RouteError
				if !errors.As(err, &re) {
					t.Errorf("error %T is not a *RouteError", err)
				}
			}
			if d := cmp.Diff(tt.wantErr, got); d != "" {
				t.Errorf("Check error (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantAsked, asked); d != "" {
				t.Errorf("routes asked (-want +got):\n%s", d)
			}
		})
	}
}

func TestCheckIP(t *testing.T) {
	var asked []string
	c := fakeRouteCheck(map[string]netlink.Route{"10.246.82.2": {LinkIndex: 3}, "10.9.0.3": {LinkIndex: 2}}, &asked)
	tests := []struct {
		ip     string
		want   string
		wantOK bool
	}{
		{"10.246.82.2", "endpoint 10.246.82.2 routes via flannel0", true},
		{"10.9.0.3", "endpoint 10.9.0.3 routes via eth0, not flannel0", false},
	}
	for _, tt := range tests {
		got, ok := c.CheckIP(netip.MustParseAddr(tt.ip))
		if d := cmp.Diff(tt.want, got); d != "" || ok != tt.wantOK {
			t.Errorf("CheckIP(%s) = %q, %v; want %q, %v", tt.ip, got, ok, tt.want, tt.wantOK)
		}
	}
}

func svc(name string, proto lb.Protocol, port uint16) lb.Service {
	s := lb.Service{Namespace: "default", Name: name, Type: "LoadBalancer",
		ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.201")},
		Ports:       []lb.Port{{Port: port, Protocol: proto, TargetPort: "80"}}}
	s.Normalize()
	return s
}

func fakePreflight(t *testing.T, files map[string]string, opts Options) *Preflight {
	t.Helper()
	var asked []string
	return &Preflight{
		opts:   opts,
		routes: fakeRouteCheck(map[string]netlink.Route{"10.246.82.2": {LinkIndex: 3}, "10.9.0.3": {LinkIndex: 2}}, &asked),
		readFile: func(path string) ([]byte, error) {
			v, ok := files[path]
			if !ok {
				return nil, fmt.Errorf("open %s: no such file or directory", path)
			}
			return []byte(v), nil
		},
		geteuid: func() int { return 1000 },
	}
}

func strs(vs []Verdict) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.String())
	}
	return out
}

func TestPreflight(t *testing.T) {
	files := map[string]string{ipForwardPath: "0\n", "/proc/sys/net/ipv4/conf/all/rp_filter": "2\n", "/proc/sys/net/ipv4/conf/flannel0/rp_filter": "1\n"}
	p := fakePreflight(t, files, Options{PodInterface: "flannel0", Masquerade: true})
	got := strs(append([]Verdict{p.Root()}, append(p.Forwarding(true), p.PodRoute(netip.MustParseAddr("10.246.82.2")))...))
	want := []string{
		"FAIL root: uid 1000: not root: iptables and netlink need CAP_NET_ADMIN",
		"FAIL ip_forward: 0 (lbd turns it on at its first sync; without it nothing is forwarded)",
		"ok   rp_filter: rp_filter all=2 flannel0=1",
		"ok   pod route: endpoint 10.246.82.2 routes via flannel0",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("preflight (-want +got):\n%s", d)
	}
}

func TestForwarding(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		forwards   bool
		masquerade bool
		want       []string
	}{
		{"haproxy without forwarding", map[string]string{ipForwardPath: "0"}, false, true,
			[]string{"ok   ip_forward: off; not needed by --backend=haproxy"}},
		{"haproxy with forwarding", map[string]string{ipForwardPath: "1", "/proc/sys/net/ipv4/conf/all/rp_filter": "0"}, false, true,
			[]string{"ok   ip_forward: 1", "ok   rp_filter: rp_filter all=0 flannel0=?"}},
		{"strict without masquerade", map[string]string{ipForwardPath: "1", "/proc/sys/net/ipv4/conf/all/rp_filter": "0", "/proc/sys/net/ipv4/conf/flannel0/rp_filter": "1"}, true, false,
			[]string{"ok   ip_forward: 1", "FAIL rp_filter: rp_filter all=0 flannel0=1: strict reverse-path filtering with masquerade off can drop pod replies; set 2 (loose) or 0"}},
		{"loose without masquerade", map[string]string{ipForwardPath: "1", "/proc/sys/net/ipv4/conf/all/rp_filter": "2", "/proc/sys/net/ipv4/conf/flannel0/rp_filter": "1"}, true, false,
			[]string{"ok   ip_forward: 1", "ok   rp_filter: rp_filter all=2 flannel0=1"}},
		{"unreadable", map[string]string{}, true, true,
			[]string{"FAIL ip_forward: open /proc/sys/net/ipv4/ip_forward: no such file or directory", "ok   rp_filter: rp_filter all=? flannel0=?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fakePreflight(t, tt.files, Options{PodInterface: "flannel0", Masquerade: tt.masquerade})
			if d := cmp.Diff(tt.want, strs(p.Forwarding(tt.forwards))); d != "" {
				t.Errorf("Forwarding(%v) (-want +got):\n%s", tt.forwards, d)
			}
		})
	}
}

func TestPodRoutes(t *testing.T) {
	a := svc("a", lb.TCP, 80)
	a.Ports[0].Endpoints = []lb.Endpoint{{IP: netip.MustParseAddr("10.246.82.2"), Port: 80, Ready: true}, {IP: netip.MustParseAddr("10.9.0.3"), Port: 80, Ready: true}}
	b := a // the same pods again: each address is checked once
	b.Name = "b"
	hidden := svc("hidden", lb.TCP, 80)
	hidden.ExternalIPs = nil
	hidden.Ports[0].Endpoints = []lb.Endpoint{{IP: netip.MustParseAddr("10.1.1.1"), Port: 80, Ready: true}}
	p := fakePreflight(t, nil, Options{PodInterface: "flannel0"})
	want := []string{"ok   pod route: endpoint 10.246.82.2 routes via flannel0", "FAIL pod route: endpoint 10.9.0.3 routes via eth0, not flannel0"}
	if d := cmp.Diff(want, strs(p.PodRoutes([]lb.Service{a, b, hidden}))); d != "" {
		t.Errorf("PodRoutes (-want +got):\n%s", d)
	}
	want = []string{"ok   pod route: no ready endpoint of an exposed service to check"}
	if d := cmp.Diff(want, strs(p.PodRoutes([]lb.Service{hidden}))); d != "" {
		t.Errorf("PodRoutes(none) (-want +got):\n%s", d)
	}
}

func TestNewVerdict(t *testing.T) {
	if got, want := NewVerdict("iptables", "v1", nil).String(), "ok   iptables: v1"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := NewVerdict("iptables", "v1", errors.New("not found")).String(), "FAIL iptables: not found"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestInPodNetwork(t *testing.T) {
	now := time.Unix(1000, 0)
	reads := 0
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.246.0.0/16")}
	c := &RouteCheck{Interface: "flannel0", now: func() time.Time { return now },
		podPrefixes: func() ([]netip.Prefix, error) {
			reads++
			if prefixes == nil {
				return nil, errors.New("netlink: boom")
			}
			return prefixes, nil
		}}
	in := func(ip string) string {
		why, ok := c.InPodNetwork(netip.MustParseAddr(ip))
		if ok != (why != "") {
			t.Errorf("InPodNetwork(%s) = %q, %v: a reason goes with true only", ip, why, ok)
		}
		return why
	}
	if got, want := in("10.246.3.4"), "it is inside the pod network 10.246.0.0/16 (routed via flannel0)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := in("192.168.121.240"); got != "" {
		t.Errorf("outside the pod network: got %q", got)
	}
	if reads != 1 {
		t.Errorf("%d reads within a second, want 1", reads)
	}
	// Older than a second: read again; a failed read keeps the last ones.
	now = now.Add(2 * time.Second)
	prefixes = nil
	if got := in("10.246.3.4"); got == "" {
		t.Errorf("after a failed read the last prefixes must stay")
	}
	if reads != 2 {
		t.Errorf("%d reads, want 2", reads)
	}
}

// TestRouteCheckBatch: the addresses the batch vouches for are not asked
// again; the others are, one by one, for the error's words; a failed batch
// asks about every address alone.
func TestRouteCheckBatch(t *testing.T) {
	routes := map[string]netlink.Route{
		"10.246.82.2": {LinkIndex: 3, Type: unix.RTN_UNICAST},
		"10.246.82.6": {LinkIndex: 3, Type: unix.RTN_UNICAST},
		"10.9.0.3":    {LinkIndex: 2, Type: unix.RTN_UNICAST},
	}
	e := func(ip string) lb.Endpoint { return lb.Endpoint{IP: netip.MustParseAddr(ip), Port: 80, Ready: true} }
	s := svc("nginx", lb.TCP, 80)
	tests := []struct {
		name      string
		eps       []lb.Endpoint
		batch     func([]netip.Addr) ([]bool, error)
		wantErr   string
		wantAsked []string
	}{
		{"all vouched", []lb.Endpoint{e("10.246.82.2"), e("10.246.82.6")},
			func(ips []netip.Addr) ([]bool, error) { return []bool{true, true}, nil }, "", nil},
		{"one not vouched is asked", []lb.Endpoint{e("10.246.82.2"), e("10.9.0.3")},
			func(ips []netip.Addr) ([]bool, error) { return []bool{true, false}, nil },
			"service default/nginx: endpoint 10.9.0.3 routes via eth0, not flannel0", []string{"10.9.0.3"}},
		{"not vouched but fine alone", []lb.Endpoint{e("10.246.82.2"), e("10.246.82.6")},
			func(ips []netip.Addr) ([]bool, error) { return []bool{false, true}, nil }, "", []string{"10.246.82.2"}},
		{"failed batch asks each", []lb.Endpoint{e("10.246.82.2"), e("10.246.82.6")},
			func(ips []netip.Addr) ([]bool, error) { return nil, errors.New("netlink: boom") }, "", []string{"10.246.82.2", "10.246.82.6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			c := fakeRouteCheck(routes, &asked)
			var batched []string
			c.viaInterface = func(iface string, ips []netip.Addr) ([]bool, error) {
				for _, ip := range ips {
					batched = append(batched, ip.String())
				}
				return tt.batch(ips)
			}
			sv := s
			sv.Ports = []lb.Port{s.Ports[0]}
			sv.Ports[0].Endpoints = tt.eps
			got := ""
			if err := c.Check(&sv); err != nil {
				got = err.Error()
			}
			if d := cmp.Diff(tt.wantErr, got); d != "" {
				t.Errorf("Check error (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantAsked, asked); d != "" {
				t.Errorf("asked alone (-want +got):\n%s", d)
			}
			if len(batched) != len(tt.eps) {
				t.Errorf("batched %v, want every endpoint once", batched)
			}
		})
	}
}
