package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Announcement timing: every announced address gets Rounds packets,
// Interval apart. Rounds are sent for all addresses of one call together,
// so a call blocks for (Rounds-1)*Interval however many addresses it
// announces (200 ms), and a single lost packet does not leave a neighbour
// with a stale entry.
const (
	Rounds   = 3
	Interval = 100 * time.Millisecond
)

// AddrError is the failure of one address in Sync or Announce. Sync and
// Announce join one AddrError per failed address.
type AddrError struct {
	Addr  netip.Addr
	Iface string
	Op    string // "add", "remove", "announce" or "check"
	Err   error
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("vip %s on %s: %s: %v", e.Addr, e.Iface, e.Op, e.Err)
}

func (e *AddrError) Unwrap() error { return e.Err }

// Manager keeps the load balancer's addresses on one interface. Its side
// effects are the function fields below, set by New; tests swap them.
// A Manager holds no state between calls and is safe for one caller at a
// time.
type Manager struct {
	iface string
	log   *slog.Logger

	// list returns every address entry on iface, with its prefix length.
	list func(iface string) ([]netip.Prefix, error)
	// add puts the host prefix p (/32 or /128) on iface.
	add func(iface string, p netip.Prefix) error
	// del removes exactly the entry p (address and prefix length) from iface.
	del func(iface string, p netip.Prefix) error
	// announce sends one announcement for each address on iface: one round.
	announce func(iface string, addrs []netip.Addr) error
	// sleep waits d, or less when ctx ends first (then it returns ctx.Err()).
	sleep func(ctx context.Context, d time.Duration) error

	rounds   int
	interval time.Duration
}

// New returns a Manager for the interface iface (for example eth0) of the
// current network namespace. It does not touch the interface; Sync does.
func New(iface string, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		iface:    iface,
		log:      log.With("iface", iface),
		list:     netlinkList,
		add:      netlinkAdd,
		del:      netlinkDel,
		announce: sendAnnouncements,
		sleep:    sleepCtx,
		rounds:   Rounds,
		interval: Interval,
	}
}

// Interface is the name of the interface the Manager keeps addresses on.
func (m *Manager) Interface() string { return m.iface }

// Sync makes the interface hold every address in want, and returns the
// addresses lbd owns afterwards, for the caller to store and hand back as
// owned next time.
//
//   - A wanted address not on the interface is added as a host address
//     (/32, /128 with IFA_F_NODAD|IFA_F_NOPREFIXROUTE), announced, and owned.
//   - A wanted address already there but not in owned (an operator's) is
//     left as it is and is not owned. So is an owned address that is now
//     on the interface only with another prefix length: it is no longer
//     the entry lbd added.
//   - An owned address not in want is removed (only its host entry); an
//     owned address already gone is dropped without error.
//   - An address not in owned is never removed.
//
// So nowOwned = (owned ∩ want ∩ still present) ∪ added, sorted, plus any
// owned address whose removal failed. On failures Sync goes on with the
// other addresses and returns a join of one *AddrError per failed address.
// An added address whose announcement failed stays owned (it is on the
// interface). When the interface cannot be read at all, Sync changes
// nothing and returns owned unchanged with the error.
//
// Sync blocks for the announcement rounds (see Rounds) when it added an
// address; ctx cuts the rounds short, never the netlink changes.
func (m *Manager) Sync(ctx context.Context, want, owned []netip.Addr) (nowOwned []netip.Addr, err error) {
	var errs []error
	wantSet := m.set(want, &errs)
	ownedSet := m.set(owned, &errs)

	prefixes, err := m.list(m.iface)
	if err != nil {
		return sortedAddrs(ownedSet), fmt.Errorf("vip: list addresses of %s: %w", m.iface, err)
	}
	present := map[netip.Addr]bool{} // the address, with any prefix length
	host := map[netip.Addr]bool{}    // the address as a host prefix: what lbd adds
	for _, p := range prefixes {
		a := p.Addr().Unmap().WithZone("")
		present[a] = true
		if p.Bits() == a.BitLen() {
			host[a] = true
		}
	}

	now := map[netip.Addr]bool{}
	var added []netip.Addr
	for _, a := range sortedAddrs(wantSet) {
		switch {
		case ownedSet[a] && host[a]:
			now[a] = true
		case present[a]:
			if ownedSet[a] {
				m.log.Warn("owned address is now on the interface with another prefix; leaving it to whoever put it there", "addr", a)
			} else {
				m.log.Debug("wanted address already on the interface, put there by hand; not owned", "addr", a)
			}
		default:
			err := m.add(m.iface, hostPrefix(a))
			switch {
			case errors.Is(err, unix.EEXIST):
				// It appeared between list and add: someone else's.
				m.log.Warn("address appeared on the interface while adding it; not owned", "addr", a)
			case err != nil:
				errs = append(errs, &AddrError{Addr: a, Iface: m.iface, Op: "add", Err: err})
			default:
				m.log.Info("address added", "addr", a)
				now[a] = true
				added = append(added, a)
			}
		}
	}
	for _, a := range sortedAddrs(ownedSet) {
		if wantSet[a] {
			continue
		}
		if !host[a] {
			m.log.Info("owned address already gone from the interface", "addr", a)
			continue
		}
		err := m.del(m.iface, hostPrefix(a))
		switch {
		case errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT):
			m.log.Info("owned address already gone from the interface", "addr", a)
		case err != nil:
			errs = append(errs, &AddrError{Addr: a, Iface: m.iface, Op: "remove", Err: err})
			now[a] = true // still there, still ours: try again next time
		default:
			m.log.Info("address removed", "addr", a)
		}
	}
	if len(added) > 0 {
		if err := m.Announce(ctx, added...); err != nil {
			errs = append(errs, err)
		}
	}
	return sortedAddrs(now), errors.Join(errs...)
}

