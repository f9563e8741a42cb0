package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/keepalived"
)

// The HA proof with lbd itself: two LB namespaces of a two-LB lab (its own
// cluster, lab "ha2"), each running keepalived (Debian's), conntrackd in
// FTFW mode over sync0 and `lbd run --ha=keepalived`, first with the
// iptables backend, then with haproxy. The client tells which LB answered
// by the TTL of the reply: LB2 takes one more off (a mangle rule of the
// lab's, not lbd's).

const (
	haLabName = "ha2"
	haPool    = "192.168.121.240/28"
	haSNAT    = "10.246.90.100" // floats on flannel0 with the served addresses
	haRouter  = 52
	echoPort  = 9000 // the slow stream's port; the test serves it in the pods
	probePort = 5353 // the pods' UDP echo, used by the failover probes
)

// haLB is one LB of the pair.
type haLB struct {
	name, ns, dir string
	ext, peer     netip.Addr // eth0 addresses: its own, the other LB's
	sync, syncTo  netip.Addr // sync0 addresses: its own, the other LB's
	prio          int
	idx           int        // in haPair.lbs
	ttl           int        // TTL of its forwarded replies at the client
	pod           netip.Addr // its flannel0 address, which haproxy connects from
	k             *keepalived.Keepalived
	lbd, ka, ct   *lab.Process
	hp            haproxyFiles
	passes        string // the output of its one-shot lbd passes, after its daemon log
}

type haPair struct {
	t       *testing.T
	l       *lab.Lab
	bin     string
	lbs     [2]*haLB
	advert  time.Duration
	backend string
	webIP   netip.Addr

	// httpProbes: the probes ask haproxy over HTTP (it serves no UDP)
	// and tell the LB by the address the pod saw (the LB's flannel0).
	httpProbes atomic.Bool
	// faults counts the failovers the test caused; keepalived's logs
	// must show no other takeover.
	faults int

	mu     sync.Mutex
	probes []haProbe
}

// haProbe is one answered probe: when it was sent, when it was answered,
// and through which LB (index in haPair.lbs).
type haProbe struct {
	sent, at time.Time
	lb       int
}

func (p *haPair) other(lb *haLB) *haLB {
	if lb == p.lbs[0] {
		return p.lbs[1]
	}
	return p.lbs[0]
}

