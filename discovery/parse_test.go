package discovery

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lbd/lbd/lb"
)

// The fixtures are captured from a real kube-apiserver by
// testdata/capture.sh from testdata/objects.yaml.
const (
	sliceFixture  = "services-endpointslices.json"
	legacyFixture = "services-endpoints.json"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var addrComparer = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func ep(ip string, port uint16, ready, serving, terminating bool) lb.Endpoint {
	return lb.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Ready: ready, Serving: serving, Terminating: terminating}
}

// wantFixture is what objects.yaml describes. ClusterIPs are allocated by
// the apiserver at capture time, so they are checked apart. legacy selects
// the Endpoints form, where a not-ready or terminating pod is simply not
// ready (Endpoints have no serving or terminating condition).
func wantFixture(legacy bool) []lb.Service {
	web := func(port uint16) []lb.Endpoint {
		eps := []lb.Endpoint{
			ep("10.246.82.2", port, true, true, false),
			ep("10.246.82.6", port, true, true, false),
			ep("10.246.82.7", port, false, false, false),
			ep("10.246.82.8", port, false, true, true),
		}
		if legacy {
			eps[3] = ep("10.246.82.8", port, false, false, false)
		}
		return eps
	}
	return []lb.Service{
		{
			Namespace: "default", Name: "dns", Type: "ClusterIP",
			ExternalIPs: ips("192.168.121.203"),
			Ports: []lb.Port{
				{Name: "dns-tcp", Port: 53, Protocol: lb.TCP, TargetPort: "5353", Endpoints: []lb.Endpoint{ep("10.246.83.4", 5353, true, true, false)}},
				{Name: "dns-udp", Port: 53, Protocol: lb.UDP, TargetPort: "5353", Endpoints: []lb.Endpoint{ep("10.246.83.4", 5353, true, true, false)}},
			},
			Affinity: lb.AffinityNone,
		},
		{
			Namespace: "default", Name: "internal", Type: "ClusterIP",
			Ports: []lb.Port{
				{Port: 8080, Protocol: lb.TCP, TargetPort: "8080", Endpoints: []lb.Endpoint{ep("10.246.82.3", 8080, true, true, false)}},
			},
			Affinity: lb.AffinityNone,
		},
		{
			Namespace: "default", Name: "kubernetes", Type: "ClusterIP",
			Ports: []lb.Port{
				{Name: "https", Port: 443, Protocol: lb.TCP, TargetPort: "6443", Endpoints: []lb.Endpoint{ep("192.0.2.10", 6443, true, true, false)}},
			},
			Affinity: lb.AffinityNone,
		},
		{
			Namespace: "default", Name: "web", Type: "ClusterIP",
			ExternalIPs: ips("192.168.121.201", "2001:db8::201"),
			Ports: []lb.Port{
				{Name: "http", Port: 80, Protocol: lb.TCP, TargetPort: "http", Endpoints: web(8080)},
				{Name: "https", Port: 443, Protocol: lb.TCP, TargetPort: "8443", Endpoints: web(8443)},
			},
			Affinity: lb.AffinityNone,
		},
		{
			Namespace: "shop", Name: "cart", Type: "ClusterIP",
			ExternalIPs: ips("192.168.121.202"),
			Ports: []lb.Port{
				{Port: 80, Protocol: lb.TCP, TargetPort: "8080", Endpoints: []lb.Endpoint{
					ep("10.246.84.2", 8080, true, true, false), // no conditions at all: ready
					ep("10.246.84.3", 8080, true, true, false),
				}},
			},
			Affinity: lb.AffinityClientIP, AffinityTimeout: 600 * time.Second,
		},
		{
			// Headless, no endpoint objects at all.
			Namespace: "shop", Name: "db", Type: "ClusterIP",
			Ports:    []lb.Port{{Name: "pg", Port: 5432, Protocol: lb.TCP, TargetPort: "5432"}},
			Affinity: lb.AffinityNone,
		},
		{
			// status.loadBalancer.ingress is what the cluster says now,
			// not an address to serve: lbd's pools decide that. The
			// hostname-only ingress and the FQDN slice are ignored.
			Namespace: "shop", Name: "shop-lb", Type: "LoadBalancer",
			LoadBalancer: &lb.LoadBalancer{Ingress: ips("192.168.121.210"), IPMode: "VIP"},
			Ports: []lb.Port{
				{Name: "https", Port: 443, Protocol: lb.TCP, TargetPort: "8443", Endpoints: []lb.Endpoint{ep("10.246.84.5", 8443, true, true, false)}},
			},
			Affinity: lb.AffinityNone,
		},
	}
}

