package reconcile

import (
	"context"

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
