package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

// conn is the part of *nftables.Conn the backend reads with; writes go
// through [batch].
type conn interface {
	ListTablesOfFamily(nftables.TableFamily) ([]*nftables.Table, error)
	ListChainsOfTableFamily(nftables.TableFamily) ([]*nftables.Chain, error)
	GetRules(*nftables.Table, *nftables.Chain) ([]*nftables.Rule, error)
	GetSets(*nftables.Table) ([]*nftables.Set, error)
	GetSetElements(*nftables.Set) ([]nftables.SetElement, error)
}

// Backend programs services into one nftables table of its own. Create it
// with [New]; calls are serialized.
type Backend struct {
	opts  Options
	log   *slog.Logger
	table *nftables.Table

	// Side effects, set by New and swapped by tests.
	// sendBatch sends one batch and returns the kernel's verdict;
	// dialRead returns a connection for reads.
	sendBatch func(*batch) error
	dialRead  func() (conn, error)
	// ruleIDs, when set, reads the comments of every rule of the table
	// per chain in one dump (see rules.go); nil reads them chain by
	// chain through dialRead's GetRules.
	ruleIDs func(table string) (map[string][]string, error)
	// setElems, when set, reads the elements of one set in one dump as
	// Verify compares them (see rules.go); nil reads them through
	// dialRead's GetSetElements.
	setElems func(table, set string, verdicts bool) (map[string]string, error)
	// deleteConntrack removes conntrack entries matching f.
	deleteConntrack func(fam vnl.InetFamily, f *vnl.ConntrackFilter) (uint, error)
	readFile        func(path string) ([]byte, error)
	writeFile       func(path string, data []byte) error

	// calls counts netlink round trips: batches sent and dumps read.
	calls atomic.Uint64

	mu sync.Mutex
	// synced: a full sync succeeded since New or Cleanup (or the store's
	// applied state was trusted); until then, and after Verify found
	// drift (dirty), Apply rewrites the whole table.
	synced, dirty bool
	// applied is every exposed service as last programmed, by key.
	applied map[string]*lb.Service
	// spreads counts the service ports of applied that each spread
	// chain serves: a partial sync adds a spread chain and its map when
	// its count leaves zero, and deletes them when it returns there.
	spreads map[spreadKey]int
}

// New returns a backend with the given options, logging to log. Its
// netlink sockets are made in the network namespace of the calling
// thread at the time of New. It fails on invalid options.
func New(opts Options, log *slog.Logger) (*Backend, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.Table = opts.table()
	// The namespace is pinned by an fd, so that later calls from any
	// thread reach the same one.
	ns, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("nft: open network namespace: %w", err)
	}
	sock := &batchSocket{ns: ns}
	return &Backend{
		opts:      opts,
		log:       log,
		table:     &nftables.Table{Name: opts.Table, Family: nftables.TableFamilyINet},
		sendBatch: sock.send,
		ruleIDs:   func(table string) (map[string][]string, error) { return ruleIDs(ns, table) },
		setElems: func(table, set string, verdicts bool) (map[string]string, error) {
			return setElements(ns, table, set, verdicts)
		},
		dialRead: func() (conn, error) {
			return nftables.New(nftables.WithNetNSFd(ns), nftables.WithSockOptions(func(c *netlink.Conn) error {
				// A dump of a big table takes many reads; bound them all.
				return c.SetDeadline(time.Now().Add(time.Minute))
			}))
		},
		deleteConntrack: func(fam vnl.InetFamily, f *vnl.ConntrackFilter) (uint, error) {
			return vnl.ConntrackDeleteFilters(vnl.ConntrackTable, fam, f)
		},
		readFile:  os.ReadFile,
		writeFile: func(p string, b []byte) error { return os.WriteFile(p, b, 0o644) },
		applied:   map[string]*lb.Service{},
	}, nil
}

// Name returns "nftables", the backend's name for --backend.
func (b *Backend) Name() string { return "nftables" }

