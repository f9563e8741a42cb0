package ipam

import (
	"math"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var ip = netip.MustParseAddr

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestParsePool(t *testing.T) {
	type out struct {
		String, First, Last string
		Size                uint64
		Err                 string
	}
	tests := []struct {
		in   string
		want out
	}{
		{"192.168.121.240/28", out{"192.168.121.240/28", "192.168.121.241", "192.168.121.254", 14, ""}},
		{" 10.0.0.0/30 ", out{"10.0.0.0/30", "10.0.0.1", "10.0.0.2", 2, ""}},
		{"10.0.0.0/31", out{"10.0.0.0/31", "10.0.0.0", "10.0.0.1", 2, ""}},
		{"10.0.0.7/32", out{"10.0.0.7/32", "10.0.0.7", "10.0.0.7", 1, ""}},
		{"10.0.0.0/8", out{"10.0.0.0/8", "10.0.0.1", "10.255.255.254", 1<<24 - 2, ""}},
		{"2001:DB8::/120", out{"2001:db8::/120", "2001:db8::", "2001:db8::ff", 256, ""}},
		{"2001:db8::/64", out{"2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", math.MaxUint64, ""}},
		{"2001:db8::/65", out{"2001:db8::/65", "2001:db8::", "2001:db8::7fff:ffff:ffff:ffff", 1 << 63, ""}},
		{"192.168.121.240-192.168.121.250", out{"192.168.121.240-192.168.121.250", "192.168.121.240", "192.168.121.250", 11, ""}},
		{"10.0.0.1 - 10.0.0.1", out{"10.0.0.1", "10.0.0.1", "10.0.0.1", 1, ""}},
		{"2001:db8::1-2001:db8::1:0", out{"2001:db8::1-2001:db8::1:0", "2001:db8::1", "2001:db8::1:0", 65536, ""}},
		{"10.0.0.9", out{"10.0.0.9", "10.0.0.9", "10.0.0.9", 1, ""}},

		{"", out{Err: `--pool "": want a CIDR (10.0.0.0/28), a range (10.0.0.1-10.0.0.9) or an address: ParseAddr(""): unable to parse IP`}},
		{"pool", out{Err: `--pool "pool": want a CIDR (10.0.0.0/28), a range (10.0.0.1-10.0.0.9) or an address: ParseAddr("pool"): unable to parse IP`}},
		{"10.0.0.0/33", out{Err: `--pool "10.0.0.0/33": not a CIDR: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`}},
		{"192.168.121.245/28", out{Err: `--pool "192.168.121.245/28": host bits are set; the network is 192.168.121.240/28`}},
		{"10.0.0.9-10.0.0.1", out{Err: `--pool "10.0.0.9-10.0.0.1": first address 10.0.0.9 is after last address 10.0.0.1`}},
		{"10.0.0.1-2001:db8::1", out{Err: `--pool "10.0.0.1-2001:db8::1": 10.0.0.1 and 2001:db8::1 are of different address families`}},
		{"10.0.0.1-", out{Err: `--pool "10.0.0.1-": last address: ParseAddr(""): unable to parse IP`}},
		{"x-10.0.0.1", out{Err: `--pool "x-10.0.0.1": first address: ParseAddr("x"): unable to parse IP`}},
		{"fe80::1%eth0-fe80::9%eth0", out{Err: `--pool "fe80::1%eth0-fe80::9%eth0": first address: fe80::1%eth0 has a zone; pools take no zones`}},
		{"::ffff:10.0.0.0/120", out{Err: `--pool "::ffff:10.0.0.0/120": ::ffff:10.0.0.0 is an IPv4-mapped IPv6 address; write 10.0.0.0`}},
		{"::ffff:10.0.0.1-::ffff:10.0.0.5", out{Err: `--pool "::ffff:10.0.0.1-::ffff:10.0.0.5": first address: ::ffff:10.0.0.1 is an IPv4-mapped IPv6 address; write 10.0.0.1`}},
		{"127.0.0.0/8", out{Err: `--pool "127.0.0.0/8": holds only addresses that are never served (loopback address)`}},
		{"224.0.0.1-239.0.0.1", out{Err: `--pool "224.0.0.1-239.0.0.1": holds only addresses that are never served (multicast address)`}},
		{"fe80::/64", out{Err: `--pool "fe80::/64": holds only addresses that are never served (link-local address)`}},
		{"::", out{Err: `--pool "::": holds only addresses that are never served (unspecified address)`}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePool(tt.in)
			got := out{Err: errText(err)}
			if err == nil {
				got = out{p.String(), p.first.String(), p.last.String(), p.Size(), ""}
				// The operator's form parses back to the same pool.
				if q, err := ParsePool(p.String()); err != nil || q != p {
					t.Errorf("ParsePool(%q) = %v, %v; want %v", p.String(), q, err, p)
				}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("ParsePool(%q) (-want +got):\n%s", tt.in, d)
			}
		})
	}
}

