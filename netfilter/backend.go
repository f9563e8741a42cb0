package netfilter

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"

	"github.com/lbd/lbd/lb"
)

// ipTables is the part of go-iptables the backend calls, for the jump
// rules in the built-in chains; *iptables.IPTables satisfies it.
type ipTables interface {
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
}

// jump is one rule lbd keeps in a built-in chain: match (if any), then
// "-j target".
type jump struct {
	table, chain, target string
	match                []string
}

func (j jump) spec() []string { return append(slices.Clone(j.match), "-j", j.target) }

// line is the jump as iptables-save prints it.
func (j jump) line() string { return "-A " + j.chain + " " + strings.Join(j.spec(), " ") }

// unmatchedLine is the jump without its match, as lbd wrote the
// LBD-FILTER jumps before they were limited to new connections; a full
// sync replaces it.
func (j jump) unmatchedLine() string { return "-A " + j.chain + " -j " + j.target }

// newOnly limits a jump to a connection's first packet. LBD-FILTER's
// rejects and drops match a service address, which only a connection's
// first packet still carries (the rest are DNATed or were never let
// through), so the packets of established connections (the LB's own, and
// what it routes without DNAT) skip the chain: their cost does not grow
// with the services that have no endpoint or have source ranges.
// kube-proxy gates its filter jumps the same way.
var newOnly = []string{"-m", "conntrack", "--ctstate", "NEW"}

// jumps are lbd's rules in the built-in chains. restore cannot own a
// built-in chain without flushing it, so these are ensured one by one.
var jumps = []jump{
	{table: "nat", chain: "PREROUTING", target: ServicesChain},
	// OUTPUT too, so the LB itself can reach a service.
	{table: "nat", chain: "OUTPUT", target: ServicesChain},
	{table: "nat", chain: "POSTROUTING", target: PostroutingChain},
	{table: "filter", chain: "INPUT", target: FilterChain, match: newOnly},
	{table: "filter", chain: "FORWARD", target: FilterChain, match: newOnly},
	{table: "filter", chain: "FORWARD", target: ForwardChain},
	{table: "filter", chain: "OUTPUT", target: FilterChain, match: newOnly},
}

// Backend programs services into iptables. Create it with [New]; it is
// safe for use by one reconciler at a time (calls are serialized).
type Backend struct {
	opts Options
	log  *slog.Logger

	// Side effects, set by New and swapped by tests.
	// run executes an iptables command, feeding stdin when not nil.
	run func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
	// ipt ensures the jump rules.
	ipt ipTables
	// writeFile writes a sysctl under /proc/sys.
	writeFile func(path string, data []byte) error
	// readFile reads a sysctl under /proc/sys.
	readFile func(path string) ([]byte, error)
	// deleteConntrack removes conntrack entries matching f.
	deleteConntrack func(f *netlink.ConntrackFilter) (uint, error)

	// batchChains, when > 0, splits a full sync's service-port chains
	// into restores of at most this many chains (see New).
	batchChains int

	// commands counts the iptables commands run, for Commands.
	commands atomic.Uint64

	mu sync.Mutex
	// synced: a full sync succeeded since New or Cleanup; until then and
	// after Verify found drift (dirty) Apply rewrites everything.
	synced, dirty bool
	// applied is every exposed service as last programmed, by key.
	applied map[string]*lb.Service
	// nets counts the rules of each network chain as last programmed;
	// a partial sync creates a chain at its first rule and drops it with
	// its last.
	nets map[string]int
}

// New returns a backend with the given options, logging to log. It fails
// on invalid options or when the iptables command cannot be found.
func New(opts Options, log *slog.Logger) (*Backend, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(opts.binary())
	if err != nil {
		return nil, fmt.Errorf("netfilter: %w", err)
	}
	ipt, err := iptables.New(iptables.Path(path))
	if err != nil {
		return nil, fmt.Errorf("netfilter: %s: %w", path, err)
	}
	version, err := runCommand(context.Background(), nil, path, "--version")
	if err != nil {
		return nil, fmt.Errorf("netfilter: %w", err)
	}
	batch := 0
	if bytes.Contains(version, []byte("nf_tables")) {
		// iptables-nft-restore 1.8 --noflush slows down with the square
		// of the chains written in one transaction: 10,000 service
		// chains take 10 s at once, 2 s in batches of 1,000. Legacy
		// rewrites the whole table per call, so it is not batched.
		batch = nftBatchChains
	}
	return &Backend{
		opts:        opts,
		batchChains: batch,
		log:         log,
		run:         runCommand,
		ipt:         ipt,
		writeFile:   func(p string, b []byte) error { return os.WriteFile(p, b, 0o644) },
		readFile:    os.ReadFile,
		deleteConntrack: func(f *netlink.ConntrackFilter) (uint, error) {
			return netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, f)
		},
		applied: map[string]*lb.Service{},
	}, nil
}

