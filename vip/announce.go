package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// sendAnnouncements sends one round: one gratuitous ARP per IPv4 address
// and one unsolicited neighbour advertisement per IPv6 address, each from
// iface's hardware address. It opens one socket per family per round.
func sendAnnouncements(iface string, addrs []netip.Addr) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("interface %s: %w", iface, err)
	}
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	var errs []error
	if len(v4) > 0 {
		if err := gratuitousARP(ifi, v4); err != nil {
			errs = append(errs, err)
		}
	}
	if len(v6) > 0 {
		if err := unsolicitedNA(ifi, v6); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// gratuitousARP sends, for each address, an ARP announcement (RFC 5227
// section 2.3): a broadcast request whose sender and target protocol
// address are both the address, target hardware address zero. Linux
// neighbours take it into their table when arp_accept allows; entries
// they already hold for the address are updated either way.
func gratuitousARP(ifi *net.Interface, addrs []netip.Addr) error {
	// arp.Dial needs an IPv4 address on ifi, which Sync has just added.
	c, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("arp socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	zero := make(net.HardwareAddr, len(ifi.HardwareAddr))
	var errs []error
	for _, a := range addrs {
		p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, a, zero, a)
		if err == nil {
			err = c.WriteTo(p, ethernet.Broadcast)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("gratuitous arp for %s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// unsolicitedNA sends, for each address, an unsolicited neighbour
// advertisement (RFC 4861 section 7.2.6) to all nodes (ff02::1): override
// set, solicited clear, with the target link-layer address option, sent
// from the address itself. Linux neighbours create an entry from it when
// accept_untracked_na allows; they update one they hold either way.
func unsolicitedNA(ifi *net.Interface, addrs []netip.Addr) error {
	// Bound to "::" on ifi; each message gets its own source below.
	c, _, err := ndp.Listen(ifi, ndp.Unspecified)
	if err != nil {
		return fmt.Errorf("ndp socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	var errs []error
	for _, a := range addrs {
		na := &ndp.NeighborAdvertisement{
			Override:      true,
			TargetAddress: a,
			Options: []ndp.Option{&ndp.LinkLayerAddress{
				Direction: ndp.Target,
				Addr:      ifi.HardwareAddr,
			}},
		}
		cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: a.AsSlice(), IfIndex: ifi.Index}
		if err := c.WriteTo(na, cm, netip.IPv6LinkLocalAllNodes()); err != nil {
			errs = append(errs, fmt.Errorf("neighbour advertisement for %s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}
