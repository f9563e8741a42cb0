package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

// faultPool holds the address of fi-b, the LoadBalancer service of
// TestCrashAtEveryStep, and the externalIPs of the others.
const faultPool = "192.168.121.252,192.168.121.201"

// TestCrashAtEveryStep is the reliability issue's fault-injection proof:
// lbd built with -tags faultinject is SIGKILLed at every step of a pass
// (reconcile.Steps) that changes three things at once (an endpoint goes,
// a LoadBalancer service comes, a service goes), for the iptables and the
// haproxy backend. Each time, one ordinary pass afterwards must converge:
// the traffic goes where the cluster says, nothing lbd wrote is orphaned
// (no stray chain, no stray haproxy file, no leftover reload marker, no
// stale address), and the store agrees (lbd plan has nothing to do, every
// service is programmed).
func TestCrashAtEveryStep(t *testing.T) {
	l := e2eLab(t)
	faultBin := filepath.Join(t.TempDir(), "lbd-faultinject")
	if out, err := exec.Command("go", "build", "-tags", "faultinject", "-o", faultBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build the fault-injection lbd: %v\n%s", err, out)
	}
	ext := []netip.Addr{lab.LBExternalIP}
	a := lab.ServiceSpec{Name: "fi-a", ExternalIPs: ext, Ports: []lab.ServicePort{{Port: 84, TargetPort: 80}}, Ready: l.PodIPs}
	b := lab.ServiceSpec{Name: "fi-b", LoadBalancer: true, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs[:1]}
	c := lab.ServiceSpec{Name: "fi-c", ExternalIPs: ext, Ports: []lab.ServicePort{{Port: 85, TargetPort: 80}}, Ready: l.PodIPs}
	apply := func(s lab.ServiceSpec) {
		t.Helper()
		if err := l.Apply(t.Context(), lab.ServiceManifest(s)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range []string{"fi-a", "fi-b", "fi-c"} {
			deleteService(t, l, "default", n)
		}
	})

	h := newHAProxyFiles(t)
	// The test takes services away every few seconds on purpose; the
	// guard's memory is not what it is about.
	common := []string{"--vip-interface=eth0", "--max-delete=100%"}
	backends := []struct {
		name string
		args []string
	}{
		{"iptables", append([]string{"--backend=iptables"}, common...)},
		{"haproxy", append(slices.Clone(h.flags), common...)},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "lbd.db")
			if be.name == "haproxy" {
				db = h.db
			}
			sync := func(t *testing.T) {
				t.Helper()
				if _, stderr, code := lbdRunPool(t, l, db, faultPool, be.args...); code != 0 {
					t.Fatalf("healing pass exit %d: %s", code, stderr)
				}
			}
			t.Cleanup(func() { lbdRunPool(t, l, db, faultPool, append(be.args, "cleanup")...) })
			// The starting point: fi-a on three pods, fi-c, no fi-b.
			apply(a)
			apply(c)
			deleteService(t, l, "default", "fi-b")
			sync(t)
			if be.name == "haproxy" {
				h.spawn(t, l, "haproxy-fault")
				testkit.WaitFor(t, 10*time.Second, "haproxy to serve fi-a", func() bool { why, _ := dialFails(l, lab.LBExternalIP.String()+":84"); return why == "" })
			}
			for _, step := range reconcile.Steps {
				t.Run(step, func(t *testing.T) {
					// The change: fi-a loses a pod, fi-b comes, fi-c goes.
					fewer := a
					fewer.Ready = l.PodIPs[:2]
					apply(fewer)
					apply(b)
					deleteService(t, l, "default", "fi-c")
					_, stderr, code := lbdRunWith(t, l, faultBin, []string{"LBD_CRASH_AT=" + step}, db, faultPool, be.args...)
					if code != -1 || !strings.Contains(stderr, "SIGKILL at step "+step) {
						t.Fatalf("the fault-injection pass was not killed at %s: exit %d\n%s", step, code, stderr)
					}
					sync(t)
					checkHealed(t, l, db, be.name, be.args, h)
					// Back to the starting point for the next step.
					apply(a)
					apply(c)
					deleteService(t, l, "default", "fi-b")
					sync(t)
				})
			}
		})
	}
}