// CommandError is a failed iptables command with what it printed.
type CommandError struct {
	Command string
	Output  string
	Err     error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, strings.TrimSpace(e.Output))
}

func (e *CommandError) Unwrap() error { return e.Err }

func runCommand(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), &CommandError{Command: name + " " + strings.Join(args, " "), Output: errb.String(), Err: err}
	}
	return out.Bytes(), nil
}

// Name returns "iptables", the backend's name for --backend.
func (b *Backend) Name() string { return "iptables" }

// Apply programs desired. The first call, and the first after Verify found
// drift, rewrites every lbd chain (a full sync, reading iptables-save once
// to find stale chains); later calls rewrite only the chains of changes,
// using each change's Old and New, in one iptables-restore call. With no
// change Apply runs no command. A service that cannot be rendered is
// returned as skipped and keeps its previous rules.
func (b *Backend) Apply(ctx context.Context, desired []lb.Service, changes []lb.Change) ([]lb.Skipped, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.synced && !b.dirty && b.trustStore(desired, changes) {
		// A new process (a cron pass) whose store says rules are in
		// place: change only what changed, as a long-lived one would. If
		// the kernel disagrees the partial restore fails and the full
		// sync below repairs it; drift is Verify's job.
		b.synced = true
		b.ensureForwarding()
	}
	if !b.synced || b.dirty {
		return b.fullSync(ctx, desired)
	}
	skipped, err := b.partialSync(ctx, changes)
	if err != nil {
		// The kernel no longer holds what we think (a -D of a rule
		// removed by hand, say): repair by rewriting everything.
		b.log.Warn("partial sync failed, rewriting all chains", "backend", "iptables", "err", err)
		return b.fullSync(ctx, desired)
	}
	return skipped, nil
}

// lineDiff returns the rules of want that have lacks, and those of have
// that want lacks (one per surplus copy), each in its slice's order.
func lineDiff(have, want []string) (adds, dels []string) {
	count := make(map[string]int, len(have))
	for _, r := range have {
		count[r]++
	}
	for _, r := range want {
		if count[r] > 0 {
			count[r]--
		} else {
			adds = append(adds, r)
		}
	}
	for _, r := range have {
		if count[r] > 0 {
			count[r]--
			dels = append(dels, r)
		}
	}
	return adds, dels
}

// trustStore fills the backend's idea of what is programmed from the
// reconciler's applied state, which desired and changes together describe:
// the unchanged services of desired plus the Old side of each change. It
// reports whether anything is programmed at all; with nothing, the first
// sync is a full one.
func (b *Backend) trustStore(desired []lb.Service, changes []lb.Change) bool {
	for k, s := range lb.Programmed(desired, changes) {
		b.applied[k] = s
	}
	return len(b.applied) > 0
}

// Commands returns how many iptables commands (restore, save and the
// go-iptables calls for the jumps) the backend has run since New: a sync
// with no change adds none.
func (b *Backend) Commands() uint64 { return b.commands.Load() }

func (b *Backend) restore(ctx context.Context, p []byte) error {
	b.commands.Add(1)
	if _, err := b.run(ctx, p, b.opts.binary()+"-restore", "--noflush", "-w"); err != nil {
		return fmt.Errorf("netfilter restore: %w", err)
	}
	return nil
}

