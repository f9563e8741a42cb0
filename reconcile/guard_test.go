package reconcile

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// logStore is a store that also keeps the deletion log.
type logStore struct {
	store
	deletions map[string]time.Time
}

func (s *logStore) Deletions(_ context.Context, _ string, since time.Time) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	for k, at := range s.deletions {
		if !at.Before(since) {
			out[k] = at
		}
	}
	return out, nil
}

func (s *logStore) RecordDeletions(_ context.Context, _ string, keys []string, at, forgetBefore time.Time) error {
	if s.deletions == nil {
		s.deletions = map[string]time.Time{}
	}
	for k, t := range s.deletions {
		if t.Before(forgetBefore) {
			delete(s.deletions, k)
		}
	}
	for _, k := range keys {
		s.deletions[k] = at
	}
	return nil
}

func heldKeys(p *Plan) []string {
	var out []string
	for _, h := range p.Held {
		out = append(out, h.Key)
	}
	return out
}

func TestGuardHoldsBackOnlyDeletions(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	a2 := svc("default", "a", "192.168.121.201", "10.246.0.2")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	c := svc("default", "c", "192.168.121.203", "10.246.0.4")
	d := svc("default", "d", "192.168.121.204", "10.246.0.5")
	tests := []struct {
		name        string
		applied     []lb.Service
		discovered  []lb.Service
		opts        Options
		wantHeld    []string
		wantApplied []string
		wantResult  string
	}{
		{
			// Today's code refused the whole plan: a's new endpoint never
			// applied, its traffic kept going to the dead pod.
			name: "the survivor's change applies", applied: []lb.Service{a, b, c}, discovered: []lb.Service{a2},
			opts:        Options{MaxDelete: 0.5},
			wantHeld:    []string{"default/c"},
			wantApplied: []string{"default/a=10.246.0.2:80", "default/c=10.246.0.4:80"}, wantResult: "held",
		},
		{
			name: "the only exposed service may go", applied: []lb.Service{a}, discovered: []lb.Service{svc("default", "other", "")},
			opts:        Options{MaxDelete: 0.5},
			wantApplied: []string{"default/other="}, wantResult: "ok",
		},
		{
			name: "an empty answer is held whatever the budget", applied: []lb.Service{a}, discovered: nil,
			opts:        Options{MaxDelete: 0.5},
			wantHeld:    []string{"default/a"},
			wantApplied: []string{"default/a=10.246.0.1:80"}, wantResult: "held",
		},
		{
			name: "max-delete 0 holds every deletion", applied: []lb.Service{a, b}, discovered: []lb.Service{a},
			opts:        Options{MaxDelete: 0},
			wantHeld:    []string{"default/b"},
			wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}, wantResult: "held",
		},
		{
			name: "allow-delete releases the named one", applied: []lb.Service{a, b, c, d}, discovered: []lb.Service{a},
			opts:        Options{MaxDelete: 0.25, AllowDelete: []string{"default/d"}},
			wantHeld:    []string{"default/c"},
			wantApplied: []string{"default/a=10.246.0.1:80", "default/c=10.246.0.4:80"}, wantResult: "held",
		},
		{
			name: "allow-delete releases an empty answer's", applied: []lb.Service{a, b}, discovered: nil,
			opts:        Options{MaxDelete: 0.5, AllowDelete: []string{"default/a"}},
			wantHeld:    []string{"default/b"},
			wantApplied: []string{"default/b=10.246.0.3:80"}, wantResult: "held",
		},
		{
			name: "force releases all", applied: []lb.Service{a, b}, discovered: nil,
			opts: Options{MaxDelete: 0.5, Force: true}, wantResult: "ok",
		},
		{
			// The held service keeps its address: a newcomer claiming it
			// loses as against any applied owner.
			name: "a held service keeps its address", applied: []lb.Service{a, b}, opts: Options{MaxDelete: 0},
			discovered:  []lb.Service{a, svc("default", "z", "192.168.121.202", "10.246.0.9")},
			wantHeld:    []string{"default/b"},
			wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}, wantResult: "held",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &store{applied: tt.applied}
			r := New(&source{svcs: tt.discovered}, &backend{}, st, nil, tt.opts)
			res, err := r.Sync(t.Context(), false)
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if d := cmp.Diff(tt.wantHeld, heldKeys(res.Plan)); d != "" {
				t.Errorf("held (-want +got):\n%s", d)
			}
			for _, h := range res.Plan.Held {
				if !strings.Contains(h.Reason, "lbd apply --allow-delete "+h.Key) || !strings.Contains(h.Reason, "--force") {
					t.Errorf("held %s: reason %q names no release command", h.Key, h.Reason)
				}
			}
			if d := cmp.Diff(tt.wantApplied, keys(st.applied)); d != "" {
				t.Errorf("stored applied state (-want +got):\n%s", d)
			}
			if res.Record.Result != tt.wantResult {
				t.Errorf("result = %q, want %q", res.Record.Result, tt.wantResult)
			}
		})
	}
}

// Passes a moment apart must not go 4 -> 2 -> 1: the deletions of the
// window share one budget, and it refills once they leave the window.
func TestGuardRemembersDeletionsInTheWindow(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	c := svc("default", "c", "192.168.121.203", "10.246.0.4")
	d := svc("default", "d", "192.168.121.204", "10.246.0.5")
	st := &logStore{store: store{applied: []lb.Service{a, b, c, d}}}
	src := &source{svcs: []lb.Service{a, b}}
	r := New(src, &backend{}, st, nil, Options{MaxDelete: 0.5, MaxDeleteWindow: 10 * time.Minute})
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }

	pass := func(wantHeld []string, wantApplied []string) {
		t.Helper()
		res, err := r.Sync(t.Context(), false)
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if d := cmp.Diff(wantHeld, heldKeys(res.Plan)); d != "" {
			t.Errorf("at %s: held (-want +got):\n%s", now.Format(time.TimeOnly), d)
		}
		if d := cmp.Diff(wantApplied, keys(st.applied)); d != "" {
			t.Errorf("at %s: applied (-want +got):\n%s", now.Format(time.TimeOnly), d)
		}
	}
	pass(nil, []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"})
	now = now.Add(200 * time.Millisecond)
	src.svcs = []lb.Service{a}
	pass([]string{"default/b"}, []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"})
	now = now.Add(11 * time.Minute)
	pass(nil, []string{"default/a=10.246.0.1:80"})
}

// lbd plan reports the same held deletions as a sync would make.
func TestPlanListsHeld(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	r := New(&source{}, &backend{}, &store{applied: []lb.Service{a, b}}, nil, Options{MaxDelete: 0.5})
	p, err := r.Plan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"default/a", "default/b"}, heldKeys(p)); d != "" {
		t.Errorf("held (-want +got):\n%s", d)
	}
	if !p.Empty() {
		t.Errorf("plan changes %v, want none: everything is held", p.Changes)
	}
}
