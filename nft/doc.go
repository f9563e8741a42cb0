// Package nft is lbd's nftables backend: one inet table of its own
// (Options.Table, "lbd" by default), programmed through netlink with
// github.com/google/nftables, one transaction per sync.
//
// The backend works in two halves. [Render] is a pure function from
// services to the table's objects, each rule carrying its nft text
// ([Ruleset.Text] prints the whole table in nft syntax for the golden
// tests). [Backend.Apply] then sends one netlink batch, marshalled into
// one buffer and written with one sendmsg on a socket kept open: the
// whole table on the first sync and after Verify found drift (add,
// delete and re-add the table, so the swap is atomic); otherwise only
// the chains, sets and map elements of the changed services. A sync with no change makes no
// netlink call.
//
// Cost, measured at 10,000 services x 10 endpoints on 2 vCPU (kernel
// 6.18): a full program is 10,000 rules and 110,000 elements in 10.5 MB
// of messages, about 0.5 s in the kernel and 0.35 s of CPU here; what
// the kernel pays for is per rule (each expression is parsed, and every
// commit that adds a rule walks the whole table to validate it) and per
// map element times the rules bound to its map, which is why the
// endpoints maps are sharded.
//
// Layout of table inet lbd:
//
//	nat-prerouting, nat-output: "daddr . l4proto . dport vmap @services4"
//	    (and @services6): one hash lookup per new connection, whatever
//	    the number of services
//	svc-<hash> (svc6-<hash>): one chain per service port and family, the
//	    hash that of the iptables backend's LBD- chain: the mark and the
//	    DNAT spread in one rule, "dnat to <id> . numgen random mod n map
//	    @endpoints4-<xx>", the chain's 64-bit id and the random index
//	    looked up in one of 128 shared endpoints maps (a plain dnat for
//	    one endpoint); with source ranges, the range checks first and the
//	    mark in a rule of its own; with ClientIP affinity, one dynamic set
//	    with the timeout per endpoint, checked and renewed from the packet
//	    path, and the spread as one rule per endpoint, "numgen random mod
//	    (n-i) == 0 update @aff dnat to ep_i"
//	endpoints4-00 .. -7f, endpoints6-00 .. -7f: "id . index : address .
//	    port"; a change of endpoints that keeps their number changes only
//	    elements here, which the kernel applies without revalidating the
//	    table
//	nat-postrouting: masquerade (without fully-random: it stalls new connections on the pods' TIME_WAIT tuples) marked packets, clearing
//	    the mark
//	filter-input, -forward, -output -> noendpoints, for new connections
//	    only (established packets never pay its lookups): reject service
//	    ports without a ready endpoint (@noendpoints4/6: TCP reset, ICMP port
//	    unreachable); filter-forward also accepts marked packets and the
//	    established packets of DNATed connections
//
// The mark is bit 13 (0x2000) unless told otherwise, as in the iptables
// backend. Nothing outside the table is read or written, except
// ip_forward (and IPv6 forwarding when a service has an IPv6 address) and
// the conntrack entries of UDP flows to endpoints that went away.
//
// An accept in this table cannot overrule a drop in another table's base
// chain: under a FORWARD policy of DROP set elsewhere (iptables -P FORWARD
// DROP, Docker) lbd's traffic is dropped there, unless that firewall
// accepts "meta mark & 0x2000" and "ct status dnat" (the mark is still set
// in the forward hook).
package nft