func (b *Backend) partialSync(ctx context.Context, changes []lb.Change) ([]lb.Skipped, error) {
	var p payload
	var skipped []lb.Skipped
	var gone []goneEndpoint
	next := map[string]*lb.Service{}
	delta := map[string]int{}
	line := map[string]string{} // a rule of each network chain touched
	for _, c := range changes {
		newR := renderService(c.New, b.opts)
		if newR.skipped != nil {
			skipped = append(skipped, *newR.skipped)
			continue // leave the service as it was
		}
		old := c.Old
		if old != nil && b.applied[old.Key()] == nil {
			// Old was never programmed here (not exposed, or skipped).
			old = nil
		}
		oldR := renderService(old, b.opts)
		diffService(&p, oldR, newR)
		for _, j := range oldR.jumps {
			delta[jumpChain(j)]--
			line[jumpChain(j)] = j
		}
		for _, j := range newR.jumps {
			delta[jumpChain(j)]++
			line[jumpChain(j)] = j
		}
		gone = append(gone, goneUDP(old, c.New)...)
		if c.New != nil && c.New.Exposed() {
			next[c.Key()] = c.New.Clone()
		} else {
			next[c.Key()] = nil
		}
	}
	nets := b.netsDiff(&p, delta, line)
	if !p.empty() {
		if err := b.restore(ctx, p.bytes()); err != nil {
			return nil, err
		}
	}
	b.nets = nets
	for k, s := range next {
		if s == nil {
			delete(b.applied, k)
		} else {
			b.applied[k] = s
		}
	}
	b.flushConntrack(gone)
	return skipped, nil
}

// netsDiff adds to p the network chains that get their first rule (the
// chain and its LBD-SERVICES jump) and drops those that lose their last
// (the jump and the chain, whose rules the flush removes, so their -D
// lines go), and returns the rule counts after p.
func (b *Backend) netsDiff(p *payload, delta map[string]int, line map[string]string) map[string]int {
	nets := maps.Clone(b.nets)
	if nets == nil {
		nets = map[string]int{}
	}
	for c, d := range delta {
		before, after := nets[c], nets[c]+d
		switch {
		case before == 0 && after > 0:
			p.nat.declare(c)
			p.nat.add(netJump(c, line[c]))
		case before > 0 && after <= 0:
			p.nat.deletes = slices.DeleteFunc(p.nat.deletes, func(l string) bool { return strings.HasPrefix(l, "-D "+c+" ") })
			p.nat.del(netJump(c, line[c]))
			p.nat.drop(c)
		}
		if after > 0 {
			nets[c] = after
		} else {
			delete(nets, c)
		}
	}
	return nets
}

// diffService adds to p what turns old's rules into new's: changed port
// chains are redeclared (flushed) and refilled, vanished ones dropped, and
// only the LBD-SERVICES and LBD-FILTER lines that differ are deleted or
// appended, so a one-service change never rewrites the shared chains.
func diffService(p *payload, old, new serviceRules) {
	oldChains := map[string]Chain{}
	for _, c := range old.chains {
		oldChains[c.Name] = c
	}
	newChains := map[string]bool{}
	for _, c := range new.chains {
		newChains[c.Name] = true
		if o, ok := oldChains[c.Name]; ok && slices.Equal(o.Rules, c.Rules) {
			continue
		}
		p.nat.declare(c.Name)
		p.nat.add(c.Rules...)
	}
	p.nat.del(minus(old.jumps, new.jumps)...)
	p.nat.add(minus(new.jumps, old.jumps)...)
	p.filter.del(minus(old.rejects, new.rejects)...)
	p.filter.add(minus(new.rejects, old.rejects)...)
	for _, c := range old.chains {
		if !newChains[c.Name] {
			p.nat.drop(c.Name)
		}
	}
}

// minus returns the lines of a not in b, in a's order.
func minus(a, b []string) []string {
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out = append(out, l)
		}
	}
	return out
}

