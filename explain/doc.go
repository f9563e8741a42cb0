// Package explain is the answer of `lbd explain ADDRESS:PORT[/PROTO]`:
// which applied service ports serve the target, and for each how the
// backend's data plane carries it, read live, against the applied state.
//
// [ParseTarget] checks the target before any I/O. [Ports] assembles the
// answer from the applied services and their states (from the store), a
// [Backend] that explains one service port (netfilter, nft and haproxy
// do) and a route check for the endpoints; it is pure but for what those
// two do. The printing is report's.
//
// explain imports lb only.
package explain
