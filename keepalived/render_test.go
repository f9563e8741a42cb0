package keepalived

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
)

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// base is a valid pair member: eth1, one peer, router id 51.
func base() Options {
	return Options{
		Interface: "eth1",
		Peers:     addrs("192.168.121.12"),
		SourceIP:  netip.MustParseAddr("192.168.121.11"),
		Priority:  150,
		RouterID:  51,
		Addresses: addrs("192.168.121.201"),
	}.WithDefaults()
}

func TestRender(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
	}{
		{"one address", func(*Options) {}},
		{"fractional advert, preempt, conntrackd", func(o *Options) {
			o.AdvertInt = 50 * time.Millisecond
			o.Preempt = true
			o.ConntrackdConfig = "/etc/conntrackd/conntrackd.conf"
		}},
		{"mixed families sorted and deduplicated", func(o *Options) {
			o.Addresses = addrs("2001:db8::20", "192.168.121.210", "192.168.121.201", "::ffff:192.168.121.205", "2001:db8::10", "192.168.121.201")
			o.Peers = addrs("192.168.121.12", "192.168.121.13")
		}},
		{"snat addresses float on the pod interface", func(o *Options) {
			o.PodInterface = "flannel0"
			o.PodAddresses = addrs("10.246.90.101", "10.246.90.100")
		}},
		{"ipv6 instance without source", func(o *Options) {
			o.Peers = addrs("2001:db8:1::12")
			o.SourceIP = netip.Addr{}
			o.Addresses = addrs("192.168.121.201", "2001:db8::10")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.edit(&o)
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			got, err := Render(o)
			if err != nil {
				t.Fatal(err)
			}
			testkit.Golden(t, got)
			configTestInNS(t, o)
		})
	}
}

// configTestInNS runs keepalived's config test, as Apply does, on o
// rendered with its files in a temp dir, inside a namespace that has
// o.Interface (keepalived refuses unknown interfaces). It runs as root
// only, where keepalived is installed.
func configTestInNS(t *testing.T, o Options) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Log("keepalived --config-test skipped: needs root (a namespace with the interface)")
		return
	}
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Log("keepalived --config-test skipped: keepalived not installed")
		return
	}
	cidr := "192.168.121.11/24"
	if o.Peers[0].Is6() {
		cidr = "2001:db8:1::11/64"
	}
	ns := nsWithLink(t, o.Interface, cidr)
	if o.PodInterface != "" {
		run(t, "ip", "-n", ns, "link", "add", o.PodInterface, "type", "veth", "peer", "name", "podp")
		run(t, "ip", "-n", ns, "link", "set", o.PodInterface, "up")
	}
	dir := t.TempDir()
	o.ConfigPath = filepath.Join(dir, "lbd.conf")
	o.NotifyScript = filepath.Join(dir, "lbd-notify.sh")
	o.TrackFile = filepath.Join(dir, "health")
	o.StateFile = filepath.Join(dir, "state")
	if err := os.WriteFile(o.NotifyScript, NotifyScript(), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.ConfigPath, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	k := New(o, testLog(t))
	if err := lab.InNS(ns, func() error { return k.configTest(context.Background(), o.ConfigPath) }); err != nil {
		t.Fatalf("keepalived refuses the rendering: %v", err)
	}
}