// TestHA proves issue 10 on two LBs running lbd: failover times, one
// writer of status, established flows kept with conntrackd (and lost
// without), and failed requests under load per backend.
func TestHA(t *testing.T) {
	lab.RequireRoot(t)
	for _, bin := range []string{"keepalived", "conntrackd", "haproxy", "conntrack"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (make install-deps)", bin)
		}
	}
	start := time.Now()
	bin := filepath.Join(t.TempDir(), "lbd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build lbd: %v\n%s", err, out)
	}
	l := lab.ForTest(t, lab.Options{Name: haLabName, Cluster: true, LBs: 2})
	ctx := t.Context()
	if err := l.StartPods(ctx); err != nil {
		t.Fatal(err)
	}
	p := newHAPair(t, l, bin)
	p.serveEcho()

	// The status watch runs from before the services exist to the end.
	watch, err := l.Spawn("svcwatch", l.MasterNS, append(strings.Fields(l.KubectlRemote), "get", "svc", "-n", "default", "-w",
		"-o", "custom-columns=NAME:.metadata.name,IP:.status.loadBalancer.ingress[*].ip,MODE:.status.loadBalancer.ingress[*].ipMode", "--no-headers")...)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	// The services exist before either LB runs: the pair must elect a
	// master with nothing served yet (the idle address) and the new
	// master must allocate at once (its resync on becoming master).
	applyService(t, l, lab.ServiceSpec{Name: "ha-web", LoadBalancer: true, Ready: l.PodIPs,
		Ports: []lab.ServicePort{{Name: "http", Port: 80}, {Name: "probe", Port: probePort, Protocol: "UDP"}}})
	applyService(t, l, lab.ServiceSpec{Name: "ha-stream", LoadBalancer: true, Ready: l.PodIPs,
		Ports: []lab.ServicePort{{Port: echoPort}}})

	p.advert = time.Second
	p.backend = "iptables"
	for _, lb := range p.lbs {
		p.startConntrackd(lb)
		p.startLBD(lb)
	}
	for _, lb := range p.lbs {
		lab.WaitFor(t, 30*time.Second, lb.name+"'s lbd to write keepalived's include file", func() bool {
			_, err := os.Stat(lb.k.Options().ConfigPath)
			return err == nil
		})
		p.startKeepalived(lb)
	}
	var webIP, streamIP string
	lab.WaitFor(t, 60*time.Second, "the master to allocate both services", func() bool {
		webIP, streamIP = ingressIP(t, l, "ha-web"), ingressIP(t, l, "ha-stream")
		return webIP != "" && streamIP != ""
	})
	p.webIP = netip.MustParseAddr(webIP)
	t.Logf("ha-web %s, ha-stream %s, up %s after the start", webIP, streamIP, time.Since(start).Round(time.Millisecond))

	probeCtx, stopProbes := context.WithCancel(ctx)
	probesDone := make(chan struct{})
	go func() { defer close(probesDone); p.probeLoop(probeCtx) }()
	defer func() { stopProbes(); <-probesDone }()
	p.master()

	rounds := 10
	if v, err := strconv.Atoi(os.Getenv("LBD_HA_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	t.Run("failover 1s", func(t *testing.T) { p.failovers(t, rounds) })
	// The smallest advert interval that held in the lab; LBD_HA_ADVERT
	// tries another.
	small := 100 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("LBD_HA_ADVERT")); err == nil && v > 0 {
		small = v
	}
	t.Run("failover small advert", func(t *testing.T) {
		p.t = t
		p.setAdvert(small)
		p.failovers(t, rounds)
	})

	streamAddr := netip.AddrPortFrom(netip.MustParseAddr(streamIP), echoPort)
	t.Run("conntrackd keeps streams", func(t *testing.T) {
		broken := p.streamsAcrossFailover(t, streamAddr, 6)
		t.Logf("with conntrackd: %d of 6 slow streams broke across a failover", broken)
		if broken != 0 {
			t.Errorf("with conntrackd %d of 6 streams broke, want none", broken)
		}
		for _, lb := range p.lbs {
			lb.ct.Stop()
		}
		broken = p.streamsAcrossFailover(t, streamAddr, 6)
		t.Logf("without conntrackd: %d of 6 slow streams broke across a failover", broken)
		if broken == 0 {
			t.Errorf("without conntrackd no stream broke: the proof shows nothing")
		}
		for _, lb := range p.lbs {
			p.startConntrackd(lb)
		}
	})
	t.Run("load iptables", func(t *testing.T) { p.loadAcrossFailover(t, "iptables") })

	t.Run("load haproxy", func(t *testing.T) {
		p.switchToHAProxy(t)
		p.loadAcrossFailover(t, "haproxy")
	})

	t.Run("no spurious takeover", func(t *testing.T) {
		n := 0
		for _, lb := range p.lbs {
			b, _ := os.ReadFile(filepath.Join(l.Dir, "logs", "keepalived-"+lb.name+".log"))
			n += strings.Count(string(b), "Entering MASTER STATE")
		}
		t.Logf("keepalived took over %d times: the first election and %d failovers the test caused", n, p.faults)
		if n != 1+p.faults {
			t.Errorf("keepalived took over %d times, want %d (1 + the faults): spurious failovers", n, 1+p.faults)
		}
	})
	t.Run("status", func(t *testing.T) {
		time.Sleep(time.Second) // the watch's last lines
		// Two real changes each: the allocation, and the ipMode when the
		// backend went from iptables (VIP) to haproxy (Proxy).
		p.checkStatus(t, watch.LogPath(), map[string][]string{
			"ha-web":    {webIP + " VIP", webIP + " Proxy"},
			"ha-stream": {streamIP + " VIP", streamIP + " Proxy"},
		})
	})
	t.Logf("TestHA took %s", time.Since(start).Round(time.Second))
}

