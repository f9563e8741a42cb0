package nft_test

import (
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/reconcile"
)

// The backend satisfies the reconciler's contracts without nft importing
// reconcile.
var (
	_ reconcile.Backend  = (*nft.Backend)(nil)
	_ reconcile.Verifier = (*nft.Backend)(nil)
)
