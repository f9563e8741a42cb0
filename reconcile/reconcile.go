package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/lbd/lbd/lb"
)

// DefaultMaxDelete is the share of exposed services one sync may delete
// without --force.
const DefaultMaxDelete = 0.5

// DefaultMaxDeleteWindow is how long a deletion counts against the
// max-delete budget of later passes.
const DefaultMaxDeleteWindow = 10 * time.Minute

// Options tune the reconciler's guards.
type Options struct {
	// MaxDelete is the share (0..1) of the exposed services that may stop
	// being served (deleted, unexposed or left without a ready endpoint)
	// within MaxDeleteWindow. The budget is max(1, floor(MaxDelete*N)),
	// where N counts the exposed, ready services applied now plus those
	// that went within the window; 0 allows no deletion. An empty
	// discovery (no service at all) while services are applied allows
	// none either: it is what a broken master answers. Deletions beyond
	// the budget are held back: those services keep their applied state,
	// are listed in Plan.Held, and everything else applies. The command
	// line defaults it to DefaultMaxDelete.
	MaxDelete float64
	// MaxDeleteWindow is how long a deletion counts against the budget of
	// later passes, so that losing services over several passes meets the
	// same limit as losing them at once. 0 forgets each pass's deletions.
	// It needs a Store that is also a DeleteLog.
	MaxDeleteWindow time.Duration
	// Force lets every deletion through.
	Force bool
	// AllowDelete names services (namespace/name) whose deletion this
	// pass lets through whatever the budget (lbd apply --allow-delete).
	AllowDelete []string
	// Routes, when set, is asked before any created or updated service is
	// programmed; a service that fails keeps its previous state.
	Routes PodRoutes
	// Addresses, when set, decides the addresses lbd serves (the pools):
	// spec.externalIPs outside them are not served, and LoadBalancer
	// services of class "" or LBClass get pool addresses. It needs a
	// Store that is also an AddressStore.
	Addresses Addresses
	// LBClass is the spec.loadBalancerClass lbd answers to besides none.
	LBClass string
	// Owner, when set, puts the served addresses on the LB's interface.
	Owner AddressOwner
	// Status, when set, writes status.loadBalancer.ingress back; IPMode
	// is the ipMode written with each address ("VIP" or "Proxy").
	Status StatusWriter
	IPMode string
	// Follower, when set and true, says this LB is the backup of an HA
	// pair right now: it serves exactly the addresses the services'
	// status shows (written by the master), allocates none of its own
	// and writes no status.
	Follower func() bool
	// Step, when set, is called with the name of each step of a pass as
	// it is reached (see Steps). lbd's release binary leaves it nil; the
	// fault-injection build kills the process there, to prove that every
	// crash point heals.
	Step func(name string)
}

// Reconciler computes plans and drives one backend. It is not safe for
// concurrent use; callers serialize syncs (the store's lock does this
// across processes).
type Reconciler struct {
	src     Source
	backend Backend
	store   Store
	log     *slog.Logger
	opts    Options
	now     func() time.Time
}

// New returns a Reconciler. log may be nil.
func New(src Source, backend Backend, store Store, log *slog.Logger, opts Options) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{src: src, backend: backend, store: store, log: log, opts: opts, now: time.Now}
}

// Steps are the points of a pass that Options.Step reports, in order:
// after discovery, after the allocations and deletion memory are
// recorded, after new addresses went on the interface, after the backend
// applied (before the store commits), after the commit, after old
// addresses came off, and after the status write.
var Steps = []string{"discovered", "recorded", "addresses-added", "applied", "committed", "addresses-removed", "status-written"}

// step reports a step of the pass to Options.Step.
func (r *Reconciler) step(name string) {
	if r.opts.Step != nil {
		r.opts.Step(name)
	}
}

