package vip

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsPrefix names this package's test namespaces: "lbd-vip-t<pid>-lb" and
// "lbd-vip-t<pid>-client".
const nsPrefix = "lbd-vip-t"

var nsRE = regexp.MustCompile(`^` + nsPrefix + `(\d+)-`)

// sweepNS deletes the namespaces that a killed run of these tests left:
// those of our prefix whose pid is gone, or is this process.
func sweepNS(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := nsRE.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil && pid != os.Getpid() {
			continue // a live run's
		}
		if out, err := exec.Command("ip", "netns", "del", f[0]).CombinedOutput(); err != nil {
			t.Logf("sweep %s: %v: %s", f[0], err, out)
		}
	}
}

// labNet is two namespaces joined by a veth pair, eth0 on both sides:
// lb 192.168.121.201/24 2001:db8:121::201/64, client .10 and ::10.
// Nothing is created in the host namespace.
type labNet struct {
	lb, client string
	lbMAC      net.HardwareAddr
	// v6Learns says whether the client may learn neighbours from
	// unsolicited advertisements (accept_untracked_na exists).
	v6Learns bool
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newLabNet(t *testing.T) *labNet {
	t.Helper()
	sweepNS(t)
	n := &labNet{
		lb:     fmt.Sprintf("%s%d-lb", nsPrefix, os.Getpid()),
		client: fmt.Sprintf("%s%d-client", nsPrefix, os.Getpid()),
	}
	for _, ns := range []string{n.lb, n.client} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("remove namespace %s: %v: %s", ns, err, out)
			}
		})
	}
	// Made inside lb, its peer moved straight to client: the host
	// namespace never holds either end.
	run(t, "ip", "-n", n.lb, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", n.client)

	// The client learns neighbours from unsolicited ARP and NA, as a
	// router or switch that honours gratuitous announcements would.
	run(t, "ip", "netns", "exec", n.client, "sysctl", "-qw",
		"net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1")
	// The kernel creates an entry from an untracked NA only on an
	// interface that forwards (RFC 9131 is router behaviour), so the
	// client plays the upstream router.
	if _, err := exec.Command("ip", "netns", "exec", n.client, "sysctl", "-qw",
		"net.ipv6.conf.eth0.accept_untracked_na=1", "net.ipv6.conf.eth0.forwarding=1").CombinedOutput(); err == nil {
		n.v6Learns = true
	} else {
		t.Logf("NOTE: net.ipv6.conf.eth0.accept_untracked_na is missing on this kernel (needs 5.18+): the IPv6 neighbour check is skipped")
	}

	for _, c := range []struct{ ns, v4, v6 string }{
		{n.lb, "192.168.121.201/24", "2001:db8:121::201/64"},
		{n.client, "192.168.121.10/24", "2001:db8:121::10/64"},
	} {
		run(t, "ip", "-n", c.ns, "addr", "add", c.v4, "dev", "eth0")
		run(t, "ip", "-n", c.ns, "addr", "add", c.v6, "dev", "eth0", "nodad")
		run(t, "ip", "-n", c.ns, "link", "set", "lo", "up")
		run(t, "ip", "-n", c.ns, "link", "set", "eth0", "up")
	}
	for _, ns := range []string{n.lb, n.client} {
		testkit.WaitFor(t, 5*time.Second, ns+" eth0 up", func() bool {
			var up bool
			inNS(t, ns, func() error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					return err
				}
				up = l.Attrs().OperState == netlink.OperUp
				return nil
			})
			return up
		})
	}
	inNS(t, n.lb, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		n.lbMAC = l.Attrs().HardwareAddr
		return nil
	})
	return n
}

