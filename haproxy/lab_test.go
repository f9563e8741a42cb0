package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/lb"
)

// labHaproxy is haproxy running in master-worker mode in the lab's LB
// namespace, driven by a Backend from the test's (host) namespace: the
// Backend only runs "haproxy -c" and talks to the master socket, whose
// paths are in a temp dir.
type labHaproxy struct {
	l      *lab.Lab
	b      *Backend
	c      *calls
	client *http.Client
}

func startLabHaproxy(t *testing.T, name string) *labHaproxy {
	t.Helper()
	l := lab.ForTest(t, lab.Options{Name: name})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := l.StartPods(ctx); err != nil {
		t.Fatalf("start pods: %v", err)
	}
	if err := l.AddLBAddress("192.168.121.202/24"); err != nil {
		t.Fatal(err)
	}
	o := testOptions(t.TempDir())
	o.CheckInterval = 500 * time.Millisecond
	o.PeerName = "lbd-lab" // haproxy runs with -L lbd-lab
	b := New(o, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	// haproxy binds in the LB namespace; the Backend runs in this one.
	b.bindable = bindAnything
	c := &calls{dir: o.Dir}
	check, reload := b.check, b.reload
	b.check = func(ctx context.Context, base, dir string, files Files) error {
		c.checks++
		return check(ctx, base, dir, files)
	}
	b.reload = func(ctx context.Context) error { c.reloads++; return reload(ctx) }

	// haproxy needs its files to start: the default base and an empty
	// services directory, which the first Apply adopts.
	if err := writeAtomic(o.BasePath, RenderBase(b.o), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(l.Dir, "logs", "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", l.LBNS, "haproxy", "-W", "-S", o.MasterSocket, "-L", o.PeerName, "-f", o.BasePath, "-f", o.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the master and its workers, by process group
		<-done
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("haproxy log:\n%s", out)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := (masterCLI{path: o.MasterSocket}).showProc(ctx)
		if err == nil && len(st.workers) > 0 {
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("haproxy did not start: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true, // a new connection for every request
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return l.Dial(ctx, l.ClientNS, network, addr)
			},
		},
	}
	return &labHaproxy{l: l, b: b, c: c, client: client}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// get asks addr for the pod name over a new connection from the client.
func (h *labHaproxy) get(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// spread makes n requests and counts the answers per pod.
func (h *labHaproxy) spread(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	got := map[string]int{}
	for range n {
		name, err := h.get(ctx, addr)
		if err != nil {
			t.Fatalf("request to %s: %v", addr, err)
		}
		got[name]++
	}
	return got
}

// refused reports whether a connection to addr from the client is refused.
func (h *labHaproxy) refused(t *testing.T, addr string) bool {
	t.Helper()
	c, err := h.l.Dial(t.Context(), h.l.ClientNS, "tcp", addr)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func (h *labHaproxy) apply(t *testing.T, svcs ...lb.Service) {
	t.Helper()
	skipped, err := h.b.Apply(t.Context(), svcs, nil)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(skipped) > 0 {
		t.Fatalf("Apply skipped %v", skipped)
	}
}

// labService is a service on ext:port whose endpoints are the lab's pods
// (all of them, or those whose index is in ready) at targetPort.
func labService(l *lab.Lab, name string, ext netip.Addr, ports map[uint16]uint16, ready ...int) lb.Service {
	s := lb.Service{Namespace: "default", Name: name, Type: "LoadBalancer", ExternalIPs: []netip.Addr{ext}, Affinity: lb.AffinityNone}
	for port, target := range ports {
		p := lb.Port{Name: fmt.Sprintf("p%d", port), Port: port, Protocol: lb.TCP, TargetPort: fmt.Sprint(target)}
		for i, ip := range l.PodIPs {
			r := len(ready) == 0
			for _, j := range ready {
				r = r || i == j
			}
			p.Endpoints = append(p.Endpoints, lb.Endpoint{IP: ip, Port: target, Ready: r, Serving: r})
		}
		s.Ports = append(s.Ports, p)
	}
	s.Normalize()
	return s
}

// TestLab proves the backend end to end against a real haproxy in the
// lab's LB namespace, with the client and the pods in their own.
func TestLab(t *testing.T) {
	h := startLabHaproxy(t, "hpklab")
	l := h.l
	ext, ext2 := l.LBExternalIP, netip.MustParseAddr("192.168.121.202")
	addr := netip.AddrPortFrom(ext, 80).String()
	nginx := labService(l, "nginx", ext, map[uint16]uint16{80: 80})
	web := labService(l, "web", ext, map[uint16]uint16{8080: 8080, 8443: 8443})
	sticky := labService(l, "sticky", ext2, map[uint16]uint16{80: 80})
	sticky.Affinity, sticky.AffinityTimeout = lb.AffinityClientIP, time.Hour
	empty := labService(l, "empty", ext2, map[uint16]uint16{8080: 8080}, -1)
	all := []lb.Service{nginx, web, sticky, empty}
	lb.SortServices(all)
	h.apply(t, all...)

	t.Run("round robin over three pods", func(t *testing.T) {
		got := h.spread(t, addr, 300)
		t.Logf("300 requests to %s: %v", addr, got)
		fmt.Printf("haproxy lab: 300 requests to %s spread %v\n", addr, got)
		for _, pod := range l.PodNames {
			if got[pod] < 60 || got[pod] > 140 {
				t.Errorf("pod %s got %d of 300 requests, want 60-140 (all: %v)", pod, got[pod], got)
			}
		}
	})

	t.Run("two ports", func(t *testing.T) {
		for _, port := range []uint16{8080, 8443} {
			a := netip.AddrPortFrom(ext, port).String()
			got := h.spread(t, a, 30)
			if len(got) != len(l.PodNames) {
				t.Errorf("%s reached pods %v, want all %v", a, got, l.PodNames)
			}
		}
	})

	t.Run("ClientIP affinity keeps the client on one pod", func(t *testing.T) {
		got := h.spread(t, netip.AddrPortFrom(ext2, 80).String(), 50)
		if len(got) != 1 {
			t.Errorf("ClientIP service answered from %v, want one pod", got)
		}
	})

	t.Run("no ready endpoint closes at once", func(t *testing.T) {
		a := netip.AddrPortFrom(ext2, 8080).String()
		start := time.Now()
		c, err := l.Dial(t.Context(), l.ClientNS, "tcp", a)
		if err != nil {
			t.Fatalf("dial %s: %v (the frontend must stay)", a, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		n, err := c.Read(make([]byte, 100))
		took := time.Since(start)
		if err == nil || os.IsTimeout(err) {
			t.Errorf("read from %s: %d bytes, err %v after %v; want the connection closed", a, n, err, took)
		}
		if took > 2*time.Second {
			t.Errorf("closing took %v, want at once", took)
		}
		t.Logf("service with no ready endpoint: %v after %v", err, took.Round(time.Millisecond))
	})

	t.Run("no change makes no haproxy call", func(t *testing.T) {
		checks, reloads := h.c.checks, h.c.reloads
		h.apply(t, all...)
		if h.c.checks != checks || h.c.reloads != reloads {
			t.Errorf("unchanged Apply: checks %d->%d, reloads %d->%d; want none", checks, h.c.checks, reloads, h.c.reloads)
		}
		if drift, err := h.b.Verify(t.Context(), all); err != nil || len(drift) > 0 {
			t.Errorf("Verify: %v %v", drift, err)
		}
	})

	t.Run("zero failures while scaling under load", func(t *testing.T) {
		down := labService(l, "nginx", ext, map[uint16]uint16{80: 80}, 1)
		m := masterCLI{path: h.b.o.MasterSocket}
		before, err := m.showProc(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		res := h.load(t, addr, 250, 20*time.Second, func(i int) {
			s := nginx
			if i%2 == 0 {
				s = down
			}
			h.apply(t, s, web, sticky, empty)
		}, 20)
		msg := fmt.Sprintf("haproxy lab: load %d requests in %v (%.0f/s), %d ok, %d failed, %d applies at runtime; answers %v",
			res.sent, res.took.Round(time.Millisecond), float64(res.sent)/res.took.Seconds(), res.ok, res.failed, res.applies, res.pods)
		t.Log(msg)
		fmt.Println(msg)
		if res.failed > 0 {
			t.Errorf("%d requests failed, want 0; first: %v", res.failed, res.firstErr)
		}
		if rate := float64(res.sent) / res.took.Seconds(); rate < 200 {
			t.Logf("load rate %.0f/s is under the 200/s target (slow machine?)", rate)
		}
		if res.applies != 20 {
			t.Errorf("%d applies, want 20", res.applies)
		}
		// Endpoint changes never reload haproxy.
		after, err := m.showProc(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n := after.reloads - before.reloads; n != 0 {
			t.Errorf("haproxy counted %d reloads during the load, want 0", n)
		}
	})

	t.Run("broken base file fails with haproxy's text and keeps the old config", func(t *testing.T) {
		base, err := os.ReadFile(h.b.o.BasePath)
		if err != nil {
			t.Fatal(err)
		}
		defer write(t, h.b.o.BasePath, string(base))
		write(t, h.b.o.BasePath, string(base)+"    not-a-keyword on\n")
		before := onDisk(t, h.b)
		one := labService(l, "nginx", ext, map[uint16]uint16{80: 80, 81: 80}) // a new port: validated and reloaded
		_, err = h.b.Apply(t.Context(), []lb.Service{one, web, sticky, empty}, nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "not-a-keyword") {
			t.Fatalf("Apply with a broken base: %v; want a *ConfigError quoting haproxy", err)
		}
		t.Logf("broken base: %v", err)
		if diff := cmp.Diff(before, onDisk(t, h.b)); diff != "" {
			t.Errorf("files changed (-before +after):\n%s", diff)
		}
		if got := h.spread(t, addr, 30); len(got) != 3 {
			t.Errorf("old config (three pods) no longer served: %v", got)
		}
	})

	t.Run("failed reload rolls back", func(t *testing.T) {
		// haproxy -c accepts a bind on an address the LB does not have;
		// only the reload finds out.
		before := onDisk(t, h.b)
		bad := labService(l, "elsewhere", netip.MustParseAddr("192.0.2.55"), map[uint16]uint16{80: 80})
		_, err := h.b.Apply(t.Context(), []lb.Service{bad, nginx, web, sticky, empty}, nil)
		var re *ReloadError
		if !errors.As(err, &re) {
			t.Fatalf("Apply binding a foreign address: %v; want a *ReloadError", err)
		}
		t.Logf("failed reload: %v", err)
		if diff := cmp.Diff(before, onDisk(t, h.b)); diff != "" {
			t.Errorf("files not restored (-before +after):\n%s", diff)
		}
		if got := h.spread(t, addr, 30); len(got) != 3 {
			t.Errorf("old config no longer served: %v", got)
		}
		// The next good change goes through.
		h.apply(t, nginx, web, sticky)
		if !h.refused(t, netip.AddrPortFrom(ext2, 8080).String()) {
			t.Errorf("deleted service empty still listens")
		}
		h.apply(t, all...)
	})

	t.Run("deleted service stops listening", func(t *testing.T) {
		a := netip.AddrPortFrom(ext, 8443).String()
		if h.refused(t, a) {
			t.Fatalf("%s refused before the delete", a)
		}
		h.apply(t, nginx, sticky, empty)
		if !h.refused(t, a) {
			t.Errorf("%s still accepts after its service was deleted", a)
		}
		if got := h.spread(t, addr, 9); len(got) != 3 {
			t.Errorf("other service disturbed: %v", got)
		}
	})

	t.Run("Cleanup removes the files and closes the ports", func(t *testing.T) {
		reloads := h.c.reloads
		if err := h.b.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if got := onDisk(t, h.b); len(got) != 0 {
			t.Errorf("files left: %v", got.Names())
		}
		if h.c.reloads != reloads+1 {
			t.Errorf("Cleanup reloads: %d, want 1", h.c.reloads-reloads)
		}
		for _, a := range []string{addr, netip.AddrPortFrom(ext2, 80).String()} {
			if !h.refused(t, a) {
				t.Errorf("%s still accepts after Cleanup", a)
			}
		}
	})
}

type loadResult struct {
	sent, ok, failed, applies int
	took                      time.Duration
	pods                      map[string]int
	firstErr                  error
}

// load sends rate requests per second to addr from the client for d (each
// on a new connection, at most rate*d in all, each bounded by the client's
// timeout) while change(i) runs changes times, evenly spaced.
func (h *labHaproxy) load(t *testing.T, addr string, rate int, d time.Duration, change func(i int), changes int) loadResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d+30*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		res      = loadResult{pods: map[string]int{}}
		wg       sync.WaitGroup
		inflight = make(chan struct{}, 128)
		stop     atomic.Bool
	)
	start := time.Now()
	changerDone := make(chan struct{})
	go func() {
		defer close(changerDone)
		every := d / time.Duration(changes+1)
		for i := range changes {
			select {
			case <-time.After(time.Until(start.Add(every * time.Duration(i+1)))):
			case <-ctx.Done():
				return
			}
			if stop.Load() {
				return
			}
			change(i)
			mu.Lock()
			res.applies++
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	limit := int(d.Seconds()) * rate
	for res.sent < limit && time.Since(start) < d {
		<-tick.C
		inflight <- struct{}{}
		res.sent++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			name, err := h.get(ctx, addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.failed++
				if res.firstErr == nil {
					res.firstErr = err
				}
				return
			}
			res.ok++
			res.pods[name]++
		}()
	}
	wg.Wait()
	res.took = time.Since(start)
	stop.Store(true)
	<-changerDone
	return res
}
