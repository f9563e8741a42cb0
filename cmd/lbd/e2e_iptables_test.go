package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// iptablesSave returns the LB namespace's ruleset without comments and
// counters, for before/after comparisons.
func iptablesSave(t *testing.T, l *lab.Lab) string {
	t.Helper()
	out, err := l.Run(context.Background(), l.LBNS, "iptables-save")
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	counters := regexp.MustCompile(`\[\d+:\d+\]`)
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		keep = append(keep, counters.ReplaceAllString(line, "[0:0]"))
	}
	return strings.Join(keep, "\n")
}

// foreignRules are rules lbd does not own; they must survive everything.
var foreignRules = [][]string{
	{"-t", "nat", "-N", "FOREIGN-NAT"},
	{"-t", "nat", "-A", "FOREIGN-NAT", "-s", "203.0.113.0/24", "-j", "RETURN"},
	{"-t", "nat", "-A", "PREROUTING", "-s", "203.0.113.0/24", "-j", "FOREIGN-NAT"},
	{"-t", "nat", "-A", "POSTROUTING", "-d", "203.0.113.9/32", "-j", "RETURN"},
	{"-t", "filter", "-A", "INPUT", "-s", "203.0.113.7/32", "-j", "ACCEPT"},
	{"-t", "filter", "-A", "FORWARD", "-s", "203.0.113.8/32", "-j", "DROP"},
}

// TestIPTablesEndToEnd is the iptables issue's proof driven through lbd:
// services made with kubectl on the master, lbd syncing over SSH, traffic
// from the client namespace to pods that have no route back to it.
func TestIPTablesEndToEnd(t *testing.T) {
	l := e2eLab(t)
	ctx := t.Context()
	ext := lab.LBExternalIP
	db := filepath.Join(t.TempDir(), "lbd.db")
	sync := func(t *testing.T) {
		t.Helper()
		if _, stderr, code := lbdRun(t, l, db, "--backend=iptables"); code != 0 {
			t.Fatalf("lbd sync exit %d: %s", code, stderr)
		}
	}
	for _, r := range foreignRules {
		if out, err := l.Run(ctx, l.LBNS, "iptables", r...); err != nil {
			t.Fatalf("add foreign rule %v: %v %s", r, err, out)
		}
	}
	t.Cleanup(func() {
		l.Run(context.Background(), l.LBNS, "iptables", "-t", "nat", "-D", "PREROUTING", "-s", "203.0.113.0/24", "-j", "FOREIGN-NAT")
		l.Run(context.Background(), l.LBNS, "iptables", "-t", "nat", "-F", "FOREIGN-NAT")
		l.Run(context.Background(), l.LBNS, "iptables", "-t", "nat", "-X", "FOREIGN-NAT")
		l.Run(context.Background(), l.LBNS, "iptables", "-t", "nat", "-D", "POSTROUTING", "-d", "203.0.113.9/32", "-j", "RETURN")
		l.Run(context.Background(), l.LBNS, "iptables", "-D", "INPUT", "-s", "203.0.113.7/32", "-j", "ACCEPT")
		l.Run(context.Background(), l.LBNS, "iptables", "-D", "FORWARD", "-s", "203.0.113.8/32", "-j", "DROP")
	})
	pristine := iptablesSave(t, l)
	foreignPresent := func(t *testing.T, when string) {
		t.Helper()
		now := iptablesSave(t, l)
		for _, line := range strings.Split(pristine, "\n") {
			if strings.HasPrefix(line, "-A") && !strings.Contains(now, line) {
				t.Errorf("%s: foreign rule %q is gone", when, line)
			}
		}
	}

	all := l.PodIPs
	specs := []lab.ServiceSpec{
		{Name: "web", ExternalIPs: []netip.Addr{ext}, Ports: []lab.ServicePort{{Port: 80}}, Ready: all},
		{Name: "two", ExternalIPs: []netip.Addr{ext}, Ports: []lab.ServicePort{{Name: "a", Port: 8080}, {Name: "b", Port: 8443}}, Ready: all},
		{Name: "dns", ExternalIPs: []netip.Addr{ext}, Ports: []lab.ServicePort{{Port: 5353, Protocol: "UDP"}}, Ready: all},
		{Name: "sticky", ExternalIPs: []netip.Addr{ext}, Ports: []lab.ServicePort{{Port: 81, TargetPort: 80}}, Ready: all, ClientIPAffinity: true, AffinitySeconds: 600},
		{Name: "empty", ExternalIPs: []netip.Addr{ext}, Ports: []lab.ServicePort{{Port: 82, TargetPort: 80}}},
	}
	for _, s := range specs {
		if err := l.Apply(ctx, lab.ServiceManifest(s)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteService(t, l, "default", s.Name) })
	}
	t.Cleanup(func() { lbdRun(t, l, db, "--backend=iptables", "cleanup") })
	sync(t)
	foreignPresent(t, "after the first sync")

	checkServing(t, l, ext)

	// No ready endpoint: refused at once, not a black hole.
	if why, took := dialFails(l, ext.String()+":82"); !strings.Contains(why, "refused") || took > time.Second {
		t.Errorf("service without endpoints: %q after %v, want connection refused at once", why, took)
	}

	// A UDP flow; its pod will be removed below.
	udp, err := l.Dial(ctx, l.ClientNS, "udp", ext.String()+":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	first, err := udpAsk(udp)
	if err != nil {
		t.Fatalf("UDP service: %v", err)
	}
	if again, _ := udpAsk(udp); again != first {
		t.Fatalf("UDP flow moved from %s to %s without a change", first, again)
	}

	// Endpoints go away in the cluster; lbd syncs.
	gone := "pod2"
	specs[0].Ready = podsExcept(l, gone)
	specs[2].Ready = podsExcept(l, first)
	for _, s := range specs[:3] {
		if err := l.Apply(ctx, lab.ServiceManifest(s)); err != nil {
			t.Fatal(err)
		}
	}
	sync(t)
	foreignPresent(t, "after the endpoint change")
	got := hits(t, l, ext.String()+":80", 60)
	if got[gone] != 0 || sum(got, l.PodNames) != 60 {
		t.Errorf("after removing %s: %v, want all 60 on the other pods", gone, got)
	}
	ct, _ := l.Run(ctx, l.LBNS, "conntrack", "-L", "-p", "udp")
	t.Logf("UDP conntrack after the sync:\n%s", ct)
	moved, err := udpAsk(udp)
	if err != nil || moved == first {
		t.Errorf("existing UDP flow after its pod %s was removed: answered by %q (%v), want another pod", first, moved, err)
	}

	// A deleted service is no longer forwarded.
	deleteService(t, l, "default", "web")
	sync(t)
	if why, _ := dialFails(l, ext.String()+":80"); why == "" {
		t.Error("deleted service still forwards")
	}
	if got := hits(t, l, ext.String()+":8080", 3); sum(got, l.PodNames) != 3 {
		t.Errorf("the other services must still work: %v", got)
	}

	// Cleanup leaves the ruleset as it was before lbd.
	if _, stderr, code := lbdRun(t, l, db, "--backend=iptables", "cleanup"); code != 0 {
		t.Fatalf("cleanup exit %d: %s", code, stderr)
	}
	if after := iptablesSave(t, l); after != pristine {
		t.Errorf("after cleanup the ruleset differs from before lbd:\nbefore:\n%s\nafter:\n%s", pristine, after)
	}
}

// sum adds the counts of the named pods.
func sum(got map[string]int, pods []string) int {
	n := 0
	for _, p := range pods {
		n += got[p]
	}
	return n
}
