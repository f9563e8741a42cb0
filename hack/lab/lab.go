package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// The lab's fixed addresses, as the design notes draw the networks.
var (
	// MasterIP is the master's address on the infrastructure network.
	MasterIP = netip.MustParseAddr("10.245.1.10")
	// LBInfraIP is the load balancer's address on the infrastructure network (ens9).
	LBInfraIP = netip.MustParseAddr("10.245.1.142")
	// LBExternalIP is the load balancer's first address on the external network (eth0).
	LBExternalIP = netip.MustParseAddr("192.168.121.201")
	// ClientIP is the client's address on the external network.
	ClientIP = netip.MustParseAddr("192.168.121.10")
	// FlannelIP is the load balancer's address on its flannel0 bridge; with
	// the /16 prefix it yields the kernel route 10.246.0.0/16 dev flannel0.
	FlannelIP = netip.MustParsePrefix("10.246.90.0/16")
	// PodNetwork is the pod network; pods route nothing outside it.
	PodNetwork = netip.MustParsePrefix("10.246.0.0/16")

	// The second load balancer of a two-LB lab (Options.LBs = 2).

	// LB2InfraIP is the second LB's address on the infrastructure network.
	LB2InfraIP = netip.MustParseAddr("10.245.1.143")
	// LB2ExternalIP is the second LB's address on the external network.
	LB2ExternalIP = netip.MustParseAddr("192.168.121.202")
	// LB2FlannelIP is the second LB's address on its flannel0 link.
	LB2FlannelIP = netip.MustParsePrefix("10.246.90.1/16")
	// SyncIPs are the two LBs' addresses on their sync0 link, a direct
	// link between them that carries nothing else (for conntrackd).
	SyncIPs = [2]netip.Prefix{netip.MustParsePrefix("10.255.0.1/24"), netip.MustParsePrefix("10.255.0.2/24")}
)

// Options says which lab to build.
type Options struct {
	// Name is short, [a-z0-9], at most 16 characters; it names the
	// namespaces "lbd-<Name>-...". Labs with different names never touch
	// each other.
	Name string
	// Pods is the number of pod namespaces; 0 means 3.
	Pods int
	// LBs is the number of load balancers: 0 or 1 is the notes' one LB,
	// with point-to-point links and the flannel0 bridge inside it. 2 adds
	// LB2NS for an HA pair: then every network is a bridge in a namespace
	// of the lab's own (SwitchNS), both LBs have a leg on each (ens9,
	// eth0 and a flannel0 veth), and sync0 links the two LBs directly.
	LBs int
	// Cluster starts etcd, kube-apiserver and sshd in the master namespace.
	Cluster bool
	// RBAC runs the cluster's kube-apiserver with
	// --authorization-mode=Node,RBAC instead of AlwaysAllow, so that a
	// ServiceAccount's kubeconfig gets only what its roles grant. The
	// lab's admin token stays in system:masters and may do anything.
	RBAC bool
	// Dir is the working directory for keys, configs, pid files and logs.
	// Empty means a new temporary directory, removed by Close unless
	// KeepDir is set.
	Dir string
	// KeepDir keeps a temporary Dir after Close, for reading logs.
	KeepDir bool
	// Detach lets the lab's processes outlive the process that started
	// them: without it they get SIGKILL when it dies (Pdeathsig), which is
	// what tests want. A detached lab is removed by Close or, from another
	// process, by Sweep(Name). `make demo` uses it to leave a lab up for
	// exploring.
	Detach bool
}

