// Package ipam holds lbd's address pools and decides which LoadBalancer
// service gets which address.
//
// The contract:
//
//   - The pools (--pool, LBD_POOL) are the only addresses lbd serves. An
//     address is servable when a pool holds it and it is not excluded:
//     ipam itself always excludes loopback, link-local, multicast,
//     unspecified and 255.255.255.255; the caller adds the rest through an
//     [Excluder] (the master's address, the address lbd's SSH leaves from,
//     the pod network). An IPv4 CIDR pool of /30 or wider leaves out its
//     network and broadcast addresses. With no pool, nothing is servable.
//   - [Pools.Admit] judges a spec.externalIPs address; its error says why in
//     words ready for the operator, naming --pool where that is the fix.
//   - [Assign] turns the pools, the previous allocations and the complete
//     set of LoadBalancer services into the complete new set of
//     allocations, plus the services left pending (no free address) and
//     rejected (their request cannot be honoured). It keeps what is still
//     valid, honours requests, recovers addresses from the services'
//     status, shares an address only between services with the same
//     lbd.io/allow-shared-ip and no common port, and otherwise hands out
//     the lowest free address of the first pool that has one.
//   - Everything here is pure and deterministic: no I/O, no clock, no
//     randomness, no dependence on input order or map order. Storing the
//     allocations, writing the status back and owning the addresses are
//     the callers' jobs.
//
// ipam imports only the standard library and lb.
package ipam
