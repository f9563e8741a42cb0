package netfilter

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lbd/lbd/lb"
)

// Names of the chains lbd owns besides the per-service-port chains.
const (
	// ChainPrefix starts the name of every chain lbd owns; lbd touches no
	// chain without it.
	ChainPrefix = "LBD-"
	// ServicesChain (nat) holds one jump per /24 that holds external IPs,
	// to that network's chain (see [NetChain]).
	ServicesChain = "LBD-SERVICES"
	// NetChainPrefix starts the name of a network chain (nat), which
	// holds one jump per external IP and service port of its /24.
	NetChainPrefix = "LBD-NET-"
	// PostroutingChain (nat) masquerades the packets lbd marked.
	PostroutingChain = "LBD-POSTROUTING"
	// FilterChain (filter) rejects service ports without ready endpoints.
	FilterChain = "LBD-FILTER"
	// ForwardChain (filter) accepts the traffic lbd forwards, so that it
	// flows even where the FORWARD policy is DROP (Docker sets that).
	ForwardChain = "LBD-FORWARD"
)

// Mark bits kube-proxy uses; lbd refuses them so both can run on one host.
const (
	kubeProxyMasqBit = 14 // 0x4000
	kubeProxyDropBit = 15 // 0x8000
)

// DefaultMasqueradeBit is the fwmark bit lbd uses unless told otherwise:
// 0x2000, next to but not on kube-proxy's 0x4000 and 0x8000.
const DefaultMasqueradeBit = 13

// ErrReservedMark is returned by [Options.Validate] for a mark bit that
// kube-proxy already uses.
var ErrReservedMark = errors.New("mark bit is reserved by kube-proxy (14 = 0x4000 masquerade, 15 = 0x8000 drop)")

// Options configure the backend, the route check and the preflight.
type Options struct {
	// MasqueradeBit is the bit (0-31) of the packet mark that flags
	// packets to masquerade. Must not be 14 or 15 (kube-proxy's).
	MasqueradeBit int
	// Masquerade rewrites the source of forwarded packets to the LB's
	// address so that pods answer the LB. Turn it off only where the pods
	// route back through the LB by themselves.
	Masquerade bool
	// PodInterface is the interface through which pods are reached, the
	// notes' flannel0.
	PodInterface string
	// SNATAddresses, when set with Masquerade, replace MASQUERADE with
	// SNAT to this pool: a contiguous, ascending range of IPv4 addresses
	// the LB owns on the pod network (lbd does not add them). The kernel
	// picks the address by a hash of the client and pod addresses, so
	// one client always gets one address; many clients spread over the
	// pool, each address adding 64k source tuples per pod. Empty means
	// MASQUERADE (the address of the interface towards the pod).
	SNATAddresses []netip.Addr
	// Binary is the iptables command: "iptables" (the system's choice),
	// "iptables-nft" or "iptables-legacy". "-restore" and "-save" are
	// appended for the restore and save commands. Empty means "iptables".
	Binary string
}

// DefaultOptions returns the options lbd runs with unless flags say
// otherwise: masquerade on bit 13, pod interface flannel0, the system's
// iptables.
func DefaultOptions() Options {
	return Options{MasqueradeBit: DefaultMasqueradeBit, Masquerade: true, PodInterface: "flannel0", Binary: "iptables"}
}

// Validate reports options that cannot work; the error names the field.
func (o Options) Validate() error {
	switch {
	case o.MasqueradeBit < 0 || o.MasqueradeBit > 31:
		return fmt.Errorf("netfilter options: masquerade bit %d is outside 0-31", o.MasqueradeBit)
	case o.MasqueradeBit == kubeProxyMasqBit || o.MasqueradeBit == kubeProxyDropBit:
		return fmt.Errorf("netfilter options: masquerade bit %d: %w", o.MasqueradeBit, ErrReservedMark)
	}
	for i, a := range o.SNATAddresses {
		switch {
		case !a.Is4():
			return fmt.Errorf("netfilter options: SNAT address %s: want IPv4", a)
		case i > 0 && a != o.SNATAddresses[i-1].Next():
			return fmt.Errorf("netfilter options: SNAT addresses: %s does not follow %s; want one contiguous ascending range", a, o.SNATAddresses[i-1])
		}
	}
	return nil
}

