package netfilter_test

import (
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/reconcile"
)

// The backend satisfies the reconciler's contracts without netfilter
// importing reconcile.
var (
	_ reconcile.Backend  = (*netfilter.Backend)(nil)
	_ reconcile.Verifier = (*netfilter.Backend)(nil)
)
