#!/bin/sh
# Prints the haproxy backend's speed figures for 10,000 services with 10
# endpoints each: Render alone, Render + write a generation + "haproxy -c",
# a sync with nothing to change (which must make no haproxy call), and a sync
# with one endpoint flipped, applied through the runtime API (0 reloads).
# Usage: hack/bench/haproxy/run.sh [count]   (from the repository root)
set -eu
cd "$(dirname "$0")/../../.."
go test -run '^$' -bench 'Render|ApplyNoChange|ApplyEndpointChange' -benchtime "${1:-3}x" ./haproxy/ |
	awk '/^Benchmark/ { printf "%-34s %8.0f ms/op", $1, $3/1e6; for (i = 5; i < NF; i += 2) printf "  %s %s", $i, $(i+1); print "" } /^(ok|FAIL)/'