// Plan is what one sync would do.
type Plan struct {
	// Changes are the creates, updates and deletes, sorted by service.
	Changes []lb.Change
	// Desired is what the backend serves after the sync: every discovered
	// service, with the previous state kept for rejected and unroutable
	// ones.
	Desired []lb.Service
	// Unchanged counts the services that need nothing.
	Unchanged int
	// Rejected are discovered services that failed validation. A rejected
	// service keeps its applied state; it is neither updated nor deleted.
	Rejected []*lb.InvalidServiceError
	// Unroutable are services whose pods the LB cannot reach; each keeps
	// its applied state.
	Unroutable []lb.Skipped
	// Skipped are the creates and updates that Plan leaves out because
	// the backend skipped the same desired spec in the last pass, with its
	// reason: a sync tries them again, but they are not pending changes.
	// Sync never fills it.
	Skipped []lb.Skipped
	// Held are the deletions the max-delete guard held back, sorted: each
	// service keeps its applied state, and Reason says why and which
	// command releases it.
	Held []lb.Skipped
	// Budget is how many exposed services may stop being served within
	// the window, and Spent how many of them already went in earlier
	// passes. Both are 0 when the plan deletes nothing.
	Budget, Spent int
	// Drift lists differences between the data plane and the applied state
	// found by a full sync. When not empty, Changes rewrites every service.
	Drift []string
	// Addresses is the verdict on every address of every service (with
	// Options.Addresses): where it comes from, served, pending or
	// rejected, and why.
	Addresses []lb.AddressState
	// Allocations are the pool allocations after this plan.
	Allocations []lb.Allocation
	// StatusWrites are the status.loadBalancer.ingress changes the plan
	// makes once applied.
	StatusWrites []lb.StatusWrite
	// routeCheck is the time the pod-route check took.
	routeCheck time.Duration
	// admission is the pools' verdict, kept for the status writes.
	admission *admission
	// prevAllocations are the allocations before this plan.
	prevAllocations []lb.Allocation
	// deleted are the exposed services this plan stops serving, for the
	// deletion log.
	deleted []string
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

// Count returns the number of changes of kind k.
func (p *Plan) Count(k lb.ChangeKind) int {
	n := 0
	for _, c := range p.Changes {
		if c.Kind == k {
			n++
		}
	}
	return n
}

// ready reports whether any port of s has a ready endpoint.
func ready(s *lb.Service) bool {
	for _, p := range s.Ports {
		for _, e := range p.Endpoints {
			if e.Ready {
				return true
			}
		}
	}
	return false
}

// Plan discovers the cluster and compares it with what the backend last
// applied. It changes nothing.
func (r *Reconciler) Plan(ctx context.Context) (*Plan, error) {
	discovered, rejected, err := r.src.Discover(ctx)
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	applied, err := r.store.Applied(ctx, r.backend.Name())
	if err != nil {
		return nil, fmt.Errorf("load applied state: %w", err)
	}
	prev, err := r.allocations(ctx)
	if err != nil {
		return nil, err
	}
	recent, err := r.recentDeletions(ctx)
	if err != nil {
		return nil, err
	}
	last, err := r.lastStates(ctx)
	if err != nil {
		return nil, err
	}
	p := r.plan(applied, discovered, rejected, prev, recent, skippedBefore(last))
	p.Changes, p.Skipped = expectSkips(p.Changes, last)
	p.Addresses = finalReport(p.Addresses, p.Desired)
	p.StatusWrites = r.statusWrites(p.admission, prev, p.Desired)
	return p, nil
}

// addressStore returns the store as an AddressStore when the pools are
// in use; nil without pools.
func (r *Reconciler) addressStore() (AddressStore, error) {
	if r.opts.Addresses == nil {
		return nil, nil
	}
	as, ok := r.store.(AddressStore)
	if !ok {
		return nil, errors.New("address pools need a store that keeps allocations")
	}
	return as, nil
}

// allocations loads the previous pass's pool allocations; none without
// pools.
func (r *Reconciler) allocations(ctx context.Context) ([]lb.Allocation, error) {
	as, err := r.addressStore()
	if as == nil || err != nil {
		return nil, err
	}
	prev, err := as.Allocations(ctx)
	if err != nil {
		return nil, fmt.Errorf("load allocations: %w", err)
	}
	return prev, nil
}

// recentDeletions returns the deletions inside the window, by service;
// none without a window or a DeleteLog.
func (r *Reconciler) recentDeletions(ctx context.Context) (map[string]time.Time, error) {
	dl, ok := r.store.(DeleteLog)
	if !ok || r.opts.MaxDeleteWindow <= 0 {
		return nil, nil
	}
	recent, err := dl.Deletions(ctx, r.backend.Name(), r.now().Add(-r.opts.MaxDeleteWindow))
	if err != nil {
		return nil, fmt.Errorf("load recent deletions: %w", err)
	}
	return recent, nil
}

// lastStates returns the backend's service states of the last pass; none
// without a StateStore.
func (r *Reconciler) lastStates(ctx context.Context) ([]lb.ServiceState, error) {
	ss, ok := r.store.(StateStore)
	if !ok {
		return nil, nil
	}
	last, err := ss.States(ctx, r.backend.Name())
	if err != nil {
		return nil, fmt.Errorf("load service states: %w", err)
	}
	return last, nil
}

// skippedBefore returns the services the backend skipped in the last pass.
func skippedBefore(last []lb.ServiceState) map[string]bool {
	out := map[string]bool{}
	for _, st := range last {
		if st.State == lb.StateSkipped {
			out[st.Key] = true
		}
	}
	return out
}

// expectSkips moves out of changes the creates and updates of a spec the
// backend skipped in the last pass, and returns them as skipped with the
// backend's reason.
func expectSkips(changes []lb.Change, last []lb.ServiceState) ([]lb.Change, []lb.Skipped) {
	skipped := map[string]lb.ServiceState{}
	for _, st := range last {
		if st.State == lb.StateSkipped && st.Spec != "" {
			skipped[st.Key] = st
		}
	}
	if len(skipped) == 0 {
		return changes, nil
	}
	var kept []lb.Change
	var out []lb.Skipped
	for _, c := range changes {
		if st, ok := skipped[c.Key()]; ok && c.New != nil && specHash(c.New) == st.Spec {
			out = append(out, lb.Skipped{Key: c.Key(), Reason: st.Reason})
			continue
		}
		kept = append(kept, c)
	}
	return kept, out
}

// specHash identifies a desired spec: a hash of its JSON form, which is
// canonical for a normalized service.
func specHash(s *lb.Service) string {
	b, err := json.Marshal(s)
	if err != nil {
		return ""
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:12])
}

