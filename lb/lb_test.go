package lb

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		in                  string
		label, svc, portNam bool
	}{
		{"nginx", true, true, true},
		{"a", true, true, true},
		{"web-1", true, true, true},
		{"1web", true, false, true},
		{"123", true, false, false}, // a port name needs a letter
		{long, true, true, false},   // port names are at most 15
		{long + "a", false, false, false},
		{"", false, false, false},
		{"-web", false, false, false},
		{"web-", false, false, false},
		{"Web", false, false, false},
		{"we_b", false, false, false},
		{"we.b", false, false, false},
		{"a--b", true, true, false}, // labels allow "--", IANA names do not
		{"x;rm -rf /", false, false, false},
		{"web\n", false, false, false},
	}
	for _, tt := range tests {
		if got := IsDNSLabel(tt.in); got != tt.label {
			t.Errorf("IsDNSLabel(%q) = %v, want %v", tt.in, got, tt.label)
		}
		if got := IsServiceName(tt.in); got != tt.svc {
			t.Errorf("IsServiceName(%q) = %v, want %v", tt.in, got, tt.svc)
		}
		if got := IsPortName(tt.in); got != tt.portNam {
			t.Errorf("IsPortName(%q) = %v, want %v", tt.in, got, tt.portNam)
		}
	}
}

