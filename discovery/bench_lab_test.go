package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// BenchmarkEndpointChangeLab measures what one endpoint change costs the
// master, against the lab's real kube-apiserver behind its sshd: the
// kubectl bytes lbd reads over SSH and kube-apiserver's CPU time, for the
// old way (a -o name watch line, then a full LIST) and the new (the
// watch delivers the changed EndpointSlice into Cached; Discover parses
// the cache). The cluster holds LBD_BENCH_SERVICES services (default
// 2000) without endpoints and one with an EndpointSlice, which each change
// patches. Run as root:
//
//	LBD_BENCH_SERVICES=10000 go test -run XXX -bench EndpointChangeLab -benchtime 1x ./discovery
//
// Measured at 10,000 services (2 cores, kube-apiserver v1.32): before,
// 10.8 MB and 370 ms of kube-apiserver CPU per change; after, 1.3 kB and
// 12 ms (the patch itself and the idle load; idle is 26 ms/s).
func BenchmarkEndpointChangeLab(b *testing.B) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("LBD_BENCH_SERVICES")); err == nil && v > 0 {
		n = v
	}
	l := lab.ForTest(b, lab.Options{Name: "incr", Cluster: true})
	ctx := b.Context()
	start := time.Now()
	createServices(b, l, n)
	b.Logf("%d services created in %s", n, time.Since(start).Round(time.Second))

	s := labSource(b, l)
	apiserver := apiserverPID(b, l)
	const changes = 5
	patch := func(i int) {
		ip := fmt.Sprintf("10.246.82.%d", 10+i%100)
		if err := l.Apply(ctx, sliceManifest(ip)); err != nil {
			b.Fatal(err)
		}
	}

	measure := func(name string, watch func(ctx context.Context, ev func(string)) error, discover func() error) {
		wctx, stop := context.WithCancel(ctx)
		var events atomic.Int64
		done := make(chan error, 1)
		go func() { done <- watch(wctx, func(string) { events.Add(1) }) }()
		// Settle: the watches' initial listings, then one sync.
		t0 := time.Now()
		defer func() { b.Logf("%s: %d events", name, events.Load()) }()
		lab.WaitFor(b, 120*time.Second, "the watches' listings", func() bool {
			select {
			case err := <-done:
				b.Fatalf("%s: watch ended: %v", name, err)
			default:
			}
			return events.Load() >= int64(n)
		})
		b.Logf("%s: listings in %s", name, time.Since(t0).Round(time.Millisecond))
		time.Sleep(2 * time.Second)
		if err := discover(); err != nil {
			b.Fatal(err)
		}
		bytes0, cpu0, t0 := s.Received(), cpuTime(b, apiserver), time.Now()
		for i := range changes {
			before := events.Load()
			patch(i)
			lab.WaitFor(b, 30*time.Second, "the change event", func() bool { return events.Load() > before })
			time.Sleep(200 * time.Millisecond) // the debounce
			if err := discover(); err != nil {
				b.Fatal(err)
			}
		}
		bytes, cpu, wall := s.Received()-bytes0, cpuTime(b, apiserver)-cpu0, time.Since(t0)
		stop()
		<-done
		b.Logf("%s: per endpoint change at %d services: %d kubectl bytes, %v kube-apiserver CPU (%v wall for %d changes)",
			name, n, bytes/changes, cpu/changes, wall.Round(time.Millisecond), changes)
		b.ReportMetric(float64(bytes/changes), name+"-bytes/change")
		b.ReportMetric(cpu.Seconds()/changes*1000, name+"-apiserver-cpu-ms/change")
	}
	for b.Loop() {
		measure("before", func(ctx context.Context, ev func(string)) error { return s.Watch(ctx, 0, ev) },
			func() error { _, _, err := s.Discover(ctx); return err })
		c := NewCached(s)
		measure("after", func(ctx context.Context, ev func(string)) error { return c.Watch(ctx, 0, ev) },
			func() error {
				_, _, err := c.Discover(ctx)
				return err
			})
		if c.Lists() > 3 {
			b.Errorf("the cached source listed %d times", c.Lists())
		}
		// The idle cost, for scale.
		cpu0 := cpuTime(b, apiserver)
		time.Sleep(5 * time.Second)
		b.Logf("idle kube-apiserver CPU: %v per 5 s", cpuTime(b, apiserver)-cpu0)
	}
}

// createServices creates n ClusterIP services without endpoints and the
// service web with one EndpointSlice, kubectl create of Lists of 500.
func createServices(b testing.TB, l *lab.Lab, n int) {
	for from := 0; from < n; from += 500 {
		var items []string
		for i := from; i < min(n, from+500); i++ {
			items = append(items, fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc-%d","namespace":"default"},
				"spec":{"ports":[{"port":80,"protocol":"TCP","targetPort":8080}]}}`, i))
		}
		if _, err := l.Kubectl(b.Context(), `{"apiVersion":"v1","kind":"List","items":[`+strings.Join(items, ",")+`]}`, "create", "-f", "-"); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Apply(b.Context(), `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
		"spec":{"externalIPs":["192.168.121.240"],"ports":[{"port":80,"protocol":"TCP","targetPort":8080}]}}`); err != nil {
		b.Fatal(err)
	}
	if err := l.Apply(b.Context(), sliceManifest("10.246.82.2")); err != nil {
		b.Fatal(err)
	}
}

func sliceManifest(ip string) string {
	return fmt.Sprintf(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
		"metadata":{"name":"web-1","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},
		"addressType":"IPv4","endpoints":[{"addresses":[%q],"conditions":{"ready":true}}],
		"ports":[{"port":8080,"protocol":"TCP","name":""}]}`, ip)
}

// labSource is a Source for the lab's master whose SSH connection leaves
// from the LB namespace.
func labSource(b testing.TB, l *lab.Lab) *Source {
	cfg := Config{Master: l.Master, KeyFiles: []string{l.SSHKey}, NoAgent: true, KnownHosts: l.KnownHosts,
		ConnectTimeout: 10 * time.Second, CommandTimeout: 60 * time.Second, Kubectl: l.KubectlRemote,
		Log: slog.New(slog.DiscardHandler)}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	r, err := newSSHRunner(cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	r.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return l.Dial(ctx, l.LBNS, network, addr)
	}
	s.run, s.runInput, s.addrs, s.connect, s.close = r.run, r.runInput, r.addrs, r.Connect, r.Close
	s.stream, s.streamEvents, s.received = r.stream, r.streamEvents, r.received.Load
	b.Cleanup(func() { s.Close() })
	return s
}

// apiserverPID finds the lab's kube-apiserver: the process of that name in
// the lab's master network namespace.
func apiserverPID(b *testing.B, l *lab.Lab) int {
	var want syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", l.MasterNS), &want); err != nil {
		b.Fatal(err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		comm, err := os.ReadFile(p + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "kube-apiserver" {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(p+"/ns/net", &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			pid, _ := strconv.Atoi(filepath.Base(p))
			return pid
		}
	}
	b.Fatalf("no kube-apiserver in network namespace %s", l.MasterNS)
	return 0
}

// cpuTime returns utime+stime of pid from /proc/<pid>/stat.
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}
