// Package hostcheck holds the checks of the LB host that serve every
// backend: the netlink pod-route check and the preflight verdicts of
// `lbd check`.
//
// [RouteCheck] asks the kernel (netlink RouteGet) how each ready endpoint
// is reached and refuses a service whose pods do not route through the pod
// interface (the notes' flannel0); the reconciler uses it as its
// PodRoutes, and the address allocator asks it whether an address lies in
// the pod network ([RouteCheck.InPodNetwork]). [Preflight] gathers the
// host checks that `lbd check` prints, one [Verdict] a line: privileges,
// forwarding and reverse-path filtering, the pod routes, keepalived
// ([Preflight.HA], [Preflight.NonlocalBind]); [Pools], [Addresses] and
// [CheckMaster] turn what lbd check read from the store, the host and the
// master into verdicts. The check of
// the iptables binary stays in package netfilter (netfilter.Version), which
// knows how to run it.
//
// hostcheck imports only lb; it changes nothing on the host.
package hostcheck
