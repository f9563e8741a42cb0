#!/bin/sh
# Measures the iptables backend in its own network namespace (lbd-nfbench)
# and prints the figures: full program of 10,000 services x 10 endpoints,
# a one-service change, a no-change sync, against kube-proxy's
# chain-per-endpoint layout and a flat layout, for iptables-nft and
# iptables-legacy. Needs root. Extra arguments go to the program, e.g.
#   hack/bench/iptables/run.sh -services 1000 -modes nft
set -eu
cd "$(dirname "$0")/../../.."
ip netns del lbd-nfbench 2>/dev/null || true
bin=$(mktemp -d)
trap 'rm -rf "$bin"; ip netns del lbd-nfbench 2>/dev/null || true' EXIT
go build -o "$bin/iptables-bench" ./hack/bench/iptables
"$bin/iptables-bench" "$@"
