#!/bin/sh
# Measures the data planes side by side in one run (hack/lab namespaces,
# no cluster): direct, direct with conntrack on (the NAT floor), iptables before (--random-fully) and after the
# masquerade fix, nftables and haproxy; keep-alive and a new connection
# per request; 5 and 10,005 services. Needs root and wrk. Extra arguments
# go to the program (-reps rounds, medians; 3 by default), e.g.
#   hack/bench/dataplane/run.sh -d 3s -services 5
set -eu
cd "$(dirname "$0")/../../.."
exec go run ./hack/bench/dataplane "$@"