// fullSync rewrites every chain lbd owns: planFull and fullPayloads say
// what, in which order; this restores the payloads one by one.
func (b *Backend) fullSync(ctx context.Context, desired []lb.Service) ([]lb.Skipped, error) {
	// In nf_tables mode a full sync is several restores. Until the last one
	// succeeds the kernel may hold part of the new state (complete chains
	// and jumps only, never a half-filled chain), so the next Apply must be
	// a full sync again: dirty is cleared only at the end.
	b.dirty = true
	b.ensureForwarding()
	existing, err := b.save(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.ensureJumps(ctx, existing); err != nil {
		return nil, err
	}
	fp := planFull(desired, b.applied, b.opts)
	for _, p := range fullPayloads(fp.set, existing, b.batchChains) {
		if err := b.restore(ctx, p); err != nil {
			return nil, err
		}
	}
	b.applied = fp.next
	b.nets = map[string]int{}
	for _, c := range fp.set.NAT {
		if strings.HasPrefix(c.Name, NetChainPrefix) {
			b.nets[c.Name] = len(c.Rules)
		}
	}
	b.synced, b.dirty = true, false
	b.flushConntrack(fp.gone)
	b.log.Info("iptables full sync", "backend", "iptables", "services", len(fp.next), "chains", len(fp.set.NAT)+len(fp.set.Filter))
	return fp.skipped, nil
}

// fullPlan is what a full sync programs, before any payload is built.
type fullPlan struct {
	// set is every chain lbd owns after the sync.
	set Ruleset
	// next is the applied state after the sync: the exposed services,
	// and the previous state of those the sync skips.
	next    map[string]*lb.Service
	skipped []lb.Skipped
	// gone are the UDP endpoints whose conntrack entries must go.
	gone []goneEndpoint
}

// planFull renders desired against applied, the state last programmed. A
// service that cannot be rendered is skipped and keeps serving what was
// programmed for it before. It is pure.
func planFull(desired []lb.Service, applied map[string]*lb.Service, opts Options) fullPlan {
	rs := make([]serviceRules, 0, len(desired))
	fp := fullPlan{next: make(map[string]*lb.Service, len(desired))}
	for i := range desired {
		s := &desired[i]
		r := renderService(s, opts)
		prev := applied[s.Key()]
		if r.skipped != nil {
			fp.skipped = append(fp.skipped, *r.skipped)
			if prev != nil { // keep serving what was programmed before
				rs = append(rs, renderService(prev, opts))
				fp.next[s.Key()] = prev
			}
			continue
		}
		rs = append(rs, r)
		if s.Exposed() {
			fp.next[s.Key()] = s.Clone()
		}
		fp.gone = append(fp.gone, goneUDP(prev, s)...)
	}
	for k, prev := range applied {
		if _, ok := fp.next[k]; !ok {
			fp.gone = append(fp.gone, goneUDP(prev, nil)...)
		}
	}
	fp.set = assemble(rs, opts)
	return fp
}

// fullPayloads returns the iptables-restore payloads that turn existing
// (the kernel's lbd chains, with LBD-SERVICES present: ensureJumps made
// it) into set, in the order they must be restored. batch is the number
// of chains per restore in nf_tables mode; 0 (legacy) makes one restore.
// It is pure.
//
// set.NAT is LBD-SERVICES, LBD-POSTROUTING, then the service-port chains.
// In nf_tables mode one restore slows down with the square of what it
// holds, so the chains go first in batches (nothing jumps to a new chain
// yet, and each chain is flushed and filled within one restore), then the
// jumps that LBD-SERVICES lacks are appended in batches (each only adds a
// way in to a chain that is complete), and the last restore deletes the
// stale jumps and chains. LBD-POSTROUTING and the filter chains lead the
// first batch: a connection DNATed before the masquerade rule exists keeps
// its conntrack entry without SNAT, and the pod's replies, which have no
// route to the client, are lost until the entry times out; under a FORWARD
// policy of DROP, LBD-FORWARD must accept the first packet. Legacy mode
// rewrites the whole table per restore anyway: one restore does all.
func fullPayloads(set Ruleset, existing *saved, batch int) [][]byte {
	var out [][]byte
	var p payload
	keep := map[string]bool{}
	services, chains, filters := set.NAT[0], set.NAT[1:], set.Filter
	if batch > 0 {
		for len(chains) > 0 {
			n := min(batch, len(chains))
			var bp payload
			for _, c := range chains[:n] {
				keep[c.Name] = true
				bp.nat.declare(c.Name)
				bp.nat.add(c.Rules...)
			}
			for _, c := range filters {
				keep[c.Name] = true
				bp.filter.declare(c.Name)
				bp.filter.add(c.Rules...)
			}
			filters = nil
			out = append(out, bp.bytes())
			chains = chains[n:]
		}
		adds, dels := lineDiff(existing.nat.rules[ServicesChain], services.Rules)
		for len(adds) > 0 {
			n := min(batch, len(adds))
			var bp payload
			bp.nat.add(adds[:n]...)
			out = append(out, bp.bytes())
			adds = adds[n:]
		}
		keep[ServicesChain] = true
		p.nat.del(dels...)
	} else {
		chains = append([]Chain{services}, chains...)
	}
	for _, c := range chains {
		keep[c.Name] = true
		p.nat.declare(c.Name)
		p.nat.add(c.Rules...)
	}
	for _, c := range filters {
		keep[c.Name] = true
		p.filter.declare(c.Name)
		p.filter.add(c.Rules...)
	}
	for _, c := range existing.nat.chainNames() {
		if !keep[c] {
			p.nat.drop(c)
		}
	}
	for _, c := range existing.filter.chainNames() {
		if !keep[c] {
			p.filter.drop(c)
		}
	}
	if !p.empty() {
		out = append(out, p.bytes())
	}
	return out
}

// ensureJumps inserts the jumps that the iptables-save read at the start
// of a full sync did not show, creating their target chains first when
// they do not exist yet. It runs before the big restores: in nf_tables
// mode every iptables call reads the whole ruleset, so a call made while
// the table is still small is cheap.
func (b *Backend) ensureJumps(ctx context.Context, have *saved) error {
	var missing []jump
	var create payload
	created := map[string]bool{}
	for _, j := range jumps {
		t := have.table(j.table)
		if slices.Contains(t.rules[j.chain], j.line()) {
			continue
		}
		missing = append(missing, j)
		if _, ok := t.rules[j.target]; !ok && !created[j.table+j.target] {
			// Declaring flushes, so only chains that do not exist.
			created[j.table+j.target] = true
			create.table(j.table).declare(j.target)
		}
	}
	if !create.empty() {
		if err := b.restore(ctx, create.bytes()); err != nil {
			return err
		}
	}
	for _, j := range missing {
		// First in the chain, so no earlier rule of someone else's
		// (a DNAT of its own, say) takes the packet first.
		b.commands.Add(1)
		if err := b.ipt.Insert(j.table, j.chain, 1, j.spec()...); err != nil {
			return fmt.Errorf("netfilter: insert jump %s %s -> %s: %w", j.table, j.chain, j.target, err)
		}
		if j.match == nil || !slices.Contains(have.table(j.table).rules[j.chain], j.unmatchedLine()) {
			continue
		}
		// The jump as an older lbd wrote it, now that the new one is in.
		b.commands.Add(1)
		if err := b.ipt.DeleteIfExists(j.table, j.chain, "-j", j.target); err != nil {
			return fmt.Errorf("netfilter: delete old jump %s %s -> %s: %w", j.table, j.chain, j.target, err)
		}
	}
	return nil
}

// nftBatchChains is the batch size of a full sync in nf_tables mode.
const nftBatchChains = 1000

// Paths of the sysctls the backend reads and writes.
const (
	ipForwardPath = "/proc/sys/net/ipv4/ip_forward"
	rpFilterPath  = "/proc/sys/net/ipv4/conf/%s/rp_filter"
)

// ensureForwarding turns on IPv4 forwarding, without which DNAT to the
// pods goes nowhere, and warns about rp_filter settings that may drop the
// traffic. Failures are logged: the rules are still worth programming.
func (b *Backend) ensureForwarding() {
	if v, err := b.readFile(ipForwardPath); err == nil && strings.TrimSpace(string(v)) == "1" {
		// Already on.
	} else if err := b.writeFile(ipForwardPath, []byte("1")); err != nil {
		b.log.Error("cannot turn on ip_forward", "backend", "iptables", "path", ipForwardPath, "err", err)
	} else {
		b.log.Info("turned on ip_forward", "backend", "iptables", "path", ipForwardPath)
	}
	if msg, ok := rpFilterVerdict(b.readFile, b.opts); !ok {
		b.log.Warn("rp_filter may drop service traffic", "backend", "iptables", "detail", msg)
	}
}

// rpFilterVerdict reads rp_filter for "all" and the pod interface. The
// kernel uses the larger of the two; 1 (strict) drops packets whose source
// does not route back through the interface they came in on, which is what
// pod replies look like when masquerade is off and routing is asymmetric.
func rpFilterVerdict(read func(string) ([]byte, error), opts Options) (string, bool) {
	var parts []string
	eff := 0
	for _, dev := range []string{"all", opts.PodInterface} {
		if dev == "" {
			continue
		}
		v, err := read(fmt.Sprintf(rpFilterPath, dev))
		if err != nil {
			parts = append(parts, dev+"=?")
			continue
		}
		s := strings.TrimSpace(string(v))
		parts = append(parts, dev+"="+s)
		if s == "1" || s == "2" {
			eff = max(eff, int(s[0]-'0'))
		}
	}
	detail := "rp_filter " + strings.Join(parts, " ")
	if eff == 1 && !opts.Masquerade {
		return detail + ": strict reverse-path filtering with masquerade off can drop pod replies; set 2 (loose) or 0", false
	}
	return detail, true
}

// goneEndpoint is a UDP endpoint that stopped serving a service port.
type goneEndpoint struct {
	vip  netip.Addr
	port uint16
	ep   netip.Addr
}

// goneUDP lists the ready UDP endpoints of old that new no longer has
// ready for the same port and external IP; their conntrack entries must go
// so the flows move to live pods (UDP has no connection to end).
func goneUDP(old, new *lb.Service) []goneEndpoint {
	if old == nil || !old.Exposed() {
		return nil
	}
	still := map[goneEndpoint]bool{}
	if new != nil {
		for _, p := range new.Ports {
			for _, ip := range new.ExternalIPs {
				for _, e := range p.ReadyEndpoints() {
					still[goneEndpoint{ip, p.Port, e.IP}] = p.Protocol == lb.UDP
				}
			}
		}
	}
	var out []goneEndpoint
	for _, p := range old.Ports {
		if p.Protocol != lb.UDP {
			continue
		}
		for _, ip := range old.ExternalIPs {
			if !ip.Unmap().Is4() {
				continue
			}
			for _, e := range p.ReadyEndpoints() {
				g := goneEndpoint{ip, p.Port, e.IP}
				if !still[g] {
					out = append(out, g)
				}
			}
		}
	}
	return out
}

func (b *Backend) flushConntrack(gone []goneEndpoint) {
	for _, g := range gone {
		f := &netlink.ConntrackFilter{}
		err := f.AddProtocol(17)
		if err == nil {
			err = f.AddIP(netlink.ConntrackOrigDstIP, net.IP(g.vip.Unmap().AsSlice()))
		}
		if err == nil {
			err = f.AddPort(netlink.ConntrackOrigDstPort, g.port)
		}
		if err == nil {
			err = f.AddIP(netlink.ConntrackReplySrcIP, net.IP(g.ep.Unmap().AsSlice()))
		}
		var n uint
		if err == nil {
			n, err = b.deleteConntrack(f)
		}
		if err != nil {
			b.log.Warn("cannot delete UDP conntrack entries", "backend", "iptables", "vip", g.vip, "port", g.port, "endpoint", g.ep, "err", err)
			continue
		}
		b.log.Debug("deleted UDP conntrack entries", "backend", "iptables", "vip", g.vip, "port", g.port, "endpoint", g.ep, "entries", n)
	}
}

// Cleanup removes every lbd chain and jump and leaves every other rule as
// it was. The next Apply is a full sync.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	// One read, one restore: every rule that jumps into an lbd chain (the
	// jumps lbd ensured and any made by hand) goes, then the chains. With
	// nothing of lbd's left the restore is skipped, so Cleanup can run
	// any number of times.
	cur, err := b.save(ctx)
	if err != nil {
		return err
	}
	var p payload
	for _, t := range []struct {
		have  *savedTable
		lines *tableLines
	}{{&cur.nat, &p.nat}, {&cur.filter, &p.filter}} {
		// Jumps into lbd chains that were not lbd's own (duplicates,
		// hand-made ones) would keep the chains from being deleted.
		for _, c := range t.have.order {
			if strings.HasPrefix(c, ChainPrefix) {
				continue
			}
			for _, r := range t.have.rules[c] {
				if strings.Contains(r+" ", " -j "+ChainPrefix) {
					t.lines.del(r)
				}
			}
		}
		for _, c := range t.have.chainNames() {
			t.lines.drop(c)
		}
	}
	if !p.empty() {
		if err := b.restore(ctx, p.bytes()); err != nil {
			return fmt.Errorf("netfilter cleanup: %w", err)
		}
	}
	b.synced, b.dirty = false, false
	b.applied = map[string]*lb.Service{}
	b.nets = nil
	return nil
}