// Announce tells the neighbours on the interface that addrs live here:
// gratuitous ARP (an ARP announcement: a broadcast request whose sender
// and target are the address) for IPv4, and an unsolicited neighbour
// advertisement (override flag, target link-layer address option, to
// ff02::1) for IPv6. It sends Rounds rounds, Interval apart; it fails
// for an address only when no round went out, and stops early, with an
// error wrapping ctx.Err(), when ctx ends. Sync calls it for what it added;
// callers may call it again after a failover.
func (m *Manager) Announce(ctx context.Context, addrs ...netip.Addr) error {
	var errs []error
	set := m.set(addrs, &errs)
	addrs = sortedAddrs(set)
	if len(addrs) == 0 {
		return errors.Join(errs...)
	}
	sent := 0
	var last error
	for i := range m.rounds {
		if i > 0 {
			if err := m.sleep(ctx, m.interval); err != nil {
				errs = append(errs, fmt.Errorf("vip: announce %v on %s: cut short after %d of %d rounds: %w", addrs, m.iface, i, m.rounds, err))
				break
			}
		}
		// A round fails or succeeds mostly as a whole (socket, interface):
		// a failed round is logged, and only when no round went out is
		// every address reported.
		if err := m.announce(m.iface, addrs); err != nil {
			last = err
			m.log.Warn("announce failed", "addrs", addrs, "round", i+1, "err", err)
			continue
		}
		sent++
	}
	if sent == 0 && last != nil {
		for _, a := range addrs {
			errs = append(errs, &AddrError{Addr: a, Iface: m.iface, Op: "announce", Err: last})
		}
	}
	return errors.Join(errs...)
}

// set turns addrs into a set of unmapped, zoneless addresses, adding an
// error for each invalid one.
func (m *Manager) set(addrs []netip.Addr, errs *[]error) map[netip.Addr]bool {
	s := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if !a.IsValid() {
			*errs = append(*errs, &AddrError{Addr: a, Iface: m.iface, Op: "check", Err: errors.New("invalid address")})
			continue
		}
		s[a.Unmap().WithZone("")] = true
	}
	return s
}

func sortedAddrs(s map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(s))
	for a, ok := range s {
		if ok {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// hostPrefix is a as /32 or /128.
func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func netlinkList(iface string) ([]netip.Prefix, error) {
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", iface, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", iface, err)
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := ipNetPrefix(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func netlinkAdd(iface string, p netip.Prefix) error {
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("link %s: %w", iface, err)
	}
	a := &netlink.Addr{IPNet: prefixIPNet(p)}
	if p.Addr().Is6() {
		// Usable at once (no DAD: the address is ours by allocation), and no
		// prefix route: the kernel's local route is all a /128 needs.
		a.Flags = unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE
	}
	return netlink.AddrAdd(l, a)
}

func netlinkDel(iface string, p netip.Prefix) error {
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("link %s: %w", iface, err)
	}
	// Address and prefix length both given, so the kernel removes only
	// that entry, never the operator's same address with another prefix.
	return netlink.AddrDel(l, &netlink.Addr{IPNet: prefixIPNet(p)})
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}
