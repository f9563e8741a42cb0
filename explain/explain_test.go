package explain

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in    string
		addr  string
		port  uint16
		proto lb.Protocol
		err   bool
	}{
		{in: "192.168.121.240:80", addr: "192.168.121.240", port: 80},
		{in: "192.168.121.240:80/TCP", addr: "192.168.121.240", port: 80, proto: lb.TCP},
		{in: "192.168.121.240:53/udp", addr: "192.168.121.240", port: 53, proto: lb.UDP},
		{in: "192.168.121.240:9/sctp", addr: "192.168.121.240", port: 9, proto: lb.SCTP},
		{in: "[fd00::1]:443/tcp", addr: "fd00::1", port: 443, proto: lb.TCP},
		{in: "[::ffff:192.168.121.240]:80", addr: "192.168.121.240", port: 80},
		{in: "192.168.121.240", err: true},
		{in: "192.168.121.240:0", err: true},
		{in: "192.168.121.240:70000", err: true},
		{in: "192.168.121.240:80/icmp", err: true},
		{in: "fd00::1:80", err: true},
		{in: "web:80", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if tt.err {
			if err == nil {
				t.Errorf("ParseTarget(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		want := Target{netip.MustParseAddr(tt.addr), tt.port, tt.proto}
		if err != nil || got != want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %v", tt.in, got, err, want)
		}
	}
	if s := (Target{netip.MustParseAddr("10.0.0.1"), 80, ""}).String(); s != "10.0.0.1:80" {
		t.Errorf("String without a protocol = %q", s)
	}
}

// fakeBackend explains from a table: the live state of each service.
type fakeBackend struct {
	have map[string]lb.Live
	err  error
}

func (f fakeBackend) Explain(_ context.Context, s *lb.Service, p lb.Port, _ netip.Addr) (lb.Explanation, error) {
	want := lb.Live{Affinity: s.Affinity}
	for _, ep := range p.Endpoints {
		want.Endpoints = append(want.Endpoints, lb.LiveEndpoint{Addr: netip.AddrPortFrom(ep.IP, ep.Port)})
	}
	return lb.Explanation{Backend: "fake", Want: want, Have: f.have[s.Key()]}, f.err
}

// TestPorts: each served port gets its state, its endpoints marked
// programmed (with health) or not and routed or not, and the diff.
func TestPorts(t *testing.T) {
	ep := func(ip string) lb.Endpoint {
		return lb.Endpoint{IP: netip.MustParseAddr(ip), Port: 8080, Ready: true, Serving: true}
	}
	web := &lb.Service{Namespace: "default", Name: "web", Affinity: lb.AffinityClientIP, AffinityTimeout: 3 * time.Hour}
	db := &lb.Service{Namespace: "default", Name: "db"}
	port := lb.Port{Port: 80, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.0.1"), ep("10.246.0.2")}}
	served := []lb.ServedPort{{Service: web, Port: port}, {Service: db, Port: port}}
	states := []lb.ServiceState{{Key: "default/web", State: lb.StateProgrammed}, {Key: "default/db", State: lb.StateSkipped, Reason: "no bind"}}
	be := fakeBackend{have: map[string]lb.Live{
		"default/web": {Affinity: lb.AffinityClientIP, Endpoints: []lb.LiveEndpoint{
			{Addr: netip.MustParseAddrPort("10.246.0.1:8080"), State: "UP"}, {Addr: netip.MustParseAddrPort("10.246.0.2:8080")}}},
		"default/db": {Endpoints: []lb.LiveEndpoint{{Addr: netip.MustParseAddrPort("10.246.0.2:8080")}}},
	}}
	route := func(ip netip.Addr) (string, bool) {
		return "endpoint " + ip.String() + " via flannel0", ip != netip.MustParseAddr("10.246.0.2")
	}
	got, err := Ports(t.Context(), served, states, netip.MustParseAddr("192.168.121.240"), be, route)
	if err != nil {
		t.Fatal(err)
	}
	type short struct {
		Service, State, Reason, Timeout string
		Programmed, Routed              []bool
		Health                          []string
		Matches                         bool
	}
	var gs []short
	for _, p := range got {
		s := short{Service: p.Service, State: p.State, Reason: p.Reason, Timeout: p.Timeout, Matches: p.Matches}
		for _, e := range p.Endpoints {
			s.Programmed, s.Routed, s.Health = append(s.Programmed, e.Programmed), append(s.Routed, e.RouteOK), append(s.Health, e.Health)
		}
		gs = append(gs, s)
	}
	want := []short{
		{Service: "default/web", State: "programmed", Timeout: "3h0m0s", Programmed: []bool{true, true}, Routed: []bool{true, false}, Health: []string{"UP", ""}, Matches: true},
		{Service: "default/db", State: "skipped", Reason: "no bind", Programmed: []bool{false, true}, Routed: []bool{true, false}, Health: []string{"", ""}},
	}
	if d := cmp.Diff(want, gs); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if !Differs(got) || Differs(got[:1]) {
		t.Error("Differs does not follow Matches")
	}
	if len(got[1].Diff) == 0 {
		t.Error("the db port lacks its diff")
	}
	if _, err := Ports(t.Context(), served, states, netip.Addr{}, fakeBackend{err: errors.New("nft down")}, route); err == nil {
		t.Error("the backend's error is lost")
	}
}
