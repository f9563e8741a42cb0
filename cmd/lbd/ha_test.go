package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/lb"
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

// TestHAPathFlags: every path keepalived.Options.Validate names a flag for
// has that flag, so two LBs can share a file system (a lab, a test), and
// --snat-addresses float on --pod-interface.
func TestHAPathFlags(t *testing.T) {
	args := []string{"sync", "--ha=keepalived", "--ha-interface=eth0", "--ha-router-id=51", "--ha-peer=10.0.0.2",
		"--ha-track-file=/x/health", "--ha-notify-script=/x/notify.sh", "--ha-state-file=/x/state", "--ha-pid-file=/x/k.pid",
		"--snat-addresses=10.246.90.100", "--pod-interface=flannel0"}
	inv, err := cli.Parse(args, noEnv, defaults())
	if err != nil {
		t.Fatal(err)
	}
	o, err := (&app{cfg: inv.Config}).haOptions()
	if err != nil {
		t.Fatal(err)
	}
	got := []string{o.TrackFile, o.NotifyScript, o.StateFile, o.PIDFile, o.PodInterface, lb.AddrsString(o.PodAddresses)}
	want := []string{"/x/health", "/x/notify.sh", "/x/state", "/x/k.pid", "flannel0", "10.246.90.100"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("options (-want +got):\n%s", d)
	}
}
