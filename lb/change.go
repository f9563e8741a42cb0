package lb

import "time"

// ChangeKind says what a sync does to one service.
type ChangeKind string

// The kinds of change a plan holds.
const (
	Create ChangeKind = "create"
	Update ChangeKind = "update"
	Delete ChangeKind = "delete"
)

// Change is one service's transition from the applied state (Old) to the
// discovered one (New). Old is nil for Create, New is nil for Delete.
type Change struct {
	Kind ChangeKind
	Old  *Service
	New  *Service
	// What lists the differences in words, e.g. "endpoints of 80/TCP:
	// -10.246.82.6:80".
	What []string
}

// Key returns the namespace/name of the changed service.
func (c Change) Key() string {
	if c.New != nil {
		return c.New.Key()
	}
	return c.Old.Key()
}

// Programmed returns, by key, what a backend last programmed as the
// reconciler's applied state describes it through one Apply's arguments:
// the exposed services of desired that did not change, plus the exposed
// Old side of each change. A backend in a new process (a cron pass) uses
// it to sync only the changes instead of rewriting everything. The
// services are copies.
func Programmed(desired []Service, changes []Change) map[string]*Service {
	out := make(map[string]*Service, len(desired))
	changed := make(map[string]bool, len(changes))
	for _, c := range changes {
		changed[c.Key()] = true
		if c.Old != nil && c.Old.Exposed() {
			out[c.Key()] = c.Old.Clone()
		}
	}
	for i := range desired {
		if s := &desired[i]; !changed[s.Key()] && s.Exposed() {
			out[s.Key()] = s.Clone()
		}
	}
	return out
}

// Skipped is a service a backend did not program, and why (for example a
// pod not reachable through the pod interface, or a UDP port that haproxy
// cannot serve). A skipped service is not recorded as applied, so the next
// sync tries it again.
type Skipped struct {
	Key    string
	Reason string
}

// SyncRecord is one line of the store's sync history.
type SyncRecord struct {
	Started  time.Time
	Duration time.Duration
	Backend  string
	// Result is "ok", "noop", "refused" or "error".
	Result   string
	Services int
	Created  int
	Updated  int
	Deleted  int
	Skipped  int
	Err      string
}