// Calls returns how many netlink round trips (batches sent, dumps read)
// the backend has made since New: an Apply with no change adds none.
func (b *Backend) Calls() uint64 { return b.calls.Load() }

// Table returns the name of the table the backend owns.
func (b *Backend) Table() string { return b.opts.Table }

// Apply programs desired. The first call, and the first after Verify found
// drift, replaces the whole table in one transaction (a full sync); later
// calls send one transaction with only the chains, sets and map elements
// of changes, using each change's Old and New. With no change Apply makes
// no netlink call. A service that cannot be rendered is returned as
// skipped and keeps what it had.
func (b *Backend) Apply(ctx context.Context, desired []lb.Service, changes []lb.Change) ([]lb.Skipped, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.synced && !b.dirty && b.trustStore(desired, changes) {
		// A new process (a cron pass) whose store says the table is in
		// place: change only what changed, as a long-lived one would,
		// which keeps the affinity sets' contents. If the kernel
		// disagrees the transaction fails and the full sync below
		// repairs it; drift is Verify's job.
		b.synced = true
		b.ensureForwarding(desired)
	}
	if !b.synced || b.dirty {
		return b.fullSync(ctx, desired)
	}
	skipped, err := b.partialSync(ctx, changes)
	if err != nil {
		if errors.Is(err, unix.ENFILE) {
			// A set at its size (see setSize): expected as services grow.
			b.log.Info("a set of the table is full, rewriting the table with larger sets", "backend", "nftables", "err", err)
		} else {
			b.log.Warn("partial sync failed, rewriting the table", "backend", "nftables", "err", err)
		}
		return b.fullSync(ctx, desired)
	}
	return skipped, nil
}

// trustStore fills the backend's idea of what is programmed from the
// reconciler's applied state, which desired and changes together describe:
// the unchanged services of desired plus the Old side of each change. It
// reports whether anything is programmed at all.
func (b *Backend) trustStore(desired []lb.Service, changes []lb.Change) bool {
	b.spreads = map[spreadKey]int{}
	for k, s := range lb.Programmed(desired, changes) {
		b.applied[k] = s
		for _, sk := range renderService(s, b.opts).spreads {
			b.spreads[sk]++
		}
	}
	return len(b.applied) > 0
}

func (b *Backend) fullSync(ctx context.Context, desired []lb.Service) ([]lb.Skipped, error) {
	b.dirty = true // until the transaction is in
	b.ensureForwarding(desired)
	objs := make([]serviceObjects, 0, len(desired))
	next := make(map[string]*lb.Service, len(desired))
	var skipped []lb.Skipped
	var gone []goneEndpoint
	for i := range desired {
		s := &desired[i]
		o := renderService(s, b.opts)
		prev := b.applied[s.Key()]
		if o.skipped != nil {
			skipped = append(skipped, *o.skipped)
			if prev != nil { // keep serving what was programmed before
				objs = append(objs, renderService(prev, b.opts))
				next[s.Key()] = prev
			}
			continue
		}
		objs = append(objs, o)
		if s.Exposed() {
			next[s.Key()] = s
		}
	}
	rs := assemble(objs, b.opts)
	for _, sk := range rs.Skipped {
		if !slices.ContainsFunc(skipped, func(o lb.Skipped) bool { return o.Key == sk.Key }) {
			// A conflict found by assemble: not programmed now.
			skipped = append(skipped, sk)
			delete(next, sk.Key)
		}
	}
	for k, prev := range b.applied {
		gone = append(gone, goneUDP(prev, next[k])...)
	}
	tx := fullTx(rs)
	if err := b.send(ctx, tx); err != nil {
		return nil, err
	}
	for k, s := range next {
		next[k] = s.Clone()
	}
	b.applied, b.spreads = next, rs.spreads
	b.synced, b.dirty = true, false
	b.flushConntrack(gone)
	b.log.Info("nftables full sync", "backend", "nftables", "table", b.opts.Table, "services", len(next), "chains", len(rs.Chains), "messages", tx.messages())
	return skipped, nil
}

