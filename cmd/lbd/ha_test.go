package main

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbd/lbd/ipam"
	"github.com/lbd/lbd/keepalived"
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
	var c config
	fs := newFlagSet(&c, io.Discard)
	args := []string{"--ha=keepalived", "--ha-interface=eth0", "--ha-router-id=51", "--ha-peer=10.0.0.2",
		"--ha-track-file=/x/health", "--ha-notify-script=/x/notify.sh", "--ha-state-file=/x/state", "--ha-pid-file=/x/k.pid",
		"--snat-addresses=10.246.90.100", "--pod-interface=flannel0"}
	if _, _, err := parseArgs(fs, args, noEnv); err != nil {
		t.Fatal(err)
	}
	o, err := (&app{cfg: c}).haOptions()
	if err != nil {
		t.Fatal(err)
	}
	got := []string{o.TrackFile, o.NotifyScript, o.StateFile, o.PIDFile, o.PodInterface, lb.AddrsString(o.PodAddresses)}
	want := []string{"/x/health", "/x/notify.sh", "/x/state", "/x/k.pid", "flannel0", "10.246.90.100"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("options (-want +got):\n%s", d)
	}
}

// TestIdleAddress: the stand-in address an HA pair holds while it serves
// nothing is the first admitted address of the peers' family.
func TestIdleAddress(t *testing.T) {
	pools, err := ipam.ParsePools([]string{"2001:db8::/120", "192.168.121.240/28"})
	if err != nil {
		t.Fatal(err)
	}
	none := func(netip.Addr) (string, bool) { return "", false }
	notFirst := func(a netip.Addr) (string, bool) { return "the master's", a == netip.MustParseAddr("192.168.121.241") }
	tests := []struct {
		name    string
		ex      ipam.Excluder
		family4 bool
		want    string
	}{
		{"ipv4", none, true, "192.168.121.241"},
		{"first excluded", notFirst, true, "192.168.121.242"},
		{"ipv6", none, false, "2001:db8::"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := idleAddress(pools, tt.ex, tt.family4).String(); got != tt.want {
				t.Errorf("idleAddress = %s, want %s", got, tt.want)
			}
		})
	}
	if a := idleAddress(nil, none, true); a.IsValid() {
		t.Errorf("without pools: %v, want none", a)
	}
}

// TestHAWatch: a change to MASTER asks for a full resync (SIGHUP) and
// reports it; leaving MASTER reports it without a resync, and so does a
// keepalived that died leaving MASTER in its state file.
func TestHAWatch(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	pid := filepath.Join(dir, "keepalived.pid")
	os.WriteFile(pid, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644) // a live keepalived
	k := keepalived.New(keepalived.Options{StateFile: state, PIDFile: pid}, slog.New(slog.DiscardHandler))
	sigs := make(chan os.Signal, 4)
	changes := make(chan bool, 4)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go haWatch(ctx, k, 5*time.Millisecond, sigs, func(m bool) { changes <- m })
	for _, tt := range []struct {
		state  string
		master bool
		resync bool
	}{{"BACKUP", false, false}, {"MASTER", true, true}, {"FAULT", false, false}, {"MASTER", true, true}} {
		os.WriteFile(state, []byte(tt.state+"\n"), 0o644)
		if tt.state == "BACKUP" {
			time.Sleep(50 * time.Millisecond)
			select {
			case m := <-changes:
				t.Fatalf("BACKUP from unknown reported %v; want no change", m)
			default:
			}
			continue
		}
		select {
		case m := <-changes:
			if m != tt.master {
				t.Fatalf("%s: reported master=%v", tt.state, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no change reported", tt.state)
		}
		select {
		case s := <-sigs:
			if !tt.resync || s != syscall.SIGHUP {
				t.Fatalf("%s: got signal %v", tt.state, s)
			}
		case <-time.After(100 * time.Millisecond):
			if tt.resync {
				t.Fatalf("%s: no resync asked", tt.state)
			}
		}
	}
}
