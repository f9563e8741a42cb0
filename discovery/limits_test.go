package discovery

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// slice describes one EndpointSlice of service default/bomb for limitList.
type slice struct {
	ports     []string // port names; port i is number 1000+i, TCP
	endpoints int
	addresses []string // every endpoint lists these, with its own address first
}

// limitList returns kubectl output with service default/bomb (ports
// svcPorts, numbered 80+i, target port = service port), its slices, and
// service default/ok with no endpoints, which must always come back.
func limitList(svcPorts []string, slices ...slice) []byte {
	var b strings.Builder
	b.WriteString(`{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"default","name":"ok"},"spec":{"ports":[{"port":80}]}}`)
	b.WriteString(`,{"kind":"Service","metadata":{"namespace":"default","name":"bomb"},"spec":{"ports":[`)
	for i, n := range svcPorts {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"name":%q,"port":%d}`, n, 80+i)
	}
	b.WriteString(`]}}`)
	for si, s := range slices {
		fmt.Fprintf(&b, `,{"kind":"EndpointSlice","addressType":"IPv4","metadata":{"namespace":"default","name":"bomb-%d","labels":{"kubernetes.io/service-name":"bomb"}},"ports":[`, si)
		for i, n := range s.ports {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"name":%q,"port":%d}`, n, 1000+i)
		}
		b.WriteString(`],"endpoints":[`)
		for i := range s.endpoints {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"addresses":["10.%d.%d.%d"`, si, i>>8, i&255)
			for _, a := range s.addresses {
				fmt.Fprintf(&b, `,%q`, a)
			}
			b.WriteString(`]}`)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// endpointCount returns the number of endpoints of every port of svcs.
func endpointCount(svcs []lb.Service) int {
	n := 0
	for _, s := range svcs {
		for _, p := range s.Ports {
			n += len(p.Endpoints)
		}
	}
	return n
}

func TestParseSliceLimits(t *testing.T) {
	tests := []struct {
		name     string
		svcPorts []string
		slices   []slice
		// Either the rejection of default/bomb (field and a substring of
		// the reason) or the number of endpoints it gets.
		wantField, wantReason string
		wantEndpoints         int
	}{
		{name: "100 ports", svcPorts: names("p", 100), slices: []slice{{ports: names("p", 100), endpoints: 1}}, wantEndpoints: 100},
		{name: "101 ports", svcPorts: names("p", 101), slices: []slice{{ports: names("p", 101), endpoints: 1}},
			wantField: "endpointslice bomb-0: ports", wantReason: "101 ports, more than the API's limit of 100"},
		{name: "1000 endpoints", svcPorts: []string{""}, slices: []slice{{ports: []string{""}, endpoints: 1000}}, wantEndpoints: 1000},
		{name: "1001 endpoints", svcPorts: []string{""}, slices: []slice{{ports: []string{""}, endpoints: 1001}},
			wantField: "endpointslice bomb-0: endpoints", wantReason: "1001 endpoints, more than the API's limit of 1000"},
		{name: "two slices of 1000", svcPorts: []string{""}, slices: []slice{{ports: []string{""}, endpoints: 1000}, {ports: []string{""}, endpoints: 1000}}, wantEndpoints: 2000},
		{name: "duplicate port name", svcPorts: []string{""}, slices: []slice{{ports: []string{"", ""}, endpoints: 1}},
			wantField: "endpointslice bomb-0: ports[1].name", wantReason: `duplicate of ports[0].name ""`},
		// The API gives no meaning to addresses after the first;
		// kube-proxy ignores them, and so does lbd, whatever they hold.
		{name: "only the first address", svcPorts: []string{""}, slices: []slice{{ports: []string{""}, endpoints: 3, addresses: []string{"10.9.9.9", "not an address"}}}, wantEndpoints: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, invalid, err := Parse(limitList(tt.svcPorts, tt.slices...))
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, s := range svcs {
				keys = append(keys, s.Key())
			}
			if tt.wantField != "" {
				if d := cmp.Diff([]string{"default/ok"}, keys); d != "" {
					t.Errorf("services (-want +got):\n%s", d)
				}
				if len(invalid) != 1 || invalid[0].Name != "bomb" || invalid[0].Field != tt.wantField || !strings.Contains(invalid[0].Reason, tt.wantReason) {
					t.Fatalf("rejections %v, want one of default/bomb, field %q, reason with %q", invalid, tt.wantField, tt.wantReason)
				}
				return
			}
			if len(invalid) != 0 {
				t.Fatalf("rejected: %v", invalid)
			}
			if d := cmp.Diff([]string{"default/bomb", "default/ok"}, keys); d != "" {
				t.Fatalf("services (-want +got):\n%s", d)
			}
			if got := endpointCount(svcs); got != tt.wantEndpoints {
				t.Errorf("%d endpoints, want %d", got, tt.wantEndpoints)
			}
		})
	}
}

// A small input that multiplies ports by endpoints by addresses must not
// make Parse allocate in proportion to the product: 300 unnamed ports
// times 300 endpoints of 10 addresses each were 900,000 endpoints.
func TestParseBombIsBounded(t *testing.T) {
	addrs := make([]string, 9)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.200.0.%d", i+1)
	}
	data := limitList([]string{""}, slice{ports: make([]string, 300), endpoints: 300, addresses: addrs})
	if len(data) > 100<<10 {
		t.Fatalf("input is %d bytes; the point is a small one", len(data))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	svcs, invalid, err := Parse(data)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if n := endpointCount(svcs); n > 1000 {
		t.Errorf("%d endpoints from %d bytes of input", n, len(data))
	}
	if len(invalid) != 1 || invalid[0].Name != "bomb" {
		t.Errorf("rejections %v, want default/bomb", invalid)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("Parse allocated %d MB for %d KB of input", alloc>>20, len(data)>>10)
	}
}

// legacyList returns kubectl output (no EndpointSlices) with service
// default/bomb of one unnamed port, whose Endpoints has one subset with
// the given ports (names; numbered 1000+i) and n ready addresses.
func legacyList(ports []string, n int) []byte {
	var b strings.Builder
	b.WriteString(`{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"default","name":"bomb"},"spec":{"ports":[{"port":80}]}}`)
	b.WriteString(`,{"kind":"Endpoints","metadata":{"namespace":"default","name":"bomb"},"subsets":[{"ports":[`)
	for i, p := range ports {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"name":%q,"port":%d}`, p, 1000+i)
	}
	b.WriteString(`],"addresses":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"ip":"10.0.%d.%d"}`, i>>8, i&255)
	}
	b.WriteString(`]}]}]}`)
	return []byte(b.String())
}

