// Package lb holds lbd's domain: a Kubernetes Service as the load balancer
// sees it (external addresses, ports, endpoints), the validation rules that
// every value from the cluster passes once at the border, and the change and
// sync-record types that the reconciler, the store and the backends share.
//
// lb imports only the standard library. Every other lbd package imports it;
// it imports none of them.
package lb
