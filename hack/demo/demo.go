package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/haproxy"
)

// The demo's lab and service, as the design notes have them: the nginx
// service with cluster IP 10.247.78.179, exposed on 192.168.121.201:80.
const (
	labName    = "demo"
	svcName    = "nginx"
	lbSvcName  = "nginx-lb"
	svcNS      = "default"
	clusterIP  = "10.247.78.179"
	svcPort    = 80
	markerFile = ".lbd-demo" // marks a state directory that down may remove
)

// demo is one run of `demo up`.
type demo struct {
	c     config
	out   io.Writer
	start time.Time
	root  string // the lbd module's root

	l       *lab.Lab
	bin     string // the lbd binary
	lbd     string // wrapper script: lbd wired to the lab
	kubectl string // wrapper script: kubectl on the lab's master
	db      string
	hap     hapFiles
	client  *http.Client // from the client namespace, a connection per request
	gone    int          // index of the pod the demo removes from the endpoints
}

// hapFiles are the haproxy paths the demo gives haproxy and lbd.
type hapFiles struct {
	base, services, master, stats, log string
}

func newDemo(c config, out io.Writer) (*demo, error) {
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	c.dir = dir
	hd := filepath.Join(dir, "haproxy")
	return &demo{
		c:       c,
		out:     out,
		start:   time.Now(),
		bin:     filepath.Join(dir, "bin", "lbd"),
		lbd:     filepath.Join(dir, "lbd"),
		kubectl: filepath.Join(dir, "kubectl"),
		db:      filepath.Join(dir, "LoadBalancer.sqlite.db"),
		hap: hapFiles{
			base:     filepath.Join(hd, "haproxy-global-default.cfg"),
			services: filepath.Join(hd, "services.d"),
			master:   filepath.Join(hd, "master.sock"),
			stats:    filepath.Join(hd, "admin.sock"),
		},
		gone: 2,
	}, nil
}

// up runs the whole demo and leaves the lab running. When a step fails,
// the lab is removed again and the logs are kept in the state directory.
func up(ctx context.Context, c config, out io.Writer) (err error) {
	d, err := newDemo(c, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "lbd demo: a Kubernetes master, a load balancer, a client and three pods, each in its own network namespace (lbd-demo-*); all traffic stays inside them.\n")
	if err := d.prepare(ctx); err != nil {
		return err
	}
	if err := d.startLab(ctx); err != nil {
		return err
	}
	defer func() {
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
			fmt.Fprintf(out, "\nINTERRUPTED; removing the lab\n")
		} else {
			fmt.Fprintf(out, "\nFAILED: %v\n\nlab process logs:\n%s", err, d.l.LogTails(8))
		}
		if cerr := d.l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		fmt.Fprintf(out, "The lab is removed; logs are kept in %s and %s.\n", filepath.Join(d.l.Dir, "logs"), filepath.Join(d.c.dir, "loadbalancer.log"))
	}()
	if err := d.createService(ctx); err != nil {
		return err
	}
	if err := d.iptablesRound(ctx); err != nil {
		return err
	}
	if err := d.switchToHaproxy(ctx); err != nil {
		return err
	}
	if err := d.haproxyRound(ctx); err != nil {
		return err
	}
	d.explore()
	return nil
}

