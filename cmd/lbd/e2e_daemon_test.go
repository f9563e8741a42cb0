package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// metricsAddr is where the daemons under test serve metrics, on the LB
// namespace's loopback.
const metricsAddr = "127.0.0.1:9720"

// daemonArgs are lbd run's arguments against the lab, with db and its log
// file beside it.
func daemonArgs(l *lab.Lab, db string, extra ...string) []string {
	args := []string{lbdBin,
		"--master", l.Master, "--ssh-key", l.SSHKey, "--known-hosts", l.KnownHosts,
		"--kubectl", l.KubectlRemote, "--db", db, "--log-file", filepath.Join(filepath.Dir(db), "lbd.log"),
		"--ssh-timeout", "3s", "--kubectl-timeout", "20s", "--lock-wait", "5s", "--pool", labPool,
		"--backend=iptables", "--metrics-addr", metricsAddr, "run"}
	return append(args, extra...)
}

// spawnDaemon starts lbd run in the LB namespace as lab process name and
// waits until its metrics answer.
func spawnDaemon(t *testing.T, l *lab.Lab, name, db string, extra ...string) *lab.Process {
	t.Helper()
	p, err := l.Spawn(name, l.LBNS, daemonArgs(l, db, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("tail of %s's output:\n%s", name, p.Tail(20))
			logFile := filepath.Join(filepath.Dir(db), "lbd.log")
			if b, err := os.ReadFile(logFile); err == nil {
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				t.Logf("tail of %s:\n%s", logFile, strings.Join(lines[max(0, len(lines)-60):], "\n"))
			}
		}
	})
	lab.WaitFor(t, 20*time.Second, "lbd run's metrics", func() bool {
		_, err := metricsText(l)
		return err == nil
	})
	return p
}

