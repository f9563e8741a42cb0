package main

import (
	"strings"
	"testing"
)

// TestHAFlags: --ha settings are checked before any I/O, each error names
// its flag, and keepalived mode refuses lbd's own address ownership.
func TestHAFlags(t *testing.T) {
	tests := []struct {
		name, want string
		args       []string
	}{
		{"unknown mode", `--ha "carp"`, []string{"--ha=carp"}},
		{"with vip-interface", "--vip-interface with --ha=keepalived", []string{"--ha=keepalived", "--vip-interface=eth0", "--ha-interface=eth0", "--ha-router-id=51", "--ha-peer=10.0.0.2"}},
		{"no router id", "--ha-router-id", []string{"--ha=keepalived", "--ha-interface=eth0", "--ha-peer=10.0.0.2"}},
		{"bad peer", `--ha-peer "ten"`, []string{"--ha=keepalived", "--ha-interface=eth0", "--ha-router-id=51", "--ha-peer=ten"}},
		{"bad advert", "--ha-advert-int", []string{"--ha=keepalived", "--ha-interface=eth0", "--ha-router-id=51", "--ha-peer=10.0.0.2", "--ha-advert-int=1ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errs strings.Builder
			// No master: a flag error must come before SSH is tried.
			args := append([]string{"--log-file", "", "--db", t.TempDir() + "/x.db", "--pool", "10.0.0.0/28"}, tt.args...)
			code := run(t.Context(), args, noEnv, &out, &errs)
			if code == exitOK || !strings.Contains(errs.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want a failure naming %s", code, errs.String(), tt.want)
			}
			if strings.Contains(errs.String(), "--master is required") {
				t.Errorf("the HA flags were checked after the master: %s", errs.String())
			}
		})
	}
}
