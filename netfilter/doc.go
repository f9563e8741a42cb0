// Package netfilter is lbd's iptables backend.
//
// The backend works in two halves. [Render] is a pure function from
// services to the rules lbd owns, in the exact form iptables-save prints
// them, so that the same text serves as the iptables-restore payload and as
// the reference that [Backend.Verify] compares the kernel's state with.
// [Backend.Apply] then makes one `iptables-restore --noflush` call per sync
// for lbd's own chains and, on a full sync only, ensures the jump rules in
// the built-in chains through go-iptables.
//
// Layout, nat table:
//
//	PREROUTING, OUTPUT -> LBD-SERVICES: one jump per /24 of external IPs
//	                      -> LBD-NET-<hash>: one jump per external IP
//	                         and port of that /24
//	                      -> LBD-<hash>: mark, then DNAT spread over the
//	                         ready endpoints (statistic random, optional
//	                         ClientIP affinity with the recent match)
//	POSTROUTING        -> LBD-POSTROUTING: masquerade marked packets (or
//	                      SNAT to Options.SNATAddresses), keeping the
//	                      client's source port, so pods answer the LB
//
// filter table:
//
//	INPUT, FORWARD, OUTPUT -> LBD-FILTER, for new connections only
//	                          (--ctstate NEW): REJECT for a service port
//	                          with no ready endpoint (TCP reset, ICMP port
//	                          unreachable), instead of black-holing it, and
//	                          DROP for sources outside a service's ranges;
//	                          established packets never walk it
//	FORWARD                -> LBD-FORWARD: ACCEPT marked packets and the
//	                          established packets of DNATed connections,
//	                          so lbd's traffic flows under a FORWARD policy
//	                          of DROP (Docker's)
//
// The mark (bit 13 unless told otherwise) is set in every service-port
// chain; LBD-POSTROUTING clears it after use. A full sync in nf_tables mode
// takes several restores: LBD-POSTROUTING and the filter chains are written
// in the first, and the LBD-SERVICES jumps last, so no packet is DNATed
// before its masquerade and its accept are in place.
//
// lbd only ever writes, flushes or deletes chains whose names start with
// "LBD-" and the jump rules it inserted; it never flushes a built-in chain.
//
// [Version] reports the iptables binary and its mode for `lbd check`; the
// pod-route check and the other host checks, shared by every backend, are
// in package hostcheck.
package netfilter
