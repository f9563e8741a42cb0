package netfilter_test

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
)

func ep(ip string, port uint16, ready bool) lb.Endpoint {
	return lb.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Ready: ready, Serving: ready}
}

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

// goldenServices covers every shape Render distinguishes.
func goldenServices() []lb.Service {
	pods := func(port uint16) []lb.Endpoint {
		return []lb.Endpoint{ep("10.246.82.2", port, true), ep("10.246.82.6", port, true), ep("10.246.92.8", port, true)}
	}
	svcs := []lb.Service{
		{Namespace: "default", Name: "nginx", Type: "LoadBalancer", ExternalIPs: ips("192.168.121.201"),
			Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: pods(80)}}},
		{Namespace: "shop", Name: "web", Type: "LoadBalancer", ExternalIPs: ips("192.168.121.201", "192.168.121.202"),
			Ports: []lb.Port{
				{Name: "http", Port: 8080, Protocol: lb.TCP, TargetPort: "http", Endpoints: pods(8080)},
				{Name: "https", Port: 8443, Protocol: lb.TCP, TargetPort: "8443", Endpoints: []lb.Endpoint{ep("10.246.82.2", 8443, true), ep("10.246.82.6", 8443, false)}},
			}},
		{Namespace: "kube-system", Name: "dns", Type: "LoadBalancer", ExternalIPs: ips("192.168.121.203"),
			Ports: []lb.Port{
				{Name: "dns", Port: 53, Protocol: lb.UDP, TargetPort: "5353", Endpoints: pods(5353)},
				{Name: "sctp", Port: 9999, Protocol: lb.SCTP, TargetPort: "9999", Endpoints: []lb.Endpoint{ep("10.246.92.8", 9999, true)}},
			}},
		{Namespace: "default", Name: "sticky", Type: "LoadBalancer", ExternalIPs: ips("192.168.121.201"),
			Affinity: lb.AffinityClientIP, AffinityTimeout: 3 * time.Hour,
			Ports: []lb.Port{{Port: 81, Protocol: lb.TCP, TargetPort: "80", Endpoints: pods(80)}}},
		{Namespace: "default", Name: "empty", Type: "LoadBalancer", ExternalIPs: ips("192.168.121.201"),
			Ports: []lb.Port{
				{Name: "tcp", Port: 82, Protocol: lb.TCP, TargetPort: "80", Endpoints: []lb.Endpoint{ep("10.246.82.2", 80, false)}},
				{Name: "udp", Port: 82, Protocol: lb.UDP, TargetPort: "5353"},
			}},
		{Namespace: "default", Name: "internal", Type: "ClusterIP", ClusterIP: netip.MustParseAddr("10.0.0.10"),
			Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: pods(80)}}},
		{Namespace: "default", Name: "ranged", Type: "LoadBalancer", ExternalIPs: ips("192.168.121.240"),
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.168.121.0/28"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8::/32")},
			Ports:        []lb.Port{{Name: "http", Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: pods(80)}, {Name: "dns", Port: 53, Protocol: lb.UDP, TargetPort: "5353", Endpoints: pods(5353)}}},
		{Namespace: "default", Name: "six", Type: "LoadBalancer", ExternalIPs: ips("2001:db8::1"),
			Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: pods(80)}}},
	}
	for i := range svcs {
		svcs[i].Normalize()
	}
	lb.SortServices(svcs)
	return svcs
}

// golden is testkit.Golden.
func golden(t *testing.T, got []byte) {
	t.Helper()
	testkit.Golden(t, got)
}

func TestRender(t *testing.T) {
	tests := []struct {
		name        string
		opts        netfilter.Options
		wantSkipped []lb.Skipped
	}{
		{"default", netfilter.DefaultOptions(), []lb.Skipped{{Key: "default/six", Reason: "no IPv4 external IP; the iptables backend programs IPv4 only (2001:db8::1)"}}},
		{"no masquerade bit 3", netfilter.Options{MasqueradeBit: 3, Masquerade: false}, []lb.Skipped{{Key: "default/six", Reason: "no IPv4 external IP; the iptables backend programs IPv4 only (2001:db8::1)"}}},
		{"masquerade bit 20", netfilter.Options{MasqueradeBit: 20, Masquerade: true}, []lb.Skipped{{Key: "default/six", Reason: "no IPv4 external IP; the iptables backend programs IPv4 only (2001:db8::1)"}}},
		{"snat pool", netfilter.Options{MasqueradeBit: 13, Masquerade: true, SNATAddresses: ips("10.246.90.1", "10.246.90.2", "10.246.90.3", "10.246.90.4")}, []lb.Skipped{{Key: "default/six", Reason: "no IPv4 external IP; the iptables backend programs IPv4 only (2001:db8::1)"}}},
		{"snat one address", netfilter.Options{MasqueradeBit: 13, Masquerade: true, SNATAddresses: ips("10.246.90.1")}, []lb.Skipped{{Key: "default/six", Reason: "no IPv4 external IP; the iptables backend programs IPv4 only (2001:db8::1)"}}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			rs := netfilter.Render(goldenServices(), tt.opts)
			if d := cmp.Diff(tt.wantSkipped, rs.Skipped); d != "" {
				t.Errorf("skipped (-want +got):\n%s", d)
			}
			p := rs.Payload()
			golden(t, p)
			// Render is pure: the same input gives the same bytes.
			if d := cmp.Diff(string(p), string(netfilter.Render(goldenServices(), tt.opts).Payload())); d != "" {
				t.Errorf("second render differs:\n%s", d)
			}
			restoreTest(t, p)
		})
	}
}