// checkHealed checks the state after the change of TestCrashAtEveryStep
// and one pass that followed a crash.
func checkHealed(t *testing.T, l *lab.Lab, db, backend string, args []string, h haproxyFiles) {
	t.Helper()
	ip := ingressIP(t, l, "fi-b")
	if ip != "192.168.121.252" {
		t.Errorf("fi-b's status shows %q, want 192.168.121.252", ip)
	}
	if backend == "haproxy" {
		// haproxy takes the new files with a reload; wait for fi-b's bind.
		testkit.WaitFor(t, 10*time.Second, "haproxy to serve fi-b", func() bool { why, _ := dialFails(l, ip+":80"); return why == "" })
	}
	got := hits(t, l, lab.LBExternalIP.String()+":84", 30)
	if got[l.PodNames[2]] != 0 || sum(got, l.PodNames[:2]) != 30 {
		t.Errorf("fi-a after healing: %v, want 30 answers from %v only", got, l.PodNames[:2])
	}
	if got := hits(t, l, ip+":80", 6); got[l.PodNames[0]] != 6 {
		t.Errorf("fi-b after healing: %v", got)
	}
	if why, _ := dialFails(l, lab.LBExternalIP.String()+":85"); why == "" {
		t.Error("fi-c is still served after healing")
	}
	// The store agrees: nothing to do, and every exposed service programmed.
	if out, _, code := lbdRunPool(t, l, db, faultPool, append(slices.Clone(args), "plan")...); code != exitOK {
		t.Errorf("lbd plan after healing exits %d:\n%s", code, out)
	}
	out, _, _ := lbdRunPool(t, l, db, faultPool, append(slices.Clone(args), "status", "-o", "json")...)
	var st struct {
		States []lb.ServiceState `json:"states"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	for _, s := range st.States {
		if (s.Key == "default/fi-a" || s.Key == "default/fi-b") && s.State != lb.StateProgrammed {
			t.Errorf("store: %s is %s (%s), want programmed", s.Key, s.State, s.Reason)
		}
		if s.Key == "default/fi-c" {
			t.Errorf("store still holds fi-c: %+v", s)
		}
	}
	// No stale address: fi-b's is on eth0, nothing else of lbd's.
	addrs := lbAddrs(t, l)
	if !strings.Contains(addrs, ip+"/32") {
		t.Errorf("fi-b's address is not on eth0:\n%s", addrs)
	}
	switch backend {
	case "iptables":
		// Every LBD chain of the nat table is reached from LBD-SERVICES
		// or is one of lbd's fixed chains, and exactly two service-port
		// chains (fi-a's, fi-b's) carry DNAT rules.
		rules := iptablesSave(t, l)
		reached := reachedFrom(rules, "LBD-SERVICES")
		for _, m := range regexp.MustCompile(`(?m)^:(LBD-\S+) `).FindAllStringSubmatch(rules, -1) {
			name := m[1]
			switch name {
			case "LBD-SERVICES", "LBD-POSTROUTING", "LBD-FILTER", "LBD-FORWARD":
				continue
			}
			if !reached[name] {
				t.Errorf("orphan chain %s after healing", name)
			}
		}
		dnat := map[string]bool{}
		for _, line := range strings.Split(rules, "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "-A" && strings.Contains(line, "-j DNAT") && reached[f[1]] {
				dnat[f[1]] = true
			}
		}
		if len(dnat) != 2 {
			t.Errorf("%d service-port chains with DNAT rules reached after healing, want 2 (fi-a, fi-b):\n%s", len(dnat), rules)
		}
	case "haproxy":
		entries, err := os.ReadDir(h.services)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{"default_fi-a.cfg", "default_fi-b.cfg"}) {
			t.Errorf("services.d after healing: %v", names)
		}
		dir := filepath.Dir(h.services)
		if m, _ := filepath.Glob(filepath.Join(dir, "*lbd-reload-pending*")); len(m) > 0 {
			t.Errorf("reload marker left after healing: %v", m)
		}
	}
}
