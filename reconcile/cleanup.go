package reconcile

import (
	"context"
	"fmt"
	"net/netip"
)

// Cleaner is what Cleanup needs of a backend: its name and the removal
// of everything it programmed.
type Cleaner interface {
	Name() string
	Cleanup(ctx context.Context) error
}

// CleanupStore is what Cleanup needs of the store: forgetting a
// backend's applied state, and the addresses lbd owns.
type CleanupStore interface {
	ForgetApplied(ctx context.Context, backend string) error
	OwnedAddresses(ctx context.Context, iface string) ([]netip.Addr, error)
	SaveOwnedAddresses(ctx context.Context, iface string, owned []netip.Addr) error
}

// Cleanup is lbd cleanup, under the lock its caller holds: be removes
// everything it programmed; then the store, opened only now by open,
// forgets be's applied state, so the next sync starts afresh; then, with
// owner, the addresses lbd owns on owner's interface come off, and only
// those, and the store keeps what is left. Each error says which step
// failed.
func Cleanup(ctx context.Context, be Cleaner, open func() (CleanupStore, error), owner AddressOwner) error {
	if err := be.Cleanup(ctx); err != nil {
		return fmt.Errorf("cleanup %s: %w", be.Name(), err)
	}
	st, err := open()
	if err != nil {
		return err
	}
	if err := st.ForgetApplied(ctx, be.Name()); err != nil {
		return err
	}
	if owner == nil {
		return nil
	}
	iface := owner.Interface()
	owned, err := st.OwnedAddresses(ctx, iface)
	if err != nil {
		return err
	}
	left, serr := owner.Sync(ctx, nil, owned)
	if err := st.SaveOwnedAddresses(ctx, iface, left); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("cleanup addresses on %s: %w", iface, serr)
	}
	return nil
}