func newHAPair(t *testing.T, l *lab.Lab, bin string) *haPair {
	p := &haPair{t: t, l: l, bin: bin}
	sync := [2]netip.Addr{lab.SyncIPs[0].Addr(), lab.SyncIPs[1].Addr()}
	p.lbs[0] = &haLB{name: "lb1", ns: l.LBNS, ext: lab.LBExternalIP, peer: lab.LB2ExternalIP, sync: sync[0], syncTo: sync[1], prio: 150, idx: 0, ttl: 63, pod: lab.FlannelIP.Addr()}
	p.lbs[1] = &haLB{name: "lb2", ns: l.LB2NS, ext: lab.LB2ExternalIP, peer: lab.LBExternalIP, sync: sync[1], syncTo: sync[0], prio: 100, idx: 1, ttl: 62, pod: lab.LB2FlannelIP.Addr()}
	ctx := t.Context()
	must := func(ns string, args ...string) {
		t.Helper()
		if out, err := l.Run(ctx, ns, args[0], args[1:]...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	// The client and the pods take the new master's gratuitous ARP.
	for _, ns := range append([]string{l.ClientNS}, l.PodNS...) {
		must(ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1")
	}
	must(l.LB2NS, "iptables", "-t", "mangle", "-A", "FORWARD", "-o", "eth0", "-j", "TTL", "--ttl-dec", "1")
	for _, lb := range p.lbs {
		lb.dir = t.TempDir()
		os.Chmod(lb.dir, 0o755) // haproxy's workers read their files here
		must(lb.ns, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")
		o := keepalived.Options{Interface: "eth0", Peers: []netip.Addr{lb.peer}, SourceIP: lb.ext, RouterID: haRouter,
			TrackFile: filepath.Join(lb.dir, "health"), NotifyScript: filepath.Join(lb.dir, "notify.sh"),
			StateFile: filepath.Join(lb.dir, "state"), ConfigPath: filepath.Join(lb.dir, "lbd.conf"),
			PIDFile: filepath.Join(lb.dir, "keepalived.pid"), ConntrackdConfig: filepath.Join(lb.dir, "conntrackd.conf")}
		lb.k = keepalived.New(o, slogDiscard())
		main := fmt.Sprintf("global_defs {\n    router_id %s\n    enable_script_security\n    script_user root\n}\ninclude %s\n", lb.name, o.ConfigPath)
		if err := os.WriteFile(filepath.Join(lb.dir, "keepalived.conf"), []byte(main), 0o644); err != nil {
			t.Fatal(err)
		}
		co := keepalived.ConntrackdOptions{Interface: "sync0", Local: lb.sync, Peer: lb.syncTo,
			SocketPath: filepath.Join(lb.dir, "conntrackd.sock"), LockFile: filepath.Join(lb.dir, "conntrackd.lock"),
			LogFile: filepath.Join(lb.dir, "conntrackd.log")}.WithDefaults()
		if err := co.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := keepalived.WriteConntrackd(o.ConntrackdConfig, co); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, lb := range p.lbs {
				for _, f := range []string{"conntrackd.log"} {
					b, _ := os.ReadFile(filepath.Join(lb.dir, f))
					t.Logf("%s %s (tail):\n%s", lb.name, f, lastLines(string(b), 15))
				}
			}
		}
	})
	return p
}

// serveEcho answers echoPort in every pod namespace: each line comes back.
func (p *haPair) serveEcho() {
	for _, ns := range p.l.PodNS {
		var ln net.Listener
		err := lab.InNS(ns, func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", echoPort))
			return err
		})
		if err != nil {
			p.t.Fatal(err)
		}
		p.t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); io.Copy(c, c) }()
			}
		}()
	}
}

