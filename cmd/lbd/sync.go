package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/daemon"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

// sync runs one pass: lock, discover, plan, apply, store. It is what cron
// runs, and lbd apply.
func (a *app) sync(ctx context.Context) (*reconcile.Result, error) {
	closeLog, err := a.openLog()
	if err != nil {
		return nil, err
	}
	defer closeLog()
	env, err := a.setUp(ctx, true)
	if err != nil {
		return nil, err
	}
	defer env.close()

	rec, m := env.reconciler, (*daemon.Metrics)(nil)
	if a.cfg.MetricsFile != "" {
		m = newMetrics(env, time.Hour)
		rec = a.newReconciler(env, m.CountSource(env.source, a.cfg.Backend), m.CountBackend(env.backend, a.cfg.Backend))
	}
	start := time.Now()
	res, err := rec.Sync(ctx, a.cfg.Full)
	env.afterSync(a)(res, err)
	if m != nil {
		if env.ha != nil {
			m.SetHAMaster(!haFollower(env.ha)())
		}
		m.ObserveSync(time.Since(start), res, err)
		if werr := m.WriteTextfile(a.cfg.MetricsFile); werr != nil {
			a.log.Warn("--metrics-textfile not written", "err", werr)
		}
	}
	if err != nil {
		return nil, err
	}
	daemon.LogSync(a.log, res, a.cfg.Full)
	return res, nil
}

// plan prints what a sync would do and changes nothing. It exits 0 when
// nothing would change, 2 when changes are pending, 3 when nothing is
// pending but the guard holds deletions back, and 1 on error.
func (a *app) plan(ctx context.Context) int {
	closeLog, err := a.openLogStderr()
	if err != nil {
		return a.exit(err)
	}
	defer closeLog()
	note, err := a.lastBackendOf(ctx)
	if err != nil {
		return a.exit(err)
	}
	env, err := a.setUp(ctx, false)
	if err != nil {
		return a.exit(err)
	}
	defer env.close()
	p, err := env.reconciler.Plan(ctx)
	if err != nil {
		return a.exit(err)
	}
	if note != "" && a.cfg.Output != "json" {
		fmt.Fprintln(a.stdout, note)
	}
	if err := printPlan(a.stdout, a.cfg.Output, a.cfg.Backend, p); err != nil {
		return a.exit(err)
	}
	switch {
	case !p.Empty():
		return cli.ExitPending
	case len(p.Held) > 0:
		return cli.ExitHeld
	}
	return cli.ExitOK
}

// printPlan writes p as lines a person reads, or as JSON.
func printPlan(w interface{ Write([]byte) (int, error) }, format, backend string, p *reconcile.Plan) error {
	type jsonChange struct {
		Kind    lb.ChangeKind `json:"kind"`
		Service string        `json:"service"`
		What    []string      `json:"what"`
	}
	type jsonStatus struct {
		Service string       `json:"service"`
		Ingress []netip.Addr `json:"ingress"`
	}
	type jsonPlan struct {
		Backend      string            `json:"backend"`
		Changes      []jsonChange      `json:"changes"`
		Unchanged    int               `json:"unchanged"`
		Rejected     []string          `json:"rejected,omitempty"`
		Unroutable   []string          `json:"unroutable,omitempty"`
		Held         []lb.Skipped      `json:"held,omitempty"`
		Skipped      []lb.Skipped      `json:"skipped,omitempty"`
		Addresses    []lb.AddressState `json:"addresses,omitempty"`
		Allocations  []lb.Allocation   `json:"allocations,omitempty"`
		StatusWrites []jsonStatus      `json:"statusWrites,omitempty"`
	}
	jp := jsonPlan{Backend: backend, Changes: []jsonChange{}, Unchanged: p.Unchanged, Held: p.Held, Skipped: p.Skipped, Addresses: p.Addresses, Allocations: p.Allocations}
	for _, w := range p.StatusWrites {
		jp.StatusWrites = append(jp.StatusWrites, jsonStatus{w.Key(), w.Ingress})
	}
	for _, c := range p.Changes {
		jp.Changes = append(jp.Changes, jsonChange{c.Kind, c.Key(), c.What})
	}
	for _, e := range p.Rejected {
		jp.Rejected = append(jp.Rejected, e.Error())
	}
	for _, s := range p.Unroutable {
		jp.Unroutable = append(jp.Unroutable, s.Reason)
	}
	switch format {
	case "json":
		return writeJSON(w, jp)
	case "table", "":
	default:
		return fmt.Errorf("-o %q: want table or json", format)
	}
	var b strings.Builder
	for _, c := range jp.Changes {
		fmt.Fprintf(&b, "%-6s %s\n", c.Kind, c.Service)
		for _, what := range c.What {
			fmt.Fprintf(&b, "         %s\n", what)
		}
	}
	for _, r := range jp.Rejected {
		fmt.Fprintf(&b, "reject %s (keeps its last applied state)\n", r)
	}
	for _, r := range jp.Unroutable {
		fmt.Fprintf(&b, "skip   %s (keeps its last applied state)\n", r)
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(&b, "skip   %s: skipped (%s) by the backend last time with this spec; a sync tries again\n", s.Key, s.Reason)
	}
	for _, h := range p.Held {
		fmt.Fprintf(&b, "hold   %s (keeps its last applied state): %s\n", h.Key, h.Reason)
	}
	for _, st := range p.Addresses {
		switch st.State {
		case lb.AddressRejected:
			fmt.Fprintf(&b, "refuse %s address %s (%s): %s\n", st.Key, addrOrNone(st.Addr), st.Origin, st.Reason)
		case lb.AddressPending:
			fmt.Fprintf(&b, "wait   %s: %s\n", st.Key, st.Reason)
		}
	}
	for _, al := range p.Allocations {
		fmt.Fprintf(&b, "addr   %s %s (%s)\n", al.Key, al.Addr, al.Origin)
	}
	for _, w := range jp.StatusWrites {
		ing := "(cleared)"
		if len(w.Ingress) > 0 {
			ing = lb.AddrsString(w.Ingress)
		}
		fmt.Fprintf(&b, "status %s ingress %s\n", w.Service, ing)
	}
	fmt.Fprintf(&b, "plan: %d to create, %d to update, %d to delete, %d unchanged",
		p.Count(lb.Create), p.Count(lb.Update), p.Count(lb.Delete), p.Unchanged)
	if len(p.Held) > 0 {
		fmt.Fprintf(&b, ", %d deletions held back", len(p.Held))
	}
	b.WriteString("\n")
	_, err := w.Write([]byte(b.String()))
	return err
}

// addrOrNone prints an address, or "-" for a service without one.
func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}
