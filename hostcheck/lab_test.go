package hostcheck_test

import (
	"net/netip"
	"testing"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

func service(name string, pods ...netip.Addr) lb.Service {
	s := lb.Service{Namespace: "default", Name: name, Type: "LoadBalancer",
		ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.201")},
		Ports:       []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80"}}}
	for _, p := range pods {
		s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, lb.Endpoint{IP: p, Port: 80, Ready: true, Serving: true})
	}
	s.Normalize()
	return s
}

// TestLabRouteCheck asks the LB namespace's real routing table: the pods
// route via flannel0, the master does not, and the pod network is what
// flannel0 routes.
func TestLabRouteCheck(t *testing.T) {
	testkit.RequireRoot(t)
	l := lab.ForTest(t, lab.Options{Name: "hc"})
	rc := hostcheck.NewRouteCheck("flannel0")

	nginx := service("nginx", l.PodIPs...)
	if err := lab.InNS(l.LBNS, func() error { return rc.Check(&nginx) }); err != nil {
		t.Errorf("Check(nginx): %v", err)
	}
	bad := service("bad", l.PodIPs[0], lab.MasterIP)
	err := lab.InNS(l.LBNS, func() error { return rc.Check(&bad) })
	want := "service default/bad: endpoint 10.245.1.10 routes via ens9, not flannel0"
	if err == nil || err.Error() != want {
		t.Errorf("Check(bad) = %v, want %q", err, want)
	}

	var why string
	var in bool
	if err := lab.InNS(l.LBNS, func() error { why, in = rc.InPodNetwork(l.PodIPs[0]); return nil }); err != nil {
		t.Fatal(err)
	}
	if !in {
		t.Errorf("InPodNetwork(%s) = false, want inside %s", l.PodIPs[0], lab.PodNetwork)
	}
	t.Logf("InPodNetwork(%s): %s", l.PodIPs[0], why)
	if err := lab.InNS(l.LBNS, func() error { why, in = rc.InPodNetwork(lab.MasterIP); return nil }); err != nil {
		t.Fatal(err)
	}
	if in {
		t.Errorf("InPodNetwork(%s) = %q, want outside", lab.MasterIP, why)
	}
}