func (p *haPair) lbdArgs(lb *haLB) []string {
	l := p.l
	args := []string{
		"--master", l.Master, "--ssh-key", l.SSHKey, "--known-hosts", l.KnownHosts, "--kubectl", l.KubectlRemote,
		"--db", filepath.Join(lb.dir, "lbd.db"), "--log-file", "", "--ssh-timeout", "3s", "--kubectl-timeout", "20s",
		"--lock-wait", "5s", "--pool", haPool,
		"--ha=keepalived", "--ha-interface=eth0", "--ha-peer=" + lb.peer.String(), "--ha-source=" + lb.ext.String(),
		"--ha-priority=" + strconv.Itoa(lb.prio), "--ha-advert-int=" + p.advert.String(), "--ha-router-id=" + strconv.Itoa(haRouter),
	}
	o := lb.k.Options()
	args = append(args, "--ha-config="+o.ConfigPath, "--ha-track-file="+o.TrackFile, "--ha-notify-script="+o.NotifyScript,
		"--ha-state-file="+o.StateFile, "--ha-pid-file="+o.PIDFile, "--ha-conntrackd-config="+o.ConntrackdConfig)
	if p.backend == "haproxy" {
		return append(args, lb.hp.flags...)
	}
	return append(args, "--backend=iptables", "--snat-addresses="+haSNAT)
}

// startLBD starts `lbd run` on lb with the pair's advert and backend.
func (p *haPair) startLBD(lb *haLB) {
	pr, err := p.l.Spawn("lbd-"+lb.name, lb.ns, append([]string{p.bin}, append(p.lbdArgs(lb), "run", "--debounce=50ms")...)...)
	if err != nil {
		p.t.Fatal(err)
	}
	lb.lbd = pr // the lab's Close stops every process it spawned
}

// startKeepalived starts keepalived on lb in the foreground and waits
// until it reports BACKUP or MASTER.
func (p *haPair) startKeepalived(lb *haLB) {
	o := lb.k.Options()
	os.Remove(o.StateFile)
	os.Remove(o.PIDFile)
	os.Remove(filepath.Join(lb.dir, "vrrp.pid"))
	pr, err := p.l.Spawn("keepalived-"+lb.name, lb.ns, "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"-f", filepath.Join(lb.dir, "keepalived.conf"), "-p", o.PIDFile, "-r", filepath.Join(lb.dir, "vrrp.pid"))
	if err != nil {
		p.t.Fatal(err)
	}
	lb.ka = pr
	lab.WaitFor(p.t, 15*time.Second, lb.name+"'s keepalived to report a state", func() bool {
		s := p.state(lb)
		return s == keepalived.StateBackup || s == keepalived.StateMaster
	})
}

// startConntrackd starts conntrackd on lb and waits for its socket.
func (p *haPair) startConntrackd(lb *haLB) {
	conf := lb.k.Options().ConntrackdConfig
	sock := filepath.Join(lb.dir, "conntrackd.sock")
	os.Remove(sock)
	os.Remove(filepath.Join(lb.dir, "conntrackd.lock"))
	pr, err := p.l.Spawn("conntrackd-"+lb.name, lb.ns, "conntrackd", "-C", conf)
	if err != nil {
		p.t.Fatal(err)
	}
	lb.ct = pr
	lab.WaitFor(p.t, 15*time.Second, lb.name+"'s conntrackd socket", func() bool { _, err := os.Stat(sock); return err == nil })
}

func (p *haPair) state(lb *haLB) string { s, _ := lb.k.State(); return s }

// setAdvert restarts both lbd with another --ha-advert-int; each rewrites
// its include file and reloads keepalived.
func (p *haPair) setAdvert(d time.Duration) {
	p.advert = d
	for _, lb := range p.lbs {
		lb.lbd.Stop()
		p.startLBD(lb)
	}
	want := "advert_int " + strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "\n"
	for _, lb := range p.lbs {
		lab.WaitFor(p.t, 30*time.Second, lb.name+"'s include file with "+strings.TrimSpace(want), func() bool {
			b, _ := os.ReadFile(lb.k.Options().ConfigPath)
			return strings.Contains(string(b), want)
		})
	}
	time.Sleep(500 * time.Millisecond) // keepalived rereads on SIGHUP
	p.master()
}

// probeLoop sends a UDP probe to ha-web from the client every 10 ms, each
// waiting 100 ms for its answer, and records answers with their TTL. The
// probes take turns on 20 sockets, so that they add 20 flows to the
// conntrack tables the LBs sync, not thousands.
func (p *haPair) probeLoop(ctx context.Context) {
	udp := netip.AddrPortFrom(p.webIP, probePort).String()
	http := netip.AddrPortFrom(p.webIP, 80).String()
	var socks [20]*net.UDPConn
	for i := range socks {
		c, err := p.l.Dial(ctx, p.l.ClientNS, "udp", udp)
		if err != nil {
			p.t.Errorf("probe socket: %v", err)
			return
		}
		defer c.Close()
		socks[i] = c.(*net.UDPConn)
		raw, err := socks[i].SyscallConn()
		if err != nil {
			p.t.Errorf("probe socket: %v", err)
			return
		}
		raw.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVTTL, 1) })
		if err != nil {
			p.t.Errorf("probe socket: IP_RECVTTL: %v", err)
			return
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; n < 100_000; n++ { // bounded: 1000 s at most
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sock := socks[n%len(socks)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Now()
			lb, err := -1, error(nil)
			if p.httpProbes.Load() {
				lb, err = p.httpProbe(ctx, http)
			} else {
				lb, err = p.udpProbe(sock)
			}
			if err != nil || lb < 0 {
				return
			}
			p.mu.Lock()
			p.probes = append(p.probes, haProbe{sent: sent, at: time.Now(), lb: lb})
			p.mu.Unlock()
		}()
	}
}