func TestParseSubsetLimits(t *testing.T) {
	tests := []struct {
		name                  string
		ports                 []string
		addresses             int
		wantField, wantReason string // "" when accepted
	}{
		{name: "at the limits", ports: append([]string{""}, names("p", 99)...), addresses: 1000},
		{name: "101 ports", ports: append([]string{""}, names("p", 100)...), addresses: 1,
			wantField: "endpoints bomb: subsets[0].ports", wantReason: "101 ports, more than the limit of 100"},
		{name: "1001 addresses", ports: []string{""}, addresses: 1001,
			wantField: "endpoints bomb: subsets[0].addresses", wantReason: "1001 addresses, more than the limit of 1000"},
		{name: "duplicate port name", ports: []string{"", ""}, addresses: 1,
			wantField: "endpoints bomb: subsets[0].ports[1].name", wantReason: "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svcs, invalid, err := Parse(legacyList(tt.ports, tt.addresses))
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantField == "" {
				if len(invalid) != 0 || len(svcs) != 1 || endpointCount(svcs) != tt.addresses {
					t.Fatalf("got %d services, %d endpoints, rejections %v; want 1, %d, none", len(svcs), endpointCount(svcs), invalid, tt.addresses)
				}
				return
			}
			if len(svcs) != 0 || len(invalid) != 1 || invalid[0].Field != tt.wantField || !strings.Contains(invalid[0].Reason, tt.wantReason) {
				t.Fatalf("got %d services, rejections %v; want default/bomb rejected at %q with %q", len(svcs), invalid, tt.wantField, tt.wantReason)
			}
		})
	}
}

// A service with many ports is checked for duplicates in linear time.
func TestParseManyServicePorts(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"kind":"List","items":[{"kind":"Service","metadata":{"namespace":"default","name":"many"},"spec":{"ports":[`)
	const n = 20000
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"name":"p%d","port":%d,"protocol":"%s"}`, i, 1+i/2, []string{"TCP", "UDP"}[i%2])
	}
	b.WriteString(`]}}]}`)
	svcs, invalid, err := Parse([]byte(b.String()))
	if err != nil || len(invalid) != 0 || len(svcs) != 1 || len(svcs[0].Ports) != n {
		t.Fatalf("Parse: %v, rejected %v, %d services", err, invalid, len(svcs))
	}
}
