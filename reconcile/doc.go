// Package reconcile turns what the cluster has (a Source) and what a backend
// last programmed (the Store's applied state) into a Plan of per-service
// creates, updates and deletes; guards against plans that would wipe the
// load balancer; drives a Backend; and commits the result to the Store in
// one transaction, only after the backend succeeded.
//
// It declares the small interfaces it needs. The packages that satisfy them
// (discovery, store, netfilter, haproxy) import only lb, never reconcile.
package reconcile
