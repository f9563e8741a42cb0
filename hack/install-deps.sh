#!/usr/bin/env bash
# install-deps.sh installs what lbd's build and tests need on Debian 12, as
# root: the Debian packages (real haproxy, iptables, OpenSSH, etcd, ...)
# and the Go modules, then builds the lab's kube-apiserver and kubectl from
# the Go module proxy (cached under hack/.bin/, so only the first run pays).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
	haproxy          # the production backend, and `haproxy -c` in tests
	iptables         # the iptables backend (nft and legacy)
	conntrack        # inspecting flows in tests
	nftables         # the nft CLI: the nftables backend's tests read the kernel's ruleset with it
	keepalived       # --ha=keepalived: VRRP for two LB machines
	conntrackd       # --ha=keepalived: established flows survive a failover
	openssh-server   # the lab master's sshd
	openssh-client   # ssh-keygen for the lab's keys
	etcd-server      # the lab master's etcd
	iproute2         # ip netns, veth, bridges
	sqlite3          # proves the ServiceToEndPointsMapping view works in the notes' CLI
	curl             # requests from the lab's client namespace
	socat            # talking to haproxy's master CLI by hand
	wrk              # load generation in benchmarks
	systemd          # systemd-analyze verify of hack/systemd units
	logrotate        # checks hack/logrotate/lbd
	zsh              # loads lbd completion zsh in cli's completion test
	ca-certificates
	git
	make
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# Do not let package scripts start system daemons (etcd, sshd, haproxy)
	# on this machine: the lab runs its own inside network namespaces.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

command -v go >/dev/null || { echo "install-deps: Go is required (https://go.dev/dl)" >&2; exit 1; }
go mod download
(cd hack/k8s && go mod download)
(cd hack/pkg && go mod download)
hack/k8s/build.sh >/dev/null
echo "install-deps: done"
