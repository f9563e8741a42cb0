package cli

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeyFiles(t *testing.T) {
	if d := cmp.Diff([]string{"/a", "/b c"}, Config{SSHKeys: " /a,, /b c ,"}.KeyFiles()); d != "" {
		t.Error(d)
	}
	if got := (Config{}).KeyFiles(); got != nil {
		t.Errorf("no --ssh-key: %q, want nil", got)
	}
}

// TestKeepalived: the --ha flags parse, or fail naming their flag.
func TestKeepalived(t *testing.T) {
	tests := []struct {
		name    string
		c       Config
		want    *HAAddrs
		wantErr string
	}{
		{"off", Config{HA: "none", HAPeers: []string{"bogus"}}, nil, ""},
		{"empty is off", Config{}, nil, ""},
		{"on", Config{HA: "keepalived", HAPeers: []string{"10.0.0.2", "fd00::2"}, HASource: "10.0.0.1"},
			&HAAddrs{Peers: []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2")}, Source: netip.MustParseAddr("10.0.0.1")}, ""},
		{"no source", Config{HA: "keepalived"}, &HAAddrs{}, ""},
		{"unknown mode", Config{HA: "carp"}, nil, `--ha "carp": want none or keepalived`},
		{"with vip-interface", Config{HA: "keepalived", VIPInterface: "eth0"}, nil, "--vip-interface with --ha=keepalived: keepalived owns and announces the addresses; leave --vip-interface empty"},
		{"bad peer", Config{HA: "keepalived", HAPeers: []string{"ten"}}, nil, `--ha-peer "ten": not an IP address`},
		{"bad source", Config{HA: "keepalived", HASource: "me"}, nil, `--ha-source "me": not an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.Keepalived()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestUseLastBackend(t *testing.T) {
	c := Config{Backend: "haproxy", Given: map[string]bool{}}
	if note := c.UseLastBackend("iptables"); note != "backend: iptables (of the last sync)" || c.Backend != "iptables" {
		t.Errorf("not given: %q, backend %q", note, c.Backend)
	}
	if note := c.UseLastBackend(""); note != "" || c.Backend != "iptables" {
		t.Errorf("no sync: %q, backend %q", note, c.Backend)
	}
	c = Config{Backend: "haproxy", Given: map[string]bool{"backend": true}}
	if note := c.UseLastBackend("iptables"); note != "" || c.Backend != "haproxy" {
		t.Errorf("given: %q, backend %q", note, c.Backend)
	}
}
