package vip

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// LocalAddrs returns every address on every interface of the current
// network namespace (loopback included), unmapped and without zone. A
// served address missing from it reaches the LB only if something else
// routes it there; `lbd check` lists such addresses.
func LocalAddrs() (map[netip.Addr]bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("vip: list local addresses: %w", err)
	}
	out := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if p, ok := ipNetPrefix(a.IPNet); ok {
			out[p.Addr()] = true
		}
	}
	return out, nil
}