func TestParseProtocol(t *testing.T) {
	for in, want := range map[string]Protocol{"": TCP, "TCP": TCP, "UDP": UDP, "SCTP": SCTP} {
		if got, err := ParseProtocol(in); err != nil || got != want {
			t.Errorf("ParseProtocol(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"tcp", "ICMP", "TCP "} {
		if _, err := ParseProtocol(in); err == nil {
			t.Errorf("ParseProtocol(%q) accepted", in)
		}
	}
}

func good() Service {
	s := Service{Namespace: "default", Name: "nginx", Type: "ClusterIP", ClusterIP: netip.MustParseAddr("10.247.78.179"),
		ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.201")},
		Ports: []Port{{Port: 80, Protocol: TCP, TargetPort: "80", Endpoints: []Endpoint{
			{IP: netip.MustParseAddr("10.246.82.6"), Port: 80, Ready: true, Serving: true},
			{IP: netip.MustParseAddr("10.246.82.2"), Port: 80, Ready: true, Serving: true},
			{IP: netip.MustParseAddr("10.246.92.8"), Port: 80},
		}}}}
	s.Normalize()
	return s
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Service)
		field string // "" = valid
	}{
		{"valid", func(*Service) {}, ""},
		{"namespace", func(s *Service) { s.Namespace = "Kube_System" }, "metadata.namespace"},
		{"name", func(s *Service) { s.Name = "9lives" }, "metadata.name"},
		{"external unspecified", func(s *Service) { s.ExternalIPs = []netip.Addr{netip.IPv4Unspecified()} }, "externalIPs[0]"},
		{"external loopback", func(s *Service) { s.ExternalIPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")} }, "externalIPs[0]"},
		{"external zone", func(s *Service) { s.ExternalIPs = []netip.Addr{netip.MustParseAddr("fe80::1%eth0")} }, "externalIPs[0]"},
		{"port 0", func(s *Service) { s.Ports[0].Port = 0 }, "spec.ports[0].port"},
		{"protocol", func(s *Service) { s.Ports[0].Protocol = "ICMP" }, "spec.ports[0].protocol"},
		{"unnamed port of two", func(s *Service) { s.Ports = append(s.Ports, Port{Name: "b", Port: 81, Protocol: TCP}) }, "spec.ports[0].name"},
		{"duplicate port", func(s *Service) {
			s.Ports[0].Name = "a"
			s.Ports = append(s.Ports, Port{Name: "b", Port: 80, Protocol: TCP})
		}, "spec.ports[1]"},
		{"same port other protocol", func(s *Service) {
			s.Ports[0].Name = "a"
			s.Ports = append(s.Ports, Port{Name: "b", Port: 80, Protocol: UDP})
		}, ""},
		{"endpoint port", func(s *Service) { s.Ports[0].Endpoints[0].Port = 0 }, "spec.ports[0].endpoints[0].port"},
		{"affinity timeout", func(s *Service) { s.Affinity, s.AffinityTimeout = AffinityClientIP, 0 }, "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},
		{"affinity mode", func(s *Service) { s.Affinity = "Sticky" }, "spec.sessionAffinity"},
		{"source range unmasked", func(s *Service) { s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")} }, "spec.loadBalancerSourceRanges[0]"},
		{"source range", func(s *Service) { s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.edit(&s)
			err := s.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			ie, ok := err.(*InvalidServiceError)
			if !ok || ie.Field != tt.field || ie.Namespace != s.Namespace || ie.Name != s.Name {
				t.Fatalf("Validate = %v, want an *InvalidServiceError naming the service and %s", err, tt.field)
			}
		})
	}
}

func TestNormalizeAndNotesForm(t *testing.T) {
	s := good()
	if got := s.EndpointsString(); got != "10.246.82.2:80,10.246.82.6:80" {
		t.Errorf("EndpointsString = %q, want the notes' form with ready endpoints only, sorted", got)
	}
	if got := s.PortsString(); got != "80/TCP" {
		t.Errorf("PortsString = %q", got)
	}
	// Normalizing a shuffled copy gives an Equal service.
	c := s.Clone()
	c.ExternalIPs = append(c.ExternalIPs, c.ExternalIPs[0])
	c.Ports[0].Endpoints[0], c.Ports[0].Endpoints[2] = c.Ports[0].Endpoints[2], c.Ports[0].Endpoints[0]
	c.Affinity, c.AffinityTimeout = "", time.Hour // no affinity: the timeout means nothing
	c.SourceRanges = []netip.Prefix{}             // empty is absent
	c.Normalize()
	if !s.Equal(c) {
		t.Errorf("normalized copy differs:\n%+v\n%+v", s, *c)
	}
	c.Ports[0].Endpoints[2].Ready = true
	if s.Equal(c) {
		t.Error("a readiness change is not a difference")
	}
	if s.Ports[0].Endpoints[2].Ready {
		t.Error("Clone shares endpoints with the original")
	}
	// Source ranges are masked, sorted and unique, and part of the state.
	r := s.Clone()
	r.SourceRanges = []netip.Prefix{netip.MustParsePrefix("192.168.1.7/24"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.0/24")}
	r.Normalize()
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.0/24")}; !slices.Equal(r.SourceRanges, want) {
		t.Errorf("SourceRanges = %v, want %v", r.SourceRanges, want)
	}
	if s.Equal(r) {
		t.Error("a source range change is not a difference")
	}
}

func TestInvalidServiceErrorQuotesRawNames(t *testing.T) {
	ok := &InvalidServiceError{Namespace: "default", Name: "nginx", Field: "spec.ports[0].port", Reason: "0 is outside 1-65535"}
	if got := ok.Error(); got != "service default/nginx: spec.ports[0].port: 0 is outside 1-65535" {
		t.Errorf("Error() = %q", got)
	}
	evil := &InvalidServiceError{Namespace: "default", Name: "x\nlbd: sync done", Field: "metadata.name", Reason: "not a label"}
	if got := evil.Error(); strings.Contains(got, "\n") || !strings.Contains(got, `"x\nlbd: sync done"`) {
		t.Errorf("Error() = %q, want the raw name quoted on one line", got)
	}
}

// TestProgrammed: the unchanged exposed services plus the exposed Old
// side of each change; unexposed ones and the New side are not programmed.
func TestProgrammed(t *testing.T) {
	a, b, c := good(), good(), good()
	b.Name, c.Name = "b", "c"
	hidden := good()
	hidden.Name, hidden.ExternalIPs = "hidden", nil
	bNew := b.Clone()
	bNew.ExternalIPs = nil
	got := Programmed([]Service{a, *bNew, hidden}, []Change{{Kind: Update, Old: &b, New: bNew}, {Kind: Delete, Old: &c}})
	keys := []string{}
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{b.Key(), c.Key(), a.Key()}; !slices.Equal(keys, want) {
		t.Errorf("Programmed keys %v, want %v", keys, want)
	}
	if !got[b.Key()].Exposed() {
		t.Error("the changed service is not its Old side")
	}
	got[a.Key()].Ports[0].Endpoints[0].Ready = !got[a.Key()].Ports[0].Endpoints[0].Ready
	if a.Ports[0].Endpoints[0].Ready == got[a.Key()].Ports[0].Endpoints[0].Ready {
		t.Error("Programmed shares endpoints with desired")
	}
}