// httpProbe asks addr once over HTTP from the client and returns the LB
// whose flannel0 address the pod saw.
func (p *haPair) httpProbe(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	c, err := p.l.Dial(ctx, p.l.ClientNS, "tcp", addr)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return -1, err
	}
	b, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		return -1, err
	}
	for _, lb := range p.lbs {
		if strings.Contains(string(b), "X-Remote-Addr: "+lb.pod.String()+":") {
			return lb.idx, nil
		}
	}
	return -1, fmt.Errorf("answer without a known X-Remote-Addr: %q", b)
}

// udpProbe asks addr once over UDP from the client and returns the LB
// that forwarded the answer, by its TTL.
// uc is used by one probe at a time (every 200 ms, each waiting 100 ms);
// a late answer to an earlier probe is drained first.
func (p *haPair) udpProbe(uc *net.UDPConn) (int, error) {
	buf, oob := make([]byte, 64), make([]byte, 128)
	uc.SetReadDeadline(time.Now())
	for k := 0; k < 10; k++ {
		if _, _, _, _, err := uc.ReadMsgUDP(buf, oob); err != nil {
			break
		}
	}
	uc.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := uc.Write([]byte("probe\n")); err != nil {
		return 0, err
	}
	_, oobn, _, _, err := uc.ReadMsgUDP(buf, oob)
	if err != nil {
		return 0, err
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_TTL && len(m.Data) >= 4 {
			ttl := int(m.Data[0]) // a native-endian int; TTL < 256
			for _, lb := range p.lbs {
				if lb.ttl == ttl {
					return lb.idx, nil
				}
			}
			return -1, fmt.Errorf("answer with TTL %d", ttl)
		}
	}
	return -1, fmt.Errorf("no TTL in the answer")
}

// answered returns the first answer through lb to a probe sent at or after t0.
func (p *haPair) answered(t0 time.Time, lb *haLB) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.probes {
		if !pr.sent.Before(t0) && pr.lb == lb.idx {
			return pr.at, true
		}
	}
	return time.Time{}, false
}

