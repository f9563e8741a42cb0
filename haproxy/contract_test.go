package haproxy_test

import (
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/reconcile"
)

// The backend satisfies reconcile's contracts without importing reconcile.
var (
	_ reconcile.Backend  = (*haproxy.Backend)(nil)
	_ reconcile.Verifier = (*haproxy.Backend)(nil)
)
