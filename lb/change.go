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