// snatTarget returns the target of the masquerade rule as iptables-save
// prints it: MASQUERADE, or SNAT to the first-last range of the pool.
//
// Neither randomizes the port. The kernel keeps the client's source port
// where the resulting tuple is free, so a pod sees a client's ports in the
// order the client reuses them, with that client's growing timestamps, and
// recycles its TIME_WAIT sockets as it would without NAT. --random-fully
// put each new connection on a random port instead, often one the pod
// still held in TIME_WAIT from an unrelated connection; the pod answered
// the SYN with a challenge ACK (TcpExtPAWSTimewait) and the client stalled
// for a 1 s SYN retransmit. Clashing ports are still resolved by the
// kernel, with a random offset.
func (o Options) snatTarget() string {
	n := len(o.SNATAddresses)
	switch n {
	case 0:
		return "MASQUERADE"
	case 1:
		return "SNAT --to-source " + o.SNATAddresses[0].String()
	}
	return "SNAT --to-source " + o.SNATAddresses[0].String() + "-" + o.SNATAddresses[n-1].String()
}

func (o Options) binary() string {
	if o.Binary == "" {
		return "iptables"
	}
	return o.Binary
}

// mark returns the mark bit as iptables-save prints it, e.g. "0x2000".
func (o Options) mark() string { return fmt.Sprintf("%#x", uint32(1)<<o.MasqueradeBit) }

// Chain is one chain lbd owns, with its rules in iptables-save form
// ("-A NAME ...").
type Chain struct {
	Name  string
	Rules []string
}

// Ruleset is everything lbd programs for a set of services: the chains of
// the nat and the filter table, in payload order, and the services that
// could not be rendered.
type Ruleset struct {
	NAT     []Chain
	Filter  []Chain
	Skipped []lb.Skipped
}

// Payload returns r as a complete iptables-restore --noflush payload:
// declaring each chain flushes it, then its rules follow.
func (r Ruleset) Payload() []byte {
	var p payload
	for _, c := range r.NAT {
		p.nat.declare(c.Name)
		p.nat.add(c.Rules...)
	}
	for _, c := range r.Filter {
		p.filter.declare(c.Name)
		p.filter.add(c.Rules...)
	}
	return p.bytes()
}

// Render returns the rules for svcs under opts. It is pure: no I/O, and
// the same input gives the same bytes. Services that are not exposed are
// ignored; a service with no IPv4 external IP is skipped (this backend
// programs IPv4 only). opts must pass [Options.Validate].
func Render(svcs []lb.Service, opts Options) Ruleset {
	rs := make([]serviceRules, 0, len(svcs))
	for i := range svcs {
		rs = append(rs, renderService(&svcs[i], opts))
	}
	return assemble(rs, opts)
}

// assemble joins rendered services into a Ruleset: LBD-SERVICES and
// LBD-POSTROUTING, the service-port chains, then the network chains,
// which jump to them.
func assemble(rs []serviceRules, opts Options) Ruleset {
	services := Chain{Name: ServicesChain}
	filter := Chain{Name: FilterChain}
	var out Ruleset
	out.NAT = append(out.NAT, services, postrouting(opts))
	nets := map[string]*Chain{}
	var order []string
	for _, r := range rs {
		if r.skipped != nil {
			out.Skipped = append(out.Skipped, *r.skipped)
			continue
		}
		for _, j := range r.jumps {
			c := jumpChain(j)
			if nets[c] == nil {
				nets[c] = &Chain{Name: c}
				order = append(order, c)
			}
			nets[c].Rules = append(nets[c].Rules, j)
		}
		filter.Rules = append(filter.Rules, r.rejects...)
		out.NAT = append(out.NAT, r.chains...)
	}
	for _, c := range order {
		services.Rules = append(services.Rules, netJump(c, nets[c].Rules[0]))
		out.NAT = append(out.NAT, *nets[c])
	}
	out.NAT[0] = services
	out.Filter = []Chain{filter, forward(opts)}
	return out
}

// NetChain returns the name of the network chain of the IPv4 address ip:
// "LBD-NET-" and the first 16 characters of the base32 SHA-256 of its
// /24, 24 characters in all. LBD-SERVICES dispatches on the /24 first, so
// a new connection walks the networks and then only its own network's
// rules, not every service's.
func NetChain(ip netip.Addr) string {
	return NetChainPrefix + hash(netOf(ip).String(), 16)
}

// netOf is the /24 of ip.
func netOf(ip netip.Addr) netip.Prefix { return netip.PrefixFrom(ip.Unmap(), 24).Masked() }

// jumpChain returns the chain a rendered "-A CHAIN ..." line is in.
func jumpChain(line string) string {
	c, _, _ := strings.Cut(strings.TrimPrefix(line, "-A "), " ")
	return c
}

