#!/bin/sh
# Measures one cron pass of the real lbd binary (lbd sync, drift check on)
# at 10,000 services x 10 endpoints, end to end, against a cluster lab
# (real kube-apiserver behind real sshd, hack/lab "crnbench"), for the
# iptables and nftables backends: the first pass, a pass with no change,
# a pass after one endpoint change. Prints wall time, every phase of the
# sync log line and peak RSS as a table. Needs root; takes a few minutes
# (loading 20,000 objects into the apiserver). Extra arguments go to the
# program, e.g.
#   hack/bench/cronpass/run.sh -services 1000 -backends nftables
set -eu
cd "$(dirname "$0")/../../.."
exec go run ./hack/bench/cronpass "$@"