func TestParseFixtures(t *testing.T) {
	serviceRange := netip.MustParsePrefix("10.247.0.0/16") // capture.sh's --service-cluster-ip-range
	tests := []struct {
		name    string
		fixture string
		want    []lb.Service
	}{
		{"endpointslices", sliceFixture, wantFixture(false)},
		{"endpoints", legacyFixture, wantFixture(true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, invalid, err := Parse(readFixture(t, tt.fixture))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(invalid) != 0 {
				t.Errorf("invalid services: %v", invalid)
			}
			if diff := cmp.Diff(tt.want, got, addrComparer, cmpopts.IgnoreFields(lb.Service{}, "ClusterIP"), cmpopts.IgnoreFields(lb.LoadBalancer{}, "UID", "ResourceVersion")); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			for _, s := range got {
				headless := s.Name == "db"
				if headless != !s.ClusterIP.IsValid() || (!headless && !serviceRange.Contains(s.ClusterIP)) {
					t.Errorf("%s: clusterIP %v (headless %v), want an address in %v unless headless", s.Key(), s.ClusterIP, headless, serviceRange)
				}
				if err := s.Validate(); err != nil {
					t.Errorf("%s: Validate: %v", s.Key(), err)
				}
			}
		})
	}
}

// setPath sets a value inside decoded JSON at a dotted path whose numeric
// elements index arrays ("spec.ports.0.port"). A nil value deletes the key.
func setPath(t *testing.T, obj map[string]any, path string, v any) {
	t.Helper()
	parts := strings.Split(path, ".")
	var cur any = obj
	for i, p := range parts {
		last := i == len(parts)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				if v == nil {
					delete(c, p)
				} else {
					c[p] = v
				}
				return
			}
			next, ok := c[p]
			if !ok {
				next = map[string]any{}
				c[p] = next
			}
			cur = next
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n >= len(c) {
				t.Fatalf("setPath %s: bad index %q", path, p)
			}
			if last {
				c[n] = v
				return
			}
			cur = c[n]
		default:
			t.Fatalf("setPath %s: %q is not inside an object or array", path, p)
		}
	}
}

// edit is one change to one item of a fixture.
type edit struct {
	kind, ns, name, path string
	value                any
}

