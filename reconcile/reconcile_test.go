package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// The doubles below stand in for SSH, SQLite and the kernel so that these
// tests exercise the orchestration alone; the real parts are exercised in
// their own packages and in cmd/lbd's end-to-end tests.

type source struct {
	svcs     []lb.Service
	rejected []*lb.InvalidServiceError
	err      error
}

func (s *source) Discover(context.Context) ([]lb.Service, []*lb.InvalidServiceError, error) {
	return s.svcs, s.rejected, s.err
}

type backend struct {
	err     error
	skip    []lb.Skipped
	drift   []string
	calls   int
	changes []lb.Change
}

func (b *backend) Name() string { return "test" }
func (b *backend) Apply(_ context.Context, _ []lb.Service, changes []lb.Change) ([]lb.Skipped, error) {
	b.calls++
	b.changes = changes
	return b.skip, b.err
}
func (b *backend) Verify(context.Context, []lb.Service) ([]string, error) { return b.drift, nil }

type store struct {
	applied []lb.Service
	mapping []lb.Service
	history []lb.SyncRecord
}

func (s *store) Applied(context.Context, string) ([]lb.Service, error) { return s.applied, nil }
func (s *store) Commit(_ context.Context, _ string, mapping, applied []lb.Service, rec lb.SyncRecord) error {
	s.mapping, s.applied = mapping, applied
	s.history = append(s.history, rec)
	return nil
}
func (s *store) RecordSync(_ context.Context, rec lb.SyncRecord) error {
	s.history = append(s.history, rec)
	return nil
}

type routes map[string]string // service key -> failure

func (r routes) Check(s *lb.Service) error {
	if why, bad := r[s.Key()]; bad {
		return errors.New(why)
	}
	return nil
}

func keys(svcs []lb.Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.Key()+"="+s.EndpointsString())
	}
	return out
}

