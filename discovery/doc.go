// Package discovery finds the cluster's services the way the original load
// balancer script did: it logs in to the Kubernetes master over SSH (not
// through the API server's web interface), runs kubectl there, and parses
// kubectl's JSON into []lb.Service.
//
// The package is lbd's border for cluster data (STYLE.md #8). [Parse] decodes
// kubectl's List output strictly into typed values (netip.Addr, uint16
// ports, RFC 1123 names), rejects a bad service by namespace/name and field
// with an *lb.InvalidServiceError and returns all the others. Nothing past
// this package re-checks cluster data.
//
// [Source] is the SSH half: it verifies the master's host key against
// known_hosts (a typed *HostKeyError on an unknown or changed key), keeps one
// connection open across calls and redials once when it breaks, bounds
// connect and command time, and reports a failing remote command as a
// *CommandError carrying the exit status and stderr. It runs
//
//	<kubectl> get services,endpointslices.discovery.k8s.io --all-namespaces -o json --request-timeout=<N>s
//
// and, when the cluster has no EndpointSlice API, falls back for the rest of
// its life to
//
//	<kubectl> get services,endpoints --all-namespaces -o json --request-timeout=<N>s
//
// N is nine tenths of the command timeout, so that kubectl ends on the
// master by itself even when sshd does not kill it with its session.
//
// discovery imports only lb. Source satisfies reconcile.Source without
// importing reconcile.
package discovery
