package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
)

// lbPool is the pool of TestLoadBalancerEndToEnd: the manifests'
// externalIPs and exactly two addresses for LoadBalancer services, so the
// third one waits.
const lbPool = "192.168.121.250-192.168.121.251,192.168.121.201"

// ingressIP returns status.loadBalancer.ingress[*].ip of a service as
// kubectl on the master shows it.
func ingressIP(t *testing.T, l *lab.Lab, name string) string {
	t.Helper()
	return strings.TrimSpace(mustKubectl(t, l, "get", "svc", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"))
}

// lbAddrs returns the addresses on the LB's eth0.
func lbAddrs(t *testing.T, l *lab.Lab) string {
	t.Helper()
	out, err := l.Run(context.Background(), l.LBNS, "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("ip addr: %v", err)
	}
	return out
}

// TestLoadBalancerEndToEnd is the LoadBalancer issue's proof on the real
// lab: type=LoadBalancer services get pool addresses that kubectl shows,
// that sit on --vip-interface and that the client learns by gratuitous
// ARP before it sends anything; a used-up pool leaves a service pending
// until an address frees; a deleted service's address comes off the
// interface and nothing else does; an empty database gives the same
// addresses back; externalIPs outside the pool, and the master's own
// address even inside one, are refused by name, and lbd still reaches the
// master afterwards.
func TestLoadBalancerEndToEnd(t *testing.T) {
	l := e2eLab(t)
	ctx := t.Context()
	db := filepath.Join(t.TempDir(), "lbd.db")
	args := []string{"--backend=iptables", "--vip-interface=eth0"}
	sync := func(t *testing.T, pool string) string {
		t.Helper()
		stdout, stderr, code := lbdRunPool(t, l, db, pool, args...)
		if code != 0 {
			t.Fatalf("lbd sync exit %d: %s", code, stderr)
		}
		return stdout + stderr
	}
	t.Cleanup(func() { lbdRunPool(t, l, db, lbPool, append(args, "cleanup")...) })
	// The client takes neighbours from gratuitous ARP, as a router does.
	if out, err := l.Run(ctx, l.ClientNS, "sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1"); err != nil {
		t.Fatalf("sysctl: %v %s", err, out)
	}
	before := lbAddrs(t, l)

	web := lab.ServiceSpec{Name: "lb-web", LoadBalancer: true, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs}
	applyService(t, l, web)
	applyService(t, l, lab.ServiceSpec{Name: "lb-two", LoadBalancer: true, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs[:1]})
	applyService(t, l, lab.ServiceSpec{Name: "lb-other", LoadBalancer: true, LoadBalancerClass: "example.com/other", Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs})
	applyService(t, l, lab.ServiceSpec{Name: "outside", ExternalIPs: []netip.Addr{netip.MustParseAddr("192.168.121.100")}, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs})
	applyService(t, l, lab.ServiceSpec{Name: "notes", ExternalIPs: []netip.Addr{lab.LBExternalIP}, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs})
	sync(t, lbPool)

	got := map[string]string{"lb-web": ingressIP(t, l, "lb-web"), "lb-two": ingressIP(t, l, "lb-two")}
	if !(got["lb-web"] == "192.168.121.250" && got["lb-two"] == "192.168.121.251" || got["lb-web"] == "192.168.121.251" && got["lb-two"] == "192.168.121.250") {
		t.Fatalf("kubectl shows %v, want .250 and .251 of the pool", got)
	}
	if o := ingressIP(t, l, "lb-other"); o != "" {
		t.Errorf("a service of another class got status %q", o)
	}
	webIP := got["lb-web"]
	addrs := lbAddrs(t, l)
	for _, a := range []string{webIP + "/32", got["lb-two"] + "/32"} {
		if !strings.Contains(addrs, a) {
			t.Errorf("eth0 lacks %s:\n%s", a, addrs)
		}
	}
	// Nothing was sent to the address yet: the client knows it from the
	// announcement alone.
	neigh, _ := l.Run(ctx, l.ClientNS, "ip", "neigh", "show", webIP)
	if !strings.Contains(neigh, "lladdr") {
		t.Errorf("the client's neighbour table has no entry for %s before any request: %q", webIP, neigh)
	}
	if h := hits(t, l, webIP+":80", 30); sum(h, l.PodNames) != 30 {
		t.Errorf("30 requests to %s: %v", webIP, h)
	}
	if h := hits(t, l, lab.LBExternalIP.String()+":80", 6); sum(h, l.PodNames) != 6 {
		t.Errorf("the notes' externalIP service beside it: %v", h)
	}
	if why, _ := dialFails(l, "192.168.121.100:80"); why == "" {
		t.Error("an externalIP outside the pool is served")
	}

	// The pool is used up: a third service waits, named in the log and
	// in status, and gets lb-two's address once lb-two is deleted.
	applyService(t, l, lab.ServiceSpec{Name: "lb-three", LoadBalancer: true, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs})
	out := sync(t, lbPool)
	for _, want := range []string{"default/outside", "192.168.121.100", "outside every address pool", "--pool", "default/lb-three", "pools exhausted"} {
		if !strings.Contains(out, want) {
			t.Errorf("the sync's log does not name %q", want)
		}
	}
	status, _, _ := lbdRunPool(t, l, db, lbPool, "status")
	for _, want := range []string{"default/lb-three", "pending", "default/outside", "rejected", "default/lb-web", "served"} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	twoIP := got["lb-two"]
	deleteService(t, l, "default", "lb-two")
	sync(t, lbPool)
	if ip := ingressIP(t, l, "lb-three"); ip != twoIP {
		t.Errorf("lb-three got %q once lb-two freed %s", ip, twoIP)
	}
	// Deleting lb-three takes its address off eth0, and nothing else.
	deleteService(t, l, "default", "lb-three")
	sync(t, lbPool)
	addrs = lbAddrs(t, l)
	if strings.Contains(addrs, twoIP+"/32") {
		t.Errorf("%s is still on eth0 after its service went:\n%s", twoIP, addrs)
	}
	if !strings.Contains(addrs, webIP+"/32") || !strings.Contains(addrs, lab.LBExternalIP.String()+"/24") {
		t.Errorf("deleting one service took other addresses away:\n%s", addrs)
	}

	// A rebuilt LB (empty database) hands out the same address again.
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	applyService(t, l, lab.ServiceSpec{Name: "lb-four", LoadBalancer: true, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs})
	sync(t, lbPool)
	if ip := ingressIP(t, l, "lb-web"); ip != webIP {
		t.Errorf("after an empty database lb-web has %q, want %s", ip, webIP)
	}
	if h := hits(t, l, webIP+":80", 6); sum(h, l.PodNames) != 6 {
		t.Errorf("lb-web after the rebuild: %v", h)
	}

	// The attack: an externalIP of the master, port 22, no endpoints.
	// Even with the master inside a pool it is refused by name, no rule
	// names it, and the next pass still reaches the master.
	applyService(t, l, lab.ServiceSpec{Name: "attack", ExternalIPs: []netip.Addr{lab.MasterIP}, Ports: []lab.ServicePort{{Port: 22}}})
	withMaster := lbPool + ",10.245.1.8/29"
	out = sync(t, withMaster)
	if !strings.Contains(out, "default/attack") || !strings.Contains(out, "master's address") {
		t.Errorf("the attack is not refused by name:\n%s", out)
	}
	if rules := iptablesSave(t, l); strings.Contains(rules, lab.MasterIP.String()) {
		t.Errorf("a rule names the master:\n%s", rules)
	}
	sync(t, withMaster)
	if strings.Contains(lbAddrs(t, l), lab.MasterIP.String()) {
		t.Error("the master's address is on the LB")
	}
	for _, a := range strings.Fields(before) {
		if strings.Contains(a, "/") && !strings.Contains(lbAddrs(t, l), a) {
			t.Errorf("address %s of the LB is gone", a)
		}
	}
}

// TestNoPoolServesNothingEndToEnd: without --pool lbd serves nothing,
// each exposed service says to set --pool, and lbd check fails with the
// same hint.
func TestNoPoolServesNothingEndToEnd(t *testing.T) {
	l := e2eLab(t)
	db := filepath.Join(t.TempDir(), "lbd.db")
	applyService(t, l, lab.ServiceSpec{Name: "nopool", ExternalIPs: []netip.Addr{lab.LBExternalIP}, Ports: []lab.ServicePort{{Port: 83, TargetPort: 80}}, Ready: l.PodIPs})
	t.Cleanup(func() { lbdRunPool(t, l, db, "", "--backend=iptables", "cleanup") })
	stdout, stderr, code := lbdRunPool(t, l, db, "", "--backend=iptables")
	if code != 0 {
		t.Fatalf("sync exit %d: %s", code, stderr)
	}
	if out := stdout + stderr; !strings.Contains(out, "default/nopool") || !strings.Contains(out, "set --pool") {
		t.Errorf("the log does not tell to set --pool for default/nopool:\n%s", out)
	}
	if why, _ := dialFails(l, lab.LBExternalIP.String()+":83"); why == "" {
		t.Error("served without a pool")
	}
	stdout, _, code = lbdRunPool(t, l, db, "", "--backend=iptables", "check")
	if code == 0 || !strings.Contains(stdout, "--pool") {
		t.Errorf("check exit %d without a pool, want a failure naming --pool:\n%s", code, stdout)
	}
}

// askFrom sends one HTTP/1.0 request to addr from the client namespace,
// leaving from local, and returns the answering pod or the error.
func askFrom(l *lab.Lab, local netip.Addr, addr string) (string, error) {
	var conn net.Conn
	err := lab.InNS(l.ClientNS, func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
		c, err := d.Dial("tcp", addr)
		conn = c
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	if len(b) == 0 {
		return "", fmt.Errorf("no answer: %v", err)
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return strings.TrimSpace(body), nil
}

// TestSourceRangesEndToEnd: spec.loadBalancerSourceRanges, in every
// backend, driven through lbd: a client address inside the range reaches the pods, a second
// client address outside it does not.
func TestSourceRangesEndToEnd(t *testing.T) {
	l := e2eLab(t)
	ctx := t.Context()
	inside, outside := lab.ClientIP, netip.MustParseAddr("192.168.121.11")
	if out, err := l.Run(ctx, l.ClientNS, "ip", "addr", "add", outside.String()+"/24", "dev", "eth0"); err != nil {
		t.Fatalf("second client address: %v %s", err, out)
	}
	t.Cleanup(func() {
		l.Run(context.Background(), l.ClientNS, "ip", "addr", "del", outside.String()+"/24", "dev", "eth0")
	})
	applyService(t, l, lab.ServiceSpec{Name: "ranged", LoadBalancer: true, SourceRanges: []string{inside.String() + "/32", "10.99.0.0/16"},
		Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs})

	h := newHAProxyFiles(t)
	for _, be := range []struct {
		name string
		args []string
	}{
		{"iptables", []string{"--backend=iptables", "--vip-interface=eth0"}},
		{"nftables", []string{"--backend=nftables", "--vip-interface=eth0"}},
		{"haproxy", append(slices.Clone(h.flags), "--vip-interface=eth0")},
	} {
		t.Run(be.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "lbd.db")
			if be.name == "haproxy" {
				db = h.db
			}
			t.Cleanup(func() { lbdRunPool(t, l, db, lbPool, append(be.args, "cleanup")...) })
			if _, stderr, code := lbdRunPool(t, l, db, lbPool, be.args...); code != 0 {
				t.Fatalf("sync exit %d: %s", code, stderr)
			}
			if be.name == "haproxy" {
				h.spawn(t, l, "haproxy-ranges")
			}
			ip := ingressIP(t, l, "ranged")
			if ip == "" {
				t.Fatal("no address")
			}
			addr := ip + ":80"
			testkit.WaitFor(t, 10*time.Second, "the allowed client to get through", func() bool {
				pod, err := askFrom(l, inside, addr)
				return err == nil && slices.Contains(l.PodNames, pod)
			})
			for range 5 {
				if pod, err := askFrom(l, outside, addr); err == nil {
					t.Fatalf("%s outside the source ranges reached %q through %s", outside, pod, be.name)
				}
			}
		})
	}
}
