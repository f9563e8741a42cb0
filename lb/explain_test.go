package lb

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestExplanationDiff(t *testing.T) {
	ep := func(s string) LiveEndpoint { return LiveEndpoint{Addr: netip.MustParseAddrPort(s)} }
	chain := LiveObject{Kind: "chain", Name: "nat LBD-X", Present: true}
	want := Live{
		Objects:   []LiveObject{chain},
		Endpoints: []LiveEndpoint{ep("10.246.82.2:80"), ep("10.246.82.6:80")},
		Affinity:  AffinityClientIP, AffinityTimeout: time.Hour,
		SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.168.121.0/24")},
	}
	tests := []struct {
		name string
		have func(l *Live)
		want []string
	}{
		{"same", func(*Live) {}, nil},
		{"order of endpoints is free", func(l *Live) { l.Endpoints = []LiveEndpoint{ep("10.246.82.6:80"), ep("10.246.82.2:80")} }, nil},
		{"health is not compared", func(l *Live) {
			l.Endpoints = []LiveEndpoint{{Addr: ep("10.246.82.2:80").Addr, State: "DOWN"}, ep("10.246.82.6:80")}
		}, nil},
		{"chain missing", func(l *Live) { l.Objects = []LiveObject{{Kind: "chain", Name: "nat LBD-X"}} }, []string{"chain nat LBD-X is missing"}},
		{"chain gone from the list", func(l *Live) { l.Objects = nil }, []string{"chain nat LBD-X is missing"}},
		{"flushed", func(l *Live) {
			l.Endpoints, l.Affinity, l.AffinityTimeout, l.SourceRanges = nil, AffinityNone, 0, nil
		}, []string{
			"endpoint 10.246.82.2:80 is not programmed", "endpoint 10.246.82.6:80 is not programmed",
			"affinity is None, want ClientIP", "source ranges are [], want [192.168.121.0/24]",
		}},
		{"extra endpoint", func(l *Live) { l.Endpoints = append(l.Endpoints, ep("10.246.92.8:80")) }, []string{"endpoint 10.246.92.8:80 is programmed but not in the applied state"}},
		{"timeout", func(l *Live) { l.AffinityTimeout = time.Minute }, []string{"affinity timeout is 1m0s, want 1h0m0s"}},
		{"no timeout enforced (haproxy)", func(l *Live) { l.AffinityTimeout = 0 }, nil},
		{"rejects", func(l *Live) { l.Rejects = true }, []string{"new connections are refused, but the service has ready endpoints"}},
		{"backend drift last", func(l *Live) { l.Drift = []string{"nat PREROUTING: jump to LBD-SERVICES is missing"} }, []string{"nat PREROUTING: jump to LBD-SERVICES is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := want
			have.Objects = append([]LiveObject(nil), want.Objects...)
			have.Endpoints = append([]LiveEndpoint(nil), want.Endpoints...)
			tt.have(&have)
			e := Explanation{Want: want, Have: have}
			if d := cmp.Diff(tt.want, e.Diff()); d != "" {
				t.Errorf("Diff (-want +got):\n%s", d)
			}
			if e.Matches() != (len(tt.want) == 0) {
				t.Errorf("Matches = %v", e.Matches())
			}
		})
	}
	noEP := Explanation{Want: Live{Rejects: true}, Have: Live{}}
	if d := cmp.Diff([]string{"new connections should be refused (no ready endpoint), but are not"}, noEP.Diff()); d != "" {
		t.Errorf("reject missing (-want +got):\n%s", d)
	}
}

func TestServing(t *testing.T) {
	web := Service{Namespace: "default", Name: "web", ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.240")},
		Ports: []Port{{Port: 53, Protocol: TCP}, {Port: 53, Protocol: UDP}, {Port: 80, Protocol: TCP}}}
	other := Service{Namespace: "b", Name: "other", ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.241")},
		Ports: []Port{{Port: 80, Protocol: TCP}}}
	svcs := []Service{web, other}
	got := func(addr string, port uint16, p Protocol) []string {
		var out []string
		for _, sp := range Serving(svcs, netip.MustParseAddr(addr), port, p) {
			out = append(out, sp.Port.Key(sp.Service))
		}
		return out
	}
	tests := []struct {
		addr  string
		port  uint16
		proto Protocol
		want  []string
	}{
		{"192.168.121.240", 80, TCP, []string{"default/web:80/TCP"}},
		{"192.168.121.240", 53, "", []string{"default/web:53/TCP", "default/web:53/UDP"}},
		{"192.168.121.240", 53, UDP, []string{"default/web:53/UDP"}},
		{"::ffff:192.168.121.241", 80, TCP, []string{"b/other:80/TCP"}},
		{"192.168.121.241", 80, UDP, nil},
		{"192.168.121.242", 80, TCP, nil},
	}
	for _, tt := range tests {
		if d := cmp.Diff(tt.want, got(tt.addr, tt.port, tt.proto)); d != "" {
			t.Errorf("Serving(%s:%d/%s) (-want +got):\n%s", tt.addr, tt.port, tt.proto, d)
		}
	}
}