// netJump renders the LBD-SERVICES line into network chain c, given one
// of c's lines ("-A c -d a.b.c.d/32 ...").
func netJump(c, line string) string {
	f := strings.Fields(line)
	ip := netip.MustParsePrefix(f[3]).Addr()
	return "-A " + ServicesChain + " -d " + netOf(ip).String() + " -j " + c
}

// forward accepts what lbd forwards: the first packet of a connection by
// its mark (set in the service-port chain, still there in FORWARD, before
// LBD-POSTROUTING clears it), and the rest of a DNATed connection, both
// ways, by conntrack state. Nothing that lbd did not DNAT starts a
// connection through it.
func forward(opts Options) Chain {
	m := opts.mark()
	return Chain{Name: ForwardChain, Rules: []string{
		"-A " + ForwardChain + " -m mark --mark " + m + "/" + m + " -j ACCEPT",
		"-A " + ForwardChain + " -m conntrack --ctstate DNAT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
	}}
}

func postrouting(opts Options) Chain {
	c := Chain{Name: PostroutingChain}
	if opts.Masquerade {
		m := opts.mark()
		c.Rules = []string{
			"-A " + PostroutingChain + " -m mark ! --mark " + m + "/" + m + " -j RETURN",
			// Clear the bit so a packet that is routed again is not
			// masqueraded twice.
			"-A " + PostroutingChain + " -j MARK --set-xmark " + m + "/0x0",
			"-A " + PostroutingChain + " -j " + opts.snatTarget(),
		}
	}
	return c
}

// serviceRules is one service's share of a Ruleset.
type serviceRules struct {
	// chains are the nat chains of its ports that have ready endpoints.
	chains []Chain
	// jumps are its rules in the network chains, rejects those in
	// LBD-FILTER.
	jumps   []string
	rejects []string
	// skipped is set when the service cannot be programmed at all.
	skipped *lb.Skipped
}

// renderService renders one service. A nil or unexposed service renders
// to nothing.
func renderService(s *lb.Service, opts Options) serviceRules {
	var r serviceRules
	if s == nil || !s.Exposed() {
		return r
	}
	var ips []string
	for _, ip := range s.ExternalIPs {
		if ip.Is4() || ip.Is4In6() {
			ips = append(ips, ip.Unmap().String())
		}
	}
	if len(ips) == 0 {
		r.skipped = &lb.Skipped{Key: s.Key(), Reason: "no IPv4 external IP; the iptables backend programs IPv4 only (" + s.ExternalIPsString() + ")"}
		return r
	}
	for _, p := range s.Ports {
		key := p.Key(s)
		proto := strings.ToLower(string(p.Protocol))
		match := fmt.Sprintf("-p %s -m %s --dport %d -m comment --comment %q", proto, proto, p.Port, key)
		var eps []lb.Endpoint
		for _, e := range p.ReadyEndpoints() {
			if e.IP.Is4() || e.IP.Is4In6() {
				e.IP = e.IP.Unmap()
				eps = append(eps, e)
			}
		}
		if len(eps) == 0 {
			reject := "icmp-port-unreachable"
			if p.Protocol == lb.TCP {
				reject = "tcp-reset"
			}
			for _, ip := range ips {
				r.rejects = append(r.rejects, "-A "+FilterChain+" -d "+ip+"/32 "+match+" -j REJECT --reject-with "+reject)
			}
			continue
		}
		name := ServicePortChain(key)
		for _, ip := range ips {
			r.jumps = append(r.jumps, "-A "+NetChain(netip.MustParseAddr(ip))+" -d "+ip+"/32 "+match+" -j "+name)
			if len(s.SourceRanges) > 0 {
				// The port chain DNATs only the allowed sources; what
				// it leaves alone still has the service address here.
				r.rejects = append(r.rejects, "-A "+FilterChain+" -d "+ip+"/32 "+match+" -j DROP")
			}
		}
		r.chains = append(r.chains, portChain(name, proto, eps, s, opts))
	}
	return r
}