// metricsText fetches /metrics from the LB namespace.
func metricsText(l *lab.Lab) (string, error) {
	resp, err := l.HTTPClient(l.LBNS).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metric returns the value of the sample named exactly series ("name" or
// `name{label="v"}`), or -1 when absent.
func metric(t *testing.T, l *lab.Lab, series string) float64 {
	t.Helper()
	text, err := metricsText(l)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %q: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// healthz returns /healthz's status code.
func healthz(t *testing.T, l *lab.Lab) int {
	t.Helper()
	resp, err := l.HTTPClient(l.LBNS).Get("http://" + metricsAddr + "/healthz")
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// natTargets returns the DNAT targets ("ip:port") that traffic can reach
// in the LB namespace's nat table, sorted: those in the chains reached
// from LBD-SERVICES (through the per-/24 LBD-NET chains). A full sync
// fills the service-port chains before it adds the jumps, so a DNAT rule
// alone does not mean traffic flows.
func natTargets(l *lab.Lab) ([]string, error) {
	out, err := l.Run(context.Background(), l.LBNS, "iptables-save", "-t", "nat")
	if err != nil {
		return nil, err
	}
	reached := reachedFrom(out, "LBD-SERVICES")
	var got []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if m := dnatTo.FindStringSubmatch(line); m != nil && len(f) > 1 && reached[f[1]] {
			got = append(got, m[1])
		}
	}
	slices.Sort(got)
	return got, nil
}

// reachedFrom returns the chains of an iptables-save text that jumps lead
// to from chain start, start included.
func reachedFrom(save, start string) map[string]bool {
	edges := map[string][]string{}
	for _, line := range strings.Split(save, "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[0] == "-A" && f[len(f)-2] == "-j" {
			edges[f[1]] = append(edges[f[1]], f[len(f)-1])
		}
	}
	reached := map[string]bool{start: true}
	todo := []string{start}
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		for _, n := range edges[c] {
			if !reached[n] {
				reached[n] = true
				todo = append(todo, n)
			}
		}
	}
	return reached
}

var dnatTo = regexp.MustCompile(`-j DNAT --to-destination (\S+)`)

// targetsOf returns the DNAT targets that pods serve on port, sorted.
func targetsOf(pods []netip.Addr, port uint16) []string {
	var out []string
	for _, p := range pods {
		out = append(out, netip.AddrPortFrom(p, port).String())
	}
	slices.Sort(out)
	return out
}

// waitTargets waits until the nat table's DNAT targets are want and
// returns when that was first seen; it fails after limit.
func waitTargets(t *testing.T, l *lab.Lab, want []string, limit time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	var got []string
	for {
		var err error
		got, err = natTargets(l)
		now := time.Now()
		if err == nil && slices.Equal(got, want) {
			return now
		}
		if now.After(deadline) {
			t.Fatalf("after %v the DNAT targets are %v, want %v", limit, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// percentile returns the p-th percentile (nearest rank) of d.
func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// dnatCounters returns the packet counters of lbd's DNAT rules by target.
func dnatCounters(t *testing.T, l *lab.Lab) map[string]int {
	t.Helper()
	out, err := l.Run(context.Background(), l.LBNS, "iptables-save", "-c", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\[(\d+):\d+\] .*-j DNAT --to-destination (\S+)`)
	got := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			got[m[2]] += n
		}
	}
	return got
}

// TestDaemonEndToEnd is the daemon issue's proof on the real lab: lbd run
// over SSH with the iptables backend converges on kubectl changes within a
// second, keeps traffic flowing through an sshd outage and catches up
// after it, and survives SIGTERM and a restart without reprogramming.
func TestDaemonEndToEnd(t *testing.T) {
	l := e2eLab(t)
	ctx := t.Context()
	ext := lab.LBExternalIP
	db := filepath.Join(t.TempDir(), "lbd.db")
	logFile := filepath.Join(filepath.Dir(db), "lbd.log")
	spec := lab.ServiceSpec{Name: "daemon", ExternalIPs: []netip.Addr{ext}, Ports: []lab.ServicePort{{Port: 85, TargetPort: 80}}, Ready: l.PodIPs}
	apply := applyService(t, l, spec)
	t.Cleanup(func() { lbdRun(t, l, db, "--backend=iptables", "cleanup") })
	if before, err := natTargets(l); err != nil || len(before) != 0 {
		t.Fatalf("DNAT rules before the test: %v %v", before, err)
	}

	d := spawnDaemon(t, l, "lbd-run", db)
	waitTargets(t, l, targetsOf(l.PodIPs, 80), 20*time.Second)
	if got := hits(t, l, ext.String()+":85", 9); sum(got, l.PodNames) != 9 {
		t.Fatalf("traffic through lbd run's rules: %v", got)
	}

	t.Run("convergence", func(t *testing.T) {
		// 20 changes: pod2 leaves the endpoints, then comes back.
		without := podsExcept(l, "pod2")
		var fromApply, fromStart []time.Duration
		for i := range 20 {
			ready, want := without, targetsOf(without, 80)
			if i%2 == 1 {
				ready, want = l.PodIPs, targetsOf(l.PodIPs, 80)
			}
			start := time.Now()
			apply(ready)
			applied := time.Now()
			seen := waitTargets(t, l, want, 10*time.Second)
			fromApply = append(fromApply, seen.Sub(applied))
			fromStart = append(fromStart, seen.Sub(start))
		}
		p50, p99 := percentile(fromApply, .5), percentile(fromApply, .99)
		t.Logf("convergence over 20 changes, from kubectl apply's return to the DNAT rules: p50 %v p99 %v (from its start: p50 %v p99 %v); all: %v",
			p50, p99, percentile(fromStart, .5), percentile(fromStart, .99), fromApply)
		fmt.Printf("lbd run convergence (iptables, debounce 200ms, 20 changes): p50 %v p99 %v from kubectl apply's return; p50 %v p99 %v from its start\n",
			p50.Round(time.Millisecond), p99.Round(time.Millisecond),
			percentile(fromStart, .5).Round(time.Millisecond), percentile(fromStart, .99).Round(time.Millisecond))
		if got := metric(t, l, `lbd_syncs_total{result="ok"}`); got < 20 {
			t.Errorf(`lbd_syncs_total{result="ok"} = %v, want at least 20`, got)
		}
		if got := metric(t, l, "lbd_watch_up"); got != 1 {
			t.Errorf("lbd_watch_up = %v, want 1", got)
		}
	})

	t.Run("sshd outage", func(t *testing.T) {
		all := targetsOf(l.PodIPs, 80)
		apply(l.PodIPs)
		waitTargets(t, l, all, 10*time.Second)
		errsBefore := metric(t, l, `lbd_discovery_errors_total{backend="iptables"}`)
		if err := l.StopSSHD(); err != nil {
			t.Fatal(err)
		}
		sshdUp := false
		t.Cleanup(func() {
			if !sshdUp {
				l.StartSSHD(context.Background())
			}
		})
		// The watch breaks and the sync it triggers fails: both show.
		lab.WaitFor(t, 15*time.Second, "the metrics to show the outage", func() bool {
			return metric(t, l, "lbd_watch_up") == 0 &&
				metric(t, l, `lbd_discovery_errors_total{backend="iptables"}`) > max(errsBefore, 0) &&
				metric(t, l, "lbd_watch_restarts_total") >= 1
		})
		// A change is made on the master while lbd cannot see it.
		without := podsExcept(l, "pod1")
		apply(without)
		// Rules stay and traffic flows all along.
		if got := hits(t, l, ext.String()+":85", 30); sum(got, l.PodNames) != 30 {
			t.Errorf("traffic during the outage: %v, want 30 answers", got)
		}
		if got, _ := natTargets(l); !slices.Equal(got, all) {
			t.Errorf("DNAT targets during the outage: %v, want %v untouched", got, all)
		}
		log, _ := os.ReadFile(logFile)
		for _, want := range []string{"watch failed; the last applied state keeps serving; retrying", "sync failed"} {
			if !strings.Contains(string(log), want) {
				t.Errorf("log lacks %q", want)
			}
		}

		// sshd is back: lbd reconnects (backoff of a few seconds) and
		// applies the change made meanwhile.
		if err := l.StartSSHD(ctx); err != nil {
			t.Fatal(err)
		}
		sshdUp = true
		back := time.Now()
		waitTargets(t, l, targetsOf(without, 80), 70*time.Second)
		t.Logf("change made during the outage applied %v after sshd came back", time.Since(back).Round(time.Millisecond))
		lab.WaitFor(t, 10*time.Second, "the watch to be up again", func() bool { return metric(t, l, "lbd_watch_up") == 1 })
		if code := healthz(t, l); code != 200 {
			t.Errorf("/healthz = %d after recovery, want 200", code)
		}
		apply(l.PodIPs)
		waitTargets(t, l, all, 10*time.Second)
	})

	t.Run("SIGTERM leaves traffic flowing; a restart reprograms nothing", func(t *testing.T) {
		all := targetsOf(l.PodIPs, 80)
		waitTargets(t, l, all, 10*time.Second)
		if got := hits(t, l, ext.String()+":85", 30); sum(got, l.PodNames) != 30 {
			t.Fatalf("traffic before SIGTERM: %v", got)
		}
		rules := iptablesSave(t, l)
		if err := syscall.Kill(d.Pid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-d.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("lbd run did not stop within 20 s of SIGTERM")
		}
		if err := d.Err(); err != nil {
			t.Errorf("lbd run after SIGTERM: %v, want exit status 0", err)
		}
		if got := hits(t, l, ext.String()+":85", 30); sum(got, l.PodNames) != 30 {
			t.Errorf("traffic with lbd stopped: %v, want 30 answers", got)
		}
		if after := iptablesSave(t, l); after != rules {
			t.Errorf("rules changed when lbd stopped:\nbefore:\n%s\nafter:\n%s", rules, after)
		}
		counters := dnatCounters(t, l)
		if sum := counters[all[0]] + counters[all[1]] + counters[all[2]]; sum < 30 {
			t.Fatalf("DNAT packet counters %v: want the traffic counted", counters)
		}

		logBefore, _ := os.ReadFile(logFile)
		d2 := spawnDaemon(t, l, "lbd-run-2", db)
		var first string
		lab.WaitFor(t, 20*time.Second, "the restarted lbd's first sync", func() bool {
			b, _ := os.ReadFile(logFile)
			for _, line := range strings.Split(string(b[len(logBefore):]), "\n") {
				if strings.Contains(line, `msg="sync done"`) || strings.Contains(line, "msg=\"sync failed\"") {
					first = line
					return true
				}
			}
			return false
		})
		if !strings.Contains(first, "result=noop") {
			t.Errorf("first sync after the restart: %s\nwant result=noop", first)
		}
		// Counters are only reset when a rule is rewritten.
		after := dnatCounters(t, l)
		for _, target := range all {
			if after[target] < counters[target] {
				t.Errorf("DNAT %s counter went from %d to %d: the restart reprogrammed it", target, counters[target], after[target])
			}
		}
		if got := iptablesSave(t, l); got != rules {
			t.Errorf("rules changed across the restart:\nbefore:\n%s\nafter:\n%s", rules, got)
		}
		lab.WaitFor(t, 10*time.Second, "healthz after the restart", func() bool { return healthz(t, l) == 200 })
		if got := metric(t, l, `lbd_syncs_total{result="noop"}`); got < 1 {
			t.Errorf(`lbd_syncs_total{result="noop"} = %v after the restart, want >= 1`, got)
		}

		// logrotate renames the file and sends SIGUSR1: lbd goes on in a
		// new file.
		if err := os.Rename(logFile, logFile+".1"); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(d2.Pid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		lab.WaitFor(t, 10*time.Second, "a new log file after SIGUSR1", func() bool {
			b, _ := os.ReadFile(logFile)
			return strings.Contains(string(b), "SIGUSR1: log file reopened")
		})
		if err := syscall.Kill(d2.Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		lab.WaitFor(t, 10*time.Second, "a full sync after SIGHUP", func() bool {
			b, _ := os.ReadFile(logFile)
			return strings.Contains(string(b), "msg=\"SIGHUP: full resync\"") && strings.Contains(string(b), "result=noop full=true")
		})
		if old, _ := os.ReadFile(logFile + ".1"); strings.Contains(string(old), "SIGHUP") {
			t.Error("lbd still writes to the rotated file")
		}
	})
}

// TestDaemonSystemdUnits checks the unit and the haproxy drop-in with
// systemd-analyze verify, where systemd is installed.
func TestDaemonSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIPPED: systemd-analyze not installed (apt-get install systemd); the units are not verified")
	}
	dir := t.TempDir()
	unit, err := os.ReadFile("../../hack/systemd/lbd.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify insists that ExecStart exists and is executable: the test
	// binary stands in for the installed lbd.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/sbin/lbd run\n") {
		t.Fatal("lbd.service: ExecStart is not /usr/local/sbin/lbd run")
	}
	unit = []byte(strings.ReplaceAll(string(unit), "/usr/local/sbin/lbd", self))
	if err := os.WriteFile(filepath.Join(dir, "lbd.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(dir, "haproxy.service.d")
	os.Mkdir(dropIn, 0o755)
	conf, err := os.ReadFile("../../hack/systemd/haproxy.service.d/10-lbd.conf")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dropIn, "10-lbd.conf"), conf, 0o644)
	units := []string{filepath.Join(dir, "lbd.service")}
	if haproxyUnit, err := os.ReadFile("/lib/systemd/system/haproxy.service"); err == nil {
		os.WriteFile(filepath.Join(dir, "haproxy.service"), haproxyUnit, 0o644)
		units = append(units, filepath.Join(dir, "haproxy.service"))
	} else {
		t.Log("no /lib/systemd/system/haproxy.service: the drop-in is not verified")
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, units...)...)
	// The directory first, then the usual search path (the trailing colon).
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	out, err := cmd.CombinedOutput()
	// Unknown keys are only warnings: any output naming our files fails.
	if err != nil || strings.Contains(string(out), dir) || strings.Contains(string(out), "lbd.service") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	t.Logf("systemd-analyze verify %v: ok\n%s", units, out)
}

// TestDaemonPolling measures lbd run --watch=false: a change is reflected
// within --interval plus one sync.
func TestDaemonPolling(t *testing.T) {
	l := e2eLab(t)
	db := filepath.Join(t.TempDir(), "lbd.db")
	spec := lab.ServiceSpec{Name: "polled", ExternalIPs: []netip.Addr{lab.LBExternalIP}, Ports: []lab.ServicePort{{Port: 86, TargetPort: 80}}, Ready: l.PodIPs}
	apply := applyService(t, l, spec)
	t.Cleanup(func() { lbdRun(t, l, db, "--backend=iptables", "cleanup") })
	spawnDaemon(t, l, "lbd-poll", db, "--watch=false", "--interval=1s")
	waitTargets(t, l, targetsOf(l.PodIPs, 80), 20*time.Second)
	if got := metric(t, l, "lbd_watch_up"); got != 0 {
		t.Errorf("lbd_watch_up = %v with --watch=false, want 0", got)
	}
	without := podsExcept(l, "pod0")
	var took []time.Duration
	for i := range 6 {
		ready := without
		if i%2 == 1 {
			ready = l.PodIPs
		}
		apply(ready)
		applied := time.Now()
		took = append(took, waitTargets(t, l, targetsOf(ready, 80), 10*time.Second).Sub(applied))
	}
	t.Logf("polling every 1s, 6 changes: p50 %v max %v: %v", percentile(took, .5), percentile(took, 1), took)
	fmt.Printf("lbd run --watch=false --interval=1s (iptables, 6 changes): p50 %v max %v from kubectl apply's return\n",
		percentile(took, .5).Round(time.Millisecond), percentile(took, 1).Round(time.Millisecond))
}
