// Package vip holds the load balancer's own addresses: the service
// addresses lbd puts on one interface (--vip-interface) so that the kernel
// accepts their traffic, and the announcements that tell the neighbours
// where those addresses now live.
//
// The contract:
//
//   - An address is owned when lbd added it. The caller keeps the owned
//     set (in the store) and hands it back to every Manager.Sync, so the
//     rule below holds across restarts; this package keeps no state of
//     its own between calls.
//   - Sync adds each wanted address that is not on the interface, as a
//     host address: /32 for IPv4, /128 for IPv6 with IFA_F_NODAD (usable at
//     once, no duplicate address detection) and IFA_F_NOPREFIXROUTE (no
//     route beside the kernel's local one). Each added address is
//     announced: gratuitous ARP for IPv4, an unsolicited neighbour
//     advertisement for IPv6.
//   - Sync removes an owned address once it is no longer wanted, and only
//     the host-prefix entry lbd added.
//   - An address lbd did not add is never removed and never becomes owned,
//     even when it is wanted: an operator put it there, and it serves as
//     it is (the notes' way of adding service addresses by hand).
//   - Nothing outside the one interface is touched: no route, no other
//     interface, no sysctl.
//
// Announcements go out in Rounds rounds, Interval apart (3 x 100 ms, so
// a Sync that added anything blocks about 200 ms however many addresses
// it added). A neighbour updates an entry it already holds either way;
// it creates a new one only when it is set to: on Linux arp_accept=1 for
// IPv4, and accept_untracked_na=1 on a forwarding interface (a router,
// RFC 9131) for IPv6. Hosts that hold no entry simply ask, and the kernel
// answers for any address on the interface.
//
// LocalAddrs lists every address of the current network namespace, for
// `lbd check` to name served addresses that are local nowhere.
package vip