// TestConfigTestRefuses proves the config test is a real check: a
// rendering for an interface the namespace lacks, and a broken file, are
// refused with keepalived's words.
func TestConfigTestRefuses(t *testing.T) {
	testkit.RequireRoot(t)
	ns := nsWithLink(t, "eth1", "192.168.121.11/24")
	dir := t.TempDir()
	o := base()
	o.NotifyScript = filepath.Join(dir, "n.sh")
	os.WriteFile(o.NotifyScript, NotifyScript(), 0o755)
	k := New(o, testLog(t))
	for name, edit := range map[string]func([]byte) []byte{
		"missing interface": func(b []byte) []byte { return []byte(strings.ReplaceAll(string(b), "eth1", "eth7")) },
		"bad advert_int":    func(b []byte) []byte { return []byte(strings.Replace(string(b), "advert_int 1", "advert_int x", 1)) },
	} {
		conf, err := Render(o)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "lbd.conf")
		os.WriteFile(path, edit(conf), 0o644)
		err = lab.InNS(ns, func() error { return k.configTest(context.Background(), path) })
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: config test = %v, want a ConfigError", name, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestRenderNoAddressOfFamily(t *testing.T) {
	for name, a := range map[string][]netip.Addr{
		"none":      nil,
		"only ipv6": addrs("2001:db8::10"),
	} {
		o := base()
		o.Addresses = a
		if _, err := Render(o); !errors.Is(err, ErrNoAddress) {
			t.Errorf("%s: Render = %v, want ErrNoAddress", name, err)
		}
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "1", 100 * time.Millisecond: "0.1", 50 * time.Millisecond: "0.05",
		1230 * time.Millisecond: "1.23", 40950 * time.Millisecond: "40.95", 10 * time.Millisecond: "0.01",
	} {
		if got := seconds(d); got != want {
			t.Errorf("seconds(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		flag string // "" means valid
	}{
		{"valid", func(*Options) {}, ""},
		{"valid v6 without source", func(o *Options) { o.Peers = addrs("2001:db8::2"); o.SourceIP = netip.Addr{} }, ""},
		{"no interface", func(o *Options) { o.Interface = "" }, "--ha-interface"},
		{"interface too long", func(o *Options) { o.Interface = "a-very-long-name0" }, "--ha-interface"},
		{"interface with blank", func(o *Options) { o.Interface = "eth 1" }, "--ha-interface"},
		{"no peer", func(o *Options) { o.Peers = nil }, "--ha-peer"},
		{"peer twice", func(o *Options) { o.Peers = addrs("192.168.121.12", "192.168.121.12") }, "--ha-peer"},
		{"peer is self", func(o *Options) { o.Peers = addrs("192.168.121.11") }, "--ha-peer"},
		{"peers of two families", func(o *Options) { o.Peers = addrs("192.168.121.12", "2001:db8::2") }, "--ha-peer"},
		{"multicast peer", func(o *Options) { o.Peers = addrs("224.0.0.18") }, "--ha-peer"},
		{"source of other family", func(o *Options) { o.SourceIP = netip.MustParseAddr("2001:db8::1") }, "--ha-source"},
		{"priority 255", func(o *Options) { o.Priority = 255 }, "--ha-priority"},
		{"priority negative", func(o *Options) { o.Priority = -1 }, "--ha-priority"},
		{"advert 5ms", func(o *Options) { o.AdvertInt = 5 * time.Millisecond }, "--ha-advert-int"},
		{"advert 15ms", func(o *Options) { o.AdvertInt = 15 * time.Millisecond }, "--ha-advert-int"},
		{"advert 41s", func(o *Options) { o.AdvertInt = 41 * time.Second }, "--ha-advert-int"},
		{"no router id", func(o *Options) { o.RouterID = 0 }, "--ha-router-id"},
		{"snat addresses without pod interface", func(o *Options) { o.PodAddresses = addrs("10.246.90.100") }, "--pod-interface"},
		{"router id 256", func(o *Options) { o.RouterID = 256 }, "--ha-router-id"},
		{"relative track file", func(o *Options) { o.TrackFile = "health" }, "--ha-track-file"},
		{"state file with blank", func(o *Options) { o.StateFile = "/run/lbd/ha state" }, "--ha-state-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.edit(&o)
			err := o.Validate()
			if tt.flag == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tt.flag+": ") {
				t.Fatalf("Validate = %v, want an ErrInvalid naming %s", err, tt.flag)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	got := Options{}.WithDefaults()
	want := Options{
		ConfigPath: DefaultConfigPath, NotifyScript: DefaultNotifyScript, TrackFile: DefaultTrackFile,
		StateFile: DefaultStateFile, PIDFile: DefaultPIDFile, KeepalivedBin: DefaultKeepalived,
		Priority: DefaultPriority, AdvertInt: DefaultAdvertInt,
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
}
