package keepalived

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/internal/testkit"
)

func ctOptions() ConntrackdOptions {
	return ConntrackdOptions{
		Interface: "sync0",
		Local:     netip.MustParseAddr("10.255.0.1"),
		Peer:      netip.MustParseAddr("10.255.0.2"),
	}.WithDefaults()
}

func TestRenderConntrackd(t *testing.T) {
	for name, edit := range map[string]func(*ConntrackdOptions){
		"ipv4": func(*ConntrackdOptions) {},
		"ipv6 systemd": func(o *ConntrackdOptions) {
			o.Local, o.Peer, o.Systemd = netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), true
		},
	} {
		t.Run(name, func(t *testing.T) {
			o := ctOptions()
			edit(&o)
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			testkit.Golden(t, RenderConntrackd(o))
		})
	}
}

func TestConntrackdValidate(t *testing.T) {
	for flag, edit := range map[string]func(*ConntrackdOptions){
		"--ha-sync-interface":    func(o *ConntrackdOptions) { o.Interface = "" },
		"--ha-sync-local":        func(o *ConntrackdOptions) { o.Local = netip.Addr{} },
		"--ha-sync-peer":         func(o *ConntrackdOptions) { o.Peer = netip.MustParseAddr("fd00::2") },
		"--ha-conntrackd-config": func(o *ConntrackdOptions) { o.SocketPath = "run/x.sock" },
	} {
		o := ctOptions()
		edit(&o)
		err := o.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), flag+": ") {
			t.Errorf("%s: Validate = %v", flag, err)
		}
	}
}

// TestConntrackdRuns starts conntrackd with the rendered configuration in
// two namespaces joined by the sync link and checks that each accepts it,
// answers its control socket, and that a flow made on one side reaches
// the other's external cache: conntrackd has no dry run, so running it is
// the check.
func TestConntrackdRuns(t *testing.T) {
	testkit.RequireRoot(t)
	if _, err := exec.LookPath("conntrackd"); err != nil {
		t.Skip("conntrackd not installed")
	}
	a, b := newNetns(t), newNetns(t)
	run(t, "ip", "-n", a, "link", "add", "sync0", "type", "veth", "peer", "name", "sync0", "netns", b)
	confs, logs := map[string]string{}, map[string]string{}
	for i, ns := range []string{a, b} {
		o := ctOptions()
		if i == 1 {
			o.Local, o.Peer = o.Peer, o.Local
		}
		dir := t.TempDir()
		o.SocketPath = filepath.Join(dir, "ct.sock")
		o.LockFile = filepath.Join(dir, "ct.lock")
		o.LogFile = filepath.Join(dir, "ct.log")
		run(t, "ip", "-n", ns, "addr", "add", o.Local.String()+"/24", "dev", "sync0")
		run(t, "ip", "-n", ns, "link", "set", "sync0", "up")
		conf := filepath.Join(dir, "conntrackd.conf")
		if _, err := WriteConntrackd(conf, o); err != nil {
			t.Fatal(err)
		}
		confs[ns] = conf
		logs[ns] = o.LogFile
	}
	// both ends up before either starts, as at boot
	for _, ns := range []string{a, b} {
		conf := confs[ns]
		// -d: in console mode (without it) conntrackd 1.4.7 accepted the
		// configuration but never synced a flow here
		inNS(t, ns, "conntrackd", "-C", conf, "-d")
		t.Cleanup(func() { exec.Command("ip", "netns", "exec", ns, "conntrackd", "-C", conf, "-k").Run() })
		t.Cleanup(func() {
			if t.Failed() {
				log, _ := os.ReadFile(logs[ns])
				t.Logf("conntrackd log %s:\n%s", ns, log)
			}
		})
	}
	for _, ns := range []string{a, b} {
		if out, err := exec.Command("ip", "netns", "exec", ns, "conntrackd", "-C", confs[ns], "-s").CombinedOutput(); err != nil {
			t.Fatalf("conntrackd in %s does not answer on its control socket: %v: %s", ns, err, out)
		}
	}
	// A flow inserted into a's kernel table reaches b's external cache.
	inNS(t, a, "conntrack", "-I", "-p", "tcp", "-s", "192.168.121.50", "-d", "192.168.121.201",
		"--sport", "40000", "--dport", "80", "--state", "ESTABLISHED", "-t", "120", "-u", "ASSURED")
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "exec", b, "conntrackd", "-C", confs[b], "-e").CombinedOutput()
		if strings.Contains(string(out), "192.168.121.201") {
			t.Logf("flow synced to b's external cache:\n%s", out)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the flow did not reach b's external cache within 3s")
}