func TestPoolContains(t *testing.T) {
	cidr, _ := ParsePool("10.0.0.0/29")
	rng, _ := ParsePool("10.0.0.10-10.0.0.12")
	v6, _ := ParsePool("2001:db8::/126")
	tests := []struct {
		p    Pool
		a    string
		want bool
	}{
		{cidr, "10.0.0.0", false}, // network
		{cidr, "10.0.0.1", true},
		{cidr, "10.0.0.6", true},
		{cidr, "10.0.0.7", false}, // broadcast
		{cidr, "10.0.0.8", false},
		{rng, "10.0.0.9", false},
		{rng, "10.0.0.10", true},
		{rng, "10.0.0.12", true},
		{rng, "10.0.0.13", false},
		{rng, "::ffff:10.0.0.11", false},
		{v6, "2001:db8::", true},
		{v6, "2001:db8::3", true},
		{v6, "2001:db8::4", false},
		{v6, "2001:db8::1%eth0", false},
		{v6, "10.0.0.1", false},
		{Pool{}, "10.0.0.1", false},
	}
	for _, tt := range tests {
		if got := tt.p.Contains(ip(tt.a)); got != tt.want {
			t.Errorf("%v.Contains(%s) = %v, want %v", tt.p, tt.a, got, tt.want)
		}
	}
}

func TestParsePools(t *testing.T) {
	tests := []struct {
		name  string
		specs []string
		want  string // Pools.String()
		err   string
	}{
		{"none", nil, "", ""},
		{"empty env", []string{""}, "", ""},
		{"repeated flag", []string{"10.0.0.0/28", "2001:db8::/120"}, "10.0.0.0/28, 2001:db8::/120", ""},
		{"order kept", []string{"10.0.1.0/28", "10.0.0.0/28"}, "10.0.1.0/28, 10.0.0.0/28", ""},
		{"comma list", []string{"10.0.0.0/28, 10.0.0.16-10.0.0.20,", "10.0.0.21"}, "10.0.0.0/28, 10.0.0.16-10.0.0.20, 10.0.0.21", ""},
		{"adjacent", []string{"10.0.0.0/28", "10.0.0.16/28"}, "10.0.0.0/28, 10.0.0.16/28", ""},
		{"bad item", []string{"10.0.0.0/28,10.0.0.300"}, "", `--pool "10.0.0.300": want a CIDR (10.0.0.0/28), a range (10.0.0.1-10.0.0.9) or an address: ParseAddr("10.0.0.300"): IPv4 field has value >255`},
		{"overlap", []string{"10.0.0.0/28", "10.0.0.8-10.0.0.20"}, "", "--pool 10.0.0.0/28 overlaps --pool 10.0.0.8-10.0.0.20"},
		// The broadcast address is not served but the operator meant the
		// whole /28: still an overlap.
		{"overlap at broadcast", []string{"10.0.0.15-10.0.0.20", "10.0.0.0/28"}, "", "--pool 10.0.0.15-10.0.0.20 overlaps --pool 10.0.0.0/28"},
		{"duplicate", []string{"2001:db8::/64", "10.0.0.1", "2001:db8::/64"}, "", "--pool 2001:db8::/64 overlaps --pool 2001:db8::/64"},
		{"contained", []string{"10.0.0.0/16", "10.1.0.0/16", "10.0.3.0/24"}, "", "--pool 10.0.0.0/16 overlaps --pool 10.0.3.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := ParsePools(tt.specs)
			if d := cmp.Diff(tt.err, errText(err)); d != "" {
				t.Errorf("error (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.want, ps.String()); d != "" {
				t.Errorf("pools (-want +got):\n%s", d)
			}
		})
	}
}

