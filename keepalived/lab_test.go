package keepalived

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
)

// The failover lab: lb1, lb2 and a client on one bridge that lives in a
// "switch" namespace; nothing is in the host namespace.
const (
	labVIP    = "10.77.0.100"
	labClient = "10.77.0.10"
)

var labLBs = []struct{ name, addr string }{{"lb1", "10.77.0.1"}, {"lb2", "10.77.0.2"}}

type labLB struct {
	name, ns, addr, dir string
	k                   *Keepalived
	cmd                 *exec.Cmd
}

type probe struct {
	at   time.Time
	from string
}

type failoverLab struct {
	t      *testing.T
	client string
	lbs    []*labLB

	mu     sync.Mutex
	probes []probe
}

func newFailoverLab(t *testing.T) *failoverLab {
	testkit.RequireRoot(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("keepalived not installed")
	}
	sw, client := newNetns(t), newNetns(t)
	l := &failoverLab{t: t, client: client}
	run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", sw, "link", "set", "br0", "up")
	plug := func(ns, port, cidr string) {
		run(t, "ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "-n", sw, "link", "set", port, "master", "br0", "up")
		run(t, "ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	plug(client, "pc", labClient+"/24")
	// the client takes the new master's gratuitous ARP
	inNS(t, client, "sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1")
	for i, lb := range labLBs {
		ns := newNetns(t)
		plug(ns, fmt.Sprintf("p%d", i+1), lb.addr+"/24")
		l.lbs = append(l.lbs, &labLB{name: lb.name, ns: ns, addr: lb.addr, dir: t.TempDir()})
		l.serve(ns, lb.name)
	}
	return l
}

// serve answers HTTP on the VIP in ns with name, whether or not ns holds
// the VIP (IP_FREEBIND), as haproxy does with ip_nonlocal_bind.
func (l *failoverLab) serve(ns, name string) {
	var ln net.Listener
	err := lab.InNS(ns, func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_FREEBIND, 1) })
			if err != nil {
				return err
			}
			return serr
		}}
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", labVIP+":80")
		return err
	})
	if err != nil {
		l.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(ln)
	l.t.Cleanup(func() { srv.Close() })
}

// start renders o for every LB (priority 150 for lb1, 100 for lb2),
// applies it with Keepalived.Apply inside the LB's namespace, and starts
// keepalived there in the foreground with its own pid files and log.
func (l *failoverLab) start(advert time.Duration) {
	for i, lb := range l.lbs {
		peer := l.lbs[1-i].addr
		o := Options{
			Interface: "eth0", Peers: []netip.Addr{netip.MustParseAddr(peer)}, SourceIP: netip.MustParseAddr(lb.addr),
			Priority: 150 - 50*i, AdvertInt: advert, RouterID: 77,
			TrackFile: filepath.Join(lb.dir, "health"), NotifyScript: filepath.Join(lb.dir, "notify.sh"),
			StateFile: filepath.Join(lb.dir, "state"), ConfigPath: filepath.Join(lb.dir, "lbd.conf"),
			PIDFile: filepath.Join(lb.dir, "keepalived.pid"),
		}.WithDefaults()
		if err := o.Validate(); err != nil {
			l.t.Fatal(err)
		}
		lb.k = New(o, testLog(l.t))
		if err := lb.k.WriteHealth(true); err != nil {
			l.t.Fatal(err)
		}
		var applyErr error
		lab.InNS(lb.ns, func() error {
			_, applyErr = lb.k.Apply(context.Background(), []netip.Addr{netip.MustParseAddr(labVIP)})
			return nil
		})
		if applyErr != nil && !errors.Is(applyErr, ErrNotRunning) {
			l.t.Fatal(applyErr)
		}
		main := filepath.Join(lb.dir, "keepalived.conf")
		os.WriteFile(main, fmt.Appendf(nil, "global_defs {\n    router_id %s\n    enable_script_security\n    script_user root\n}\ninclude %s\n", lb.name, o.ConfigPath), 0o644)
		l.startKeepalived(lb)
	}
}