// mutate applies edits to the fixture's items, found by kind and
// namespace/name, and returns the new JSON.
func mutate(t *testing.T, fixture string, edits ...edit) []byte {
	t.Helper()
	var list map[string]any
	if err := json.Unmarshal(readFixture(t, fixture), &list); err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		found := false
		for _, it := range list["items"].([]any) {
			o := it.(map[string]any)
			md := o["metadata"].(map[string]any)
			if o["kind"] == e.kind && md["namespace"] == e.ns && md["name"] == e.name {
				setPath(t, o, e.path, e.value)
				found = true
			}
		}
		if !found {
			t.Fatalf("no %s %s/%s in %s", e.kind, e.ns, e.name, fixture)
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRejectsOneService(t *testing.T) {
	svc := func(ns, name, path string, v any) edit { return edit{"Service", ns, name, path, v} }
	slice := func(name, path string, v any) edit { return edit{"EndpointSlice", "default", name, path, v} }
	tests := []struct {
		name    string
		fixture string
		edits   []edit
		// The one rejection expected: service and field.
		wantNS, wantName, wantField string
		// wantReason is a substring of the rejection's reason.
		wantReason string
	}{
		{"bad service name", sliceFixture, []edit{svc("default", "web", "metadata.name", "Web_1")}, "default", "Web_1", "metadata.name", "RFC 1035"},
		{"name starts with digit", sliceFixture, []edit{svc("default", "web", "metadata.name", "1web")}, "default", "1web", "metadata.name", "RFC 1035"},
		{"bad namespace", sliceFixture, []edit{svc("shop", "cart", "metadata.namespace", "Shop")}, "Shop", "cart", "metadata.namespace", "RFC 1123"},
		{"bad external IP", sliceFixture, []edit{svc("default", "web", "spec.externalIPs.0", "192.168.121.300")}, "default", "web", "spec.externalIPs[0]", "not an IP"},
		{"zone external IP", sliceFixture, []edit{svc("default", "web", "spec.externalIPs.1", "fe80::1%eth0")}, "default", "web", "spec.externalIPs[1]", "zone"},
		{"unspecified external IP", sliceFixture, []edit{svc("default", "dns", "spec.externalIPs.0", "0.0.0.0")}, "default", "dns", "spec.externalIPs[0]", "unspecified"},
		{"multicast external IP", sliceFixture, []edit{svc("default", "dns", "spec.externalIPs.0", "239.1.2.3")}, "default", "dns", "spec.externalIPs[0]", "multicast"},
		{"loopback external IP", sliceFixture, []edit{svc("default", "dns", "spec.externalIPs.0", "127.0.0.1")}, "default", "dns", "spec.externalIPs[0]", "loopback"},
		{"mapped external IP", sliceFixture, []edit{svc("default", "dns", "spec.externalIPs.0", "::ffff:192.168.121.203")}, "default", "dns", "spec.externalIPs[0]", "IPv4-mapped"},
		{"leading zeros external IP", sliceFixture, []edit{svc("default", "dns", "spec.externalIPs.0", "192.168.121.020")}, "default", "dns", "spec.externalIPs[0]", "not an IP"},
		{"external IP not a string", sliceFixture, []edit{svc("default", "dns", "spec.externalIPs.0", 42)}, "default", "dns", "spec.externalIPs", "number"},
		{"bad ingress IP", sliceFixture, []edit{svc("shop", "shop-lb", "status.loadBalancer.ingress.0.ip", "192.168.121")}, "shop", "shop-lb", "status.loadBalancer.ingress[0].ip", "not an IP"},
		{"bad requested IPs", sliceFixture, []edit{svc("shop", "shop-lb", "metadata.annotations", map[string]any{"lbd.io/load-balancer-ips": "192.168.121.240,nope"})}, "shop", "shop-lb", "metadata.annotations[lbd.io/load-balancer-ips]", "not an IP"},
		{"two requested IPv4", sliceFixture, []edit{svc("shop", "shop-lb", "metadata.annotations", map[string]any{"lbd.io/load-balancer-ips": "192.168.121.240,192.168.121.241"})}, "shop", "shop-lb", "metadata.annotations[lbd.io/load-balancer-ips]", "one IPv4 and one IPv6"},
		{"bad loadBalancerIP", sliceFixture, []edit{svc("shop", "shop-lb", "spec.loadBalancerIP", "127.0.0.1")}, "shop", "shop-lb", "spec.loadBalancerIP", "loopback"},
		{"bad share key", sliceFixture, []edit{svc("shop", "shop-lb", "metadata.annotations", map[string]any{"lbd.io/allow-shared-ip": "a b\n"})}, "shop", "shop-lb", "metadata.annotations[lbd.io/allow-shared-ip]", "not 1-63"},
		{"bad class", sliceFixture, []edit{svc("shop", "shop-lb", "spec.loadBalancerClass", "a\x1b[31m")}, "shop", "shop-lb", "spec.loadBalancerClass", "not a class"},
		{"bad source range", sliceFixture, []edit{svc("shop", "shop-lb", "spec.loadBalancerSourceRanges", []any{"10.0.0.0/8", "10.0.0.0/33"})}, "shop", "shop-lb", "spec.loadBalancerSourceRanges[1]", "not a CIDR"},
		{"bad cluster IP", sliceFixture, []edit{svc("shop", "cart", "spec.clusterIP", "ten")}, "shop", "cart", "spec.clusterIP", "not an IP"},
		{"port 0", sliceFixture, []edit{svc("default", "web", "spec.ports.0.port", 0)}, "default", "web", "spec.ports[0].port", "0 is outside"},
		{"port 70000", sliceFixture, []edit{svc("default", "web", "spec.ports.1.port", 70000)}, "default", "web", "spec.ports[1].port", "70000 is outside"},
		{"port that wraps to 80 in uint16", sliceFixture, []edit{svc("shop", "cart", "spec.ports.0.port", 65536+80)}, "shop", "cart", "spec.ports[0].port", "65616 is outside"},
		{"port that wraps in uint32", sliceFixture, []edit{svc("shop", "cart", "spec.ports.0.port", int64(1)<<32+80)}, "shop", "cart", "spec.ports[0].port", "is outside"},
		{"negative port", sliceFixture, []edit{svc("shop", "cart", "spec.ports.0.port", -80)}, "shop", "cart", "spec.ports[0].port", "-80 is outside"},
		{"port too big for int", sliceFixture, []edit{svc("shop", "cart", "spec.ports.0.port", 1e30)}, "shop", "cart", "spec.ports.port", "number"},
		{"fractional port", sliceFixture, []edit{svc("shop", "cart", "spec.ports.0.port", 80.5)}, "shop", "cart", "spec.ports.port", "number 80.5"},
		{"port as string", sliceFixture, []edit{svc("shop", "cart", "spec.ports.0.port", "80")}, "shop", "cart", "spec.ports.port", "string"},
		{"protocol ICMP", sliceFixture, []edit{svc("default", "web", "spec.ports.1.protocol", "ICMP")}, "default", "web", "spec.ports[1].protocol", `"ICMP"`},
		{"lower-case protocol", sliceFixture, []edit{svc("default", "dns", "spec.ports.0.protocol", "udp")}, "default", "dns", "spec.ports[0].protocol", `"udp"`},
		{"bad port name", sliceFixture, []edit{svc("default", "web", "spec.ports.0.name", "HTTP")}, "default", "web", "spec.ports[0].name", "RFC 1123"},
		{"unnamed port of multi-port", sliceFixture, []edit{svc("default", "web", "spec.ports.1.name", nil)}, "default", "web", "spec.ports[1].name", "must be named"},
		{"duplicate port", sliceFixture, []edit{svc("default", "web", "spec.ports.1.port", 80)}, "default", "web", "spec.ports[1]", "duplicate"},
		{"duplicate port name", sliceFixture, []edit{svc("default", "web", "spec.ports.1.name", "http")}, "default", "web", "spec.ports[1].name", "duplicate"},
		{"bad targetPort name", sliceFixture, []edit{svc("default", "web", "spec.ports.0.targetPort", "http_alt")}, "default", "web", "spec.ports[0].targetPort", "not a valid port name"},
		{"numeric string targetPort", sliceFixture, []edit{svc("default", "web", "spec.ports.0.targetPort", "8080")}, "default", "web", "spec.ports[0].targetPort", "not a valid port name"},
		{"targetPort 70000", sliceFixture, []edit{svc("default", "web", "spec.ports.1.targetPort", 70000)}, "default", "web", "spec.ports[1].targetPort", "outside"},
		{"targetPort negative", sliceFixture, []edit{svc("default", "web", "spec.ports.1.targetPort", -1)}, "default", "web", "spec.ports[1].targetPort", "outside"},
		{"targetPort bool", sliceFixture, []edit{svc("default", "web", "spec.ports.1.targetPort", true)}, "default", "web", "spec.ports[1].targetPort", "neither"},
		{"unknown type", sliceFixture, []edit{svc("default", "web", "spec.type", "Weird")}, "default", "web", "spec.type", `"Weird"`},
		{"unknown affinity", sliceFixture, []edit{svc("default", "web", "spec.sessionAffinity", "Sticky")}, "default", "web", "spec.sessionAffinity", `"Sticky"`},
		{"affinity timeout 0", sliceFixture, []edit{svc("shop", "cart", "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 0)}, "shop", "cart", "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "outside"},
		{"affinity timeout too long", sliceFixture, []edit{svc("shop", "cart", "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 86401)}, "shop", "cart", "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "outside"},
		{"bad slice address", sliceFixture, []edit{slice("web-a", "endpoints.1.addresses.0", "10.246.82.600")}, "default", "web", "endpointslice web-a: endpoints[1].addresses[0]", "not an IP"},
		{"IPv6 address in IPv4 slice", sliceFixture, []edit{slice("dns-1", "endpoints.0.addresses.0", "2001:db8::4")}, "default", "dns", "endpointslice dns-1: endpoints[0].addresses[0]", "not an IPv4"},
		{"zone in slice address", sliceFixture, []edit{edit{"EndpointSlice", "default", "dns-1", "addressType", "IPv6"}, slice("dns-1", "endpoints.0.addresses.0", "2001:db8::4%lo")}, "default", "dns", "endpointslice dns-1: endpoints[0].addresses[0]", "zone"},
		{"slice port 0", sliceFixture, []edit{slice("web-b", "ports.1.port", 0)}, "default", "web", "endpointslice web-b: ports[1].port", "outside"},
		{"slice port 65536", sliceFixture, []edit{slice("internal-1", "ports.0.port", 65536)}, "default", "internal", "endpointslice internal-1: ports[0].port", "outside"},
		{"slice protocol ICMP", sliceFixture, []edit{slice("internal-1", "ports.0.protocol", "ICMP")}, "default", "internal", "endpointslice internal-1: ports[0].protocol", `"ICMP"`},
		{"slice port as string", sliceFixture, []edit{slice("internal-1", "ports.0.port", "8080")}, "default", "internal", "endpointslice internal-1: ports.port", "string"},
		{"slice ready as string", sliceFixture, []edit{slice("internal-1", "endpoints.0.conditions.ready", "yes")}, "default", "internal", "endpointslice internal-1: endpoints.conditions.ready", "string"},
		{"bad endpoints address", legacyFixture, []edit{{"Endpoints", "default", "web", "subsets.0.addresses.1.ip", "10.246.82"}}, "default", "web", "endpoints web: subsets[0].addresses[1].ip", "not an IP"},
		{"bad endpoints not-ready address", legacyFixture, []edit{{"Endpoints", "default", "web", "subsets.0.notReadyAddresses.0.ip", "224.0.0.1"}}, "default", "web", "endpoints web: subsets[0].notReadyAddresses[0].ip", "multicast"},
		{"bad endpoints port", legacyFixture, []edit{{"Endpoints", "shop", "cart", "subsets.0.ports.0.port", 0}}, "shop", "cart", "endpoints cart: subsets[0].ports[0].port", "outside"},
		{"bad endpoints protocol", legacyFixture, []edit{{"Endpoints", "shop", "cart", "subsets.0.ports.0.protocol", "ICMP"}}, "shop", "cart", "endpoints cart: subsets[0].ports[0].protocol", `"ICMP"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, _, err := Parse(readFixture(t, tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			got, invalid, err := Parse(mutate(t, tt.fixture, tt.edits...))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(invalid) != 1 {
				t.Fatalf("got %d rejections %v, want exactly one", len(invalid), invalid)
			}
			e := invalid[0]
			if diff := cmp.Diff([]string{tt.wantNS, tt.wantName, tt.wantField}, []string{e.Namespace, e.Name, e.Field}); diff != "" {
				t.Errorf("rejection %q: namespace, name, field (-want +got):\n%s", e, diff)
			}
			if !strings.Contains(e.Reason, tt.wantReason) {
				t.Errorf("reason %q does not contain %q", e.Reason, tt.wantReason)
			}
			// Every other service still comes back, unchanged.
			var want []lb.Service
			for _, s := range good {
				if s.Namespace == tt.edits[0].ns && s.Name == tt.edits[0].name || s.Key() == tt.wantNS+"/"+tt.wantName {
					continue
				}
				want = append(want, s)
			}
			if diff := cmp.Diff(want, got, addrComparer); diff != "" {
				t.Errorf("remaining services (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	slice := func(name, path string, v any) edit { return edit{"EndpointSlice", "default", name, path, v} }
	tests := []struct {
		name    string
		fixture string
		edits   []edit
		// want changes the unmutated result of service key into the
		// expected one; nil means no change.
		key  string
		want func(*lb.Service)
	}{
		{
			// A port with no protocol is TCP; it still matches TCP
			// service ports.
			name: "slice port without protocol", fixture: sliceFixture,
			edits: []edit{slice("internal-1", "ports.0.protocol", nil)},
			key:   "default/internal",
		},
		{
			// A slice port without a number ("all ports") serves nothing.
			name: "slice port without number", fixture: sliceFixture,
			edits: []edit{slice("internal-1", "ports.0.port", nil)},
			key:   "default/internal",
			want:  func(s *lb.Service) { s.Ports[0].Endpoints = nil },
		},
		{
			// Serving absent follows ready.
			name: "serving absent", fixture: sliceFixture,
			edits: []edit{slice("web-b", "endpoints.1.conditions.serving", nil)},
			key:   "default/web",
			want: func(s *lb.Service) {
				for i := range s.Ports {
					s.Ports[i].Endpoints[3].Serving = false
				}
			},
		},
		{
			// The same pod in two slices is listed once, ready if
			// any listing says so, whatever the order.
			name: "pod in two slices", fixture: sliceFixture,
			edits: []edit{slice("web-b", "endpoints.0.addresses.0", "10.246.82.2")},
			key:   "default/web",
			want: func(s *lb.Service) {
				for i := range s.Ports {
					s.Ports[i].Endpoints = slices.Delete(s.Ports[i].Endpoints, 2, 3)
				}
			},
		},
		{
			// A targetPort of 0 is the API's "same as port".
			name: "targetPort 0", fixture: sliceFixture,
			edits: []edit{{"Service", "shop", "cart", "spec.ports.0.targetPort", 0}},
			key:   "shop/cart",
			want:  func(s *lb.Service) { s.Ports[0].TargetPort = "80" },
		},
		{
			// A ClientIP service without a config gets the default.
			name: "affinity default timeout", fixture: sliceFixture,
			edits: []edit{{"Service", "shop", "cart", "spec.sessionAffinityConfig", nil}},
			key:   "shop/cart",
			want:  func(s *lb.Service) { s.AffinityTimeout = lb.DefaultAffinityTimeout },
		},
		{
			// What a LoadBalancer service asks of lbd: class, requested
			// addresses (the annotation wins over spec.loadBalancerIP),
			// sharing key and source ranges (masked).
			name: "load balancer request", fixture: sliceFixture,
			edits: []edit{
				{"Service", "shop", "shop-lb", "spec.loadBalancerClass", "lbd.io/lbd"},
				{"Service", "shop", "shop-lb", "spec.loadBalancerIP", "192.168.121.250"},
				{"Service", "shop", "shop-lb", "spec.loadBalancerSourceRanges", []any{"192.168.121.0/24", " 10.1.2.3/8"}},
				{"Service", "shop", "shop-lb", "metadata.annotations", map[string]any{"lbd.io/load-balancer-ips": "192.168.121.241, 2001:db8::41", "lbd.io/allow-shared-ip": "team-a", "other": "x"}},
			},
			key: "shop/shop-lb",
			want: func(s *lb.Service) {
				s.LoadBalancer.Class = "lbd.io/lbd"
				s.LoadBalancer.Requested = ips("192.168.121.241", "2001:db8::41")
				s.LoadBalancer.Share = "team-a"
				s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.121.0/24")}
			},
		},
		{
			// spec.loadBalancerIP is the deprecated way to ask.
			name: "loadBalancerIP", fixture: sliceFixture,
			edits: []edit{{"Service", "shop", "shop-lb", "spec.loadBalancerIP", "192.168.121.250"}},
			key:   "shop/shop-lb",
			want:  func(s *lb.Service) { s.LoadBalancer.Requested = ips("192.168.121.250") },
		},
		{
			// Source ranges of a service that is not a LoadBalancer mean
			// nothing, as in Kubernetes.
			name: "source ranges of a ClusterIP service", fixture: sliceFixture,
			edits: []edit{{"Service", "shop", "cart", "spec.loadBalancerSourceRanges", []any{"10.0.0.0/8"}}},
			key:   "shop/cart",
		},
		{
			// A headless service may have no ports at all.
			name: "no ports", fixture: sliceFixture,
			edits: []edit{{"Service", "shop", "db", "spec.ports", nil}},
			key:   "shop/db",
			want:  func(s *lb.Service) { s.Ports = nil },
		},
		{
			// Items of other kinds are ignored, whatever their shape.
			name: "unknown kind", fixture: sliceFixture,
			edits: []edit{{"Service", "default", "web", "kind", "ConfigMap"}},
			key:   "default/web",
			want:  func(s *lb.Service) { *s = lb.Service{} },
		},
		{
			// A slice without the service-name label belongs to no service.
			name: "unlabelled slice", fixture: sliceFixture,
			edits: []edit{slice("web-b", "metadata.labels", nil)},
			key:   "default/web",
			want: func(s *lb.Service) {
				for i := range s.Ports {
					s.Ports[i].Endpoints = s.Ports[i].Endpoints[:2]
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, _, err := Parse(readFixture(t, tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(good)
			for i := range want {
				if want[i].Key() == tt.key && tt.want != nil {
					w := want[i].Clone()
					tt.want(w)
					want[i] = *w
				}
			}
			want = slices.DeleteFunc(want, func(s lb.Service) bool { return s.Name == "" })
			got, invalid, err := Parse(mutate(t, tt.fixture, tt.edits...))
			if err != nil || len(invalid) != 0 {
				t.Fatalf("Parse: %v, rejected %v", err, invalid)
			}
			if diff := cmp.Diff(want, got, addrComparer, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty", ``, "unexpected end"},
		{"truncated", `{"kind":"List","items":[`, "unexpected end"},
		{"array", `[]`, "cannot unmarshal array"},
		{"not a list", `{"kind":"Service","metadata":{"name":"web"}}`, `kind "Service", want List, ServiceList, EndpointSliceList or EndpointsList`},
		{"items not an array", `{"kind":"List","items":{}}`, "cannot unmarshal object"},
		{"trailing garbage", `{"kind":"List","items":[]} x`, "invalid character"},
		{"kubectl error text", `error: the server doesn't have a resource type "endpointslices"`, "invalid character"},
		{"login banner first", "Welcome to master1\n{\"kind\":\"List\",\"items\":[]}", `it starts with "Welcome to master1", not JSON (does a login script of the remote user print to stdout?)`},
		{"long first line", strings.Repeat("x", 100), `it starts with "` + strings.Repeat("x", 80) + `", not JSON`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, invalid, err := Parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error %v, want one containing %q", err, tt.wantErr)
			}
			if svcs != nil || invalid != nil {
				t.Errorf("Parse returned %v, %v alongside its error", svcs, invalid)
			}
		})
	}
	t.Run("empty list", func(t *testing.T) {
		svcs, invalid, err := Parse([]byte(`{"apiVersion":"v1","kind":"List","items":[]}`))
		if err != nil || len(svcs) != 0 || len(invalid) != 0 {
			t.Errorf("Parse = %v, %v, %v; want nothing", svcs, invalid, err)
		}
	})
}

// FuzzParse checks Parse on any input: it never panics, returns an error
// or a result (never both), and what it returns keeps its promises:
// valid, normalized, sorted services whose ports hold at most 1000
// endpoints per EndpointSlice or subset in the input, and rejections that
// name a field and carry no control character.
func FuzzParse(f *testing.F) {
	// Small seeds, so that the fuzzer mutates quickly; the captured
	// fixtures are tens of KB.
	f.Add(limitList([]string{"a", "b"}, slice{ports: []string{"a", "b"}, endpoints: 2, addresses: []string{"10.9.9.9"}}))
	f.Add(limitList([]string{""}, slice{ports: []string{"", ""}, endpoints: 1}))
	f.Add(legacyList([]string{""}, 2))
	f.Add([]byte(`{"kind":"List","items":[{"kind":"Service","metadata":{"name":"a","namespace":"b"},"spec":{"ports":[{"port":1,"targetPort":"x"}]}}]}`))
	f.Add([]byte(`{"kind":"List","items":[{"kind":"EndpointSlice","addressType":"IPv6","metadata":{"labels":{"kubernetes.io/service-name":"a"}},"endpoints":[{"addresses":["::1"]}],"ports":[{}]}]}`))
	f.Add([]byte(`{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"d","name":"w"},"spec":{"type":"LoadBalancer","externalIPs":["192.0.2.1"],"sessionAffinity":"ClientIP","ports":[{"name":"h","port":80,"targetPort":[1,2]}]},"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.2"}]}}},` +
		`{"kind":"EndpointSlice","addressType":"IPv4","metadata":{"namespace":"d","name":"w-1\u001b","labels":{"kubernetes.io/service-name":"w"}},"ports":[{"name":"h","port":8080}],"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":false,"serving":true,"terminating":true}}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		svcs, invalid, err := Parse(data)
		if err != nil {
			if svcs != nil || invalid != nil {
				t.Fatalf("results alongside error %v", err)
			}
			return
		}
		limit := maxSliceEndpoints * endpointGroups(data)
		for i := range svcs {
			s := &svcs[i]
			if err := s.Validate(); err != nil {
				t.Fatalf("returned an invalid service: %v", err)
			}
			c := s.Clone()
			c.Normalize()
			if !c.Equal(s) {
				t.Fatalf("%s is not normalized", s.Key())
			}
			// By namespace, then name (Parse's contract), which is not
			// the order of the keys: "0/a" comes before "0-0/a".
			if i > 0 {
				prev := &svcs[i-1]
				if prev.Namespace > s.Namespace || prev.Namespace == s.Namespace && prev.Name >= s.Name {
					t.Fatalf("not sorted by namespace and name, or duplicate: %s then %s", prev.Key(), s.Key())
				}
			}
			for _, p := range s.Ports {
				if len(p.Endpoints) > limit {
					t.Fatalf("%s %s: %d endpoints, more than %d per slice or subset in the input", s.Key(), p, len(p.Endpoints), maxSliceEndpoints)
				}
			}
		}
		for _, e := range invalid {
			if e == nil || e.Field == "" {
				t.Fatalf("rejection without a field: %v", e)
			}
			if hasControl(e.Error()) {
				t.Fatalf("rejection with a control character: %q", e.Error())
			}
		}
	})
}

// endpointGroups counts the EndpointSlices and Endpoints subsets in
// kubectl output (at least 1), decoding as leniently as Parse does.
func endpointGroups(data []byte) int {
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	_ = json.Unmarshal(data, &list)
	n := 1
	for _, raw := range list.Items {
		var o struct {
			Subsets []json.RawMessage `json:"subsets"`
		}
		_ = json.Unmarshal(raw, &o)
		n += 1 + len(o.Subsets)
	}
	return n
}

// bigList returns kubectl output with n services, each with two ports and
// one EndpointSlice of m endpoints, shaped like the captured fixtures
// (metadata, annotations, targetRefs and all).
func bigList(n, m int) []byte {
	var b strings.Builder
	b.WriteString(`{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[`)
	sep := ""
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i%50)
		fmt.Fprintf(&b, `%s{"apiVersion":"v1","kind":"Service","metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Service\"}\n"},"creationTimestamp":"2026-11-21T07:32:15Z","labels":{"app":"svc-%d"},"name":"svc-%d","namespace":"%s","resourceVersion":"%d","uid":"6e9c1d68-7cb3-4839-9ee4-%012d"},"spec":{"clusterIP":"10.247.%d.%d","clusterIPs":["10.247.%d.%d"],"externalIPs":["192.168.%d.%d"],"externalTrafficPolicy":"Cluster","internalTrafficPolicy":"Cluster","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":"http"},{"name":"https","port":443,"protocol":"TCP","targetPort":8443}],"selector":{"app":"svc-%d"},"sessionAffinity":"None","type":"ClusterIP"},"status":{"loadBalancer":{}}}`,
			sep, i, i, ns, i, i, i/250, i%250+1, i/250, i%250+1, i/250, i%250+1, i)
		sep = ","
	}
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i%50)
		fmt.Fprintf(&b, `,{"addressType":"IPv4","apiVersion":"discovery.k8s.io/v1","endpoints":[`)
		for j := range m {
			if j > 0 {
				b.WriteString(",")
			}
			ip := i*m + j
			fmt.Fprintf(&b, `{"addresses":["10.%d.%d.%d"],"conditions":{"ready":%v,"serving":true,"terminating":false},"nodeName":"node-%d","targetRef":{"kind":"Pod","name":"svc-%d-%d","namespace":"%s","uid":"0b1c2d3e-4f50-6172-8394-%012d"}}`,
				ip>>16&255+1, ip>>8&255, ip&255, j != 0, j%5, i, j, ns, ip)
		}
		fmt.Fprintf(&b, `],"kind":"EndpointSlice","metadata":{"annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"2026-11-21T07:32:15Z"},"creationTimestamp":"2026-11-21T07:32:15Z","generateName":"svc-%d-","generation":1,"labels":{"endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io","kubernetes.io/service-name":"svc-%d"},"name":"svc-%d-abcde","namespace":"%s","ownerReferences":[{"apiVersion":"v1","blockOwnerDeletion":true,"controller":true,"kind":"Service","name":"svc-%d","uid":"6e9c1d68-7cb3-4839-9ee4-%012d"}],"resourceVersion":"%d","uid":"b2ad87f4-163c-4a5b-a9ac-%012d"},"ports":[{"name":"http","port":8080,"protocol":"TCP"},{"name":"https","port":8443,"protocol":"TCP"}]}`,
			i, i, i, ns, i, i, i, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func TestBigList(t *testing.T) {
	// The benchmark's input must parse cleanly, or it measures rejection.
	svcs, invalid, err := Parse(bigList(300, 10))
	if err != nil || len(invalid) != 0 {
		t.Fatalf("Parse: %v, rejected %v", err, invalid)
	}
	if len(svcs) != 300 {
		t.Fatalf("got %d services, want 300", len(svcs))
	}
	for _, s := range svcs {
		for _, p := range s.Ports {
			if len(p.Endpoints) != 10 || len(p.ReadyEndpoints()) != 9 {
				t.Fatalf("%s %s: %d endpoints, %d ready; want 10, 9", s.Key(), p, len(p.Endpoints), len(p.ReadyEndpoints()))
			}
		}
	}
}

func BenchmarkParse10kServices(b *testing.B) {
	data := bigList(10000, 10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		svcs, invalid, err := Parse(data)
		if err != nil || len(invalid) != 0 || len(svcs) != 10000 {
			b.Fatalf("Parse: %d services, %d rejected, %v", len(svcs), len(invalid), err)
		}
	}
}

// TestParseIPMode: the ingress entries' ipMode is read back, "mixed" when
// they differ and empty when the cluster shows none, so that a status
// written by another backend is told from a right one.
func TestParseIPMode(t *testing.T) {
	tests := []struct{ ingress, want string }{
		{`[{"ip":"192.0.2.2","ipMode":"VIP"},{"ip":"192.0.2.3","ipMode":"VIP"}]`, "VIP"},
		{`[{"hostname":"x.example"},{"ip":"192.0.2.2","ipMode":"Proxy"}]`, "Proxy"},
		{`[{"ip":"192.0.2.2","ipMode":"VIP"},{"ip":"192.0.2.3","ipMode":"Proxy"}]`, "mixed"},
		{`[{"ip":"192.0.2.2"}]`, ""},
	}
	for _, tt := range tests {
		data := `{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"d","name":"w"},"spec":{"type":"LoadBalancer","ports":[{"port":80}]},"status":{"loadBalancer":{"ingress":` + tt.ingress + `}}}]}`
		svcs, invalid, err := Parse([]byte(data))
		if err != nil || len(invalid) != 0 || len(svcs) != 1 || svcs[0].LoadBalancer == nil {
			t.Fatalf("%s: %v %v %v", tt.ingress, svcs, invalid, err)
		}
		if got := svcs[0].LoadBalancer.IPMode; got != tt.want {
			t.Errorf("%s: ipMode %q, want %q", tt.ingress, got, tt.want)
		}
	}
}
