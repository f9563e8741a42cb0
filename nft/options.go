package nft

import (
	"errors"
	"fmt"
)

// DefaultTable is the name of the table lbd owns unless told otherwise.
const DefaultTable = "lbd"

// DefaultMasqueradeBit is the fwmark bit lbd uses unless told otherwise:
// 0x2000, the same as the iptables backend, next to but not on
// kube-proxy's 0x4000 and 0x8000.
const DefaultMasqueradeBit = 13

// Mark bits kube-proxy uses; lbd refuses them so both can run on one host.
const (
	kubeProxyMasqBit = 14 // 0x4000
	kubeProxyDropBit = 15 // 0x8000
)

// ErrReservedMark is returned by [Options.Validate] for a mark bit that
// kube-proxy already uses.
var ErrReservedMark = errors.New("mark bit is reserved by kube-proxy (14 = 0x4000 masquerade, 15 = 0x8000 drop)")

// Options configure the backend.
type Options struct {
	// Masquerade rewrites the source of forwarded service packets to the
	// LB's address so that pods answer the LB. Turn it off only where the
	// pods route back through the LB by themselves.
	Masquerade bool
	// MasqueradeBit is the bit (0-31) of the packet mark that flags
	// packets lbd DNATed (for masquerade and the forward accept). Must not
	// be 14 or 15 (kube-proxy's).
	MasqueradeBit int
	// PodInterface is the interface through which pods are reached, the
	// notes' flannel0; only the rp_filter warning reads it.
	PodInterface string
	// Table is the name of the inet table lbd owns; empty means "lbd".
	Table string
}

// DefaultOptions returns the options lbd runs with unless flags say
// otherwise: masquerade on bit 13, pod interface flannel0, table "lbd".
func DefaultOptions() Options {
	return Options{Masquerade: true, MasqueradeBit: DefaultMasqueradeBit, PodInterface: "flannel0", Table: DefaultTable}
}

// Validate reports options that cannot work; the error names the field.
func (o Options) Validate() error {
	switch {
	case o.MasqueradeBit < 0 || o.MasqueradeBit > 31:
		return fmt.Errorf("nft options: masquerade bit %d is outside 0-31", o.MasqueradeBit)
	case o.MasqueradeBit == kubeProxyMasqBit || o.MasqueradeBit == kubeProxyDropBit:
		return fmt.Errorf("nft options: masquerade bit %d: %w", o.MasqueradeBit, ErrReservedMark)
	case len(o.table()) > 255:
		return fmt.Errorf("nft options: table name %q is longer than 255 bytes", o.Table)
	}
	return nil
}

func (o Options) table() string {
	if o.Table == "" {
		return DefaultTable
	}
	return o.Table
}

func (o Options) mark() uint32 { return uint32(1) << o.MasqueradeBit }