// step prints a step's heading with the time since the start and returns
// a function that prints how long the step took.
func (d *demo) step(format string, a ...any) func() {
	fmt.Fprintf(d.out, "\n[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, a...))
	t := time.Now()
	return func() { fmt.Fprintf(d.out, "    (%.1fs)\n", time.Since(t).Seconds()) }
}

// say prints detail lines of a step, indented.
func (d *demo) say(format string, a ...any) {
	s := strings.TrimRight(fmt.Sprintf(format, a...), "\n")
	for _, line := range strings.Split(s, "\n") {
		fmt.Fprintf(d.out, "    %s\n", line)
	}
}

// prepare installs what is missing, removes an earlier demo and builds
// lbd.
func (d *demo) prepare(ctx context.Context) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	d.root = root
	if d.c.installDeps {
		done := d.step("install what is missing: hack/install-deps.sh")
		cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "install-deps.sh"))
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = indent(d.out), indent(d.out)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hack/install-deps.sh: %w", err)
		}
		done()
	}

	done := d.step("remove an earlier demo, if any")
	removed, err := removeDemo(d.c.dir)
	if err != nil {
		return err
	}
	if len(removed) == 0 {
		d.say("nothing to remove")
	}
	for _, r := range removed {
		d.say("removed %s", r)
	}
	if err := os.Mkdir(d.c.dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.c.dir, markerFile), []byte("state of `make demo`; `make demo-down` removes this directory\n"), 0o644); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	done()

	if d.c.lbd != "" {
		abs, err := filepath.Abs(d.c.lbd)
		if err != nil {
			return fmt.Errorf("-lbd: %w", err)
		}
		d.bin = abs
		return nil
	}
	done = d.step("build lbd: go build -o %s ./cmd/lbd", d.bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", d.bin, "./cmd/lbd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build lbd: %w\n%s", err, out)
	}
	done()
	return nil
}

// startLab starts the lab, detached so that it outlives this process, and
// its pod servers.
func (d *demo) startLab(ctx context.Context) error {
	done := d.step("start the lab: namespaces, etcd + kube-apiserver + sshd on the master, pod servers")
	if _, err := os.Stat(filepath.Join(d.root, "hack", ".bin", "k8s-"+lab.K8sVersion, "kube-apiserver")); err != nil {
		d.say("first run: building kube-apiserver and kubectl %s (hack/k8s/build.sh, a few minutes, cached after)", lab.K8sVersion)
	}
	l, err := lab.Start(ctx, lab.Options{Name: labName, Cluster: true, Dir: filepath.Join(d.c.dir, "lab"), Detach: true})
	if err != nil {
		return err
	}
	d.l = l
	if err := l.StartPods(ctx); err != nil {
		return errors.Join(err, l.Close())
	}
	hc := l.HTTPClient(l.ClientNS)
	hc.Timeout = 5 * time.Second
	hc.Transport.(*http.Transport).DisableKeepAlives = true // every request may pick another pod
	d.client = hc
	d.say("master  %-16s %s: etcd, kube-apiserver, sshd", l.MasterNS, l.MasterIP)
	d.say("lb      %-16s ens9 %s, eth0 %s, flannel0 %s", l.LBNS, l.LBInfraIP, l.LBExternalIP, lab.FlannelIP)
	d.say("client  %-16s %s", l.ClientNS, l.ClientIP)
	for i, ns := range l.PodNS {
		d.say("%-7s %-16s %s: answers HTTP on :80 with its name", l.PodNames[i], ns, l.PodIPs[i])
	}
	if err := d.writeWrappers(); err != nil {
		return errors.Join(err, l.Close())
	}
	done()
	return nil
}