func (b *Backend) partialSync(ctx context.Context, changes []lb.Change) ([]lb.Skipped, error) {
	var tx tx
	var skipped []lb.Skipped
	var gone []goneEndpoint
	next := map[string]*lb.Service{}
	delta := map[spreadKey]int{}
	for _, c := range changes {
		newO := renderService(c.New, b.opts)
		if newO.skipped != nil {
			skipped = append(skipped, *newO.skipped)
			continue // leave the service as it was
		}
		old := c.Old
		if old != nil && b.applied[old.Key()] == nil {
			old = nil // never programmed here (not exposed, or skipped)
		}
		oldO := renderService(old, b.opts)
		tx.diff(oldO, newO)
		for _, k := range oldO.spreads {
			delta[k]--
		}
		for _, k := range newO.spreads {
			delta[k]++
		}
		gone = append(gone, goneUDP(old, c.New)...)
		if c.New != nil && c.New.Exposed() {
			next[c.Key()] = c.New.Clone()
		} else {
			next[c.Key()] = nil
		}
	}
	spreads := tx.spreads(b.spreads, delta, b.opts)
	if !tx.empty() {
		if err := b.send(ctx, &tx); err != nil {
			return nil, err
		}
	}
	b.spreads = spreads
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

// send writes tx as one netlink batch.
func (b *Backend) send(ctx context.Context, t *tx) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	bt, err := t.marshal(b.table)
	if err != nil {
		return fmt.Errorf("nft table %s: build batch: %w", b.opts.Table, err)
	}
	b.calls.Add(1)
	if err := b.sendBatch(bt); err != nil {
		return fmt.Errorf("nft table %s: transaction of %d messages: %w", b.opts.Table, bt.msgs, err)
	}
	return nil
}

// Cleanup deletes lbd's table, and with it every chain, map and set in it;
// nothing else is touched. It can run any number of times. The next Apply
// is a full sync.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, err := b.dialRead()
	if err != nil {
		return fmt.Errorf("nft cleanup: %w", err)
	}
	b.calls.Add(1)
	tables, err := r.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nft cleanup: list tables: %w", err)
	}
	if slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == b.opts.Table }) {
		msgs, err := libMessages(func(c *nftables.Conn) error { c.DelTable(b.table); return nil })
		if err != nil {
			return fmt.Errorf("nft cleanup: %w", err)
		}
		bt := newBatch(256)
		bt.lib(msgs)
		bt.close()
		b.calls.Add(1)
		if err := b.sendBatch(bt); err != nil {
			return fmt.Errorf("nft cleanup: delete table inet %s: %w", b.opts.Table, err)
		}
	}
	b.synced, b.dirty = false, false
	b.applied = map[string]*lb.Service{}
	return nil
}

// tx is the content of one transaction, built from rendered objects
// without I/O; write turns it into netlink messages.
type tx struct {
	// full: replace the table whole (add it, delete it, add it again).
	full bool
	// In the order write sends them.
	addSets     []Set
	addChains   []Chain // new: created and filled
	fillChains  []Chain // existing: flushed and refilled
	delElements []Element
	addElements []Element
	delChains   []string
	delSets     []string
}

func fullTx(rs Ruleset) *tx {
	return &tx{full: true, addSets: rs.Sets, addChains: rs.Chains, addElements: rs.Elements}
}

func (t *tx) empty() bool {
	return !t.full && len(t.addSets)+len(t.addChains)+len(t.fillChains)+len(t.delElements)+len(t.addElements)+len(t.delChains)+len(t.delSets) == 0
}

// messages estimates the netlink messages of t.
func (t *tx) messages() int {
	n := 3 + len(t.addSets) + len(t.delSets) + 2*len(t.delChains) + (len(t.addElements)+len(t.delElements))/elementsPerMessage + 4
	for _, c := range slices.Concat(t.addChains, t.fillChains) {
		n += 1 + len(c.Rules)
	}
	return n
}

