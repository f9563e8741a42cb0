package reconcile

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/lb"
)

// rendezvous makes the source's Discover and the backend's Verify each
// wait for the other to have started, up to a bound: run one after the
// other, the first gives up with an error after the bound.
type rendezvous struct {
	discovering, verifying chan struct{}
	bound                  time.Duration
}

func newRendezvous() *rendezvous {
	return &rendezvous{discovering: make(chan struct{}), verifying: make(chan struct{}), bound: 5 * time.Second}
}

// meet announces mine and waits for theirs.
func (z *rendezvous) meet(ctx context.Context, mine, theirs chan struct{}, who string) error {
	close(mine)
	select {
	case <-theirs:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(z.bound):
		return errors.New(who + " ran alone: the other never started within the bound")
	}
}

// meetingSource is a Source whose Discover meets the verifier, then
// returns svcs or err.
type meetingSource struct {
	z    *rendezvous
	svcs []lb.Service
	err  error
}

func (s *meetingSource) Discover(ctx context.Context) ([]lb.Service, []*lb.InvalidServiceError, error) {
	if err := s.z.meet(ctx, s.z.discovering, s.z.verifying, "discovery"); err != nil {
		return nil, nil, err
	}
	return s.svcs, nil, s.err
}

// meetingBackend is a backend whose Verify meets discovery, then returns
// drift or err.
type meetingBackend struct {
	backend
	z        *rendezvous
	verifyEr error
}

func (b *meetingBackend) Verify(ctx context.Context, _ []lb.Service) ([]string, error) {
	if err := b.z.meet(ctx, b.z.verifying, b.z.discovering, "drift check"); err != nil {
		return nil, err
	}
	return b.drift, b.verifyEr
}

// TestSyncVerifiesWhileDiscovering: a full pass runs the drift check
// while discovery runs (each waits for the other to start, so run one
// after the other the pass fails), and a failure of either still applies
// nothing and stores nothing.
func TestSyncVerifiesWhileDiscovering(t *testing.T) {
	a := svc("default", "a", "192.168.121.201", "10.246.0.1")
	b := svc("default", "b", "192.168.121.202", "10.246.0.3")
	tests := []struct {
		name        string
		discoverErr error
		verifyErr   error
		drift       []string
		wantErr     string
		wantApplies int
		wantResult  string
	}{
		{name: "no drift: the deletion of b applies", wantApplies: 1, wantResult: "ok"},
		{name: "drift found alongside: every service rewritten", drift: []string{"nat chain LBD-X is missing"}, wantApplies: 1, wantResult: "ok"},
		{name: "discovery fails: nothing applied", discoverErr: errors.New("ssh: connection refused"), drift: []string{"x"},
			wantErr: "discover: ssh: connection refused", wantResult: "error"},
		{name: "drift check fails: nothing applied", verifyErr: errors.New("iptables-save: exit 1"),
			wantErr: "verify test: iptables-save: exit 1", wantResult: "error"},
		{name: "both fail: discovery's error first", discoverErr: errors.New("ssh: connection refused"), verifyErr: errors.New("iptables-save: exit 1"),
			wantErr: "discover: ssh: connection refused", wantResult: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newRendezvous()
			// Discovery drops b: were it applied, b would go.
			src := &meetingSource{z: z, svcs: []lb.Service{a}, err: tt.discoverErr}
			be := &meetingBackend{backend: backend{drift: tt.drift}, z: z, verifyEr: tt.verifyErr}
			st := &store{applied: []lb.Service{a, b}}
			r := New(src, be, st, nil, Options{MaxDelete: 1})
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			res, err := r.Sync(ctx, true)
			if err != nil && strings.Contains(err.Error(), "ran alone") {
				t.Fatalf("Sync ran discovery and the drift check one after the other: %v", err)
			}
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Sync error = %v, want it to contain %q", err, tt.wantErr)
			}
			if be.calls != tt.wantApplies {
				t.Errorf("backend Apply called %d times, want %d", be.calls, tt.wantApplies)
			}
			wantApplied := []string{"default/a=10.246.0.1:80", "default/b=10.246.0.3:80"}
			if tt.wantApplies > 0 {
				wantApplied = wantApplied[:1]
			}
			if got := keys(st.applied); strings.Join(got, " ") != strings.Join(wantApplied, " ") {
				t.Errorf("stored applied state = %v, want %v", got, wantApplied)
			}
			if len(st.history) != 1 || st.history[0].Result != tt.wantResult {
				t.Errorf("history = %+v, want one %q record", st.history, tt.wantResult)
			}
			if tt.wantErr == "" && len(res.Plan.Drift) != len(tt.drift) {
				t.Errorf("plan drift = %v, want %v", res.Plan.Drift, tt.drift)
			}
		})
	}
}