// master waits until exactly one LB says MASTER and the client's probes
// are answered through it, and returns it.
func (p *haPair) master() *haLB {
	var m *haLB
	lab.WaitFor(p.t, 20*time.Second, "one master answering the probes", func() bool {
		s0, s1 := p.state(p.lbs[0]), p.state(p.lbs[1])
		switch {
		case s0 == keepalived.StateMaster && s1 != keepalived.StateMaster:
			m = p.lbs[0]
		case s1 == keepalived.StateMaster && s0 != keepalived.StateMaster:
			m = p.lbs[1]
		default:
			return false
		}
		_, ok := p.answered(time.Now().Add(-300*time.Millisecond), m)
		return ok
	})
	return m
}

type haFault struct {
	name           string
	inject, repair func(p *haPair, lb *haLB)
}

var haFaults = []haFault{
	{"keepalived SIGKILL",
		func(p *haPair, lb *haLB) { lb.ka.Stop() },
		func(p *haPair, lb *haLB) { p.startKeepalived(lb) }},
	{"client link down",
		func(p *haPair, lb *haLB) { p.link(lb, "down") },
		func(p *haPair, lb *haLB) { p.link(lb, "up") }},
}

func (p *haPair) link(lb *haLB, updown string) {
	if out, err := p.l.Run(context.Background(), lb.ns, "ip", "link", "set", "eth0", updown); err != nil {
		p.t.Fatalf("link %s on %s: %v %s", updown, lb.name, err, out)
	}
}

