package report

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/explain"
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// service is default/name on ip:80 with one ready endpoint.
func service(name, ip string) lb.Service {
	s := lb.Service{Namespace: "default", Name: name, Type: "LoadBalancer", ClusterIP: addr("10.96.0.10"), ExternalIPs: []netip.Addr{addr(ip)},
		Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "8080", Endpoints: []lb.Endpoint{{IP: addr("10.246.0.1"), Port: 8080, Ready: true, Serving: true}}}}}
	s.Normalize()
	return s
}

// testPlan has one of everything plan prints.
func testPlan() Plan {
	web, gone := service("web", "192.168.121.240"), service("gone", "192.168.121.241")
	return Plan{
		Backend: "iptables",
		Changes: []lb.Change{
			{Kind: lb.Create, New: &web, What: []string{"new service 80/TCP"}},
			{Kind: lb.Delete, Old: &gone},
		},
		Unchanged:    3,
		Rejected:     []*lb.InvalidServiceError{{Namespace: "default", Name: "bad", Field: "spec.ports[0].port", Reason: "port 0"}},
		Unroutable:   []lb.Skipped{{Key: "default/far", Reason: "default/far: endpoint 10.0.0.9 routes via eth0, not flannel0"}},
		Skipped:      []lb.Skipped{{Key: "default/nobind", Reason: "cannot bind"}},
		Held:         []lb.Skipped{{Key: "default/old", Reason: "the guard allows 1 of 4; lbd apply default/old releases it"}},
		Addresses:    []lb.AddressState{{Key: "default/x", Addr: addr("10.0.0.1"), Origin: "spec", State: lb.AddressRejected, Reason: "outside every pool"}, {Key: "default/y", State: lb.AddressPending, Reason: "pool exhausted"}, {Key: "default/web", Addr: addr("192.168.121.240"), State: lb.AddressServed}},
		Allocations:  []lb.Allocation{{Key: "default/web", Addr: addr("192.168.121.240"), Origin: "pool"}},
		StatusWrites: []lb.StatusWrite{{Namespace: "default", Name: "web", Ingress: []netip.Addr{addr("192.168.121.240")}}, {Namespace: "default", Name: "gone"}},
	}
}

// testStatus is a store's view with a state of each kind, addresses, a
// failed last sync whose error holds the master's control characters, and
// HA.
func testStatus() Status {
	headless := service("headless", "192.168.121.242")
	headless.ClusterIP, headless.Ports[0].Endpoints = netip.Addr{}, nil
	return Status{
		Backend:   "haproxy",
		Note:      "backend: haproxy (of the last sync)",
		Services:  []lb.Service{service("web", "192.168.121.240"), service("skip", "192.168.121.241"), headless},
		Addresses: []lb.AddressState{{Key: "default/web", Addr: addr("192.168.121.240"), Origin: "pool", State: lb.AddressServed}, {Key: "default/y", Origin: "pool", State: lb.AddressPending, Reason: "pool exhausted"}},
		States:    []lb.ServiceState{{Key: "default/web", State: lb.StateProgrammed}, {Key: "default/skip", State: lb.StateSkipped, Reason: "cannot bind 192.168.121.241:80"}},
		Last: &lb.SyncRecord{Started: time.Date(2025, 1, 1, 12, 0, 0, 0, time.Local), Duration: 1234567 * time.Microsecond, Backend: "haproxy", Result: "error",
			Err: "ssh m: exit status 1: stderr: x\n\x1b[2Jlast sync: ok"},
		HA: &HA{Interface: "eth1", RouterID: 51, State: "BACKUP"},
	}
}

// testExplained is explain's answer for two ports: one that matches, one
// whose data plane lacks an object and an endpoint.
func testExplained() []explain.Port {
	ep := lb.Endpoint{IP: addr("10.246.0.1"), Port: 8080, Ready: true, Serving: true}
	down := lb.Endpoint{IP: addr("10.246.0.2"), Port: 8080}
	obj := lb.LiveObject{Kind: "chain", Name: "LBD-SVC-ABCD", Present: true, Detail: "2 rules"}
	match := explain.Port{Service: "default/web", Port: lb.Port{Name: "http", Port: 80, Protocol: lb.TCP}, State: lb.StateProgrammed,
		Endpoints: []explain.Endpoint{{Endpoint: ep, Programmed: true, Health: "UP", Route: "endpoint 10.246.0.1 routes via flannel0", RouteOK: true}},
		Affinity:  lb.AffinityClientIP, Timeout: "3h0m0s", Ranges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Backend: lb.Explanation{Backend: "iptables", Want: lb.Live{Objects: []lb.LiveObject{obj}, Affinity: lb.AffinityClientIP},
			Have: lb.Live{Objects: []lb.LiveObject{obj}, Affinity: lb.AffinityClientIP, AffinityTimeout: 3 * time.Hour, SourceRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}},
		Matches: true}
	differs := explain.Port{Service: "default/dns", Port: lb.Port{Port: 53, Protocol: lb.UDP}, State: lb.StateSkipped, Reason: "no bind",
		Endpoints: []explain.Endpoint{{Endpoint: down, Route: "endpoint 10.246.0.2 routes via eth0, not flannel0"}, {Endpoint: lb.Endpoint{IP: addr("10.246.0.3"), Port: 53, Terminating: true, Ready: true}}},
		Affinity:  lb.AffinityNone,
		Backend: lb.Explanation{Backend: "iptables", Want: lb.Live{Objects: []lb.LiveObject{{Kind: "chain", Name: "LBD-SVC-DNS", Detail: "1 rule"}}, Affinity: lb.AffinityNone},
			Have: lb.Live{Affinity: lb.AffinityNone}},
		Diff: []string{"chain LBD-SVC-DNS is missing", "endpoint 10.246.0.2:8080 is missing"}}
	return []explain.Port{match, differs}
}