// spreads adds to t the spread chains and endpoints maps whose count of
// service ports goes from zero in use to more by delta, and deletes those
// whose count returns to zero (after the service chains that may go to
// them, and after the elements), and returns the counts after t.
func (t *tx) spreads(use, delta map[spreadKey]int, opts Options) map[spreadKey]int {
	after := maps.Clone(use)
	for _, k := range slices.SortedFunc(maps.Keys(delta), spreadKey.less) {
		before := use[k]
		after[k] = before + delta[k]
		switch {
		case before == 0 && after[k] > 0:
			set := k.set()
			n := 0
			for _, e := range t.addElements {
				if e.Set == set.Name {
					n++
				}
			}
			set.Size = setSize(n)
			t.addSets = append(t.addSets, set)
			t.addChains = append(t.addChains, k.spreadChain(opts))
		case before > 0 && after[k] == 0:
			t.delChains = append(t.delChains, k.chain())
			t.delSets = append(t.delSets, k.mapName())
		}
		if after[k] == 0 {
			delete(after, k)
		}
	}
	return after
}

// diff adds to t what turns old's objects into new's: chains whose rules
// changed are flushed and refilled, vanished ones deleted; only the
// elements and sets that differ are added or deleted.
func (t *tx) diff(old, new serviceObjects) {
	oldChains := map[string]Chain{}
	for _, c := range old.chains {
		oldChains[c.Name] = c
	}
	newChains := map[string]bool{}
	for _, c := range new.chains {
		newChains[c.Name] = true
		o, ok := oldChains[c.Name]
		switch {
		case !ok:
			t.addChains = append(t.addChains, c)
		case !slices.EqualFunc(o.Rules, c.Rules, func(a, b Rule) bool { return a.Text == b.Text }):
			t.fillChains = append(t.fillChains, c)
		}
	}
	for _, c := range old.chains {
		if !newChains[c.Name] {
			t.delChains = append(t.delChains, c.Name)
		}
	}
	oldSets := map[string]bool{}
	for _, s := range old.sets {
		oldSets[s.Name] = true
	}
	newSets := map[string]bool{}
	for _, s := range new.sets {
		newSets[s.Name] = true
		if !oldSets[s.Name] {
			t.addSets = append(t.addSets, s)
		}
	}
	for _, s := range old.sets {
		if !newSets[s.Name] {
			t.delSets = append(t.delSets, s.Name)
		}
	}
	oldElems := map[string]Element{}
	for _, e := range old.elements {
		oldElems[e.key()] = e
	}
	newElems := map[string]Element{}
	for _, e := range new.elements {
		newElems[e.key()] = e
	}
	for _, e := range old.elements {
		if n, ok := newElems[e.key()]; !ok || !n.sameValue(e) {
			t.delElements = append(t.delElements, e)
		}
	}
	for _, e := range new.elements {
		if o, ok := oldElems[e.key()]; !ok || !o.sameValue(e) {
			t.addElements = append(t.addElements, e)
		}
	}
}

// elementsPerMessage bounds the elements in one netlink message: the
// element list is one attribute, whose length is 16 bits.
const elementsPerMessage = 512