// failovers runs rounds failovers of each fault on the current master:
// from the fault to the first probe answered through the other LB. The
// faulted LB is repaired and must come back as BACKUP and stay so (no
// preemption, although lb1 has the higher priority), so the rounds
// alternate the masters.
func (p *haPair) failovers(t *testing.T, rounds int) {
	p.t = t
	for _, f := range haFaults {
		var took []time.Duration
		for r := 0; r < rounds; r++ {
			m := p.master()
			b := p.other(m)
			t0 := time.Now()
			f.inject(p, m)
			p.faults++
			lab.WaitFor(t, 15*time.Second, b.name+" answering after "+f.name+" on "+m.name, func() bool { _, ok := p.answered(t0, b); return ok })
			at, _ := p.answered(t0, b)
			took = append(took, at.Sub(t0))
			f.repair(p, m)
			lab.WaitFor(t, 15*time.Second, m.name+" back as BACKUP", func() bool { return p.state(m) == keepalived.StateBackup })
			hold := time.Now().Add(2*p.advert + 300*time.Millisecond)
			for time.Now().Before(hold) {
				if s := p.state(m); s != keepalived.StateBackup {
					t.Fatalf("%s: recovered %s became %s (preempted)", f.name, m.name, s)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if s := p.state(b); s != keepalived.StateMaster {
				t.Fatalf("%s: %s is %s after %s recovered, want MASTER", f.name, b.name, s, m.name)
			}
		}
		sorted := slices.Clone(took)
		slices.Sort(sorted)
		t.Logf("advert %v, %s, %s backend: failover p50 %v, max %v over %d rounds %v", p.advert, f.name, p.backend,
			sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), rounds, roundMs(took))
	}
}

func roundMs(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// streamsAcrossFailover opens n slow streams to addr (a line every 50 ms,
// echoed), takes the master's client link down once they flow, and
// returns how many broke: an error, or no echo for a second after the
// backup took over.
func (p *haPair) streamsAcrossFailover(t *testing.T, addr netip.AddrPort, n int) int {
	p.t = t
	m := p.master()
	b := p.other(m)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	type stream struct {
		last atomic.Int64 // unix nano of the last echo
		err  atomic.Value
	}
	streams := make([]*stream, n)
	var wg sync.WaitGroup
	for i := range streams {
		s := &stream{}
		streams[i] = s
		c, err := p.l.Dial(ctx, p.l.ClientNS, "tcp", addr.String())
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			r := bufio.NewReader(c)
			for k := 0; k < 600 && ctx.Err() == nil; k++ { // bounded: 30 s
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := fmt.Fprintf(c, "line %d\n", k); err != nil {
					s.err.Store(err.Error())
					return
				}
				if _, err := r.ReadString('\n'); err != nil {
					s.err.Store(err.Error())
					return
				}
				s.last.Store(time.Now().UnixNano())
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second)
	port := strconv.Itoa(int(addr.Port()))
	if out, err := p.l.Run(ctx, b.ns, "conntrackd", "-C", b.k.Options().ConntrackdConfig, "-e"); err == nil {
		t.Logf("%s's external cache before the fault: %d entries, %d of them to port %s", b.name, strings.Count(out, "\n"), strings.Count(out, "dport="+port+" "), port)
	}
	t0 := time.Now()
	p.link(m, "down")
	p.faults++
	lab.WaitFor(t, 15*time.Second, b.name+" taking over", func() bool { _, ok := p.answered(t0, b); return ok })
	time.Sleep(3 * time.Second) // retransmissions reach the new master
	out, _ := p.l.Run(ctx, b.ns, "conntrack", "-L", "-p", "tcp", "--dport", port)
	t.Logf("%s's conntrack table after the failover:\n%s", b.name, out)
	check := time.Now()
	broken := 0
	for i, s := range streams {
		if e := s.err.Load(); e != nil {
			t.Logf("stream %d broke: %v", i, e)
			broken++
		} else if last := time.Unix(0, s.last.Load()); check.Sub(last) > time.Second {
			t.Logf("stream %d stalled: last echo %v before the check", i, check.Sub(last).Round(time.Millisecond))
			broken++
		}
	}
	cancel()
	wg.Wait()
	p.link(m, "up")
	lab.WaitFor(t, 15*time.Second, m.name+" back as BACKUP", func() bool { return p.state(m) == keepalived.StateBackup })
	return broken
}

// loadAcrossFailover sends 200 requests/s (each on a new connection) to
// ha-web for 6 s and takes the master's client link down after 2 s. It
// reports the failed requests: those whose connection never opened and
// those that failed after it was established.
func (p *haPair) loadAcrossFailover(t *testing.T, backend string) {
	p.t = t
	m := p.master()
	b := p.other(m)
	addr := netip.AddrPortFrom(p.webIP, 80).String()
	var ok, connFail, estFail atomic.Int64
	var firstEst atomic.Value
	const workers, every, total = 4, 20 * time.Millisecond, 6 * time.Second // 200/s
	stop := time.Now().Add(total)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			var inner sync.WaitGroup
			defer inner.Wait()
			for n := 0; n < 1000 && time.Now().Before(stop); n++ {
				<-tick.C
				inner.Add(1)
				go func() {
					defer inner.Done()
					switch why := p.oneRequest(addr); {
					case why == "":
						ok.Add(1)
					case strings.HasPrefix(why, "connect"):
						connFail.Add(1)
					default:
						estFail.Add(1)
						firstEst.CompareAndSwap(nil, why)
					}
				}()
			}
		}()
	}
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	p.link(m, "down")
	p.faults++
	wg.Wait()
	at, took := p.answered(t0, b)
	p.link(m, "up")
	lab.WaitFor(t, 15*time.Second, m.name+" back as BACKUP", func() bool { return p.state(m) == keepalived.StateBackup })
	all := ok.Load() + connFail.Load() + estFail.Load()
	t.Logf("%s backend, 200 requests/s for %v across a client-link failover (%s took over after %v, %v): %d requests, %d ok, %d failed to connect, %d failed once established (first: %v)",
		backend, total, b.name, at.Sub(t0).Round(time.Millisecond), took, all, ok.Load(), connFail.Load(), estFail.Load(), firstEst.Load())
	if backend == "iptables" && estFail.Load() != 0 {
		t.Errorf("iptables: %d established requests failed, want none", estFail.Load())
	}
}

// oneRequest makes one HTTP/1.0 request on a new connection; "" when a
// pod answered, else "connect: ..." or "established: ...".
func (p *haPair) oneRequest(addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := p.l.Dial(ctx, p.l.ClientNS, "tcp", addr)
	if err != nil {
		return "connect: " + shortErr(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return "established: " + shortErr(err)
	}
	b, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		return "established: " + shortErr(err)
	}
	if !strings.Contains(string(b), "pod") {
		return fmt.Sprintf("established: answer %q", lastLines(string(b), 1))
	}
	return ""
}

// switchToHAProxy moves both LBs to the haproxy backend: lbd stops, its
// iptables rules go (cleanup), one sync pass writes haproxy's files,
// haproxy starts, and lbd runs again. keepalived and the addresses stay.
func (p *haPair) switchToHAProxy(t *testing.T) {
	p.t = t
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, lb := range p.lbs {
		lb.lbd.Stop()
		if out, err := p.l.Run(ctx, lb.ns, p.bin, append(p.lbdArgs(lb), "cleanup")...); err != nil {
			t.Fatalf("%s: lbd cleanup: %v\n%s", lb.name, err, out)
		}
	}
	p.backend = "haproxy"
	p.httpProbes.Store(true)
	for _, lb := range p.lbs {
		lb.hp = newHAProxyFiles(t)
		out, err := p.l.Run(ctx, lb.ns, p.bin, p.lbdArgs(lb)...)
		if err != nil {
			t.Fatalf("%s: lbd sync: %v\n%s", lb.name, err, out)
		}
		lb.passes += out
		pr, err := p.l.Spawn("haproxy-"+lb.name, lb.ns, "haproxy", "-W", "-S", lb.hp.master+",mode,600", "-f", lb.hp.base, "-f", lb.hp.services)
		if err != nil {
			t.Fatal(err)
		}
		_ = pr
		p.startLBD(lb)
	}
	m := p.master()
	lab.WaitFor(t, 20*time.Second, "haproxy on "+m.name+" to answer", func() bool { return p.oneRequest(netip.AddrPortFrom(p.webIP, 80).String()) == "" })
}

var watchLine = regexp.MustCompile(`^(\S+)\s+(\S+)\s+(\S+)$`)

// checkStatus reads the status watch's lines: each service's ingress must
// have changed once (from none to its address) and never to another
// address. The writes in the LBs' logs must add up to that, each by an
// LB that had become master before it.
func (p *haPair) checkStatus(t *testing.T, watchLog string, want map[string][]string) {
	b, err := os.ReadFile(watchLog)
	if err != nil {
		t.Fatal(err)
	}
	changes := map[string][]string{}
	last := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		mm := watchLine.FindStringSubmatch(strings.TrimSpace(line))
		if mm == nil {
			continue
		}
		name, ip := mm[1], mm[2]+" "+mm[3]
		if _, ok := want[name]; !ok {
			continue
		}
		if prev, seen := last[name]; !seen || prev != ip {
			if seen || ip != "<none> <none>" {
				changes[name] = append(changes[name], ip)
			}
			last[name] = ip
		}
	}
	n := 0
	for name, w := range want {
		n += len(w)
		if !slices.Equal(changes[name], w) {
			t.Errorf("%s: ingress changes %v, want exactly %v", name, changes[name], w)
		}
	}
	written := 0
	for _, lb := range p.lbs {
		b, _ := os.ReadFile(lb.lbd.LogPath())
		became := false
		for _, line := range strings.Split(string(b)+lb.passes, "\n") {
			if strings.Contains(line, "became the VRRP master") {
				became = true
			}
			if strings.Contains(line, "service status written") {
				n := 0
				if i := strings.Index(line, "services="); i >= 0 {
					fmt.Sscanf(line[i:], "services=%d", &n)
				}
				written += n
				if !became {
					t.Errorf("%s wrote status before it ever became master: %s", lb.name, line)
				}
			}
		}
	}
	t.Logf("status: ingress changes %v; %d service statuses written in all by the LBs' lbd", changes, written)
	if written != n {
		t.Errorf("the LBs wrote %d service statuses, want %d (one per real change)", written, n)
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