func TestSync(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	a2 := svc("default", "a", "192.168.121.201", "10.246.0.2")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	c := svc("default", "c", "192.168.121.203", "10.246.0.4")
	d := svc("default", "d", "192.168.121.204", "10.246.0.5")
	hidden := svc("default", "hidden", "", "10.246.0.6")
	tests := []struct {
		name        string
		applied     []lb.Service
		src         source
		be          backend
		opts        Options
		full        bool
		wantErr     string // substring; "" = success
		wantApplies int
		wantApplied []string
		wantResult  string
	}{
		{
			name: "first sync creates", src: source{svcs: []lb.Service{a, b, hidden}},
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80", "default/hidden=10.246.0.6:80"}, wantResult: "ok",
		},
		{
			name: "no change calls no backend", applied: []lb.Service{a, b}, src: source{svcs: []lb.Service{a, b}},
			wantApplies: 0, wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}, wantResult: "noop",
		},
		{
			name: "discovery error changes nothing", applied: []lb.Service{a}, src: source{err: errors.New("ssh: connection refused")},
			wantErr: "discover: ssh: connection refused", wantApplied: []string{"default/a=10.246.0.1:80"}, wantResult: "error",
		},
		{
			name: "apply error leaves the store", applied: []lb.Service{a}, src: source{svcs: []lb.Service{a2}}, be: backend{err: errors.New("haproxy -c: bad")},
			wantErr: "apply test: haproxy -c: bad", wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80"}, wantResult: "error",
		},
		{
			name: "empty answer held whole", applied: []lb.Service{a, b, c, d}, src: source{}, opts: Options{MaxDelete: 0.5},
			wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80", "default/c=10.246.0.4:80", "default/d=10.246.0.5:80"}, wantResult: "held",
		},
		{
			name: "half may go", applied: []lb.Service{a, b, c, d}, src: source{svcs: []lb.Service{a, b}}, opts: Options{MaxDelete: 0.5},
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}, wantResult: "ok",
		},
		{
			name: "unexposing counts as delete", applied: []lb.Service{a, b, c}, opts: Options{MaxDelete: 0.4},
			src:         source{svcs: []lb.Service{a, with(b, func(s *lb.Service) { s.ExternalIPs = nil }), with(c, func(s *lb.Service) { s.ExternalIPs = nil })}},
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80", "default/c=10.246.0.4:80"}, wantResult: "held",
		},
		{
			name: "endpoints emptied count as deletes", applied: []lb.Service{a, b, c, d}, opts: Options{MaxDelete: 0.5},
			src: source{svcs: []lb.Service{
				svc("default", "a", "192.168.121.201"), svc("default", "b", "192.168.121.202"),
				svc("default", "c", "192.168.121.203"), d,
			}},
			wantApplies: 1, wantApplied: []string{"default/a=", "default/b=", "default/c=10.246.0.4:80", "default/d=10.246.0.5:80"}, wantResult: "held",
		},
		{
			name: "force", applied: []lb.Service{a, b, c, d}, src: source{}, opts: Options{MaxDelete: 0.5, Force: true},
			wantApplies: 1, wantApplied: nil, wantResult: "ok",
		},
		{
			name: "rejected service keeps its applied state", applied: []lb.Service{a, b},
			src:         source{svcs: []lb.Service{b}, rejected: []*lb.InvalidServiceError{{Namespace: "default", Name: "a", Field: "spec.ports[0].port", Reason: "0"}}},
			wantApplies: 0, wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}, wantResult: "noop",
		},
		{
			name: "unroutable update keeps old, new one waits", applied: []lb.Service{a},
			src:         source{svcs: []lb.Service{a2, b, c}},
			opts:        Options{Routes: routes{"default/a": "routes via eth0", "default/b": "routes via eth0"}},
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80", "default/c=10.246.0.4:80"}, wantResult: "ok",
		},
		{
			name: "backend skip keeps old", applied: []lb.Service{a},
			src: source{svcs: []lb.Service{a2, b}}, be: backend{skip: []lb.Skipped{{Key: "default/a", Reason: "udp"}, {Key: "default/b", Reason: "udp"}}},
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80"}, wantResult: "ok",
		},
		{
			name: "backend skip of a delete keeps the old entry", applied: []lb.Service{a, b}, opts: Options{MaxDelete: 1},
			src: source{svcs: []lb.Service{a}}, be: backend{skip: []lb.Skipped{{Key: "default/b", Reason: "busy"}}},
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}, wantResult: "ok",
		},
		{
			name: "full sync repairs drift", applied: []lb.Service{a, b}, src: source{svcs: []lb.Service{a, b}},
			be: backend{drift: []string{"chain LBD-X missing"}}, full: true,
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}, wantResult: "ok",
		},
		{
			name: "first full sync does not verify", src: source{svcs: []lb.Service{a}},
			be: backend{drift: []string{"nat chain LBD-SERVICES is missing"}}, full: true,
			wantApplies: 1, wantApplied: []string{"default/a=10.246.0.1:80"}, wantResult: "ok",
		},
		{
			name: "full sync without drift is a noop", applied: []lb.Service{a}, src: source{svcs: []lb.Service{a}}, full: true,
			wantApplies: 0, wantApplied: []string{"default/a=10.246.0.1:80"}, wantResult: "noop",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &store{applied: tt.applied}
			be := tt.be
			r := New(&tt.src, &be, st, nil, tt.opts)
			res, err := r.Sync(t.Context(), tt.full)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Sync error = %v, want it to contain %q", err, tt.wantErr)
			}
			if be.calls != tt.wantApplies {
				t.Errorf("backend Apply called %d times, want %d", be.calls, tt.wantApplies)
			}
			if d := cmp.Diff(tt.wantApplied, keys(st.applied)); d != "" {
				t.Errorf("stored applied state (-want +got):\n%s", d)
			}
			if res.Plan != nil && len(res.Plan.Drift) > 0 && len(tt.applied) == 0 {
				t.Errorf("drift %v reported with nothing applied", res.Plan.Drift)
			}
			if len(st.history) != 1 || st.history[0].Result != tt.wantResult || res.Record.Result != tt.wantResult {
				t.Errorf("history = %+v, want one %q record", st.history, tt.wantResult)
			}
		})
	}
}

