package ipam

import (
	"net/netip"
	"testing"
)

func TestExcludeConn(t *testing.T) {
	a := netip.MustParseAddr
	up := true
	conn := func() (netip.Addr, netip.Addr, bool) { return a("10.0.0.1"), a("10.0.0.2"), up }
	pod := func(ip netip.Addr) (string, bool) { return "it is in the pod network", ip == a("10.246.0.1") }
	ex := ExcludeConn(conn, "root@m", pod)
	for _, tt := range []struct {
		ip     string
		up     bool
		reason string
	}{
		{"10.0.0.1", true, "it is the master's address (root@m)"},
		{"10.0.0.2", true, "it is the address lbd's SSH connection to the master leaves from"},
		{"10.0.0.1", false, ""},
		{"10.246.0.1", true, "it is in the pod network"},
		{"10.0.0.3", true, ""},
	} {
		up = tt.up
		reason, ok := ex(a(tt.ip))
		if ok != (tt.reason != "") || ok && reason != tt.reason {
			t.Errorf("%s (connected %v): %q %v, want %q", tt.ip, tt.up, reason, ok, tt.reason)
		}
	}
}
