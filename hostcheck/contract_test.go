package hostcheck_test

import (
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/reconcile"
)

// The route check satisfies the reconciler's contract without hostcheck
// importing reconcile.
var _ reconcile.PodRoutes = (*hostcheck.RouteCheck)(nil)
