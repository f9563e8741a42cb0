package hostcheck

import (
	"net/netip"
	"testing"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
)

// TestLabViaInterface asks the LB namespace's real routing table in
// batches and compares every answer with netlink.RouteGet's, one address
// at a time: pods (via flannel0), the master (via ens9), the LB's own
// addresses (local), addresses without a route, IPv6, and more addresses
// than one batch holds.
func TestLabViaInterface(t *testing.T) {
	testkit.RequireRoot(t)
	l := lab.ForTest(t, lab.Options{Name: "crnhc"})
	ips := []netip.Addr{lab.MasterIP, lab.LBInfraIP, lab.LBExternalIP, lab.FlannelIP.Addr(),
		netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("::ffff:10.246.82.2"), netip.MustParseAddr("127.0.0.1")}
	ips = append(ips, l.PodIPs...)
	for i := range 3 * batchSize {
		ips = append(ips, netip.AddrFrom4([4]byte{10, 246, byte(i / 200), byte(1 + i%200)}))
	}
	for _, iface := range []string{"flannel0", "ens9", "nosuch0"} {
		rc := NewRouteCheck(iface)
		var got []bool
		want := make([]bool, len(ips))
		err := lab.InNS(l.LBNS, func() error {
			var err error
			if got, err = viaInterface(iface, ips); err != nil {
				return err
			}
			for i, ip := range ips {
				want[i] = rc.check(ip) == nil
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", iface, err)
		}
		for i, ip := range ips {
			if got[i] != want[i] {
				t.Errorf("via %s: %s: batch says %v, RouteGet %v", iface, ip, got[i], want[i])
			}
		}
		if iface == "flannel0" && (!got[len(ips)-1] || got[0]) {
			t.Errorf("via flannel0: a pod address must pass and the master fail: %v", got)
		}
	}
}
