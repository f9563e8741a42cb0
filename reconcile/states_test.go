package reconcile

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// stateStore is a store that also keeps the service states.
type stateStore struct {
	store
	states []lb.ServiceState
}

func (s *stateStore) States(context.Context, string) ([]lb.ServiceState, error) { return s.states, nil }
func (s *stateStore) SaveStates(_ context.Context, _ string, states []lb.ServiceState) error {
	s.states = states
	return nil
}

func stateLines(states []lb.ServiceState) []string {
	var out []string
	for _, st := range states {
		line := st.Key + " " + st.State
		if st.Reason != "" {
			line += ": " + st.Reason
		}
		out = append(out, line)
	}
	return out
}

func changeLines(p *Plan) []string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, string(c.Kind)+" "+c.Key())
	}
	return out
}

// A service the backend skips is stored as skipped, never as applied; the
// next plan expects the skip instead of proposing its create forever, and
// proposes it again once its spec changes.
func TestSkippedServiceState(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	a2 := svc("default", "a", "192.168.121.201", "10.246.0.2")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	hidden := svc("default", "hidden", "", "10.246.0.6")
	st := &stateStore{}
	src := &source{svcs: []lb.Service{a, b, hidden}}
	be := &backend{skip: []lb.Skipped{{Key: "default/a", Reason: "cannot bind 192.168.121.201:80"}}}
	r := New(src, be, st, nil, Options{MaxDelete: 0.5})
	res, err := r.Sync(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"default/a skipped: cannot bind 192.168.121.201:80", "default/b programmed", "default/hidden unexposed"}
	if d := cmp.Diff(want, stateLines(res.States)); d != "" {
		t.Errorf("states (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want, stateLines(st.states)); d != "" {
		t.Errorf("stored states (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"default/b=10.246.0.3:80", "default/hidden=10.246.0.6:80"}, keys(st.applied)); d != "" {
		t.Errorf("applied (-want +got):\n%s", d)
	}

	p, err := r.Plan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() || len(p.Skipped) != 1 || p.Skipped[0].Key != "default/a" || p.Skipped[0].Reason != "cannot bind 192.168.121.201:80" {
		t.Errorf("plan of the same spec: changes %v, skipped %v; want none and default/a skipped", changeLines(p), p.Skipped)
	}
	if p.Unchanged != 2 {
		t.Errorf("plan unchanged = %d, want 2 (b and hidden)", p.Unchanged)
	}

	src.svcs = []lb.Service{a2, b, hidden}
	p, err = r.Plan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"create default/a"}, changeLines(p)); d != "" || len(p.Skipped) != 0 {
		t.Errorf("plan of a changed spec: changes (-want +got):\n%s skipped %v", d, p.Skipped)
	}
}

// A newcomer that wins an address only to be skipped by the backend does
// not keep the address from the other claimant: it is not served.
func TestConflictWithSkippedService(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	b := svc("default", "b", "192.168.121.201", "10.246.0.2")
	st := &stateStore{}
	be := &backend{skip: []lb.Skipped{{Key: "default/a", Reason: "udp only"}}}
	r := New(&source{svcs: []lb.Service{a, b}}, be, st, nil, Options{MaxDelete: 0.5})
	res, err := r.Sync(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"default/a skipped: udp only",
		"default/b rejected: spec.externalIPs: 192.168.121.201:80/TCP is also claimed by default/a, first by namespace/name",
	}
	if d := cmp.Diff(want, stateLines(res.States)); d != "" {
		t.Errorf("first pass states (-want +got):\n%s", d)
	}
	if len(st.applied) != 0 {
		t.Errorf("applied = %v, want nothing: a was skipped, b rejected", keys(st.applied))
	}

	res, err = r.Sync(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"default/a rejected: spec.externalIPs: 192.168.121.201:80/TCP is also claimed by default/b, first by namespace/name",
		"default/b programmed",
	}
	if d := cmp.Diff(want, stateLines(res.States)); d != "" {
		t.Errorf("second pass states (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"default/b=10.246.0.2:80"}, keys(st.applied)); d != "" {
		t.Errorf("applied (-want +got):\n%s", d)
	}
	// Now b serves the address, and says so.
	res, err = r.Sync(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := stateLines(res.States)[0]; got != "default/a rejected: spec.externalIPs: 192.168.121.201:80/TCP is already served by default/b" {
		t.Errorf("third pass: %s", got)
	}
}

func TestStatesOfEveryKind(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	a2 := svc("default", "a", "192.168.121.201", "10.246.0.2")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	c := svc("default", "c", "192.168.121.203", "10.246.0.4")
	d := svc("default", "d", "192.168.121.204", "10.246.0.5")
	st := &stateStore{store: store{applied: []lb.Service{a, b, c}}}
	src := &source{svcs: []lb.Service{a2, b}, rejected: []*lb.InvalidServiceError{{Namespace: "default", Name: "bad", Field: "spec.ports[0].port", Reason: "0"}}}
	src.svcs = append(src.svcs, d)
	r := New(src, &backend{}, st, nil, Options{MaxDelete: 0, Routes: routes{"default/a": "routes via eth0"}})
	res, err := r.Sync(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"default/a unroutable: routes via eth0", "default/b programmed", "default/bad rejected: spec.ports[0].port: 0", "default/c held", "default/d programmed"}
	got := stateLines(res.States)
	if len(got) == 5 && len(got[3]) > len("default/c held") {
		got[3] = got[3][:len("default/c held")] // the reason is TestGuard's
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("states (-want +got):\n%s", d)
	}
}