func mustPools(t testing.TB, specs ...string) Pools {
	t.Helper()
	ps, err := ParsePools(specs)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestPoolOf(t *testing.T) {
	ps := mustPools(t, "10.0.0.0/28", "2001:db8::/120")
	if p, ok := ps.PoolOf(ip("2001:db8::5")); !ok || p.String() != "2001:db8::/120" {
		t.Errorf("PoolOf(2001:db8::5) = %v, %v", p, ok)
	}
	if p, ok := ps.PoolOf(ip("10.0.0.16")); ok {
		t.Errorf("PoolOf(10.0.0.16) = %v, %v", p, ok)
	}
	if !ps.Contains(ip("10.0.0.14")) || ps.Contains(ip("10.0.0.15")) {
		t.Error("Contains is wrong at the /28's top")
	}
}

// master excludes the lab's master and the LB's own SSH source address.
func master(a netip.Addr) (string, bool) {
	switch a {
	case ip("10.0.0.2"):
		return "the master's address", true
	case ip("10.0.0.3"):
		return "the address lbd's SSH leaves from", true
	}
	return "", false
}

func TestAdmit(t *testing.T) {
	ps := mustPools(t, "10.0.0.0/28", "126.255.255.250-127.0.0.9", "223.255.255.250-224.0.0.9", "2001:db8::/120", "fe7f::-fe80::9", "0.0.0.0-0.0.0.3", "255.255.255.250-255.255.255.255")
	tests := []struct {
		pools Pools
		a     string
		want  string
	}{
		{ps, "10.0.0.1", ""},
		{ps, "2001:db8::ff", ""},
		{ps, "10.0.0.2", "10.0.0.2 is never served: the master's address"},
		{ps, "10.0.0.3", "10.0.0.3 is never served: the address lbd's SSH leaves from"},
		{ps, "10.0.0.0", "10.0.0.0 is the network or broadcast address of --pool 10.0.0.0/28, which is never served"},
		{ps, "10.0.0.15", "10.0.0.15 is the network or broadcast address of --pool 10.0.0.0/28, which is never served"},
		{ps, "192.0.2.7", "192.0.2.7 is outside every address pool (--pool 10.0.0.0/28, 126.255.255.250-127.0.0.9, 223.255.255.250-224.0.0.9, 2001:db8::/120, fe7f::-fe80::9, 0.0.0.0-0.0.0.3, 255.255.255.250-255.255.255.255)"},
		{ps, "::ffff:10.0.0.1", "::ffff:10.0.0.1 is outside every address pool (--pool 10.0.0.0/28, 126.255.255.250-127.0.0.9, 223.255.255.250-224.0.0.9, 2001:db8::/120, fe7f::-fe80::9, 0.0.0.0-0.0.0.3, 255.255.255.250-255.255.255.255)"},
		// Built-in exclusions apply inside a pool.
		{ps, "127.0.0.1", "127.0.0.1 is never served: loopback address"},
		{ps, "224.0.0.5", "224.0.0.5 is never served: multicast address"},
		{ps, "fe80::1", "fe80::1 is never served: link-local address"},
		{ps, "0.0.0.0", "0.0.0.0 is never served: unspecified address"},
		{ps, "255.255.255.255", "255.255.255.255 is never served: limited broadcast address"},
		{ps, "255.255.255.254", ""},
		{ps, "0.0.0.1", ""},
		{nil, "10.0.0.1", "no address pool is configured: set --pool"},
		{Pools{}, "192.0.2.7", "no address pool is configured: set --pool"},
	}
	for _, tt := range tests {
		err := tt.pools.Admit(ip(tt.a), master)
		if d := cmp.Diff(tt.want, errText(err)); d != "" {
			t.Errorf("Admit(%s) (-want +got):\n%s", tt.a, d)
		}
	}
	if err := ps.Admit(ip("10.0.0.2"), nil); err != nil {
		t.Errorf("Admit with a nil Excluder: %v", err)
	}
	if err := ps.Admit(netip.Addr{}, nil); errText(err) != "invalid IP is never served: invalid address" {
		t.Errorf("Admit(zero Addr) = %v", err)
	}
}

// TestStandIn: the stand-in address an HA pair holds while it serves
// nothing is the first admitted address of the peers' family.
func TestStandIn(t *testing.T) {
	pools, err := ParsePools([]string{"2001:db8::/120", "192.168.121.240/28"})
	if err != nil {
		t.Fatal(err)
	}
	none := func(netip.Addr) (string, bool) { return "", false }
	notFirst := func(a netip.Addr) (string, bool) { return "the master's", a == netip.MustParseAddr("192.168.121.241") }
	tests := []struct {
		name string
		ex   Excluder
		v4   bool
		want string
	}{
		{"ipv4", none, true, "192.168.121.241"},
		{"first excluded", notFirst, true, "192.168.121.242"},
		{"ipv6", none, false, "2001:db8::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pools.StandIn(tt.ex, tt.v4).String(); got != tt.want {
				t.Errorf("StandIn = %s, want %s", got, tt.want)
			}
		})
	}
	if a := Pools(nil).StandIn(none, true); a.IsValid() {
		t.Errorf("without pools: %v, want none", a)
	}
}
