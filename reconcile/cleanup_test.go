package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cleaner records the steps of a cleanup in one log.
type cleaner struct {
	log       *[]string
	err       error
	owned     []netip.Addr
	storeErr  error
	removeErr error
	saved     []netip.Addr
}

func (c *cleaner) Name() string { return "fake" }
func (c *cleaner) Cleanup(context.Context) error {
	*c.log = append(*c.log, "backend cleanup")
	return c.err
}
func (c *cleaner) ForgetApplied(_ context.Context, be string) error {
	*c.log = append(*c.log, "forget "+be)
	return c.storeErr
}
func (c *cleaner) OwnedAddresses(_ context.Context, iface string) ([]netip.Addr, error) {
	*c.log = append(*c.log, "owned "+iface)
	return c.owned, nil
}
func (c *cleaner) SaveOwnedAddresses(_ context.Context, iface string, owned []netip.Addr) error {
	*c.log = append(*c.log, "save "+iface)
	c.saved = owned
	return nil
}
func (c *cleaner) Interface() string { return "eth9" }
func (c *cleaner) Sync(_ context.Context, want, owned []netip.Addr) ([]netip.Addr, error) {
	*c.log = append(*c.log, "remove owned")
	if len(want) != 0 {
		panic("cleanup wants an address")
	}
	if c.removeErr != nil {
		return owned[:1], c.removeErr // the first one stuck
	}
	return nil, nil
}

// TestCleanup: the backend first, the store only then, the owned
// addresses last, and what could not be removed stays owned.
func TestCleanup(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}
	tests := []struct {
		name    string
		c       cleaner
		owner   bool
		openErr error
		steps   []string
		saved   []netip.Addr
		wantErr string
	}{
		{name: "without an owner", steps: []string{"backend cleanup", "open", "forget fake"}},
		{name: "with an owner", c: cleaner{owned: addrs}, owner: true,
			steps: []string{"backend cleanup", "open", "forget fake", "owned eth9", "remove owned", "save eth9"}},
		{name: "backend fails: the store stays shut", c: cleaner{err: errors.New("nft: busy")}, steps: []string{"backend cleanup"}, wantErr: "cleanup fake: nft: busy"},
		{name: "store fails", openErr: errors.New("locked"), steps: []string{"backend cleanup", "open"}, wantErr: "locked"},
		{name: "an address stays", c: cleaner{owned: addrs, removeErr: errors.New("EPERM")}, owner: true,
			steps: []string{"backend cleanup", "open", "forget fake", "owned eth9", "remove owned", "save eth9"},
			saved: addrs[:1], wantErr: "cleanup addresses on eth9: EPERM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log []string
			c := tt.c
			c.log = &log
			var owner AddressOwner
			if tt.owner {
				owner = &c
			}
			err := Cleanup(t.Context(), &c, func() (CleanupStore, error) {
				log = append(log, "open")
				return &c, tt.openErr
			}, owner)
			if (err == nil) != (tt.wantErr == "") || err != nil && err.Error() != tt.wantErr {
				t.Errorf("err %v, want %q", err, tt.wantErr)
			}
			if d := cmp.Diff(tt.steps, log); d != "" {
				t.Errorf("steps (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.saved, c.saved, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("still owned (-want +got):\n%s", d)
			}
		})
	}
}
