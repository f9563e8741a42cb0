package netfilter

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/lb"
)

// TestLabMasqueradeNoStalls drives new-connection-per-request load (wrk,
// Connection: close, 4 s) through the masquerading backend and counts the
// stalls: SYN retransmits on the client, TcpExtPAWSTimewait on the pod.
// lbd's masquerade keeps the client's source port and shows none. The
// control run replaces the rule with MASQUERADE --random-fully, what lbd
// rendered before, against a fresh pod: new connections land on source
// ports the pod still holds in TIME_WAIT, and the SYNs are retransmitted.
func TestLabMasqueradeNoStalls(t *testing.T) {
	lab.RequireRoot(t)
	if _, err := os.Stat("/usr/bin/wrk"); err != nil {
		t.Skip("SKIPPED: needs wrk")
	}
	l := lab.ForTest(t, lab.Options{Name: fmt.Sprintf("dp%d", os.Getpid()), Pods: 2})
	ctx := t.Context()
	if err := l.StartPods(ctx); err != nil {
		t.Fatal(err)
	}
	b := newLabBackend(t, l.LBNS, DefaultOptions())
	vip := l.LBExternalIP.String()
	web := func(pod int) lb.Service { return service("web", 80, 80, lb.TCP, l.PodIPs[pod:pod+1], vip) }

	// load runs wrk against the service on pod and returns the client's
	// SYN retransmits and the pod's PAWS rejections in TIME_WAIT.
	load := func(pod int) (rate float64, synRetrans, paws int64) {
		t.Helper()
		c0, p0 := tcpCounters(t, l, l.ClientNS), tcpCounters(t, l, l.PodNS[pod])
		out, err := l.Run(ctx, l.ClientNS, "timeout", "30", "wrk", "-t1", "-c20", "-d4s", "--timeout", "2s",
			"-H", "Connection: close", "http://"+vip+"/")
		if err != nil {
			t.Fatal(err)
		}
		c1, p1 := tcpCounters(t, l, l.ClientNS), tcpCounters(t, l, l.PodNS[pod])
		if m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindStringSubmatch(out); m != nil {
			rate, _ = strconv.ParseFloat(m[1], 64)
		}
		return rate, c1["TcpExtTCPSynRetrans"] - c0["TcpExtTCPSynRetrans"], p1["TcpExtPAWSTimewait"] - p0["TcpExtPAWSTimewait"]
	}

	s0 := web(0)
	b.apply([]lb.Service{s0}, lb.Change{Kind: lb.Create, New: &s0})
	rate, syn, paws := load(0)
	t.Logf("MASQUERADE: %.0f new connections/s, %d SYN retransmits, %d PAWS rejections", rate, syn, paws)
	if rate == 0 {
		t.Fatal("no request went through")
	}
	// Alone this run shows 0 and 0. On a machine loaded by parallel
	// tests the pod has shown a few PAWS rejections (8 of ~9,000
	// connections) that stalled no SYN, so those get a 0.1% margin; a
	// SYN retransmit, the stall users see, gets none.
	if syn != 0 || float64(paws) > rate*4/1000 {
		t.Errorf("with lbd's masquerade: %d SYN retransmits on the client, %d TcpExtPAWSTimewait on the pod; want 0 and 0", syn, paws)
	}

	// Control: the same load with --random-fully, to a pod without
	// TIME_WAIT sockets of the first run.
	s1 := web(1)
	b.apply([]lb.Service{s1}, lb.Change{Kind: lb.Update, Old: &s0, New: &s1})
	if _, err := l.Run(ctx, l.LBNS, "iptables", "-w", "-t", "nat", "-R", PostroutingChain, "3", "-j", "MASQUERADE", "--random-fully"); err != nil {
		t.Fatal(err)
	}
	rate, syn, paws = load(1)
	t.Logf("MASQUERADE --random-fully: %.0f new connections/s, %d SYN retransmits, %d PAWS rejections", rate, syn, paws)
	if syn == 0 || paws == 0 {
		t.Errorf("control with --random-fully: %d SYN retransmits, %d PAWS rejections; want both > 0 (the load may be too low to show the stalls)", syn, paws)
	}
	b.cleanup()
}

// tcpCounters reads ns's TCP counters under nstat's names
// ("TcpExtPAWSTimewait") from /proc/net/snmp and /proc/net/netstat.
func tcpCounters(t *testing.T, l *lab.Lab, ns string) map[string]int64 {
	t.Helper()
	out, err := l.Run(t.Context(), ns, "cat", "/proc/net/snmp", "/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || len(names) != len(values) {
			continue
		}
		for j := 1; j < len(names); j++ {
			v, _ := strconv.ParseInt(values[j], 10, 64)
			m[strings.TrimSuffix(names[0], ":")+names[j]] = v
		}
	}
	return m
}
