package reconcile

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// svc builds a normalized service for tests: ns/name with the given
// external IP ("" for none) and one TCP port 80 served by ready endpoints.
func svc(ns, name, ext string, eps ...string) lb.Service {
	s := lb.Service{Namespace: ns, Name: name, Type: "ClusterIP", ClusterIP: netip.MustParseAddr("10.247.0.10")}
	if ext != "" {
		s.ExternalIPs = []netip.Addr{netip.MustParseAddr(ext)}
	}
	p := lb.Port{Port: 80, Protocol: lb.TCP, TargetPort: "80"}
	for _, e := range eps {
		p.Endpoints = append(p.Endpoints, lb.Endpoint{IP: netip.MustParseAddr(e), Port: 80, Ready: true, Serving: true})
	}
	s.Ports = []lb.Port{p}
	s.Normalize()
	return s
}

func with(s lb.Service, f func(*lb.Service)) lb.Service {
	c := s.Clone()
	f(c)
	c.Normalize()
	return *c
}

func TestDiff(t *testing.T) {
	nginx := svc("default", "nginx", "192.168.121.201", "10.246.82.2", "10.246.82.6")
	web := svc("web", "shop", "192.168.121.202", "10.246.92.8")
	type change struct {
		Kind lb.ChangeKind
		Key  string
		What []string
	}
	tests := []struct {
		name             string
		applied, desired []lb.Service
		want             []change
	}{
		{name: "nothing", applied: nil, desired: nil, want: nil},
		{name: "same", applied: []lb.Service{nginx, web}, desired: []lb.Service{nginx, web}, want: nil},
		{
			name: "create", desired: []lb.Service{nginx},
			want: []change{{lb.Create, "default/nginx", []string{"external 192.168.121.201", "ports 80/TCP", "endpoints 10.246.82.2:80,10.246.82.6:80"}}},
		},
		{
			name: "delete", applied: []lb.Service{nginx, web}, desired: []lb.Service{web},
			want: []change{{lb.Delete, "default/nginx", []string{"external 192.168.121.201", "ports 80/TCP", "endpoints 10.246.82.2:80,10.246.82.6:80"}}},
		},
		{
			name: "endpoint removed", applied: []lb.Service{nginx},
			desired: []lb.Service{svc("default", "nginx", "192.168.121.201", "10.246.82.2")},
			want:    []change{{lb.Update, "default/nginx", []string{"endpoints of 80/TCP -10.246.82.6:80"}}},
		},
		{
			name: "endpoint not ready", applied: []lb.Service{nginx},
			desired: []lb.Service{with(nginx, func(s *lb.Service) { s.Ports[0].Endpoints[1].Ready = false })},
			want:    []change{{lb.Update, "default/nginx", []string{"endpoints of 80/TCP -10.246.82.6:80 +10.246.82.6:80(not ready,serving)"}}},
		},
		{
			name: "external IP and port and affinity", applied: []lb.Service{nginx},
			desired: []lb.Service{with(nginx, func(s *lb.Service) {
				s.ExternalIPs = append(s.ExternalIPs, netip.MustParseAddr("192.168.121.203"))
				s.Ports[0].Name = "http"
				s.Ports = append(s.Ports, lb.Port{Name: "https", Port: 443, Protocol: lb.TCP, TargetPort: "https"})
				s.Affinity, s.AffinityTimeout = lb.AffinityClientIP, time.Minute
			})},
			want: []change{{lb.Update, "default/nginx", []string{
				"external IPs +192.168.121.203",
				"affinity None -> ClientIP/1m0s",
				`port 80/TCP: name "" target 80 -> name "http" target 80`,
				"port +443/TCP",
			}}},
		},
		{
			name: "unexposed", applied: []lb.Service{nginx},
			desired: []lb.Service{with(nginx, func(s *lb.Service) { s.ExternalIPs = nil })},
			want:    []change{{lb.Update, "default/nginx", []string{"external IPs -192.168.121.201"}}},
		},
		{
			name: "sorted across kinds", applied: []lb.Service{web}, desired: []lb.Service{nginx},
			want: []change{
				{lb.Create, "default/nginx", []string{"external 192.168.121.201", "ports 80/TCP", "endpoints 10.246.82.2:80,10.246.82.6:80"}},
				{lb.Delete, "web/shop", []string{"external 192.168.121.202", "ports 80/TCP", "endpoints 10.246.92.8:80"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []change
			for _, c := range Diff(tt.applied, tt.desired) {
				got = append(got, change{c.Kind, c.Key(), c.What})
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Diff (-want +got):\n%s", d)
			}
		})
	}
}