// createService applies the notes' nginx service with all three pods.
func (d *demo) createService(ctx context.Context) error {
	done := d.step("create the notes' nginx service (no controller-manager runs in the lab, so the manifest lists the endpoints too)")
	for _, f := range []struct {
		name  string
		ready []netip.Addr
	}{
		{"nginx.yaml", d.l.PodIPs},
		{"nginx-without-" + d.l.PodNames[d.gone] + ".yaml", without(d.l.PodIPs, d.gone)},
	} {
		if err := os.WriteFile(filepath.Join(d.c.dir, f.name), []byte(manifest(f.ready)), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(d.c.dir, "nginx-lb.yaml"), []byte(lbManifest(d.l.PodIPs)), 0o644); err != nil {
		return err
	}
	if err := d.kubectlApply(ctx, "nginx.yaml"); err != nil {
		return err
	}
	if err := d.kubectlApply(ctx, "nginx-lb.yaml"); err != nil {
		return err
	}
	if err := d.show(ctx, d.kubectl, "get", "services"); err != nil {
		return err
	}
	done()
	return nil
}

// iptablesRound syncs with the iptables backend and shows the traffic.
func (d *demo) iptablesRound(ctx context.Context) error {
	done := d.step("lbd --backend=iptables: one sync pass (DNAT + masquerade in %s)", d.l.LBNS)
	if err := d.show(ctx, d.lbd, "--backend=iptables"); err != nil {
		return err
	}
	n, err := d.lbdRules(ctx)
	if err != nil {
		return err
	}
	d.say("%d rules in lbd's LBD-* chains of the nat table", n)
	done()
	if err := d.loadBalancer(ctx); err != nil {
		return err
	}
	return d.round(ctx, "iptables", "--backend=iptables")
}

// loadBalancer shows the LoadBalancer service's EXTERNAL-IP, given by lbd
// from the pool, on the LB's eth0, and answering.
func (d *demo) loadBalancer(ctx context.Context) error {
	done := d.step("the LoadBalancer service %s got an address from --pool %s", lbSvcName, demoPool)
	if err := d.show(ctx, d.kubectl, "get", "services"); err != nil {
		return err
	}
	out, err := d.l.Kubectl(ctx, "", "get", "service", lbSvcName, "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(out))
	if err != nil {
		return fmt.Errorf("%s has no EXTERNAL-IP: %q", lbSvcName, out)
	}
	if err := d.show(ctx, "ip", "-n", d.l.LBNS, "-br", "addr", "show", "dev", "eth0"); err != nil {
		return err
	}
	body, err := d.get(ctx, "http://"+ip.String()+"/")
	if err != nil {
		return fmt.Errorf("request to %s: %w", ip, err)
	}
	d.say("$ curl http://%s/  ->  %s", ip, strings.TrimSpace(body))
	done()
	return nil
}

// switchToHaproxy restores the endpoint, removes lbd's iptables rules
// (they would catch the traffic before haproxy) and starts haproxy in
// master-worker mode in the LB namespace.
func (d *demo) switchToHaproxy(ctx context.Context) error {
	done := d.step("switch to haproxy: put %s back, remove lbd's iptables rules, start haproxy", d.l.PodNames[d.gone])
	if err := d.kubectlApply(ctx, "nginx.yaml"); err != nil {
		return err
	}
	if err := d.show(ctx, d.lbd, "--backend=iptables", "cleanup"); err != nil {
		return err
	}
	n, err := d.lbdRules(ctx)
	if err != nil {
		return err
	}
	if n != 0 {
		return fmt.Errorf("after lbd cleanup: %d LBD rules left in %s", n, d.l.LBNS)
	}
	d.say("0 rules left in LBD-* chains")

	o := haproxy.Options{StatsSocket: d.hap.stats}
	if _, err := user.Lookup(haproxy.DefaultUser); err != nil {
		o.User, o.Group = "-", "-"
	}
	if err := os.MkdirAll(d.hap.services, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(d.hap.base, haproxy.RenderBase(o), 0o644); err != nil {
		return err
	}
	p, err := d.l.Spawn("haproxy", d.l.LBNS, "haproxy", "-W", "-S", d.hap.master+",mode,600", "-f", d.hap.base, "-f", d.hap.services)
	if err != nil {
		return err
	}
	d.hap.log = p.LogPath()
	d.say("$ ip netns exec %s haproxy -W -S %s,mode,600 -f %s -f %s", d.l.LBNS, d.hap.master, d.hap.base, d.hap.services)
	if err := d.waitWorkers(ctx, p, func(n int) bool { return n >= 1 }); err != nil {
		return fmt.Errorf("haproxy did not start: %w\n%s", err, p.Tail(20))
	}
	d.say("haproxy is up (master-worker, master CLI %s)", d.hap.master)
	done()
	return nil
}

// haproxyRound syncs with the haproxy backend and shows the traffic.
func (d *demo) haproxyRound(ctx context.Context) error {
	done := d.step("lbd --backend=haproxy: one sync pass (writes %s, checks with haproxy -c, reloads)", filepath.Join(d.hap.services, haproxy.FileName(svcNS, svcName)))
	if err := d.show(ctx, d.lbd, "--backend=haproxy"); err != nil {
		return err
	}
	if err := d.settleHaproxy(ctx); err != nil {
		return err
	}
	done()
	return d.round(ctx, "haproxy", "--backend=haproxy")
}

// round is what the demo shows after a backend's first sync: traffic,
// status, the notes' table, then an endpoint removed and traffic avoiding
// it.
func (d *demo) round(ctx context.Context, backend, flag string) error {
	done := d.step("[%s] %d requests from %s to %s", backend, d.c.requests, d.l.ClientNS, d.url())
	if err := d.traffic(ctx, -1); err != nil {
		return err
	}
	done()

	done = d.step("[%s] what lbd stored", backend)
	if err := d.show(ctx, d.lbd, "status"); err != nil {
		return err
	}
	if err := d.show(ctx, "sqlite3", "-header", d.db, "select * from ServiceToEndPointsMapping;"); err != nil {
		return err
	}
	done()

	gone := d.l.PodNames[d.gone]
	done = d.step("[%s] remove %s (%s) from nginx's endpoints, sync", backend, gone, d.l.PodIPs[d.gone])
	if err := d.kubectlApply(ctx, "nginx-without-"+gone+".yaml"); err != nil {
		return err
	}
	if err := d.show(ctx, d.lbd, flag); err != nil {
		return err
	}
	if backend == "haproxy" {
		if err := d.settleHaproxy(ctx); err != nil {
			return err
		}
	}
	done()

	done = d.step("[%s] %d requests again: none may reach %s", backend, d.c.requests, gone)
	if err := d.traffic(ctx, d.gone); err != nil {
		return err
	}
	done()
	return nil
}

// traffic sends the requests, each on a new connection, and prints which
// pod answered how often. It fails when a request fails or when pod avoid
// (unless -1) answered.
func (d *demo) traffic(ctx context.Context, avoid int) error {
	url := d.url()
	counts := map[string]int{}
	var errs []error
	for range d.c.requests {
		body, err := d.get(ctx, url)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		counts[body]++
	}
	avoided := 0
	for i, name := range d.l.PodNames {
		n := counts[name]
		delete(counts, name)
		note := ""
		if i == avoid {
			note, avoided = "  (removed)", n
		}
		d.say("%-5s %-12s %-*s %2d%s", name, d.l.PodIPs[i], min(d.c.requests, 60), strings.Repeat("#", min(n, 60)), n, note)
	}
	if len(errs) > 0 {
		d.say("%d of %d requests failed", len(errs), d.c.requests)
	}
	for body, n := range counts {
		d.say("%d answers from an unknown pod: %q", n, body)
		errs = append(errs, fmt.Errorf("%d answers from an unknown pod: %q", n, body))
	}
	if len(errs) > 0 {
		return fmt.Errorf("requests to %s: %w", url, errors.Join(errs[:min(len(errs), 3)]...))
	}
	if avoided > 0 {
		return fmt.Errorf("removed endpoint %s answered %d requests", d.l.PodNames[avoid], avoided)
	}
	return nil
}

// url is the service's address as the client uses it (svcPort is 80).
func (d *demo) url() string { return "http://" + d.l.LBExternalIP.String() + "/" }

// get fetches url from the client namespace and returns the body, which
// names the pod that answered.
func (d *demo) get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// show prints a command line, runs it (wrapper scripts and sqlite3 on the
// host; they enter the namespaces themselves) and prints its output.
func (d *demo) show(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d.say("$ %s", shellLine(append([]string{name}, args...)))
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if s := strings.TrimRight(string(out), "\n"); s != "" {
		d.say("%s", s)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", shellLine(append([]string{name}, args...)), err)
	}
	return nil
}

// kubectlApply applies a manifest of the state directory.
func (d *demo) kubectlApply(ctx context.Context, file string) error {
	return d.show(ctx, d.kubectl, "apply", "-f", filepath.Join(d.c.dir, file))
}

// lbdRules counts the rules lbd owns in the LB namespace's nat table.
func (d *demo) lbdRules(ctx context.Context) (int, error) {
	out, err := d.l.Run(ctx, d.l.LBNS, "iptables-save", "-t", "nat")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "-A ") && strings.Contains(line, "LBD-") {
			n++
		}
	}
	return n, nil
}

// demoPool is the demo's address pool: the notes' external address and a
// block for LoadBalancer services.
const demoPool = "192.168.121.200-192.168.121.239,192.168.121.240/28"

// writeWrappers writes the scripts that run lbd and kubectl against the
// lab, for the demo itself and for the user exploring afterwards.
func (d *demo) writeWrappers() error {
	lbdArgs := []string{"ip", "netns", "exec", d.l.LBNS, d.bin,
		"--master", d.l.Master, "--ssh-key", d.l.SSHKey, "--known-hosts", d.l.KnownHosts,
		"--kubectl", d.l.KubectlRemote,
		"--db", d.db, "--log-file", filepath.Join(d.c.dir, "loadbalancer.log"),
		"--haproxy-base", d.hap.base, "--haproxy-dir", d.hap.services,
		"--haproxy-master-socket", d.hap.master, "--haproxy-stats-socket", d.hap.stats,
		"--pool", demoPool, "--vip-interface", "eth0",
	}
	lbd := "#!/bin/sh\n" +
		"# lbd wired to the demo lab (written by `make demo`): it runs in the load\n" +
		"# balancer's namespace with the lab's master, SSH key and known_hosts and\n" +
		"# the demo's database, log and haproxy files. Add a subcommand and flags:\n" +
		"#   lbd status | lbd plan | lbd check | lbd --backend=iptables | lbd --help\n" +
		"exec " + shellLine(lbdArgs[:5]) + " \\\n" + flagLines(lbdArgs[5:]) + `  "$@"` + "\n"
	kubectl := "#!/bin/sh\n" +
		"# kubectl for the demo lab's kube-apiserver (written by `make demo`).\n" +
		"exec ip netns exec " + d.l.MasterNS + " " + d.l.KubectlRemote + ` "$@"` + "\n"
	for path, text := range map[string]string{d.lbd: lbd, d.kubectl: kubectl} {
		if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// explore prints where to go from here.
func (d *demo) explore() {
	url := d.url()
	fmt.Fprintf(d.out, "\n[%5.1fs] demo done; the lab stays up for exploring (as root):\n\n", time.Since(d.start).Seconds())
	lines := [][2]string{
		{"ip netns exec " + d.l.ClientNS + " curl -s " + url, "a request through haproxy, from the client"},
		{d.lbd + " status", "lbd wired to the lab (see the script); also: plan, check, --help"},
		{d.kubectl + " get services,endpointslices", "the lab's Kubernetes"},
		{d.kubectl + " apply -f " + filepath.Join(d.c.dir, "nginx.yaml") + " && " + d.lbd, d.l.PodNames[d.gone] + " back, then sync"},
		{"sqlite3 -header " + d.db + " 'select * from ServiceToEndPointsMapping'", "the notes' table"},
		{"cat " + filepath.Join(d.hap.services, haproxy.FileName(svcNS, svcName)), "the haproxy file lbd wrote"},
		{"echo 'show proc' | socat - " + d.hap.master, "haproxy's master CLI"},
		{"ip netns exec " + d.l.LBNS + " iptables-save -t nat", "empty of LBD- chains now; try " + d.lbd + " --backend=iptables plan"},
		{"ip netns exec " + d.l.LBNS + " bash", "a shell on the load balancer (ip addr: ens9, eth0, flannel0)"},
		{"less " + filepath.Join(d.c.dir, "loadbalancer.log"), "lbd's log; the lab's daemons log to " + filepath.Join(d.l.Dir, "logs")},
	}
	for _, l := range lines {
		fmt.Fprintf(d.out, "  %s\n      # %s\n", l[0], l[1])
	}
	fmt.Fprintf(d.out, "\nWhen done: make demo-down   (or: go run ./hack/demo down)\n")
}