// states returns what the backend made of every service in a pass that
// applied p and in which it skipped skipped.
func states(p *Plan, skipped []lb.Skipped) []lb.ServiceState {
	by := map[string]lb.ServiceState{}
	set := func(key, state, reason, spec string) {
		if _, ok := by[key]; !ok {
			by[key] = lb.ServiceState{Key: key, State: state, Reason: reason, Spec: spec}
		}
	}
	desired := map[string]*lb.Service{}
	for i := range p.Desired {
		desired[p.Desired[i].Key()] = &p.Desired[i]
	}
	// The first state set wins: the reason a change did not land comes
	// before what the backend made of the state kept instead.
	for _, e := range p.Rejected {
		set(e.Namespace+"/"+e.Name, lb.StateRejected, e.Field+": "+e.Reason, "")
	}
	for _, s := range p.Unroutable {
		set(s.Key, lb.StateUnroutable, s.Reason, "")
	}
	for _, s := range p.Held {
		set(s.Key, lb.StateHeld, s.Reason, "")
	}
	for _, s := range skipped {
		spec := ""
		if d := desired[s.Key]; d != nil {
			spec = specHash(d)
		}
		set(s.Key, lb.StateSkipped, s.Reason, spec)
	}
	for _, s := range p.Desired {
		if s.Exposed() {
			set(s.Key(), lb.StateProgrammed, "", "")
		} else {
			set(s.Key(), lb.StateUnexposed, "", "")
		}
	}
	out := make([]lb.ServiceState, 0, len(by))
	for _, st := range by {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b lb.ServiceState) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// plan builds the Plan from the applied state and a discovery result.
// recent are the deletions inside the max-delete window; skipped are the
// services the backend skipped in the last pass, which lose an address
// conflict to any other newcomer.
func (r *Reconciler) plan(applied, discovered []lb.Service, rejected []*lb.InvalidServiceError, prev []lb.Allocation, recent map[string]time.Time, skipped map[string]bool) *Plan {
	empty := len(discovered) == 0
	adm := r.admit(discovered, rejected, prev)
	discovered = adm.services
	p := &Plan{Rejected: rejected, admission: adm, Addresses: adm.report, Allocations: adm.allocations, prevAllocations: prev}
	old := make(map[string]*lb.Service, len(applied))
	for i := range applied {
		old[applied[i].Key()] = &applied[i]
	}
	// Keep the applied state of services the cluster sent us broken.
	keep := map[string]bool{}
	for _, e := range rejected {
		keep[e.Namespace+"/"+e.Name] = true
	}
	p.Desired = make([]lb.Service, 0, len(discovered)+len(keep))
	for _, s := range discovered {
		if !keep[s.Key()] {
			p.Desired = append(p.Desired, s)
		}
	}
	for k := range keep {
		if o, ok := old[k]; ok {
			p.Desired = append(p.Desired, *o)
		}
	}
	// A service whose pods are unreachable keeps its applied state.
	if r.opts.Routes != nil {
		for i := 0; i < len(p.Desired); i++ {
			s := &p.Desired[i]
			o := old[s.Key()]
			if !s.Exposed() || (o != nil && o.Equal(s)) {
				continue
			}
			t0 := r.now()
			err := r.opts.Routes.Check(s)
			p.routeCheck += r.now().Sub(t0)
			if err != nil {
				p.Unroutable = append(p.Unroutable, lb.Skipped{Key: s.Key(), Reason: err.Error()})
				if o != nil {
					p.Desired[i] = *o
				} else {
					p.Desired = append(p.Desired[:i], p.Desired[i+1:]...)
					i--
				}
			}
		}
	}
	reverted := map[string]bool{}
	resolveConflicts(p, old, skipped, reverted)
	p.Changes = Diff(applied, p.Desired)
	if r.guard(p, old, empty, recent) {
		// Held services are back at their applied state, which may claim
		// an address a newcomer took meanwhile: the applied owner wins.
		resolveConflicts(p, old, skipped, reverted)
		p.Changes = Diff(applied, p.Desired)
	}
	p.Unchanged = len(p.Desired) - p.Count(lb.Create) - p.Count(lb.Update)
	for _, c := range p.Changes {
		if stopsServing(c) {
			p.deleted = append(p.deleted, c.Key())
		}
	}
	return p
}

// stopsServing reports whether c takes an exposed service out of service:
// it goes, stops being exposed, or loses its last ready endpoint. All
// three count against MaxDelete.
func stopsServing(c lb.Change) bool {
	return c.Old != nil && c.Old.Exposed() && ready(c.Old) && (c.New == nil || !c.New.Exposed() || !ready(c.New))
}

// guard holds back the deletions in p.Changes beyond the max-delete
// budget: each held service gets its applied state back in p.Desired and
// an entry in p.Held. It reports whether it held anything.
func (r *Reconciler) guard(p *Plan, old map[string]*lb.Service, empty bool, recent map[string]time.Time) bool {
	var going []string
	for _, c := range p.Changes {
		if stopsServing(c) {
			going = append(going, c.Key())
		}
	}
	if len(going) == 0 || r.opts.Force {
		return false
	}
	exposed := 0
	serving := map[string]bool{}
	for k, o := range old {
		if o.Exposed() && ready(o) {
			exposed++
			serving[k] = true
		}
	}
	// A recent deletion spends budget unless the service is back.
	for k := range recent {
		if !serving[k] {
			p.Spent++
		}
	}
	if r.opts.MaxDelete > 0 {
		p.Budget = max(1, int(r.opts.MaxDelete*float64(exposed+p.Spent)))
	}
	within := "in one pass"
	if r.opts.MaxDeleteWindow > 0 {
		within = "within " + r.opts.MaxDeleteWindow.String()
	}
	why := fmt.Sprintf("the guard allows %d of %d exposed services to stop serving %s (--max-delete %.0f%%), %d already went",
		p.Budget, exposed+p.Spent, within, r.opts.MaxDelete*100, p.Spent)
	if empty {
		p.Budget = 0
		why = "discovery returned no service at all, as a broken master does"
	}
	allow := map[string]bool{}
	for _, k := range r.opts.AllowDelete {
		allow[k] = true
	}
	left := p.Budget - p.Spent
	for _, k := range going {
		switch {
		case allow[k]:
		case left > 0:
			left--
		default:
			p.Held = append(p.Held, lb.Skipped{Key: k,
				Reason: fmt.Sprintf("%s; release with lbd apply --allow-delete %s, or --force", why, k)})
		}
	}
	if len(p.Held) == 0 {
		return false
	}
	held := map[string]bool{}
	for _, h := range p.Held {
		held[h.Key] = true
	}
	kept := p.Desired[:0]
	for _, s := range p.Desired {
		if !held[s.Key()] {
			kept = append(kept, s)
		}
	}
	p.Desired = kept
	for _, h := range p.Held {
		p.Desired = append(p.Desired, *old[h.Key])
	}
	lb.SortServices(p.Desired)
	return true
}

// resolveConflicts drops from p.Desired the services that claim an
// address, port and protocol another one serves, adds them to p.Rejected,
// and puts back their applied state. reverted remembers the services
// already put back, across calls.
func resolveConflicts(p *Plan, old map[string]*lb.Service, skipped, reverted map[string]bool) {
	// Two services must never claim one address, port and protocol. The
	// check runs on the final set, kept states included; a service that
	// loses keeps its applied state too. Applied states never clash among
	// themselves and their owners win, so the second round finds nothing
	// new; the bound is only a guard.
	lb.SortServices(p.Desired)
	for round := 0; round < 3; round++ {
		var clashes []*lb.InvalidServiceError
		p.Desired, clashes = dropConflicts(old, p.Desired, skipped)
		if len(clashes) == 0 {
			break
		}
		p.Rejected = append(p.Rejected, clashes...)
		for _, e := range clashes {
			k := e.Namespace + "/" + e.Name
			if o, ok := old[k]; ok && !reverted[k] {
				reverted[k] = true
				p.Desired = append(p.Desired, *o)
			}
		}
		lb.SortServices(p.Desired)
	}
	lb.SortServices(p.Desired)
}

// Result reports one sync.
type Result struct {
	Plan    *Plan
	Skipped []lb.Skipped
	Record  lb.SyncRecord
	// States are what the backend made of every service in this pass.
	States []lb.ServiceState
	// Phases is how long each phase of the pass took, in pass order:
	// discover (SSH and kubectl), parse, store-read, verify (the drift
	// check of a full pass), plan, route-check, prepare (what comes before
	// the backend's call: deletion and allocation records, addresses),
	// apply, commit, after (addresses and status write). A phase that did
	// not run is absent. Phases may overlap: discover and parse run
	// alongside store-read and verify, so the phases of a pass can add up
	// to more than its Record.Duration; the pass waits for the longer of
	// the two.
	Phases []Phase
}

// Phase is the duration of one phase of a pass.
type Phase struct {
	Name     string
	Duration time.Duration
}

// ParseTimer is implemented by a Source that can tell how much of its
// last Discover went to parsing, so that a pass reports the two apart.
type ParseTimer interface {
	LastParse() time.Duration
}

// phaseClock splits a pass into phases.
type phaseClock struct {
	now    func() time.Time
	last   time.Time
	phases []Phase
}

// mark ends the phase called name at now.
func (c *phaseClock) mark(name string) {
	t := c.now()
	c.phases = append(c.phases, Phase{name, t.Sub(c.last)})
	c.last = t
}

// resume starts the next phase at now, leaving the time since the last
// mark to no phase: the pass waited on work whose phases are counted
// where it ran.
func (c *phaseClock) resume() { c.last = c.now() }

// lead puts phases that ran alongside the ones marked so far at the head
// of the list.
func (c *phaseClock) lead(ps ...Phase) {
	c.phases = append(ps, c.phases...)
}

// split moves d of the last phase into a phase of its own named name,
// placed after it.
func (c *phaseClock) split(name string, d time.Duration) {
	if n := len(c.phases); n > 0 && d > 0 && d <= c.phases[n-1].Duration {
		c.phases[n-1].Duration -= d
		c.phases = append(c.phases, Phase{name, d})
	}
}

// discovered is what one Discover returned, with the time it took and
// the part of it that went to parsing.
type discovered struct {
	svcs        []lb.Service
	rejected    []*lb.InvalidServiceError
	err         error
	took, parse time.Duration
}

// discover runs the source's Discover in a goroutine of its own and
// delivers its result on the channel, which is buffered: the goroutine
// never blocks on it.
func (r *Reconciler) discover(ctx context.Context) <-chan discovered {
	found := make(chan discovered, 1)
	go func() {
		t0 := r.now()
		var d discovered
		d.svcs, d.rejected, d.err = r.src.Discover(ctx)
		d.took = r.now().Sub(t0)
		if pt, ok := r.src.(ParseTimer); ok && d.err == nil {
			d.parse = min(pt.LastParse(), d.took)
		}
		found <- d
	}()
	return found
}

// passState is what a pass reads before it plans, besides discovery: the
// stored state, and the drift the check found.
type passState struct {
	applied []lb.Service
	as      AddressStore
	prev    []lb.Allocation
	recent  map[string]time.Time
	last    []lb.ServiceState
	drift   []string
}

// readState reads the stored state and, on a full pass with something
// applied and a backend that is a Verifier, checks the data plane for
// drift from the applied state. It marks the phases store-read and
// verify on clock. It changes nothing but the backend's own memory of
// drift (a backend that found drift rewrites everything at its next
// Apply).
func (r *Reconciler) readState(ctx context.Context, clock *phaseClock, full bool) (passState, error) {
	var st passState
	var err error
	if st.applied, err = r.store.Applied(ctx, r.backend.Name()); err != nil {
		return st, fmt.Errorf("load applied state: %w", err)
	}
	if st.as, err = r.addressStore(); err != nil {
		return st, err
	}
	if st.prev, err = r.allocations(ctx); err != nil {
		return st, err
	}
	if st.recent, err = r.recentDeletions(ctx); err != nil {
		return st, err
	}
	if st.last, err = r.lastStates(ctx); err != nil {
		return st, err
	}
	clock.mark("store-read")
	// With nothing applied there is nothing to drift from: a first sync
	// writes everything anyway.
	if v, ok := r.backend.(Verifier); ok && full && len(st.applied) > 0 {
		if st.drift, err = v.Verify(ctx, st.applied); err != nil {
			return st, fmt.Errorf("verify %s: %w", r.backend.Name(), err)
		}
		clock.mark("verify")
	}
	return st, nil
}

// Sync runs one pass: discover, plan, guard, apply, commit. Deletions the
// guard holds back are in Result.Plan.Held and the history says "held";
// the rest of the plan applies and the error is nil. With full set,
// a backend that implements Verifier is also checked for drift, and every
// service is rewritten when drift is found. The store reads and the drift
// check run while discovery does (they need only the applied state);
// planning starts once all of them are done. A failed discovery, store
// read or drift check, or a failed apply, changes neither the data plane
// nor the stored state; it is recorded in the sync history and returned
// (a discovery error first when several failed).
func (r *Reconciler) Sync(ctx context.Context, full bool) (*Result, error) {
	start := r.now()
	rec := lb.SyncRecord{Started: start, Backend: r.backend.Name()}
	fail := func(result string, err error) (*Result, error) {
		rec.Result, rec.Err, rec.Duration = result, err.Error(), r.now().Sub(start)
		// The history row is best effort: the sync error is what matters.
		if herr := r.store.RecordSync(context.WithoutCancel(ctx), rec); herr != nil {
			r.log.Error("record sync history", "err", herr)
		}
		return &Result{Record: rec}, err
	}

	clock := &phaseClock{now: r.now, last: r.now()}
	// Discovery mostly waits on SSH and the remote kubectl, so the store
	// reads and the drift check (a read of the kernel) run meanwhile. The
	// pass always waits for discovery, whatever fails, and a discovery
	// error comes first, as if it had run alone.
	found := r.discover(ctx)
	pre, preErr := r.readState(ctx, clock, full)
	d := <-found
	clock.resume()
	head := []Phase{{"discover", d.took - d.parse}}
	if d.parse > 0 {
		head = append(head, Phase{"parse", d.parse})
	}
	clock.lead(head...)
	if d.err != nil {
		return fail("error", fmt.Errorf("discover: %w", d.err))
	}
	if preErr != nil {
		return fail("error", preErr)
	}
	r.step("discovered")
	discovered, rejected := d.svcs, d.rejected
	applied, as, prev := pre.applied, pre.as, pre.prev
	p := r.plan(applied, discovered, rejected, prev, pre.recent, skippedBefore(pre.last))
	clock.mark("plan")
	clock.split("route-check", p.routeCheck)
	res := &Result{Plan: p}
	defer func() { res.Phases = clock.phases }()
	for _, h := range p.Held {
		r.log.Warn("deletion held back by the guard, keeping the last applied state", "service", h.Key,
			"release", "lbd apply --allow-delete "+h.Key+" (or --force)", "reason", h.Reason)
	}
	for _, e := range p.Rejected {
		r.log.Warn("service rejected, keeping its last applied state", "service", e.Namespace+"/"+e.Name, "field", e.Field, "reason", e.Reason)
	}
	for _, s := range p.Unroutable {
		r.log.Warn("service not programmed: pods unreachable", "service", s.Key, "reason", s.Reason)
	}
	for _, st := range p.Addresses {
		switch st.State {
		case lb.AddressRejected:
			r.log.Warn("address not served", "service", st.Key, "address", st.Addr, "origin", st.Origin, "reason", st.Reason)
		case lb.AddressPending:
			r.log.Warn("service pending: no address yet", "service", st.Key, "reason", st.Reason)
		}
	}
	rec.Services = len(p.Desired)
	rec.Created, rec.Updated, rec.Deleted = p.Count(lb.Create), p.Count(lb.Update), p.Count(lb.Delete)
	// Deletions are recorded before they happen, so a crash after the
	// apply cannot reset the budget.
	if dl, ok := r.store.(DeleteLog); ok && len(p.deleted) > 0 && r.opts.MaxDeleteWindow > 0 {
		now := r.now()
		if err := dl.RecordDeletions(ctx, r.backend.Name(), p.deleted, now, now.Add(-r.opts.MaxDeleteWindow)); err != nil {
			return fail("error", fmt.Errorf("record deletions: %w", err))
		}
	}
	// Allocations are decisions: recorded before anything is programmed
	// with them, so a crash after the apply cannot hand them out twice.
	if as != nil && !slices.Equal(p.Allocations, prev) {
		if err := as.SaveAllocations(ctx, p.Allocations); err != nil {
			return fail("error", fmt.Errorf("record allocations: %w", err))
		}
	}

	r.step("recorded")

	if drift := pre.drift; len(drift) > 0 {
		r.log.Warn("data plane drifted from the applied state; rewriting every service", "backend", r.backend.Name(), "differences", len(drift), "first", drift[0])
		p.Drift = drift
		p.Changes = rewriteAll(applied, p.Desired, p.Changes)
	}

	// New addresses go on the interface before the backend binds them;
	// old ones come off only after it stopped serving them.
	if r.opts.Owner != nil {
		if err := r.syncOwned(ctx, as, servedAddrs(p.Desired, applied)); err != nil {
			r.log.Error("add service addresses", "err", err)
		}
	}
	r.step("addresses-added")

	stored := applied
	// A noop pass calls no backend: what it skipped last time it skips
	// still (a skipped service is a pending create or update, so a pass
	// with one is never a noop).
	var skipped []lb.Skipped
	var err error
	if p.Empty() {
		rec.Result, rec.Duration = result(p, "noop"), r.now().Sub(start)
		if err := r.store.RecordSync(ctx, rec); err != nil {
			return &Result{Plan: p, Record: rec}, fmt.Errorf("record sync: %w", err)
		}
	} else {
		clock.mark("prepare")
		skipped, err = r.backend.Apply(ctx, p.Desired, p.Changes)
		if err != nil {
			return fail("error", fmt.Errorf("apply %s: %w", r.backend.Name(), err))
		}
		clock.mark("apply")
		r.step("applied")
		res.Skipped = skipped
		stored = keepSkipped(applied, p.Desired, skipped)
		for _, s := range skipped {
			r.log.Warn("service not programmed by backend", "backend", r.backend.Name(), "service", s.Key, "reason", s.Reason)
		}
		rec.Skipped = len(skipped) + len(p.Unroutable) + len(p.Rejected)
		rec.Result, rec.Duration = result(p, "ok"), r.now().Sub(start)
		if err := r.store.Commit(ctx, r.backend.Name(), p.Desired, stored, rec); err != nil {
			// The backend now serves the new state but the store still holds
			// the old one: the next sync sees the difference and re-applies,
			// which is harmless.
			return &Result{Plan: p, Record: rec}, fmt.Errorf("commit: %w", err)
		}
	}
	clock.mark("commit")
	r.step("committed")
	res.Record = rec
	res.States = states(p, skipped)
	if ss, ok := r.store.(StateStore); ok {
		// Best effort: the data plane and the applied state are right; a
		// lost state only makes the next plan propose a skip again.
		if err := ss.SaveStates(ctx, r.backend.Name(), res.States); err != nil {
			r.log.Error("record service states", "err", err)
		}
	}
	r.afterApply(ctx, as, p, stored)
	clock.mark("after")
	return res, nil
}

// afterApply finishes a pass whose backend now serves stored: it takes
// addresses no longer served off the interface, records the address
// report, and writes the status of the LoadBalancer services. Failures
// here are logged: the data plane is already right, and the next pass
// tries again.
func (r *Reconciler) afterApply(ctx context.Context, as AddressStore, p *Plan, stored []lb.Service) {
	if as == nil {
		return
	}
	if r.opts.Owner != nil {
		if err := r.syncOwned(ctx, as, servedAddrs(stored)); err != nil {
			r.log.Error("remove service addresses", "err", err)
		}
	}
	r.step("addresses-removed")
	p.Addresses = finalReport(p.Addresses, stored)
	if err := as.SaveAddressReport(ctx, p.Addresses); err != nil {
		r.log.Error("record address report", "err", err)
	}
	p.StatusWrites = r.statusWrites(p.admission, p.prevAllocations, stored)
	defer r.step("status-written")
	if len(p.StatusWrites) == 0 {
		return
	}
	failed, err := r.opts.Status.WriteStatus(ctx, p.StatusWrites)
	if err != nil {
		r.log.Error("write service status", "services", len(p.StatusWrites), "err", err)
		return
	}
	for _, f := range failed {
		r.log.Warn("service status not written; retried next pass", "service", f.Key, "reason", f.Reason)
	}
	r.log.Info("service status written", "services", len(p.StatusWrites)-len(failed), "failed", len(failed))
}

// rewriteAll turns a plan into one that rewrites every desired service and
// still deletes what is gone, so that a backend repairs drift.
func rewriteAll(applied, desired []lb.Service, changes []lb.Change) []lb.Change {
	old := map[string]*lb.Service{}
	for i := range applied {
		old[applied[i].Key()] = &applied[i]
	}
	planned := map[string]lb.Change{}
	for _, c := range changes {
		planned[c.Key()] = c
	}
	out := make([]lb.Change, 0, len(desired))
	for i := range desired {
		s := &desired[i]
		if c, ok := planned[s.Key()]; ok {
			out = append(out, c)
			continue
		}
		out = append(out, lb.Change{Kind: lb.Update, Old: old[s.Key()], New: s, What: []string{"drift repair"}})
	}
	for _, c := range changes {
		if c.Kind == lb.Delete {
			out = append(out, c)
		}
	}
	return out
}

// keepSkipped returns the state to store as applied: desired, except that
// a service the backend skipped keeps its previous applied entry (or none).
func keepSkipped(applied, desired []lb.Service, skipped []lb.Skipped) []lb.Service {
	if len(skipped) == 0 {
		return desired
	}
	skip := map[string]bool{}
	for _, s := range skipped {
		skip[s.Key] = true
	}
	old := map[string]lb.Service{}
	for _, s := range applied {
		old[s.Key()] = s
	}
	out := make([]lb.Service, 0, len(desired))
	for _, s := range desired {
		k := s.Key()
		if !skip[k] {
			out = append(out, s)
		} else if o, ok := old[k]; ok {
			out = append(out, o)
		}
		delete(old, k)
	}
	// A skipped delete keeps the old entry too.
	for k := range skip {
		if o, ok := old[k]; ok {
			out = append(out, o)
		}
	}
	lb.SortServices(out)
	return out
}

// result is the history's word for a pass that applied p: "held" when
// the guard held deletions back, else done.
func result(p *Plan, done string) string {
	if len(p.Held) > 0 {
		return "held"
	}
	return done
}

// dropConflicts removes from desired every service that claims an external
// address, port and protocol that another one serves, and returns an
// error for each. Who keeps the address is decided without regard to map
// order: a service that already served it (in applied) keeps it; among
// newcomers, the first by namespace/name, except that one the backend
// skipped in the last pass (in skipped) comes after every other. desired
// must be sorted.
func dropConflicts(applied map[string]*lb.Service, desired []lb.Service, skipped map[string]bool) ([]lb.Service, []*lb.InvalidServiceError) {
	type claim struct {
		ip    netip.Addr
		port  uint16
		proto lb.Protocol
	}
	claims := func(s *lb.Service) []claim {
		var out []claim
		for _, ip := range s.ExternalIPs {
			for _, p := range s.Ports {
				out = append(out, claim{ip, p.Port, p.Protocol})
			}
		}
		return out
	}
	owner := map[claim]string{}
	for _, s := range applied {
		for _, c := range claims(s) {
			owner[c] = s.Key()
		}
	}
	taken := map[claim]string{}
	lost := map[string]*lb.InvalidServiceError{}
	// Three rounds: the previous owners first, then the others in order,
	// then those the backend skipped last time.
	for round := 0; round < 3; round++ {
		for i := range desired {
			s := &desired[i]
			if lost[s.Key()] != nil {
				continue
			}
			var mine []claim
			for _, c := range claims(s) {
				switch {
				case owner[c] == s.Key():
					if round == 0 {
						mine = append(mine, c)
					}
				case round == 1 && !skipped[s.Key()], round == 2 && skipped[s.Key()]:
					mine = append(mine, c)
				}
			}
			for _, c := range mine {
				if other, ok := taken[c]; ok && other != s.Key() {
					// Only an applied owner is "served": a newcomer that
					// won may still be skipped by the backend.
					why := fmt.Sprintf("%s:%d/%s is also claimed by %s, first by namespace/name", c.ip, c.port, c.proto, other)
					if owner[c] == other {
						why = fmt.Sprintf("%s:%d/%s is already served by %s", c.ip, c.port, c.proto, other)
					}
					lost[s.Key()] = &lb.InvalidServiceError{Namespace: s.Namespace, Name: s.Name, Field: "spec.externalIPs", Reason: why}
					break
				}
			}
			if lost[s.Key()] == nil {
				for _, c := range mine {
					taken[c] = s.Key()
				}
			}
		}
	}
	if len(lost) == 0 {
		return desired, nil
	}
	var kept []lb.Service
	var errs []*lb.InvalidServiceError
	for _, s := range desired {
		if e := lost[s.Key()]; e != nil {
			errs = append(errs, e)
		} else {
			kept = append(kept, s)
		}
	}
	return kept, errs
}