func TestSyncDriftRewritesEveryService(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	c := svc("default", "c", "192.168.121.203", "10.246.0.4")
	be := &backend{drift: []string{"jump from PREROUTING missing"}}
	st := &store{applied: []lb.Service{a, b}}
	r := New(&source{svcs: []lb.Service{b, c}}, be, st, nil, Options{MaxDelete: 1})
	res, err := r.Sync(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ch := range be.changes {
		got = append(got, string(ch.Kind)+" "+ch.Key())
	}
	want := []string{"update default/b", "create default/c", "delete default/a"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("changes handed to the backend (-want +got):\n%s", d)
	}
	if len(res.Plan.Drift) != 1 {
		t.Errorf("plan drift = %v, want the backend's line", res.Plan.Drift)
	}
}

// TestSyncPhases: a full pass names its drift check as a phase of its own,
// so that the time of a no-change pass is not all "commit".
func TestSyncPhases(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	tests := []struct {
		name    string
		applied []lb.Service
		full    bool
		want    []string
	}{
		{"first pass", nil, true, []string{"discover", "store-read", "plan", "prepare", "apply", "commit", "after"}},
		{"full, no change", []lb.Service{a}, true, []string{"discover", "store-read", "verify", "plan", "commit", "after"}},
		{"not full, no change", []lb.Service{a}, false, []string{"discover", "store-read", "plan", "commit", "after"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(&source{svcs: []lb.Service{a}}, &backend{}, &store{applied: tt.applied}, nil, Options{MaxDelete: 1})
			res, err := r.Sync(t.Context(), tt.full)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range res.Phases {
				got = append(got, p.Name)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("phases (-want +got):\n%s", d)
			}
		})
	}
}

func TestPlanChangesNothing(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	be := &backend{}
	st := &store{}
	p, err := New(&source{svcs: []lb.Service{a}}, be, st, nil, Options{}).Plan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if p.Count(lb.Create) != 1 || be.calls != 0 || len(st.history) != 0 || st.applied != nil {
		t.Errorf("Plan: creates=%d applies=%d history=%d applied=%v; want 1 create and nothing touched",
			p.Count(lb.Create), be.calls, len(st.history), st.applied)
	}
}

func TestConflictingAddresses(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	b := svc("default", "b", "192.168.121.201", "10.246.0.2") // same IP:80/TCP as a
	c := svc("default", "c", "192.168.121.202", "10.246.0.3")
	udp := with(b, func(s *lb.Service) { s.Name = "udp"; s.Ports[0].Protocol = lb.UDP })
	tests := []struct {
		name         string
		applied      []lb.Service
		discovered   []lb.Service
		wantDesired  []string
		wantRejected []string
	}{
		{
			name: "newcomers: first by name wins", discovered: []lb.Service{a, b, c},
			wantDesired:  []string{"default/a=10.246.0.1:80", "default/c=10.246.0.3:80"},
			wantRejected: []string{"service default/b: spec.externalIPs: 192.168.121.201:80/TCP is also claimed by default/a, first by namespace/name"},
		},
		{
			name: "the service already serving keeps it", applied: []lb.Service{b}, discovered: []lb.Service{a, b},
			wantDesired:  []string{"default/b=10.246.0.2:80"},
			wantRejected: []string{"service default/a: spec.externalIPs: 192.168.121.201:80/TCP is already served by default/b"},
		},
		{
			name: "loser keeps its old state", applied: []lb.Service{a, with(b, func(s *lb.Service) { s.ExternalIPs[0] = netip.MustParseAddr("192.168.121.209") })},
			discovered:   []lb.Service{a, b},
			wantDesired:  []string{"default/a=10.246.0.1:80", "default/b=10.246.0.2:80"},
			wantRejected: []string{"service default/b: spec.externalIPs: 192.168.121.201:80/TCP is already served by default/a"},
		},
		{
			name: "other protocol is no conflict", discovered: []lb.Service{a, udp},
			wantDesired: []string{"default/a=10.246.0.1:80", "default/udp=10.246.0.2:80"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(&source{svcs: tt.discovered}, &backend{}, &store{applied: tt.applied}, nil, Options{MaxDelete: 1})
			p, err := r.Plan(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var rej []string
			for _, e := range p.Rejected {
				rej = append(rej, e.Error())
			}
			if d := cmp.Diff(tt.wantDesired, keys(p.Desired)); d != "" {
				t.Errorf("desired (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantRejected, rej); d != "" {
				t.Errorf("rejected (-want +got):\n%s", d)
			}
		})
	}
}

// TestConflictsWithKeptStates: a service that keeps its applied state
// (rejected, or its pods unreachable) still owns its address; a newcomer
// claiming it loses.
func TestConflictsWithKeptStates(t *testing.T) {
	web := svc("a", "web", "192.168.121.201", "10.246.0.1")
	moved := with(web, func(s *lb.Service) { s.ExternalIPs[0] = netip.MustParseAddr("192.168.121.202") })
	evil := svc("b", "evil", "192.168.121.201", "10.246.0.9")
	tests := []struct {
		name     string
		src      source
		routes   routes
		wantKeys []string
	}{
		{
			name:     "rejected keeps its address",
			src:      source{svcs: []lb.Service{evil}, rejected: []*lb.InvalidServiceError{{Namespace: "a", Name: "web", Field: "spec.ports[0].port", Reason: "0"}}},
			wantKeys: []string{"a/web=10.246.0.1:80"},
		},
		{
			name:     "unroutable keeps its address",
			src:      source{svcs: []lb.Service{moved, evil}},
			routes:   routes{"a/web": "routes via eth0"},
			wantKeys: []string{"a/web=10.246.0.1:80"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{MaxDelete: 1}
			if tt.routes != nil {
				opts.Routes = tt.routes
			}
			p, err := New(&tt.src, &backend{}, &store{applied: []lb.Service{web}}, nil, opts).Plan(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.wantKeys, keys(p.Desired)); d != "" {
				t.Errorf("desired (-want +got):\n%s", d)
			}
			if len(p.Desired) == 1 && p.Desired[0].ExternalIPs[0] != web.ExternalIPs[0] {
				t.Errorf("a/web serves %v, want its applied address", p.Desired[0].ExternalIPs)
			}
			found := false
			for _, e := range p.Rejected {
				found = found || (e.Namespace == "b" && strings.Contains(e.Reason, "already served by a/web"))
			}
			if !found {
				t.Errorf("b/evil not rejected for the clash: %v", p.Rejected)
			}
		})
	}
}

// TestSteps: a pass reports every step in Steps, in order, once; a
// noop pass skips only "applied".
func TestSteps(t *testing.T) {
	var got []string
	st := &addrStore{}
	src := &source{svcs: []lb.Service{svc("default", "a", "192.168.121.240", "10.246.0.1")}}
	r := New(src, &backend{}, st, nil, Options{Addresses: pools{free: addrs("192.168.121.240")}, Owner: &owner{}, Status: &statusWriter{},
		Step: func(s string) { got = append(got, s) }})
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(Steps, got); d != "" {
		t.Errorf("steps (-want +got):\n%s", d)
	}
	got = nil
	if _, err := r.Sync(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	want := []string{"discovered", "recorded", "addresses-added", "committed", "addresses-removed", "status-written"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("noop steps (-want +got):\n%s", d)
	}
}
