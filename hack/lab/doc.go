// Package lab builds lbd's test world out of Linux network namespaces: the
// design notes' infrastructure network (master and load balancer), external
// network (load balancer and a client) and pod network (a flannel0 bridge on
// the load balancer with one namespace per pod), and, on request, a real
// Kubernetes master (etcd, kube-apiserver and sshd) in the master namespace.
//
// Nothing is created in the host namespace: veth pairs are made directly
// between lab namespaces, daemons run under `ip netns exec`, and Go code that
// must talk into the lab enters a namespace on a locked OS thread only to
// create a socket (see Lab.Dial). Pods have no default route, so their
// replies to the client can come back only through a load balancer that
// masquerades; the lab itself never turns on forwarding or adds iptables
// rules.
//
// With Options.LBs = 2 the lab has a second load balancer for an HA pair:
// the three networks become bridges in a switch namespace of the lab's
// own, each LB has a leg on every one, and a sync0 link joins the two LBs.
//
// Every lab is named; its namespaces are "lbd-<name>-master", "-lb",
// "-client", "-pod0".. (and "-lb2", "-sw") Start sweeps leftovers of an earlier run with the
// same name, and Close kills every process the lab started and deletes its
// namespaces. Tests use ForTest, which skips loudly when not root.
package lab
