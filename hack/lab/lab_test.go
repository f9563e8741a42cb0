package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testName = "labtest"

func TestPodIP(t *testing.T) {
	tests := []struct {
		i    int
		want string
	}{
		{0, "10.246.82.2"},
		{1, "10.246.82.6"},
		{2, "10.246.92.8"},
		{3, "10.246.92.9"},
		{250, "10.246.93.0"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.i), func(t *testing.T) {
			if d := cmp.Diff(tt.want, podIP(tt.i).String()); d != "" {
				t.Errorf("podIP(%d) (-want +got):\n%s", tt.i, d)
			}
		})
	}
}

// TestNetworkPlanStaysInNamespaces checks the rendered plan, with one LB
// and with two: every command except `netns add` names a lab namespace
// with -n, and every veth peer is created straight into a lab namespace,
// so the host never sees a link; the namespaces and the switch's bridges
// are the ones expected.
func TestNetworkPlanStaysInNamespaces(t *testing.T) {
	for _, tt := range []struct {
		opts    Options
		ns      []string
		bridges []string
	}{
		{Options{Name: "x", Pods: 4}, []string{"lbd-x-master", "lbd-x-lb", "lbd-x-client", "lbd-x-pod0", "lbd-x-pod1", "lbd-x-pod2", "lbd-x-pod3"}, []string{"lbd-x-lb flannel0"}},
		{Options{Name: "x", Pods: 2, LBs: 2}, []string{"lbd-x-master", "lbd-x-lb", "lbd-x-client", "lbd-x-lb2", "lbd-x-sw", "lbd-x-pod0", "lbd-x-pod1"},
			[]string{"lbd-x-sw infra", "lbd-x-sw ext", "lbd-x-sw pods"}},
	} {
		t.Run(fmt.Sprintf("LBs=%d", max(1, tt.opts.LBs)), func(t *testing.T) {
			var nsAdded, bridges []string
			for _, c := range networkPlan(newLab(tt.opts)) {
				line := strings.Join(c, " ")
				switch {
				case c[0] == "netns" && c[1] == "add":
					nsAdded = append(nsAdded, c[2])
				case c[0] == "-n" && strings.HasPrefix(c[1], "lbd-x-"):
					if strings.Contains(line, " peer ") && !strings.Contains(line, " netns lbd-x-") {
						t.Errorf("veth peer not created in a lab namespace: ip %s", line)
					}
					if strings.HasSuffix(line, " type bridge forward_delay 0") {
						bridges = append(bridges, c[1]+" "+c[4])
					}
				default:
					t.Errorf("command outside the lab namespaces: ip %s", line)
				}
			}
			if d := cmp.Diff(tt.ns, nsAdded); d != "" {
				t.Errorf("namespaces (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.bridges, bridges); d != "" {
				t.Errorf("bridges (-want +got):\n%s", d)
			}
		})
	}
}

func hostNet(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-o", "link"}, {"route"}, {"-6", "route"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

func labNamespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "lbd-"+testName+"-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

func TestNetworkLab(t *testing.T) {
	RequireRoot(t)
	before := hostNet(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	l, err := Start(ctx, Options{Name: testName})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	t.Logf("network lab up in %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := l.StartPods(ctx); err != nil {
		t.Fatalf("StartPods: %v", err)
	}
	t.Logf("pods up in %s", time.Since(start).Round(time.Millisecond))

	t.Run("client reaches lb", func(t *testing.T) {
		// Nothing listens on the lb: a refused connection proves the
		// SYN got there and the RST came back.
		_, err := l.Dial(ctx, l.ClientNS, "tcp", netip.AddrPortFrom(l.LBExternalIP, 1).String())
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial lb from client: got %v, want connection refused", err)
		}
	})
	t.Run("lb reaches every pod", func(t *testing.T) {
		hc := l.HTTPClient(l.LBNS)
		for i, ip := range l.PodIPs {
			want := l.PodNames[i] + "\n"
			for _, port := range PodTCPPorts {
				resp, err := hc.Get(fmt.Sprintf("http://%s/", netip.AddrPortFrom(ip, port)))
				if err != nil {
					t.Errorf("GET pod %s port %d: %v", ip, port, err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if d := cmp.Diff(want, string(body)); d != "" {
					t.Errorf("pod %s port %d body (-want +got):\n%s", ip, port, d)
				}
				if ra := resp.Header.Get("X-Remote-Addr"); !strings.HasPrefix(ra, FlannelIP.Addr().String()+":") {
					t.Errorf("pod %s saw remote %q, want the lb's flannel0 address", ip, ra)
				}
			}
			for _, port := range PodUDPPorts {
				got, err := udpAsk(ctx, l, l.LBNS, netip.AddrPortFrom(ip, port))
				if err != nil {
					t.Errorf("udp pod %s port %d: %v", ip, port, err)
				} else if d := cmp.Diff(want, got); d != "" {
					t.Errorf("udp pod %s port %d (-want +got):\n%s", ip, port, d)
				}
			}
		}
	})
	t.Run("no back routes", func(t *testing.T) {
		tests := []struct {
			name string
			ns   string
			to   netip.Addr
		}{
			{"pod to client", l.PodNS[0], l.ClientIP},
			{"pod to master", l.PodNS[2], l.MasterIP},
			{"client to pod", l.ClientNS, l.PodIPs[0]},
			{"master to pod", l.MasterNS, l.PodIPs[1]},
			{"client to master", l.ClientNS, l.MasterIP},
		}
		for _, tt := range tests {
			_, err := l.Dial(ctx, tt.ns, "tcp", netip.AddrPortFrom(tt.to, 80).String())
			if !errors.Is(err, syscall.ENETUNREACH) {
				t.Errorf("%s: got %v, want network unreachable", tt.name, err)
			}
		}
	})
	t.Run("forwarding off", func(t *testing.T) {
		for _, ns := range []string{l.LBNS, l.PodNS[0]} {
			out, err := l.Run(ctx, ns, "sysctl", "-n", "net.ipv4.ip_forward")
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff("0", strings.TrimSpace(out)); d != "" {
				t.Errorf("%s ip_forward (-want +got):\n%s", ns, d)
			}
		}
	})
	t.Run("second lb address", func(t *testing.T) {
		if err := l.AddLBAddress("192.168.121.202/24"); err != nil {
			t.Fatal(err)
		}
		_, err := l.Dial(ctx, l.ClientNS, "tcp", "192.168.121.202:1")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial 192.168.121.202 from client: got %v, want connection refused", err)
		}
	})
	t.Run("spawn", func(t *testing.T) {
		p, err := l.Spawn("sleeper", l.ClientNS, "sh", "-c", "echo hi; exec sleep 300")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Spawn("sleeper", l.ClientNS, "true"); err == nil {
			t.Error("second Spawn under a running name succeeded")
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.HasSuffix(p.Tail(1), "hi") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if d := cmp.Diff("hi", p.Tail(1)); d != "" {
			t.Errorf("log tail (-want +got):\n%s", d)
		}
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.Done():
		default:
			t.Error("Done not closed after Stop")
		}
	})
	t.Run("dial refuses names", func(t *testing.T) {
		if _, err := l.Dial(ctx, l.ClientNS, "tcp", "localhost:80"); err == nil {
			t.Error("Dial with a host name succeeded; want an error")
		}
	})

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if ns := labNamespaces(t); len(ns) != 0 {
		t.Errorf("namespaces left after Close: %v", ns)
	}
	if d := cmp.Diff(before, hostNet(t)); d != "" {
		t.Errorf("host namespace links/routes changed (-before +after):\n%s", d)
	}
}

// udpAsk sends one datagram from ns to addr and returns the reply.
func udpAsk(ctx context.Context, l *Lab, ns string, addr netip.AddrPort) (string, error) {
	c, err := l.Dial(ctx, ns, "udp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestSweep leaves a lab with a stray process behind, as a killed test
// would, and checks that Sweep removes both.
func TestSweep(t *testing.T) {
	RequireRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	l, err := Start(ctx, Options{Name: testName, Pods: 1, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	stray := exec.Command("ip", "netns", "exec", l.LBNS, "sleep", "300")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- stray.Wait() }()

	if err := Sweep(testName); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		stray.Process.Kill()
		t.Error("stray process survived Sweep")
	}
	if ns := labNamespaces(t); len(ns) != 0 {
		t.Errorf("namespaces left after Sweep: %v", ns)
	}
}

// BenchmarkStartNetwork measures building and removing the network lab
// with three pods, without pod servers.
func BenchmarkStartNetwork(b *testing.B) {
	RequireRoot(b)
	for b.Loop() {
		l, err := Start(b.Context(), Options{Name: testName, Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// detachTestName names the labs TestDetach's helper process starts.
const detachTestName = "labdetach"

// TestDetach starts a lab in a child process that exits without Close, and
// checks that the lab's processes die with it by default and outlive it
// with Options.Detach.
func TestDetach(t *testing.T) {
	RequireRoot(t)
	if os.Getenv("LAB_DETACH_HELPER") != "" {
		t.Skip("helper process")
	}
	tests := []struct {
		name      string
		detach    bool
		wantAlive bool
	}{
		{"default dies with its starter", false, false},
		{"detached outlives its starter", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() {
				if err := Sweep(detachTestName); err != nil {
					t.Errorf("Sweep: %v", err)
				}
			})
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDetachHelper$", "-test.v")
			cmd.Env = append(os.Environ(), "LAB_DETACH_HELPER="+strconv.FormatBool(tt.detach), "LAB_DETACH_DIR="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestDetachHelper") {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			// Pdeathsig is delivered as the helper exits; give the kernel
			// a moment before reading what is left.
			ns := "lbd-" + detachTestName + "-client"
			var pids []string
			for range 20 {
				time.Sleep(100 * time.Millisecond)
				pids = netnsPids(t, ns)
				if len(pids) == 0 {
					break
				}
			}
			if alive := len(pids) > 0; alive != tt.wantAlive {
				t.Errorf("after the starter exited: processes in %s %v, want alive=%v", ns, pids, tt.wantAlive)
			}
		})
	}
}

// TestDetachHelper is TestDetach's child process: it starts a lab, spawns
// a sleeper in the client namespace and returns without Close.
func TestDetachHelper(t *testing.T) {
	v := os.Getenv("LAB_DETACH_HELPER")
	if v == "" {
		t.Skip("runs only as TestDetach's helper process")
	}
	detach, err := strconv.ParseBool(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	l, err := Start(ctx, Options{Name: detachTestName, Pods: 1, Dir: os.Getenv("LAB_DETACH_DIR"), Detach: detach})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := l.Spawn("sleeper", l.ClientNS, "sleep", "120"); err != nil {
		l.Close()
		t.Fatal(err)
	}
}

func netnsPids(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v: %s", ns, err, out)
	}
	return strings.Fields(string(out))
}