// TestPrinters: every printer in every format, against its golden file.
func TestPrinters(t *testing.T) {
	verdicts := []hostcheck.Verdict{{Check: "root", OK: true, Detail: "uid 0"}, {Check: "ip_forward", OK: false, Detail: "0 (lbd turns it on at its first sync; without it nothing is forwarded)"}}
	tests := []struct {
		name  string
		print func(w *strings.Builder) error
	}{
		{"plan", func(w *strings.Builder) error { return WritePlan(w, "table", testPlan()) }},
		{"plan_json", func(w *strings.Builder) error { return WritePlan(w, "json", testPlan()) }},
		{"plan_empty", func(w *strings.Builder) error { return WritePlan(w, "", Plan{Backend: "nftables", Unchanged: 2}) }},
		{"plan_empty_json", func(w *strings.Builder) error { return WritePlan(w, "json", Plan{Backend: "nftables"}) }},
		{"status", func(w *strings.Builder) error { return WriteStatus(w, "table", testStatus()) }},
		{"status_json", func(w *strings.Builder) error { return WriteStatus(w, "json", testStatus()) }},
		{"status_empty", func(w *strings.Builder) error { return WriteStatus(w, "", Status{Backend: "iptables"}) }},
		{"check", func(w *strings.Builder) error { _, err := WriteCheck(w, "table", verdicts); return err }},
		{"check_json", func(w *strings.Builder) error { _, err := WriteCheck(w, "json", verdicts); return err }},
		{"explain", func(w *strings.Builder) error {
			return WriteExplain(w, "table", "192.168.121.240:80", "iptables", testExplained())
		}},
		{"explain_json", func(w *strings.Builder) error {
			return WriteExplain(w, "json", "192.168.121.240:80", "iptables", testExplained())
		}},
	}
	t.Setenv("TZ", "UTC")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := tt.print(&b); err != nil {
				t.Fatal(err)
			}
			testkit.Golden(t, []byte(b.String()))
		})
	}
}

// TestStatusEscapesLastError: the last sync's error may hold the master's
// stderr, written by any lbd version: status must not send its control
// characters to the terminal.
func TestStatusEscapesLastError(t *testing.T) {
	var b strings.Builder
	if err := WriteStatus(&b, "table", testStatus()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "\x1b") || strings.Count(out, "\nlast sync") != 1 || !strings.Contains(out, `stderr: x\n\x1b[2Jlast sync: ok`) {
		t.Errorf("status printed the raw error:\n%s", out)
	}
}

// TestCheckOK: WriteCheck says whether every verdict is ok.
func TestCheckOK(t *testing.T) {
	good := []hostcheck.Verdict{{Check: "root", OK: true}}
	for _, tt := range []struct {
		v    []hostcheck.Verdict
		want bool
	}{{nil, true}, {good, true}, {append(good, hostcheck.Verdict{Check: "ssh"}), false}} {
		for _, format := range []string{"table", "json"} {
			if ok, err := WriteCheck(&strings.Builder{}, format, tt.v); err != nil || ok != tt.want {
				t.Errorf("%s %v: %v, %v; want %v", format, tt.v, ok, err, tt.want)
			}
		}
	}
}

// TestBadFormat: an unknown -o is an error before anything is written.
func TestBadFormat(t *testing.T) {
	for name, print := range map[string]func(w *strings.Builder) error{
		"plan":    func(w *strings.Builder) error { return WritePlan(w, "yaml", testPlan()) },
		"status":  func(w *strings.Builder) error { return WriteStatus(w, "yaml", testStatus()) },
		"explain": func(w *strings.Builder) error { return WriteExplain(w, "yaml", "x", "iptables", testExplained()) },
	} {
		var b strings.Builder
		if err := print(&b); err == nil || err.Error() != `-o "yaml": want table or json` || b.Len() > 0 {
			t.Errorf("%s -o yaml: %v, wrote %q", name, err, b.String())
		}
	}
}
