package report

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/lbd/lbd/lb"
)

// Plan is what lbd plan prints of a reconcile plan: the same fields.
type Plan struct {
	// Backend is the backend the plan is for.
	Backend      string
	Changes      []lb.Change
	Unchanged    int
	Rejected     []*lb.InvalidServiceError
	Unroutable   []lb.Skipped
	Skipped      []lb.Skipped
	Held         []lb.Skipped
	Addresses    []lb.AddressState
	Allocations  []lb.Allocation
	StatusWrites []lb.StatusWrite
}

// count is the number of changes of kind k.
func (p Plan) count(k lb.ChangeKind) int {
	n := 0
	for _, c := range p.Changes {
		if c.Kind == k {
			n++
		}
	}
	return n
}

// WritePlan writes p in format "table" (or ""): one line per change with
// its differences below, then the rejected, unroutable, skipped and held
// services, the refused and waiting addresses, the allocations, the
// status writes and a count; or in format "json".
func WritePlan(w io.Writer, format string, p Plan) error {
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
	if err := checkFormat(format); err != nil {
		return err
	}
	jp := jsonPlan{Backend: p.Backend, Changes: []jsonChange{}, Unchanged: p.Unchanged, Held: p.Held, Skipped: p.Skipped, Addresses: p.Addresses, Allocations: p.Allocations}
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
	if format == "json" {
		return writeJSON(w, jp)
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
		p.count(lb.Create), p.count(lb.Update), p.count(lb.Delete), p.Unchanged)
	if len(p.Held) > 0 {
		fmt.Fprintf(&b, ", %d deletions held back", len(p.Held))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}