func (l *failoverLab) startKeepalived(lb *labLB) {
	log, err := os.OpenFile(filepath.Join(lb.dir, "keepalived.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		l.t.Fatal(err)
	}
	os.Remove(lb.k.o.StateFile)
	cmd := exec.Command("ip", "netns", "exec", lb.ns, "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
		"--vrrp", "-f", filepath.Join(lb.dir, "keepalived.conf"), "-p", lb.k.o.PIDFile, "-r", filepath.Join(lb.dir, "vrrp.pid"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	lb.cmd = cmd
	l.t.Cleanup(func() { l.stopKeepalived(lb) })
}

// stopKeepalived sends SIGTERM, as systemctl stop does: keepalived
// removes its addresses and sends a priority-0 advert on the way out.
func (l *failoverLab) stopKeepalived(lb *labLB) {
	if lb.cmd == nil {
		return
	}
	lb.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { lb.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		lb.cmd.Process.Kill()
		<-done
	}
	lb.cmd = nil
}

func (l *failoverLab) state(lb *labLB) string { s, _ := lb.k.State(); return s }

// master waits until exactly one LB is MASTER and the client gets its
// answers, and returns it.
func (l *failoverLab) master() (m, other *labLB) {
	testkit.WaitFor(l.t, 15*time.Second, "one master answering", func() bool {
		s0, s1 := l.state(l.lbs[0]), l.state(l.lbs[1])
		switch {
		case s0 == StateMaster && s1 != StateMaster:
			m, other = l.lbs[0], l.lbs[1]
		case s1 == StateMaster && s0 != StateMaster:
			m, other = l.lbs[1], l.lbs[0]
		default:
			return false
		}
		return l.answeredSince(time.Now().Add(-100*time.Millisecond), m.name)
	})
	return m, other
}

func (l *failoverLab) answeredSince(t0 time.Time, name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.probes) - 1; i >= 0 && l.probes[i].at.After(t0); i-- {
		if l.probes[i].from == name {
			return true
		}
	}
	return false
}

// firstAnswer returns when name first answered after t0.
func (l *failoverLab) firstAnswer(t0 time.Time, name string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.probes {
		if p.at.After(t0) && p.from == name {
			return p.at, true
		}
	}
	return time.Time{}, false
}

// probeLoop asks the VIP from the client every 10 ms, each probe with a
// 100 ms timeout, until ctx ends; answers are recorded with their time.
func (l *failoverLab) probeLoop(ctx context.Context) {
	hc := &http.Client{Timeout: 100 * time.Millisecond, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := lab.InNS(l.client, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get("http://" + labVIP + "/")
			if err != nil {
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			at := time.Now()
			l.mu.Lock()
			l.probes = append(l.probes, probe{at, string(b)})
			l.mu.Unlock()
		}()
	}
}

type fault struct {
	name           string
	inject, repair func(l *failoverLab, lb *labLB)
}

var faults = []fault{
	{"SIGTERM keepalived",
		func(l *failoverLab, lb *labLB) { l.stopKeepalived(lb) },
		func(l *failoverLab, lb *labLB) { l.startKeepalived(lb) }},
	{"client link down",
		func(l *failoverLab, lb *labLB) { run(l.t, "ip", "-n", lb.ns, "link", "set", "eth0", "down") },
		func(l *failoverLab, lb *labLB) { run(l.t, "ip", "-n", lb.ns, "link", "set", "eth0", "up") }},
	{"track file unhealthy",
		func(l *failoverLab, lb *labLB) { lb.k.WriteHealth(false) },
		func(l *failoverLab, lb *labLB) { lb.k.WriteHealth(true) }},
}

// TestFailover measures, for each advert interval and fault, the time
// from the fault on the master to the first answer from the other LB, and
// checks that the recovered LB stays BACKUP (no preemption, even for lb1
// with the higher priority) and that an unhealthy track file makes the
// master give the address up.
func TestFailover(t *testing.T) {
	l := newFailoverLab(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	go l.probeLoop(ctx)
	const rounds = 3
	for _, advert := range []time.Duration{time.Second, 100 * time.Millisecond, 50 * time.Millisecond} {
		t.Run(seconds(advert)+"s", func(t *testing.T) {
			l.t = t
			l.start(advert)
			defer func() {
				for _, lb := range l.lbs {
					l.stopKeepalived(lb)
				}
			}()
			for _, f := range faults {
				var took []time.Duration
				for r := 0; r < rounds; r++ {
					m, other := l.master()
					t0 := time.Now()
					f.inject(l, m)
					testkit.WaitFor(t, 10*time.Second, other.name+" answering after "+f.name, func() bool { return l.answeredSince(t0, other.name) })
					at, _ := l.firstAnswer(t0, other.name)
					took = append(took, at.Sub(t0))
					if f.name == "track file unhealthy" {
						testkit.WaitFor(t, 5*time.Second, m.name+" in FAULT", func() bool { return l.state(m) == StateFault })
					}
					f.repair(l, m)
					testkit.WaitFor(t, 10*time.Second, m.name+" back as BACKUP", func() bool { return l.state(m) == StateBackup })
					// no preemption: it stays backup past a master-down interval
					hold := time.Now().Add(4*advert + 300*time.Millisecond)
					for time.Now().Before(hold) {
						if s := l.state(m); s != StateBackup {
							t.Fatalf("%s: recovered %s became %s (preempted)", f.name, m.name, s)
						}
						time.Sleep(20 * time.Millisecond)
					}
					if l.state(other) != StateMaster {
						t.Fatalf("%s: %s is %s, want MASTER after %s recovered", f.name, other.name, l.state(other), m.name)
					}
				}
				slices.Sort(took)
				t.Logf("advert_int %ss, %s: failover p50 %v, max %v (rounds %v)", seconds(advert), f.name,
					took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), roundAll(took))
			}
		})
		if t.Failed() {
			for _, lb := range l.lbs {
				b, _ := os.ReadFile(filepath.Join(lb.dir, "keepalived.log"))
				t.Logf("%s keepalived log (tail):\n%s", lb.name, tail(string(b), 30))
			}
			return
		}
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
