package reconcile

import (
	"context"
	"net/netip"
	"time"

	"github.com/lbd/lbd/lb"
)

// Source discovers the cluster's services.
type Source interface {
	// Discover returns every valid service, normalized, and one
	// *lb.InvalidServiceError for each service it rejected. A non-nil error
	// means discovery as a whole failed and nothing it returned is usable.
	Discover(ctx context.Context) ([]lb.Service, []*lb.InvalidServiceError, error)
}

// Backend programs the data plane.
type Backend interface {
	// Name is the backend's name as given to --backend.
	Name() string
	// Apply makes the data plane serve desired (every service; the backend
	// ignores those that are not exposed). changes says which services
	// differ from the last successful Apply, so a backend may touch only
	// those. A service the backend cannot program is returned as skipped
	// and left as it was before this call. A non-nil error means the sync
	// failed; the backend then leaves the previous state serving.
	Apply(ctx context.Context, desired []lb.Service, changes []lb.Change) ([]lb.Skipped, error)
}

// Store keeps the applied state and the sync history.
type Store interface {
	// Applied returns the services as the named backend last programmed
	// them, normalized and sorted. Empty when the backend never ran.
	Applied(ctx context.Context, backend string) ([]lb.Service, error)
	// Commit records a successful sync in one transaction: mapping becomes
	// the service mapping (the ServiceToEndPointsMapping view), applied
	// becomes the backend's applied state, and rec is appended to the
	// history.
	Commit(ctx context.Context, backend string, mapping, applied []lb.Service, rec lb.SyncRecord) error
	// RecordSync appends rec to the history and changes nothing else.
	RecordSync(ctx context.Context, rec lb.SyncRecord) error
}

// PodRoutes checks that the load balancer can reach a service's pods.
type PodRoutes interface {
	// Check returns nil when every ready endpoint of svc routes through the
	// pod interface; otherwise an error naming the service, the endpoint
	// and the route the kernel returned.
	Check(svc *lb.Service) error
}

// Verifier is implemented by backends that can tell whether the data plane
// still holds what they last programmed (rules flushed or files edited by
// hand). The reconciler calls it on a full sync only, so an ordinary sync
// with nothing to change costs the backend nothing.
type Verifier interface {
	// Verify compares the data plane with applied, the services as last
	// programmed, and returns one line per difference found.
	Verify(ctx context.Context, applied []lb.Service) ([]string, error)
}

// Addresses decides which addresses lbd serves: its address pools. With
// no Addresses in Options, the reconciler serves spec.externalIPs as
// discovered (tests of the plan machinery only; lbd always sets it).
type Addresses interface {
	// Admit returns nil when lbd may serve a, an address taken from
	// spec.externalIPs; otherwise an error saying why not (outside every
	// pool, naming --pool; or an address lbd never serves).
	Admit(a netip.Addr) error
	// Assign gives every LoadBalancer service in reqs its pool addresses.
	// prev are the allocations of the last pass; an allocation whose
	// service is not in reqs is freed. reserved are the addresses that
	// services already use as externalIPs, with the user: never handed
	// out. It is deterministic and pure.
	Assign(prev []lb.Allocation, reqs []*lb.Service, reserved map[netip.Addr]string) lb.Assignment
}

// AddressOwner puts the served addresses on the LB's own interface
// (--vip-interface) and announces them.
type AddressOwner interface {
	// Interface names the interface, the key of the owned set.
	Interface() string
	// Sync makes the interface hold every address in want, adding and
	// announcing the missing ones, and removes those in owned that are
	// not wanted. It never removes an address not in owned. It returns
	// the addresses it owns now, also on error.
	Sync(ctx context.Context, want, owned []netip.Addr) ([]netip.Addr, error)
}

// StatusWriter writes status.loadBalancer.ingress back to the cluster.
type StatusWriter interface {
	// WriteStatus applies writes and returns those that did not land,
	// with the reason. The error is non-nil only when nothing could be
	// written.
	WriteStatus(ctx context.Context, writes []lb.StatusWrite) ([]lb.Skipped, error)
}

// AddressStore keeps what the reconciler decided about addresses. The
// reconciler uses it when Options.Addresses is set.
type AddressStore interface {
	Allocations(ctx context.Context) ([]lb.Allocation, error)
	SaveAllocations(ctx context.Context, allocs []lb.Allocation) error
	OwnedAddresses(ctx context.Context, iface string) ([]netip.Addr, error)
	SaveOwnedAddresses(ctx context.Context, iface string, owned []netip.Addr) error
	SaveAddressReport(ctx context.Context, report []lb.AddressState) error
}

// StateStore keeps what each backend made of each service in the last
// pass. The reconciler uses it when the Store is also a StateStore.
type StateStore interface {
	// States returns backend's states of the last pass.
	States(ctx context.Context, backend string) ([]lb.ServiceState, error)
	// SaveStates replaces backend's states.
	SaveStates(ctx context.Context, backend string, states []lb.ServiceState) error
}

// DeleteLog remembers the exposed services the guard let go, so that
// losing services over several passes meets one budget. The reconciler
// uses it when the Store is also a DeleteLog and Options.MaxDeleteWindow
// is set.
type DeleteLog interface {
	// Deletions returns the services (namespace/name) backend stopped
	// serving at or after since, with the time of each.
	Deletions(ctx context.Context, backend string, since time.Time) (map[string]time.Time, error)
	// RecordDeletions records that backend stopped serving keys at at and
	// forgets the deletions before forgetBefore.
	RecordDeletions(ctx context.Context, backend string, keys []string, at, forgetBefore time.Time) error
}