// Lab is a running lab. Its fields are read-only after Start.
type Lab struct {
	// Name is Options.Name.
	Name string
	// Dir holds keys, configs, pid files (run/) and process logs (logs/).
	Dir string

	// MasterNS, LBNS and ClientNS are the namespace names.
	MasterNS, LBNS, ClientNS string
	// LB2NS is the second load balancer's namespace and SwitchNS the one
	// holding the bridges; both are empty unless Options.LBs is 2.
	LB2NS, SwitchNS string
	// PodNS are the pod namespace names, in the order of PodIPs.
	PodNS []string

	// MasterIP, LBInfraIP, LBExternalIP and ClientIP copy the package's
	// address variables for convenience.
	MasterIP, LBInfraIP, LBExternalIP, ClientIP netip.Addr
	// PodIPs are the pods' addresses: 10.246.82.2, 10.246.82.6,
	// 10.246.92.8, then 10.246.92.9 and up.
	PodIPs []netip.Addr
	// PodNames are "pod0", "pod1", ...: what each pod server answers.
	PodNames []string

	// SSHKey is the path of the client private key that root on the
	// master accepts (cluster labs only).
	SSHKey string
	// KnownHosts is the path of a known_hosts file holding the master's
	// host key for 10.245.1.10 (cluster labs only).
	KnownHosts string
	// Master is "root@10.245.1.10:22" (cluster labs only).
	Master string
	// KubectlRemote is the command line to give lbd's --kubectl flag: an
	// absolute kubectl path and its --kubeconfig, valid on the master
	// (cluster labs only).
	KubectlRemote string
	// Kubeconfig is the path of an admin kubeconfig for the lab's
	// apiserver (cluster labs only).
	Kubeconfig string

	kubectl   string // absolute path of the kubectl binary
	removeDir bool   // Dir was made by Start and goes with Close
	detach    bool   // Options.Detach: no Pdeathsig on the lab's processes
	rbac      bool   // Options.RBAC: the apiserver authorizes with RBAC

	mu     sync.Mutex
	procs  map[string]*proc
	closed bool
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// Start sweeps leftovers of an earlier lab with the same name, then builds
// the networks and, with o.Cluster, starts the master's daemons and waits
// until kubectl works. ctx bounds only the start: the lab's processes live
// until Close. On error everything already made is removed again.
func Start(ctx context.Context, o Options) (*Lab, error) {
	if !nameRE.MatchString(o.Name) {
		return nil, fmt.Errorf("lab name %q: want 1-16 of [a-z0-9]", o.Name)
	}
	if o.Pods == 0 {
		o.Pods = 3
	}
	if o.Pods < 0 || o.Pods > 200 {
		return nil, fmt.Errorf("lab %s: %d pods: want 1..200", o.Name, o.Pods)
	}
	if o.LBs < 0 || o.LBs > 2 {
		return nil, fmt.Errorf("lab %s: %d LBs: want 1 or 2", o.Name, o.LBs)
	}
	if err := Sweep(o.Name); err != nil {
		return nil, fmt.Errorf("lab %s: sweep leftovers: %w", o.Name, err)
	}
	l := newLab(o)
	if l.Dir == "" {
		d, err := os.MkdirTemp("", "lbd-lab-"+o.Name+"-")
		if err != nil {
			return nil, fmt.Errorf("lab %s: %w", o.Name, err)
		}
		l.Dir, l.removeDir = d, !o.KeepDir
	}
	abs, err := filepath.Abs(l.Dir)
	if err != nil {
		return nil, fmt.Errorf("lab %s: dir: %w", o.Name, err)
	}
	l.Dir = abs
	for _, sub := range []string{"logs", "run"} {
		if err := os.MkdirAll(filepath.Join(l.Dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("lab %s: %w", o.Name, err)
		}
	}
	if err := l.start(ctx, o); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

func (l *Lab) start(ctx context.Context, o Options) error {
	for _, c := range networkPlan(l) {
		if _, err := runCmd(ctx, exec.CommandContext(ctx, "ip", c...)); err != nil {
			return fmt.Errorf("lab %s: network: %w", l.Name, err)
		}
	}
	// A new namespace copies ip_forward from the host; the lab starts
	// every namespace with forwarding off so that turning it on stays the
	// load balancer backends' job, visible to their tests.
	for _, ns := range l.namespaces() {
		if _, err := l.Run(ctx, ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"); err != nil {
			return fmt.Errorf("lab %s: %w", l.Name, err)
		}
	}
	if o.Cluster {
		if err := l.startCluster(ctx); err != nil {
			return fmt.Errorf("lab %s: cluster: %w", l.Name, err)
		}
	}
	return nil
}

// newLab fills in names and addresses; it touches nothing.
func newLab(o Options) *Lab {
	p := "lbd-" + o.Name + "-"
	l := &Lab{
		Name:         o.Name,
		Dir:          o.Dir,
		MasterNS:     p + "master",
		LBNS:         p + "lb",
		ClientNS:     p + "client",
		MasterIP:     MasterIP,
		LBInfraIP:    LBInfraIP,
		LBExternalIP: LBExternalIP,
		ClientIP:     ClientIP,
		detach:       o.Detach,
		rbac:         o.RBAC,
		procs:        map[string]*proc{},
	}
	if o.LBs == 2 {
		l.LB2NS, l.SwitchNS = p+"lb2", p+"sw"
	}
	for i := range o.Pods {
		l.PodNS = append(l.PodNS, fmt.Sprintf("%spod%d", p, i))
		l.PodNames = append(l.PodNames, fmt.Sprintf("pod%d", i))
		l.PodIPs = append(l.PodIPs, podIP(i))
	}
	return l
}

// podIP is the address of pod i: the design notes' three, then counting up
// from 10.246.92.9.
func podIP(i int) netip.Addr {
	switch i {
	case 0:
		return netip.AddrFrom4([4]byte{10, 246, 82, 2})
	case 1:
		return netip.AddrFrom4([4]byte{10, 246, 82, 6})
	}
	n := 92*256 + 8 + (i - 2) // 10.246.92.8 + (i-2)
	return netip.AddrFrom4([4]byte{10, 246, byte(n >> 8), byte(n)})
}

func (l *Lab) namespaces() []string {
	ns := []string{l.MasterNS, l.LBNS, l.ClientNS}
	if l.LB2NS != "" {
		ns = append(ns, l.LB2NS, l.SwitchNS)
	}
	return append(ns, l.PodNS...)
}

// networkPlan renders the `ip` commands (arguments after "ip") that build
// the lab's networks. Links are made inside the namespaces, so nothing ever
// appears in the host namespace, not even for a moment.
func networkPlan(l *Lab) [][]string {
	var c [][]string
	add := func(args ...string) { c = append(c, args) }
	for _, ns := range l.namespaces() {
		add("netns", "add", ns)
	}
	for _, ns := range l.namespaces() {
		add("-n", ns, "link", "set", "lo", "up")
	}
	if l.LB2NS != "" {
		return append(c, twoLBPlan(l)...)
	}
	m, lb, cl := l.MasterNS, l.LBNS, l.ClientNS
	// Infrastructure network: master eth0 <-> lb ens9.
	add("-n", m, "link", "add", "eth0", "type", "veth", "peer", "name", "ens9", "netns", lb)
	add("-n", m, "addr", "add", l.MasterIP.String()+"/24", "dev", "eth0")
	add("-n", lb, "addr", "add", l.LBInfraIP.String()+"/24", "dev", "ens9")
	add("-n", m, "link", "set", "eth0", "up")
	add("-n", lb, "link", "set", "ens9", "up")
	// External network: lb eth0 <-> client eth0.
	add("-n", lb, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", cl)
	add("-n", lb, "addr", "add", l.LBExternalIP.String()+"/24", "dev", "eth0")
	add("-n", cl, "addr", "add", l.ClientIP.String()+"/24", "dev", "eth0")
	add("-n", lb, "link", "set", "eth0", "up")
	add("-n", cl, "link", "set", "eth0", "up")
	// Pod network: the flannel0 bridge on the lb, one veth per pod.
	add("-n", lb, "link", "add", "flannel0", "type", "bridge", "forward_delay", "0")
	add("-n", lb, "addr", "add", FlannelIP.String(), "dev", "flannel0")
	add("-n", lb, "link", "set", "flannel0", "up")
	for i, ns := range l.PodNS {
		v := fmt.Sprintf("vpod%d", i)
		add("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", v, "netns", lb)
		add("-n", lb, "link", "set", v, "master", "flannel0", "up")
		add("-n", ns, "addr", "add", fmt.Sprintf("%s/%d", l.PodIPs[i], PodNetwork.Bits()), "dev", "eth0")
		add("-n", ns, "link", "set", "eth0", "up")
	}
	return c
}

// twoLBPlan renders the links of a two-LB lab, after the namespaces:
// three bridges in SwitchNS (infra, ext, pods), one leg per namespace on
// each network it belongs to, and sync0 straight between the LBs.
func twoLBPlan(l *Lab) [][]string {
	var c [][]string
	add := func(args ...string) { c = append(c, args) }
	sw := l.SwitchNS
	for _, br := range []string{"infra", "ext", "pods"} {
		add("-n", sw, "link", "add", br, "type", "bridge", "forward_delay", "0")
		add("-n", sw, "link", "set", br, "up")
	}
	// leg puts ifname into ns with addr, its peer port on bridge br.
	leg := func(ns, ifname, port, br, addr string) {
		add("-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
		add("-n", sw, "link", "set", port, "master", br, "up")
		add("-n", ns, "addr", "add", addr, "dev", ifname)
		add("-n", ns, "link", "set", ifname, "up")
	}
	leg(l.MasterNS, "eth0", "m0", "infra", l.MasterIP.String()+"/24")
	leg(l.LBNS, "ens9", "lb1i", "infra", l.LBInfraIP.String()+"/24")
	leg(l.LB2NS, "ens9", "lb2i", "infra", LB2InfraIP.String()+"/24")
	leg(l.ClientNS, "eth0", "cl0", "ext", l.ClientIP.String()+"/24")
	leg(l.LBNS, "eth0", "lb1e", "ext", l.LBExternalIP.String()+"/24")
	leg(l.LB2NS, "eth0", "lb2e", "ext", LB2ExternalIP.String()+"/24")
	leg(l.LBNS, "flannel0", "lb1p", "pods", FlannelIP.String())
	leg(l.LB2NS, "flannel0", "lb2p", "pods", LB2FlannelIP.String())
	for i, ns := range l.PodNS {
		leg(ns, "eth0", fmt.Sprintf("vpod%d", i), "pods", fmt.Sprintf("%s/%d", l.PodIPs[i], PodNetwork.Bits()))
	}
	add("-n", l.LBNS, "link", "add", "sync0", "type", "veth", "peer", "name", "sync0", "netns", l.LB2NS)
	add("-n", l.LBNS, "addr", "add", SyncIPs[0].String(), "dev", "sync0")
	add("-n", l.LB2NS, "addr", "add", SyncIPs[1].String(), "dev", "sync0")
	add("-n", l.LBNS, "link", "set", "sync0", "up")
	add("-n", l.LB2NS, "link", "set", "sync0", "up")
	return c
}

// AddLBAddress adds another external address (for example
// "192.168.121.202/24") to the load balancer's eth0, for services with
// several external IPs.
func (l *Lab) AddLBAddress(cidr string) error {
	if _, err := netip.ParsePrefix(cidr); err != nil {
		return fmt.Errorf("lab %s: add lb address: %w", l.Name, err)
	}
	_, err := runCmd(context.Background(), exec.Command("ip", "-n", l.LBNS, "addr", "add", cidr, "dev", "eth0"))
	if err != nil {
		return fmt.Errorf("lab %s: add lb address: %w", l.Name, err)
	}
	return nil
}

// Command returns a command that runs name inside namespace ns via
// `ip netns exec`. ctx kills it.
func (l *Lab) Command(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs name inside namespace ns and returns its combined output; on
// failure the error holds the command line and the output.
func (l *Lab) Run(ctx context.Context, ns string, name string, args ...string) (string, error) {
	cmd := l.Command(ctx, ns, name, args...)
	return runCmd(ctx, cmd)
}

// runCmd runs cmd with combined output, naming the command and quoting the
// output in the error.
func runCmd(ctx context.Context, cmd *exec.Cmd) (string, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Close kills every process the lab started (and anything else left in its
// namespaces), deletes the namespaces and, if Start made Dir, removes it.
// It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	l.procs = map[string]*proc{}
	l.mu.Unlock()

	var errs []error
	for _, p := range procs {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := Sweep(l.Name); err != nil {
		errs = append(errs, err)
	}
	if l.removeDir && len(errs) == 0 {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s: close: %w", l.Name, err)
	}
	return nil
}