// portChain renders the chain of one service port with ready endpoints.
func portChain(name, proto string, eps []lb.Endpoint, s *lb.Service, opts Options) Chain {
	c := Chain{Name: name}
	head := "-A " + name + " -p " + proto
	// The mark asks LBD-POSTROUTING for masquerade, when that is on, and
	// LBD-FORWARD to accept the packet.
	m := opts.mark()
	if len(s.SourceRanges) == 0 {
		c.Rules = append(c.Rules, "-A "+name+" -j MARK --set-xmark "+m+"/"+m)
	} else {
		// spec.loadBalancerSourceRanges: only the allowed sources are
		// marked, and only marked packets go on to a DNAT; LBD-FILTER
		// drops the rest. IPv6 ranges allow nothing here.
		for _, r := range s.SourceRanges {
			if r.Addr().Is4() {
				c.Rules = append(c.Rules, "-A "+name+" -s "+r.String()+" -j MARK --set-xmark "+m+"/"+m)
			}
		}
		c.Rules = append(c.Rules, "-A "+name+" -m mark ! --mark "+m+"/"+m+" -j RETURN")
	}
	affinity := s.Affinity == lb.AffinityClientIP
	seconds := strconv.Itoa(int(s.AffinityTimeout.Seconds()))
	recent := func(mode string, e lb.Endpoint) string {
		return " -m recent " + mode + " --name " + recentName(name, e) + " --mask 255.255.255.255 --rsource"
	}
	if affinity {
		// A client seen within the timeout goes back to its endpoint; the
		// --set renews the entry, as kube-proxy's endpoint chain does.
		for _, e := range eps {
			c.Rules = append(c.Rules, head+recent("--rcheck --seconds "+seconds+" --reap", e)+recent("--set", e)+" -j DNAT --to-destination "+e.String())
		}
	}
	n := len(eps)
	for i, e := range eps {
		rule := head
		if i < n-1 {
			rule += " -m statistic --mode random --probability " + probability(n-i)
		}
		if affinity {
			rule += recent("--set", e)
		}
		c.Rules = append(c.Rules, rule+" -j DNAT --to-destination "+e.String())
	}
	return c
}

// probability returns 1/n the way iptables-save prints it: the kernel keeps
// round(p * 2^31) and iptables prints that back with %.11f. Rendering the
// printed form keeps Verify's text comparison exact.
func probability(n int) string {
	k := math.Round(float64(1<<31) / float64(n))
	return strconv.FormatFloat(k/float64(1<<31), 'f', 11, 64)
}

// ServicePortChain returns the nat chain name of the service port with the
// given key (lb.Port.Key, "namespace/name:port/protocol"): "LBD-" and the
// first 16 characters of the base32 SHA-256 of the key, 20 characters in
// all (iptables allows 28).
func ServicePortChain(key string) string {
	return ChainPrefix + hash(key, 16)
}

// recentName names the recent-match list of one endpoint of a service-port
// chain; a name per endpoint, not per position, so that a client keeps its
// endpoint when other endpoints come and go.
func recentName(chain string, e lb.Endpoint) string {
	return chain + "-" + hash(e.String(), 8)
}

func hash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:n]
}

// payload builds an iptables-restore --noflush input. Within a table the
// declarations (which create or flush chains) come first, then rule
// deletions, then appends, then chain deletions, so a chain is emptied and
// unreferenced before its -X.
type payload struct {
	nat, filter tableLines
}

type tableLines struct {
	decls, deletes, appends, removes []string
}

func (t *tableLines) declare(chain string) { t.decls = append(t.decls, ":"+chain+" - [0:0]") }

func (t *tableLines) add(rules ...string) { t.appends = append(t.appends, rules...) }

// del turns "-A CHAIN spec" into "-D CHAIN spec".
func (t *tableLines) del(rules ...string) {
	for _, r := range rules {
		t.deletes = append(t.deletes, "-D"+strings.TrimPrefix(r, "-A"))
	}
}

// drop flushes and deletes chain.
func (t *tableLines) drop(chain string) {
	t.declare(chain)
	t.removes = append(t.removes, "-X "+chain)
}

func (t *tableLines) empty() bool {
	return len(t.decls)+len(t.deletes)+len(t.appends)+len(t.removes) == 0
}

func (t *tableLines) write(b *strings.Builder, table string) {
	if t.empty() {
		return
	}
	b.WriteString("*" + table + "\n")
	for _, part := range [][]string{t.decls, t.deletes, t.appends, t.removes} {
		for _, l := range part {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	b.WriteString("COMMIT\n")
}

// table returns the lines of the named table ("nat" or "filter").
func (p *payload) table(name string) *tableLines {
	if name == "nat" {
		return &p.nat
	}
	return &p.filter
}

func (p *payload) empty() bool { return p.nat.empty() && p.filter.empty() }

func (p *payload) bytes() []byte {
	var b strings.Builder
	p.nat.write(&b, "nat")
	p.filter.write(&b, "filter")
	return []byte(b.String())
}
