package nft

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/lb"
)

// bigServices returns n services with one TCP port and eps endpoints
// each, on distinct external addresses in 198.18.0.0/15.
func bigServices(n, eps int) []lb.Service {
	out := make([]lb.Service, n)
	for i := range n {
		vip := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		var pods []netip.Addr
		for j := range eps {
			pods = append(pods, netip.AddrFrom4([4]byte{10, 246, byte(j), byte(i % 250)}))
		}
		out[i] = svc(fmt.Sprintf("s%05d", i), 80, 8080, lb.TCP, pods, vip.String())
	}
	return out
}

func inNS(b *testing.B, ns string, f func() error) {
	b.Helper()
	if err := lab.InNS(ns, f); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFullProgram programs 10,000 services x 10 endpoints into an
// empty table: one transaction.
func BenchmarkFullProgram(b *testing.B) {
	ns := newNetns(b)
	desired := bigServices(10000, 10)
	var cpu time.Duration
	for b.Loop() {
		be := nsBackend(b, ns, DefaultOptions())
		before := cpuTime(b)
		inNS(b, ns, func() error { _, err := be.Apply(b.Context(), desired, creates(desired)); return err })
		cpu += cpuTime(b) - before
		b.StopTimer()
		inNS(b, ns, func() error { return be.Cleanup(b.Context()) })
		b.StartTimer()
	}
	// CPU time is less at the mercy of other load on the machine than
	// wall time; it includes the kernel's work in the sendmsg.
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
	reportPeakRSS(b)
}

// cpuTime returns the user and system time of the process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportPeakRSS reports the process's peak resident set: the figure of
// one full program when the benchmark runs alone with -benchtime 1x.
func reportPeakRSS(b *testing.B) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MB")
}

// BenchmarkOneServiceChange changes one endpoint of one service among
// 10,000 x 10 already programmed.
func BenchmarkOneServiceChange(b *testing.B) {
	ns := newNetns(b)
	desired := bigServices(10000, 10)
	be := nsBackend(b, ns, DefaultOptions())
	inNS(b, ns, func() error { _, err := be.Apply(b.Context(), desired, creates(desired)); return err })
	i := 0
	for b.Loop() {
		old := desired[5000].Clone()
		s := desired[5000].Clone()
		s.Ports[0].Endpoints[0].Port = uint16(9000 + i%2)
		i++
		desired[5000] = *s
		inNS(b, ns, func() error {
			_, err := be.Apply(b.Context(), desired, []lb.Change{{Kind: lb.Update, Old: old, New: s}})
			return err
		})
	}
}

// BenchmarkOneServiceScale adds or removes one endpoint of one service
// among 10,000 x 10: its endpoints move to the map of the new count (the
// first time with a new spread chain) and its dispatch element to that
// chain.
func BenchmarkOneServiceScale(b *testing.B) {
	ns := newNetns(b)
	desired := bigServices(10000, 10)
	be := nsBackend(b, ns, DefaultOptions())
	inNS(b, ns, func() error { _, err := be.Apply(b.Context(), desired, creates(desired)); return err })
	i := 0
	for b.Loop() {
		old := desired[5000].Clone()
		s := desired[5000].Clone()
		if i%2 == 0 {
			e := s.Ports[0].Endpoints[0]
			e.IP = netip.AddrFrom4([4]byte{10, 247, 0, 1})
			s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, e)
		} else {
			s.Ports[0].Endpoints = s.Ports[0].Endpoints[:10]
		}
		i++
		desired[5000] = *s
		inNS(b, ns, func() error {
			_, err := be.Apply(b.Context(), desired, []lb.Change{{Kind: lb.Update, Old: old, New: s}})
			return err
		})
	}
}

// BenchmarkNoChange is a sync with nothing to change: no netlink call.
func BenchmarkNoChange(b *testing.B) {
	ns := newNetns(b)
	desired := bigServices(10000, 10)
	be := nsBackend(b, ns, DefaultOptions())
	inNS(b, ns, func() error { _, err := be.Apply(b.Context(), desired, creates(desired)); return err })
	before := be.Calls()
	for b.Loop() {
		if _, err := be.Apply(b.Context(), desired, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(be.Calls()-before), "calls")
}

// BenchmarkVerify10k is the drift check of 10,000 services x 10
// endpoints as programmed: it reads the table's chains, rules, sets and
// every element back and finds no difference.
func BenchmarkVerify10k(b *testing.B) {
	ns := newNetns(b)
	desired := bigServices(10000, 10)
	be := nsBackend(b, ns, DefaultOptions())
	inNS(b, ns, func() error { _, err := be.Apply(b.Context(), desired, creates(desired)); return err })
	for b.Loop() {
		inNS(b, ns, func() error {
			d, err := be.Verify(b.Context(), desired)
			if err == nil && len(d) > 0 {
				err = fmt.Errorf("drift right after Apply: %v", d[:min(3, len(d))])
			}
			return err
		})
	}
}
