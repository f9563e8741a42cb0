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
// the map elements, chains and sets of the changed services. A sync with
// no change makes no netlink call.
//
// Cost, measured at 10,000 services x 10 endpoints on 2 vCPU (kernel
// 6.18): a full program is 100,000 endpoints map elements and 10,000
// dispatch elements, a few chains and rules, in 5 MB of messages,
// 0.14-0.16 s in the kernel and 0.27-0.41 s in all. What the kernel pays for is per
// chain and rule (each expression parsed, each set lookup bound and
// checked, the table revalidated) and per element; a set that grows
// rehashes as elements arrive, so every set is made with its size (twice
// its elements, at least 1,024), and a transaction that would overflow one
// fails whole, after which Apply rewrites the table with sets sized anew.
//
// Layout of table inet lbd:
//
//	nat-prerouting, nat-output: "daddr . l4proto . dport vmap @services4"
//	    (and @services6): one hash lookup per new connection, whatever
//	    the number of services
//	spread4-<n>-s<shard> (spread6-...): one chain per number n of ready
//	    endpoints that some service port without affinity has, and per
//	    shard (16, by the hash of the port's key), shared by all such
//	    ports: one rule that marks the packet and DNATs it, "dnat to
//	    daddr . l4proto . dport . numgen random mod n map
//	    @endpoints4-<n>-s<shard>"
//	endpoints4-<n>-s<shard>, endpoints6-...: "address . protocol . port .
//	    index : endpoint address . port", the endpoints of every port
//	    served by that chain; a change of a port's endpoints is elements
//	    here (and its dispatch element, when their number changes), which
//	    the kernel applies without revalidating the table; the shards keep
//	    each map small enough to read back quickly (a set dump is
//	    quadratic in its elements)
//	svc-<hash> (svc6-<hash>): a chain of its own for a service port and
//	    family with source ranges or ClientIP affinity, the hash that of
//	    the iptables backend's LBD- chain. With source ranges and no
//	    affinity: "saddr <range> goto spread4-..." per range, then drop.
//	    With affinity: the range checks marking first (and a drop of the
//	    unmarked), then one dynamic set with the timeout per endpoint,
//	    checked and renewed from the packet path, and the spread as one
//	    rule per endpoint, "numgen random mod (n-i) == 0 update @aff dnat
//	    to ep_i"
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