// marshal turns t into one batch. Order matters within the transaction:
// sets and chains exist before the rules and elements that name them,
// and a chain or set is deleted only after what referred to it is gone.
// The endpoints maps are filled after the rules that look them up: the
// kernel checks each element against each rule bound to the map either
// way, and measured, after was half the kernel time of before.
func (t *tx) marshal(table *nftables.Table) (*batch, error) {
	rules := 0
	for _, ch := range slices.Concat(t.addChains, t.fillChains) {
		rules += len(ch.Rules)
	}
	// About what a rule and an element of a full program take; more
	// grows the buffer.
	b := newBatch(4096 + 384*rules + 64*(len(t.addElements)+len(t.delElements)))
	head, err := libMessages(func(c *nftables.Conn) error {
		if t.full {
			// Adding first makes the delete valid when the table is absent.
			c.AddTable(table)
			c.DelTable(table)
			c.AddTable(table)
		}
		for _, s := range t.addSets {
			if err := c.AddSet(nfSet(s, table), nil); err != nil {
				return fmt.Errorf("set %s: %w", s.Name, err)
			}
		}
		for _, ch := range t.addChains {
			c.AddChain(nfChain(ch, table))
		}
		for _, ch := range t.fillChains {
			c.FlushChain(&nftables.Chain{Name: ch.Name, Table: table})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.lib(head)
	for _, ch := range slices.Concat(t.addChains, t.fillChains) {
		for _, r := range ch.Rules {
			if err := b.rule(table, ch.Name, r); err != nil {
				return nil, fmt.Errorf("chain %s: %w", ch.Name, err)
			}
		}
	}
	b.exprs = nil
	for _, op := range []struct {
		elems []Element
		del   bool
	}{{t.delElements, true}, {t.addElements, false}} {
		// By set, keeping the order of first appearance.
		bySet := map[string][]int32{}
		var order []string
		for i, e := range op.elems {
			if _, ok := bySet[e.Set]; !ok {
				order = append(order, e.Set)
			}
			bySet[e.Set] = append(bySet[e.Set], int32(i))
		}
		for _, name := range order {
			for chunk := range slices.Chunk(bySet[name], elementsPerMessage) {
				b.elements(table, name, op.elems, chunk, op.del)
			}
		}
	}
	tail, err := libMessages(func(c *nftables.Conn) error {
		for _, name := range t.delChains {
			ch := &nftables.Chain{Name: name, Table: table}
			c.FlushChain(ch)
			c.DelChain(ch)
		}
		for _, name := range t.delSets {
			c.DelSet(&nftables.Set{Table: table, Name: name})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.lib(tail)
	b.close()
	return b, b.err
}

func nfSet(s Set, table *nftables.Table) *nftables.Set {
	addr := nftables.TypeIPAddr
	if s.family == ipv6 {
		addr = nftables.TypeIP6Addr
	}
	ns := &nftables.Set{Table: table, Name: s.Name, KeyType: addr}
	if s.concat {
		ns.KeyType = nftables.MustConcatSetType(addr, nftables.TypeInetProto, nftables.TypeInetService)
		ns.Concatenation = true
	}
	if s.Map {
		ns.IsMap, ns.DataType = true, nftables.TypeVerdict
	}
	if s.Data != "" {
		addr := nftables.TypeIPAddr
		if s.family == ipv6 {
			addr = nftables.TypeIP6Addr
		}
		ns.KeyType = nftables.MustConcatSetType(addr, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark)
		ns.IsMap, ns.DataType = true, nftables.MustConcatSetType(addr, nftables.TypeInetService)
	}
	if s.Timeout > 0 {
		ns.HasTimeout, ns.Dynamic, ns.Timeout = true, true, s.Timeout
	}
	ns.Size = s.Size
	return ns
}

func nfChain(c Chain, table *nftables.Table) *nftables.Chain {
	nc := &nftables.Chain{Name: c.Name, Table: table}
	if h := c.Hook; h != nil {
		nc.Type = nftables.ChainTypeFilter
		if h.Type == "nat" {
			nc.Type = nftables.ChainTypeNAT
		}
		hooks := map[string]*nftables.ChainHook{
			"prerouting": nftables.ChainHookPrerouting, "input": nftables.ChainHookInput,
			"forward": nftables.ChainHookForward, "output": nftables.ChainHookOutput,
			"postrouting": nftables.ChainHookPostrouting,
		}
		nc.Hooknum = hooks[h.Hook]
		nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(h.Priority))
		accept := nftables.ChainPolicyAccept
		nc.Policy = &accept
	}
	return nc
}

func nfElement(e Element) nftables.SetElement {
	if e.endpoint() {
		return nftables.SetElement{Key: endpointKeyBytes(e.Addr, e.Proto, e.Port, e.Index), Val: endpointBytes(e.To)}
	}
	el := nftables.SetElement{Key: serviceKeyBytes(e.Addr, e.Proto, e.Port)}
	if e.Chain != "" {
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.Chain}
	}
	return el
}
