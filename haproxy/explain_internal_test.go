package haproxy

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseBackendServers(t *testing.T) {
	out := []byte(`1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 lbd_default_web_80_tcp 1 ep_10-246-82-2_80 10.246.82.2 2 0 1 1 5 6 3 4 6 0 0 0 - 80 - 0 0 - - 0
3 lbd_default_web_80_tcp 2 ep_10-246-82-6_80 10.246.82.6 0 0 1 1 5 8 2 0 6 0 0 0 - 80 - 0 0 - - 0
3 lbd_default_web_80_tcp 3 ep_10-246-92-8_80 10.246.92.8 2 1 1 1 5 6 3 4 6 0 0 0 - 80 - 0 0 - - 0
`)
	got, err := parseBackendServers(out)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	want := []runningServer{
		{name: "ep_10-246-82-2_80", state: "UP", addr: ap("10.246.82.2:80")},
		{name: "ep_10-246-82-6_80", state: "DOWN", addr: ap("10.246.82.6:80")},
		{name: "ep_10-246-92-8_80", state: "MAINT", addr: ap("10.246.92.8:80")},
	}
	if !slices.Equal(want, got) {
		t.Errorf("parseBackendServers = %+v, want %+v", got, want)
	}
	if _, err := parseBackendServers([]byte("Can't find backend.\n")); err == nil {
		t.Error("an unknown backend parsed without error")
	}
}
