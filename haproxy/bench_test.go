package haproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/lb"
)

// benchServices returns n services with eps ready endpoints each, on
// distinct external IPs (one port 80 each).
func benchServices(n, eps int) []lb.Service {
	svcs := make([]lb.Service, n)
	for i := range svcs {
		s := lb.Service{
			Namespace:   fmt.Sprintf("ns%d", i%100),
			Name:        fmt.Sprintf("svc%d", i),
			ExternalIPs: []netip.Addr{netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})},
			Affinity:    lb.AffinityNone,
		}
		p := lb.Port{Port: 80, Protocol: lb.TCP, TargetPort: "8080"}
		for j := range eps {
			p.Endpoints = append(p.Endpoints, lb.Endpoint{IP: netip.AddrFrom4([4]byte{10, 246, byte(i >> 4), byte(i<<4 + j)}), Port: 8080, Ready: true, Serving: true})
		}
		s.Ports = []lb.Port{p}
		svcs[i] = s
	}
	lb.SortServices(svcs)
	return svcs
}

// BenchmarkRender renders 10,000 services with 10 endpoints each.
func BenchmarkRender(b *testing.B) {
	svcs := benchServices(10000, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(svcs, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderWriteValidate renders 10,000 services with 10 endpoints
// each, writes them as a new generation (sharded, as Apply does) and validates the set with the
// real "haproxy -c": the work of a sync that changes everything, short of
// the reload.
func BenchmarkRenderWriteValidate(b *testing.B) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		b.Skipf("SKIP: haproxy is not installed: %v", err)
	}
	svcs := benchServices(10000, 10)
	o := testOptions(b.TempDir())
	o.User, o.Group = "-", "-"
	be := New(o, nil)
	if err := be.ensureBase(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var render, write, check time.Duration
	for b.Loop() {
		t0 := time.Now()
		files, err := Render(svcs, o)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		disk := o.layoutOf(files).pack(files) // sharded, as Apply writes them
		gen, err := be.tree.write(disk)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := be.check(ctx, o.BasePath, gen, disk); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		render, write, check = render+t1.Sub(t0), write+t2.Sub(t1), check+t3.Sub(t2)
		b.StopTimer()
		if _, err := be.tree.prune(""); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(render.Milliseconds())/n, "render-ms/op")
	b.ReportMetric(float64(write.Milliseconds())/n, "write-ms/op")
	b.ReportMetric(float64(check.Milliseconds())/n, "haproxy-c-ms/op")
}

// BenchmarkApplyNoChange is a sync of 10,000 unchanged services: render,
// read the files back, compare. It must not call haproxy; the calls are
// counted and reported.
func BenchmarkApplyNoChange(b *testing.B) {
	svcs := benchServices(10000, 10)
	o := testOptions(b.TempDir())
	be := New(o, nil)
	be.bindable = bindAnything // the test's addresses are not this host's
	calls := 0
	be.check = func(context.Context, string, string, Files) error { calls++; return nil }
	be.reload = func(context.Context) error { calls++; return nil }
	ctx := context.Background()
	if _, err := be.Apply(ctx, svcs, nil); err != nil {
		b.Fatal(err)
	}
	calls = 0
	for b.Loop() {
		if _, err := be.Apply(ctx, svcs, nil); err != nil {
			b.Fatal(err)
		}
	}
	if calls != 0 {
		b.Fatalf("unchanged Apply made %d haproxy calls, want 0", calls)
	}
	b.ReportMetric(float64(calls), "haproxy-calls")
}

// BenchmarkApplyEndpointChange is a sync of 10,000 services in which one
// endpoint of one service flips readiness: the runtime path (changed file
// found, runtime commands, file rewritten in place), against a stand-in
// stats socket that answers "show servers state" from the files and
// accepts every command. It must not reload. The figure is ms/change: the
// goal is 50 ms or less at 10,000 services, with no reload.
func BenchmarkApplyEndpointChange(b *testing.B) {
	svcs := benchServices(10000, 10)
	o := testOptions(b.TempDir())
	be := New(o, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	be.bindable = bindAnything
	reloads, cmds := 0, 0
	be.check = func(context.Context, string, string, Files) error { return nil }
	be.reload = func(context.Context) error { reloads++; return nil }
	ctx := context.Background()
	if _, err := be.Apply(ctx, svcs, nil); err != nil {
		b.Fatal(err)
	}
	fakeStats(be, &cmds)
	be.synced = true
	reloads = 0
	i := 0
	start := time.Now()
	for b.Loop() {
		e := &svcs[42].Ports[0].Endpoints[3]
		e.Ready, e.Serving = i%2 == 1, i%2 == 1
		i++
		if _, err := be.Apply(ctx, svcs, nil); err != nil {
			b.Fatal(err)
		}
	}
	if reloads != 0 {
		b.Fatalf("endpoint change reloaded %d times, want 0", reloads)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1e3/float64(b.N), "ms/change")
	b.ReportMetric(float64(cmds)/float64(b.N), "runtime-cmds/op")
	b.ReportMetric(float64(reloads), "reloads")
}

// fakeStats stands in for the stats socket of be: "show servers state"
// is answered from the services directory (the unit of the backend's
// service, in its file or shard), every other command is accepted and
// counted in cmds. Services are in namespaces without '_'.
func fakeStats(be *Backend, cmds *int) {
	be.haveStats = func() bool { return true }
	be.stats = func(_ context.Context, cmd string) (string, error) {
		backend, ok := strings.CutPrefix(cmd, "show servers state ")
		if !ok {
			*cmds++
			return "", nil
		}
		// lbd_<ns>_<name>_<port>_tcp
		parts := strings.Split(backend, "_")
		_, f, _ := be.readUnit(FileName(parts[1], parts[2]))
		_, slots := parseSlots(f)
		var sb strings.Builder
		sb.WriteString("1\n# header\n")
		for i, s := range slots[backend] {
			addr, admin := s.addr, 0
			if s.state == slotFree {
				addr, admin = placeholder, 5
			}
			w := 1
			if s.state == slotDrain {
				w = 0
			}
			fmt.Fprintf(&sb, "3 %s %d %s %s 2 %d %d 1 0 6 3 4 6 0 0 0 - %d - 0 0 - - 0\n", backend, i+1, SlotName(i+1), addr.Addr(), admin, w, addr.Port())
		}
		return sb.String(), nil
	}
}
