package discovery_test

import (
	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/reconcile"
)

// Source is what the reconciler consumes; discovery itself never imports
// reconcile.
var _ reconcile.Source = (*discovery.Source)(nil)