// restoreTest loads payload with iptables-restore --test inside a fresh
// network namespace, where root.
func restoreTest(t *testing.T, payload []byte) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("SKIPPED iptables-restore --test: needs root")
		return
	}
	ns := newNetns(t)
	cmd := exec.Command("ip", "netns", "exec", ns, "iptables-restore", "--noflush", "--test", "-w")
	cmd.Stdin = strings.NewReader(string(payload))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("iptables-restore --test rejects the golden payload: %v: %s", err, out)
	}
}

func TestRenderEmpty(t *testing.T) {
	golden(t, netfilter.Render(nil, netfilter.DefaultOptions()).Payload())
}

// TestRenderMasqueradePort pins the masquerade rule without a port
// randomization flag: --random-fully put new connections on source ports
// the pods still held in TIME_WAIT (SYN retransmits, TcpExtPAWSTimewait);
// TestLabMasqueradeNoStalls measures it.
func TestRenderMasqueradePort(t *testing.T) {
	pool := ips("10.246.90.1", "10.246.90.2")
	tests := []struct {
		name string
		opts netfilter.Options
		want string
	}{
		{"masquerade", netfilter.DefaultOptions(), "-A LBD-POSTROUTING -j MASQUERADE"},
		{"pool", netfilter.Options{MasqueradeBit: 13, Masquerade: true, SNATAddresses: pool}, "-A LBD-POSTROUTING -j SNAT --to-source 10.246.90.1-10.246.90.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := netfilter.Render(nil, tt.opts)
			post := rs.NAT[1]
			if d := cmp.Diff(tt.want, post.Rules[len(post.Rules)-1]); d != "" {
				t.Errorf("masquerade rule (-want +got):\n%s", d)
			}
		})
	}
}

func TestOptionsValidateSNAT(t *testing.T) {
	tests := []struct {
		name    string
		pool    []netip.Addr
		wantErr string
	}{
		{"none", nil, ""},
		{"one", ips("10.246.90.1"), ""},
		{"range", ips("10.246.90.254", "10.246.90.255", "10.246.91.0"), ""},
		{"gap", ips("10.246.90.1", "10.246.90.3"), "10.246.90.3 does not follow 10.246.90.1"},
		{"descending", ips("10.246.90.2", "10.246.90.1"), "does not follow"},
		{"duplicate", ips("10.246.90.1", "10.246.90.1"), "does not follow"},
		{"ipv6", ips("2001:db8::1"), "want IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := netfilter.DefaultOptions()
			o.SNATAddresses = tt.pool
			err := o.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		bit      int
		wantErr  bool
		reserved bool
	}{
		{bit: 13}, {bit: 0}, {bit: 31},
		{bit: 14, wantErr: true, reserved: true},
		{bit: 15, wantErr: true, reserved: true},
		{bit: -1, wantErr: true}, {bit: 32, wantErr: true},
	}
	for _, tt := range tests {
		err := netfilter.Options{MasqueradeBit: tt.bit}.Validate()
		if (err != nil) != tt.wantErr {
			t.Errorf("bit %d: err = %v, want error %v", tt.bit, err, tt.wantErr)
		}
		if got := errors.Is(err, netfilter.ErrReservedMark); got != tt.reserved {
			t.Errorf("bit %d: errors.Is(err, ErrReservedMark) = %v, want %v", tt.bit, got, tt.reserved)
		}
	}
}

func TestServicePortChain(t *testing.T) {
	seen := map[string]string{}
	for _, key := range []string{"default/nginx:80/TCP", "default/nginx:80/UDP", "default/nginx:81/TCP", "a-very-long-namespace-name-that-is-63-characters-long-xxxxxxxxx/svc:65535/SCTP"} {
		c := netfilter.ServicePortChain(key)
		if len(c) > 28 || !strings.HasPrefix(c, netfilter.ChainPrefix) {
			t.Errorf("%s: chain %q: want LBD- prefix and at most 28 characters", key, c)
		}
		if other, dup := seen[c]; dup {
			t.Errorf("%s and %s share chain %s", key, other, c)
		}
		seen[c] = key
		if again := netfilter.ServicePortChain(key); again != c {
			t.Errorf("%s: chain name not deterministic: %s then %s", key, c, again)
		}
	}
}
