package netfilter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

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

func TestPreflight(t *testing.T) {
	var asked []string
	p := &Preflight{
		opts:   DefaultOptions(),
		routes: fakeRouteCheck(map[string]netlink.Route{"10.246.82.2": {LinkIndex: 3}}, &asked),
		readFile: func(path string) ([]byte, error) {
			return map[string][]byte{ipForwardPath: []byte("0\n"), "/proc/sys/net/ipv4/conf/all/rp_filter": []byte("2\n"), "/proc/sys/net/ipv4/conf/flannel0/rp_filter": []byte("1\n")}[path], nil
		},
		run: func(_ context.Context, _ []byte, name string, args ...string) ([]byte, error) {
			return []byte("iptables v1.8.9 (nf_tables)\n"), nil
		},
		geteuid: func() int { return 1000 },
	}
	var got []string
	for _, v := range p.All(context.Background(), []netip.Addr{netip.MustParseAddr("10.246.82.2")}) {
		got = append(got, v.String())
	}
	want := []string{
		"FAIL root: uid 1000: not root: iptables and netlink need CAP_NET_ADMIN",
		"ok   iptables: iptables v1.8.9 (nf_tables), mode nft",
		"FAIL ip_forward: 0 (lbd turns it on at its first sync; without it nothing is forwarded)",
		"ok   rp_filter: rp_filter all=2 flannel0=1",
		"ok   pod route: endpoint 10.246.82.2 routes via flannel0",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("preflight (-want +got):\n%s", d)
	}
}