func inNS(t *testing.T, ns string, f func() error) {
	t.Helper()
	if err := lab.InNS(ns, f); err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

// sync runs m.Sync inside the lb namespace.
func (n *labNet) sync(t *testing.T, m *Manager, want, owned []netip.Addr) ([]netip.Addr, error) {
	t.Helper()
	var got []netip.Addr
	var serr error
	inNS(t, n.lb, func() error {
		got, serr = m.Sync(context.Background(), want, owned)
		return nil
	})
	return got, serr
}

// lbEntries is every address entry on the lb's eth0, as "addr/bits", with
// " nodad" for IPv6 entries carrying IFA_F_NODAD and " tentative" for ones
// still in DAD.
func (n *labNet) lbEntries(t *testing.T) []string {
	t.Helper()
	var out []string
	inNS(t, n.lb, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range as {
			p, _ := ipNetPrefix(a.IPNet)
			if p.Addr().IsLinkLocalUnicast() {
				continue
			}
			s := p.String()
			if a.Flags&unix.IFA_F_NODAD != 0 {
				s += " nodad"
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				s += " tentative"
			}
			out = append(out, s)
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// clientNeigh returns the hardware address the client's neighbour table
// holds for a on eth0, or nil.
func (n *labNet) clientNeigh(t *testing.T, a netip.Addr) net.HardwareAddr {
	t.Helper()
	var hw net.HardwareAddr
	inNS(t, n.client, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		fam := netlink.FAMILY_V4
		if a.Is6() {
			fam = netlink.FAMILY_V6
		}
		ns, err := netlink.NeighList(l.Attrs().Index, fam)
		if err != nil {
			return err
		}
		for _, e := range ns {
			if ip, ok := netip.AddrFromSlice(e.IP); ok && ip.Unmap() == a && len(e.HardwareAddr) > 0 &&
				e.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 {
				hw = e.HardwareAddr
			}
		}
		return nil
	})
	return hw
}

var cmpAddr = cmpopts.EquateComparable(netip.Addr{})

func TestLab(t *testing.T) {
	testkit.RequireRoot(t)
	n := newLabNet(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	base := n.lbEntries(t)

	v4 := netip.MustParseAddr("192.168.121.50")
	v6 := netip.MustParseAddr("2001:db8:121::50")

	// Control: with announcements off, the client learns nothing of an
	// added address, so what the next step sees comes from Announce, not
	// from the kernel.
	t.Run("no announcement, no neighbour entry", func(t *testing.T) {
		quiet := New("eth0", log)
		quiet.announce = func(string, []netip.Addr) error { return nil }
		c4, c6 := netip.MustParseAddr("192.168.121.99"), netip.MustParseAddr("2001:db8:121::99")
		got, err := n.sync(t, quiet, []netip.Addr{c4, c6}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		for _, a := range []netip.Addr{c4, c6} {
			if hw := n.clientNeigh(t, a); hw != nil {
				t.Errorf("client learned %s -> %s although nothing was announced", a, hw)
			}
		}
		if got, err = n.sync(t, quiet, nil, got); err != nil || len(got) != 0 {
			t.Fatalf("removing the control addresses: owned %v, err %v", got, err)
		}
	})

	m := New("eth0", log)
	var owned []netip.Addr
	t.Run("added as host addresses and announced before any traffic", func(t *testing.T) {
		start := time.Now()
		got, err := n.sync(t, m, []netip.Addr{v6, v4}, nil)
		t.Logf("Sync adding 2 addresses took %v (announcement rounds included)", time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]netip.Addr{v4, v6}, got, cmpAddr); d != "" {
			t.Fatalf("nowOwned (-want +got):\n%s", d)
		}
		owned = got
		want := slices.Sorted(slices.Values(append(slices.Clone(base), "192.168.121.50/32", "2001:db8:121::50/128 nodad")))
		if d := cmp.Diff(want, n.lbEntries(t)); d != "" {
			t.Errorf("lb eth0 entries (-want +got):\n%s", d)
		}
		// No prefix route for the /128 (IFA_F_NOPREFIXROUTE).
		inNS(t, n.lb, func() error {
			rs, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Dst: prefixIPNet(hostPrefix(v6))}, netlink.RT_FILTER_DST)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Table == unix.RT_TABLE_MAIN {
					t.Errorf("prefix route %v in the main table", r)
				}
			}
			return nil
		})

		// The client has sent nothing to either address yet.
		for _, a := range []netip.Addr{v4, v6} {
			if a.Is6() && !n.v6Learns {
				continue
			}
			testkit.WaitFor(t, 3*time.Second, "client neighbour entry for "+a.String(), func() bool {
				return n.clientNeigh(t, a).String() == n.lbMAC.String()
			})
		}
		out := run(t, "ip", "-n", n.client, "neigh", "show", "dev", "eth0")
		t.Logf("client neighbours before any traffic:\n%s", out)
	})

	t.Run("client reaches both addresses over TCP", func(t *testing.T) {
		for _, a := range []netip.Addr{v4, v6} {
			var ln net.Listener
			inNS(t, n.lb, func() (err error) {
				ln, err = net.Listen("tcp", netip.AddrPortFrom(a, 8080).String())
				return err
			})
			go func() {
				c, err := ln.Accept()
				if err == nil {
					io.WriteString(c, "hello from "+a.String())
					c.Close()
				}
			}()
			var got []byte
			inNS(t, n.client, func() error {
				c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, 8080).String(), 3*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(3 * time.Second))
				got, err = io.ReadAll(c)
				return err
			})
			ln.Close()
			if string(got) != "hello from "+a.String() {
				t.Errorf("read %q from %s", got, a)
			}
		}
	})

	t.Run("hand-placed addresses survive and are never owned", func(t *testing.T) {
		run(t, "ip", "-n", n.lb, "addr", "add", "192.168.121.77/32", "dev", "eth0")
		run(t, "ip", "-n", n.lb, "addr", "add", "2001:db8:121::77/128", "dev", "eth0", "nodad")
		h4, h6 := netip.MustParseAddr("192.168.121.77"), netip.MustParseAddr("2001:db8:121::77")
		before := n.lbEntries(t)

		// Not wanted: left alone.
		got, err := n.sync(t, m, owned, owned)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(owned, got, cmpAddr); d != "" {
			t.Errorf("nowOwned (-want +got):\n%s", d)
		}
		// Wanted: served as it is, still not owned, so a later Sync
		// that drops it from want leaves it too.
		got, err = n.sync(t, m, append(slices.Clone(owned), h4, h6), got)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(owned, got, cmpAddr); d != "" {
			t.Errorf("nowOwned with the hand-placed ones wanted (-want +got):\n%s", d)
		}
		if _, err = n.sync(t, m, owned, got); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(before, n.lbEntries(t)); d != "" {
			t.Errorf("lb eth0 entries changed (-before +after):\n%s", d)
		}
	})

	t.Run("an owned address no longer wanted is removed, and only it", func(t *testing.T) {
		x := netip.MustParseAddr("192.168.121.51")
		got, err := n.sync(t, m, append(slices.Clone(owned), x), owned)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(got, x) {
			t.Fatalf("nowOwned %v lacks the added %s", got, x)
		}
		withX := n.lbEntries(t)
		got, err = n.sync(t, m, owned, got)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(owned, got, cmpAddr); d != "" {
			t.Errorf("nowOwned (-want +got):\n%s", d)
		}
		wantLeft := slices.DeleteFunc(slices.Clone(withX), func(s string) bool { return s == "192.168.121.51/32" })
		if d := cmp.Diff(wantLeft, n.lbEntries(t)); d != "" {
			t.Errorf("lb eth0 entries (-want +got):\n%s", d)
		}
	})

	t.Run("an owned address removed by hand drops out without error", func(t *testing.T) {
		run(t, "ip", "-n", n.lb, "addr", "del", "2001:db8:121::50/128", "dev", "eth0")
		got, err := n.sync(t, m, []netip.Addr{v4}, owned)
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		if d := cmp.Diff([]netip.Addr{v4}, got, cmpAddr); d != "" {
			t.Errorf("nowOwned (-want +got):\n%s", d)
		}
		owned = got
	})

	t.Run("LocalAddrs lists the namespace's addresses", func(t *testing.T) {
		var local map[netip.Addr]bool
		inNS(t, n.lb, func() (err error) {
			local, err = LocalAddrs()
			return err
		})
		for _, s := range []string{"127.0.0.1", "::1", "192.168.121.201", "2001:db8:121::201", "192.168.121.50", "192.168.121.77"} {
			if !local[netip.MustParseAddr(s)] {
				t.Errorf("LocalAddrs lacks %s: %v", s, local)
			}
		}
		for _, s := range []string{"192.168.121.10", "2001:db8:121::50", "192.168.121.51"} {
			if local[netip.MustParseAddr(s)] {
				t.Errorf("LocalAddrs holds %s, not on the lb", s)
			}
		}
	})
}

// testWriter sends slog output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
